"""Measure false-alarm rates of the statistical building blocks and of the bank on clean streams.

Not a test: calibration checks of the thresholds derived from ``arl0``, run by hand::

    .venv/bin/python -m detectors._calibration --arl0 10000 --samples 2000000 \\
        --stream normal --stream bernoulli:0.8 --stream t:3 --stream grouped:8:0.5
    .venv/bin/python -m detectors._calibration --batch-size 8 --lags 6 --fast-k 0.5,1 \\
        --arl0 100000 --stream grouped:8:0.3 --stream bernoulli:0.8
    .venv/bin/python -m detectors._calibration --block bernoulli --batch-size 16 \\
        --stream bernoulli:0.05 --stream grouped:8:0.3:0.2
    .venv/bin/python -m detectors._calibration --block ks --arl0 20000 --stream groupconst:8
    .venv/bin/python -m detectors._calibration --simulated-bank 0,1,2 --samples 60000

``--block`` picks the detector: ``cusum`` (:class:`MeanShiftCUSUM`), ``bernoulli``
(:class:`BernoulliCUSUM`, on 0/1 streams) or ``ks`` (:class:`BatchKS`). Each stream is i.i.d.
in control, except ``grouped:G:R[:P]`` (blocks of ``G`` consecutive Bernoulli rewards that
share a per-group success probability with mean ``P``, default 0.5, so that their
within-group correlation is about ``R``, as in GRPO groups) and ``groupconst:G`` (standard
normal values, equal within blocks of ``G``: a prompt feature of one group). The script
prints, per stream, the number of false alarms, the samples under test (warm-up samples
after each alarm excluded), the measured mean run length between false alarms, and its
ratio to ``arl0``.

``--simulated-bank SEEDS`` runs the whole :class:`DetectorBank` (default budget) on clean
``monitor.simulate`` streams of ``--samples`` events per seed, one bank per segment, and
prints every alarm with the events per segment (the budget is per segment).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from detectors.batch_ks import BatchKS
from detectors.bernoulli_cusum import BernoulliCUSUM
from detectors.cusum import MeanShiftCUSUM

_CHUNK = 200_000
_BLOCKS: dict[str, type[Any]] = {
    "cusum": MeanShiftCUSUM,
    "bernoulli": BernoulliCUSUM,
    "ks": BatchKS,
}


def _values(name: str, arg: str, rng: np.random.Generator, size: int) -> np.ndarray:
    if name == "normal":
        return rng.standard_normal(size)
    if name == "bernoulli":
        return (rng.random(size) < float(arg)).astype(float)
    if name == "t":
        return rng.standard_t(float(arg), size)
    if name == "grouped":
        group, _, rest = arg.partition(":")
        icc, _, mean = rest.partition(":")
        g, r, p = int(group), float(icc), float(mean or 0.5)
        # p ~ Beta(a, b) with mean p and intra-class correlation r = 1 / (a + b + 1).
        total = 1.0 / r - 1.0
        rates = np.repeat(rng.beta(p * total, (1.0 - p) * total, -(-size // g)), g)[:size]
        return (rng.random(size) < rates).astype(float)
    if name == "groupconst":
        g = int(arg)
        return np.repeat(rng.standard_normal(-(-size // g)), g)[:size]
    expected = "normal, bernoulli:P, t:DF, grouped:G:R[:P] or groupconst:G"
    raise ValueError(f"stream must be {expected}, got {name}:{arg}")


def _chunks(stream: str, samples: int, seed: int) -> Iterator[list[float]]:
    rng = np.random.default_rng(seed)
    name, _, arg = stream.partition(":")
    done = 0
    while done < samples:
        size = min(_CHUNK, samples - done)
        done += size
        yield _values(name, arg, rng, size).tolist()


def measure(
    stream: str, samples: int, seed: int, block: str = "cusum", **params: float
) -> tuple[int, int]:
    """False alarms and samples under test for one stream."""
    detector = _BLOCKS[block](**params)
    warming = getattr(type(detector), "warming_up", None)
    alarms = 0
    tested = 0
    for chunk in _chunks(stream, samples, seed):
        for x in chunk:
            detector.update(x)
            if detector.drift_detected:
                alarms += 1
            if warming is None or not detector.warming_up:
                tested += 1
    return alarms, tested


def simulated_bank(seeds: list[int], events: int) -> None:
    """Alarms of the default bank on clean simulated streams (one bank per segment)."""
    # Imported here: the library itself never depends on the daemon's modules.
    from detectors.bank import BankConfig, DetectorBank
    from monitor.events import InvalidEvent, decode_event
    from monitor.simulate import SimulationConfig, generate

    config = BankConfig()
    per_segment: Counter[tuple[str, str]] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    for seed in seeds:
        banks: dict[tuple[str, str], DetectorBank] = {}
        for message in generate(SimulationConfig(seed=seed, events=events)):
            try:
                event = decode_event(message)
            except InvalidEvent:
                continue
            key = (event.run_id, event.env_id)
            per_segment[key] += 1
            bank = banks.get(key)
            if bank is None:
                bank = banks[key] = DetectorBank(config)
            for alarm in bank.update(event):
                counts[(alarm.detector, alarm.severity)] += 1
                print(f"seed {seed} {event.env_id}: {alarm.detector} {alarm.severity}: ", end="")
                print(alarm.summary)
    total = sum(per_segment.values())
    print(f"{len(seeds)} seeds, {total} events in {len(per_segment)} segment streams")
    for (detector, severity), n in sorted(counts.items()):
        print(f"{detector:<24}{severity:<9}{n:>4}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", choices=sorted(_BLOCKS), default="cusum")
    parser.add_argument("--arl0", type=float, default=10_000)
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--lags", type=int, default=0, help="cusum: long-run variance lags")
    parser.add_argument(
        "--fast-k", default="", help="cusum: comma-separated k of the per-sample charts"
    )
    parser.add_argument("--stream", action="append", default=None)
    parser.add_argument("--simulated-bank", metavar="SEEDS", default=None)
    args = parser.parse_args(argv)
    if args.simulated_bank is not None:
        simulated_bank([int(s) for s in args.simulated_bank.split(",")], args.samples)
        return
    streams = args.stream or ["normal"]
    batch = args.batch_size
    params: dict[str, Any] = {"arl0": args.arl0}
    if args.block == "cusum":
        params.update(k=args.k, batch_size=batch, warmup=max(256, 2 * batch), lags=args.lags)
        if args.fast_k:
            params["fast_k"] = tuple(float(f) for f in args.fast_k.split(","))
    elif args.block == "bernoulli":
        params.update(batch_size=batch, warmup=max(500, 2 * batch))
    detector = _BLOCKS[args.block](**params)
    print(f"{detector!r} threshold={detector.threshold:.3f}")
    print(f"{'stream':<20}{'alarms':>8}{'tested':>12}{'ARL':>12}{'ARL/arl0':>10}")
    for stream in streams:
        alarms, tested = measure(stream, args.samples, args.seed, args.block, **params)
        arl = tested / alarms if alarms else math.inf
        print(f"{stream:<20}{alarms:>8}{tested:>12}{arl:>12.0f}{arl / args.arl0:>10.2f}")


if __name__ == "__main__":
    main()
