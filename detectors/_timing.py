"""Per-event cost of the detector bank on a clean simulated stream.

Not a test: a measurement, run by hand::

    .venv/bin/python -m detectors._timing --events 60000 --repeats 15 --each

A clean ``monitor.simulate`` stream is decoded and split by segment. Per segment, a bank
(default configuration) is warmed up on the first ``--warm`` events, so that every window is
full and every baseline learned, and pickled; the next ``--chunk`` events are then timed
``--repeats`` times from that snapshot. The least time of the repeats is kept (other
processes on the machine only ever add time), and the result is the mean cost per event over
the segments. ``--each`` also times a bank with each detector alone, and a bank with
``--enabled`` detectors gives the cost of a subset.
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Sequence

from detectors.bank import DETECTORS, BankConfig, DetectorBank
from detectors.protocol import EventLike


def _segments(events: int, seed: int) -> list[list[EventLike]]:
    # Imported here: the library itself never depends on the daemon's modules.
    from monitor.events import InvalidEvent, decode_event
    from monitor.simulate import SimulationConfig, generate

    by_segment: dict[tuple[str, str], list[EventLike]] = {}
    for message in generate(SimulationConfig(seed=seed, events=events)):
        try:
            event = decode_event(message)
        except InvalidEvent:
            continue
        by_segment.setdefault((event.run_id, event.env_id), []).append(event)
    return list(by_segment.values())


def cost(
    config: BankConfig, segments: Sequence[Sequence[EventLike]], warm: int, chunk: int, repeats: int
) -> float:
    """Least time over ``repeats``, in µs per event, averaged over the segments."""
    total = 0.0
    count = 0
    for events in segments:
        bank = DetectorBank(config)
        for event in events[:warm]:
            bank.update(event)
        snapshot = pickle.dumps(bank)
        timed = events[warm : warm + chunk]
        best = float("inf")
        for _ in range(repeats):
            update = pickle.loads(snapshot).update
            start = time.perf_counter()
            for event in timed:
                update(event)
            best = min(best, time.perf_counter() - start)
        total += best
        count += len(timed)
    return total / count * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", type=int, default=8000)
    parser.add_argument("--chunk", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--enabled", default=None, help="comma-separated detector ids")
    parser.add_argument("--each", action="store_true", help="also time each detector alone")
    args = parser.parse_args(argv)
    segments = _segments(args.events, args.seed)
    sizes = ", ".join(str(len(s)) for s in segments)
    print(f"{len(segments)} segments ({sizes} events), warm {args.warm}, timed {args.chunk}")
    enabled = tuple(args.enabled.split(",")) if args.enabled else tuple(DETECTORS)
    full = cost(BankConfig(enabled=enabled), segments, args.warm, args.chunk, args.repeats)
    print(f"{'bank (' + str(len(enabled)) + ' detectors)':<28}{full:8.2f} µs/event")
    if args.each:
        for detector_id in enabled:
            alone = cost(
                BankConfig(enabled=(detector_id,)), segments, args.warm, args.chunk, args.repeats
            )
            print(f"{detector_id:<28}{alone:8.2f}")


if __name__ == "__main__":
    main()
