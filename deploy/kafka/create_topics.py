"""Create the topics the monitor uses, if they do not exist yet.

    python deploy/kafka/create_topics.py --bootstrap 127.0.0.1:9092 rl.rollouts:4 rl.rollouts.dlq:1

A topic that already exists is left as it is (a partition count other than the requested one is
reported, not changed). Exits non-zero if a topic cannot be created or does not show up in the
cluster metadata with all partitions led within the timeout.
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def parse_spec(spec: str) -> tuple[str, int]:
    name, _, partitions = spec.rpartition(":")
    if not name or not partitions.isdigit() or int(partitions) < 1:
        raise argparse.ArgumentTypeError(f"expected TOPIC:PARTITIONS, got {spec!r}")
    return name, int(partitions)


def create_missing(admin: AdminClient, wanted: dict[str, int], timeout: float) -> None:
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in wanted.items()]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            print(f"created topic {name} ({wanted[name]} partitions)")
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            print(f"topic {name} already exists")


def unready(admin: AdminClient, wanted: dict[str, int]) -> list[str]:
    """Topics whose metadata is missing, in error, or has a partition without a leader."""
    topics = admin.list_topics(timeout=5).topics
    problems = []
    for name, partitions in wanted.items():
        meta = topics.get(name)
        if meta is None or meta.error is not None:
            problems.append(f"{name}: {meta.error if meta else 'not in metadata'}")
        elif any(p.leader < 0 for p in meta.partitions.values()):
            problems.append(f"{name}: a partition has no leader yet")
        elif len(meta.partitions) != partitions:
            print(
                f"warning: topic {name} has {len(meta.partitions)} partitions, "
                f"{partitions} requested; left unchanged",
                file=sys.stderr,
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create Kafka topics if missing.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds in all")
    parser.add_argument("topics", nargs="+", type=parse_spec, metavar="TOPIC:PARTITIONS")
    args = parser.parse_args(argv)
    wanted = dict(args.topics)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    deadline = time.monotonic() + args.timeout

    to_create = dict(wanted)
    while True:
        try:
            if to_create:
                create_missing(admin, to_create, timeout=max(1.0, deadline - time.monotonic()))
                to_create = {}
            problems = unready(admin, wanted)
        except KafkaException as exc:
            problems = [str(exc)]
        if not problems:
            return 0
        if time.monotonic() >= deadline:
            print(f"topics not ready after {args.timeout:.0f}s: {problems}", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
