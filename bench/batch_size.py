"""The daemon's cost per event against its micro-batch size: ``python -m bench.batch_size``.

One topic on the local Kafka broker is preloaded with ``--events`` schema-v1 events over
``--segments`` segments; the daemon (``bench._measure``'s ``daemon`` kind: the code path of
``rollout-monitor run``) then consumes it once per batch size and round, in a fresh process
and consumer group each time, with the batch sizes alternating within a round so that a
change of the machine's load hits them alike. Printed per run: events per second, CPU per
event, peak RSS and the number of batches. Nothing is written: this is how the default
``pipeline.batch_max_events`` was chosen (docs/architecture.md, "Micro-batches").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench._kafka_load import create_topic, delete_groups, delete_topics, preload, unique_topic
from bench.throughput import _run_child, daemon_spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch_size", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--segments", type=int, default=1000)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 20_000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--cpu", type=int, default=1, help="core to pin the daemon to (-1: none)")
    a = p.parse_args(argv)
    topic = unique_topic("bench.batch")
    groups: list[str] = []
    create_topic(a.bootstrap, topic, 4)
    try:
        preload(a.bootstrap, topic, a.events, a.segments, 4)
        print("| batch_max_events | events/s | CPU µs per event | peak RSS (MB) | batches |")
        print("|---:|---:|---:|---:|---:|")
        for _ in range(a.rounds):
            for size in a.sizes:
                group = unique_topic("bench.batch.group")
                groups.append(group)
                spec = daemon_spec(
                    a.bootstrap,
                    topic,
                    group,
                    a.events,
                    a.segments,
                    a.cpu,
                    batch_max_events=size,
                    max_seconds=60.0,
                )
                r = _run_child(spec)
                cpu_us = 1e6 * r["cpu_seconds"] / max(r["events"], 1)
                print(
                    f"| {size:,} | {r['events_per_s']:,.0f} | {cpu_us:.2f} "
                    f"| {r['rss_peak_mb']:.0f} | {r['extra'].get('batches')} |",
                    flush=True,
                )
    finally:
        delete_groups(a.bootstrap, groups)
        delete_topics(a.bootstrap, [topic])
    return 0


if __name__ == "__main__":
    sys.exit(main())
