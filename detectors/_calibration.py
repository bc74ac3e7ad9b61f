"""Measure the false-alarm rate of MeanShiftCUSUM on clean synthetic streams.

Not a test: a calibration check of the Siegmund-derived threshold, run by hand::

    .venv/bin/python -m detectors._calibration --arl0 10000 --samples 2000000 \\
        --stream normal --stream bernoulli:0.8 --stream t:3 --stream grouped:8:0.5

Each stream is i.i.d. in control (``grouped:G:R`` is the exception: blocks of ``G``
consecutive Bernoulli(0.5) rewards that share a per-group success probability, so that their
within-group correlation is about ``R``, as in GRPO groups). The script prints, per stream, the
number of false alarms, the samples under test (warm-up samples after each alarm excluded),
the measured mean run length between false alarms, and its ratio to ``arl0``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator

import numpy as np

from detectors.cusum import MeanShiftCUSUM

_CHUNK = 200_000


def _chunks(stream: str, samples: int, seed: int) -> Iterator[list[float]]:
    rng = np.random.default_rng(seed)
    name, _, arg = stream.partition(":")
    done = 0
    while done < samples:
        size = min(_CHUNK, samples - done)
        if name == "normal":
            values = rng.standard_normal(size)
        elif name == "bernoulli":
            values = (rng.random(size) < float(arg)).astype(float)
        elif name == "t":
            values = rng.standard_t(float(arg), size)
        elif name == "grouped":
            group, _, icc = arg.partition(":")
            g, r = int(group), float(icc)
            # p ~ Beta(a, a) around 0.5 with intra-class correlation r = 1 / (2a + 1).
            a = (1.0 / r - 1.0) / 2.0
            p = np.repeat(rng.beta(a, a, -(-size // g)), g)[:size]
            values = (rng.random(size) < p).astype(float)
        else:
            expected = "normal, bernoulli:P, t:DF or grouped:G:R"
            raise ValueError(f"stream must be {expected}, got {stream!r}")
        done += size
        yield values.tolist()


def measure(stream: str, samples: int, seed: int, **params: float) -> tuple[int, int]:
    """False alarms and samples under test for one stream."""
    detector = MeanShiftCUSUM(**params)  # type: ignore[arg-type]
    alarms = 0
    tested = 0
    for chunk in _chunks(stream, samples, seed):
        for x in chunk:
            detector.update(x)
            if detector.drift_detected:
                alarms += 1
            if not detector.warming_up:
                tested += 1
    return alarms, tested


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arl0", type=float, default=10_000)
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--stream", action="append", default=None)
    args = parser.parse_args(argv)
    streams = args.stream or ["normal"]
    batch = args.batch_size
    warmup = max(256, 2 * batch)
    detector = MeanShiftCUSUM(k=args.k, arl0=args.arl0, batch_size=batch, warmup=warmup)
    print(f"arl0={args.arl0:g} k={args.k} batch_size={batch} h={detector.threshold:.3f}")
    print(f"{'stream':<16}{'alarms':>8}{'tested':>12}{'ARL':>12}{'ARL/arl0':>10}")
    for stream in streams:
        alarms, tested = measure(
            stream,
            args.samples,
            args.seed,
            k=args.k,
            arl0=args.arl0,
            batch_size=batch,
            warmup=warmup,
        )
        arl = tested / alarms if alarms else math.inf
        print(f"{stream:<16}{alarms:>8}{tested:>12}{arl:>12.0f}{arl / args.arl0:>10.2f}")


if __name__ == "__main__":
    main()
