"""Cost of being scraped: ``python -m bench.scrape_load``.

One topic on the local Kafka broker is preloaded with ``--events`` schema-v1 events over
``--segments`` segments. Then, in rounds, the daemon consumes it from the start in a fresh
process (its own consumer group) while this process scrapes its ``/metrics`` over HTTP: not
at all, every second (Prometheus at a short interval) and every 0.1 s (a stress case; a
scrape that takes longer than the interval is followed by the next one at once).

The daemon process runs ``monitor.daemon.Daemon.run()`` with a watcher thread that reads the
pipeline's processed counter (the number ``rollout_monitor_events_processed_total`` exports)
and stops the daemon once every event is processed. The consumption rate is measured from the
first processed event to the last. Medians over the rounds are compared with the unscraped
run; the target is a slowdown of at most 10% at a 1 s interval. Results go to
``bench/results/scrape_load.json``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_DIR / "bench" / "results" / "scrape_load.json"
#: Scrape intervals in seconds; None is the unscraped baseline.
MODES: tuple[float | None, ...] = (None, 1.0, 0.1)
TARGET_SLOWDOWN = 0.10
#: Seconds between two reads of the processed counter in the daemon's process.
WATCH_INTERVAL_S = 0.01
TEMPLATE = (
    b'{"schema_version":1,"event_id":"%s-%d","ts":%.3f,"run_id":"%s","env_id":"env-%04d",'
    b'"status":"%s","reward":%s,"completion_tokens":%d,"max_completion_tokens":4096,'
    b'"group_id":"g-%d","group_size":8}'
)
STATUSES = (b"completed",) * 18 + (b"truncated", b"failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the topic -----------------------------------------------------------------------------


def preload(bootstrap: str, topic: str, run: str, events: int, segments: int) -> float:
    """Produce ``events`` events round-robin over ``segments`` environments; return seconds."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "acks": 1,
        }
    )
    started = time.perf_counter()
    run_b = run.encode()
    for i in range(events):
        env = i % segments
        status = STATUSES[i % len(STATUSES)]
        reward = b"null" if status == b"failed" else b"%.3f" % ((i * 7919 % 1000) / 1000)
        value = TEMPLATE % (
            run_b,
            i,
            1_764_000_000 + i / 1000,
            run_b,
            env,
            status,
            reward,
            200 + i * 31 % 800,
            i // (8 * segments),
        )
        key = run_b + b"|env-%04d" % env
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("the preload producer could not deliver every event")
    return time.perf_counter() - started


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic and topic.error is None and all(p.leader >= 0 for p in topic.partitions.values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leader for every partition")


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(names), operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception as exc:  # a leftover topic is not worth failing the benchmark
            if "UNKNOWN_TOPIC" not in str(exc):  # the dead-letter topic exists only if used
                print(f"could not delete a topic: {exc}", file=sys.stderr)


# -- the daemon's process ------------------------------------------------------------------


def run_worker(target: int, timeout_s: float) -> dict[str, Any]:
    """Run the daemon until ``target`` events are processed (this is the child process)."""
    from monitor.config import load_settings
    from monitor.daemon import Daemon
    from monitor.logs import configure_logging

    settings = load_settings()
    configure_logging("WARNING")
    daemon = Daemon(settings)
    timing: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        first = 0
        while time.monotonic() < deadline:
            pipeline = daemon.pipeline
            processed = pipeline.counters.processed if pipeline is not None else 0
            if processed and "start" not in timing:
                timing["start"], first = time.perf_counter(), processed
            if processed >= target:
                timing["end"] = time.perf_counter()
                timing["counted"] = processed - first
                break
            time.sleep(WATCH_INTERVAL_S)
        daemon.stop()

    threading.Thread(target=watch, name="watch", daemon=True).start()
    daemon.run()
    if "end" not in timing:
        raise SystemExit(f"processed fewer than {target} events in {timeout_s}s")
    seconds = timing["end"] - timing["start"]
    return {"events": timing["counted"], "seconds": seconds, "rate": timing["counted"] / seconds}


# -- the scraper ---------------------------------------------------------------------------


class Scraper:
    """GET /metrics every ``interval`` seconds from a thread until stopped."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    self.sizes.append(len(response.read()))
                self.durations.append(time.monotonic() - started)
            except OSError:
                self.failures += 1  # not up yet, or stopping
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def summary(self) -> dict[str, Any]:
        d = sorted(self.durations)
        return {
            "scrapes": len(d),
            "failed": self.failures,
            "scrape_ms_median": round(1000 * statistics.median(d), 1) if d else None,
            "scrape_ms_max": round(1000 * d[-1], 1) if d else None,
            "scrape_bytes": max(self.sizes) if self.sizes else 0,
        }


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the daemon did not serve {url}")


def measure(
    bootstrap: str, topic: str, events: int, interval: float | None, timeout_s: float
) -> dict[str, Any]:
    """One daemon run over the whole topic, scraped every ``interval`` seconds (or not)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_MONITOR_")},
        "PYTHONPATH": str(REPO_DIR),
        "ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "ROLLOUT_MONITOR_KAFKA__TOPICS": topic,
        "ROLLOUT_MONITOR_KAFKA__GROUP_ID": f"scrape-load-{uuid.uuid4().hex[:10]}",
        "ROLLOUT_MONITOR_KAFKA__DEAD_LETTER_TOPIC": topic + ".dlq",
        "ROLLOUT_MONITOR_ALERTMANAGER__URL": "",
        "ROLLOUT_MONITOR_HTTP__LISTEN": f"127.0.0.1:{port}",
    }
    command = [sys.executable, "-m", "bench.scrape_load", "--worker", "--events", str(events)]
    load_before = os.getloadavg()[0]
    # The daemon keeps any state relative to its working directory: a scratch one.
    with tempfile.TemporaryDirectory(prefix="scrape-load-") as scratch:
        proc = subprocess.Popen(command, env=env, cwd=scratch, stdout=subprocess.PIPE)
        scraper = None
        try:
            if interval is not None:
                wait_for_http(f"http://127.0.0.1:{port}/healthz", proc)
                scraper = Scraper(f"http://127.0.0.1:{port}/metrics", interval).start()
            out, _ = proc.communicate(timeout=timeout_s)
        finally:
            if scraper is not None:
                scraper.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the daemon's process exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["interval_s"] = interval
    # Other work on the machine shows here; compare runs of similar load.
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if scraper is not None:
        result.update(scraper.summary())
    return result


# -- report --------------------------------------------------------------------------------


def mode_name(interval: float | None) -> str:
    return "none" if interval is None else f"every {interval:g} s"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = statistics.median(r["rate"] for r in runs if r["interval_s"] is None)
    rows = []
    for interval in MODES:
        mine = [r for r in runs if r["interval_s"] == interval]
        rate = statistics.median(r["rate"] for r in mine)
        row: dict[str, Any] = {
            "scrape": mode_name(interval),
            "events_per_s": round(rate),
            "rates": [round(r["rate"]) for r in mine],
            "slowdown": round(1 - rate / base, 4),
        }
        if interval is not None:
            row["scrapes_per_run"] = [r["scrapes"] for r in mine]
            row["scrape_ms_median"] = statistics.median(r["scrape_ms_median"] for r in mine)
            row["scrape_ms_max"] = max(r["scrape_ms_max"] for r in mine)
            row["scrape_bytes"] = max(r["scrape_bytes"] for r in mine)
            row["within_target"] = row["slowdown"] <= TARGET_SLOWDOWN
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scrape /metrics | events/s (median) | slowdown | scrape ms (median / max) | size |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        scrape = (
            f"{row['scrape_ms_median']:.0f} / {row['scrape_ms_max']:.0f}"
            if "scrape_ms_median" in row
            else "-"
        )
        size = f"{row['scrape_bytes'] / 1e6:.1f} MB" if row.get("scrape_bytes") else "-"
        lines.append(
            f"| {row['scrape']} | {row['events_per_s']:,} | {100 * row['slowdown']:.1f}% | "
            f"{scrape} | {size} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.events, args.timeout)), flush=True)
        return 0

    run = f"scrape-load-{uuid.uuid4().hex[:8]}"
    topic = f"bench.{run}"
    create_topic(args.bootstrap, topic, args.partitions)
    try:
        preload_s = preload(args.bootstrap, topic, run, args.events, args.segments)
        print(f"preloaded {args.events:,} events in {preload_s:.1f} s", file=sys.stderr)
        runs = []
        for round_no in range(args.rounds):
            for interval in MODES:
                result = measure(args.bootstrap, topic, args.events, interval, args.timeout)
                result["round"] = round_no
                runs.append(result)
                print(
                    f"round {round_no} scrape {mode_name(interval)}: "
                    f"{result['rate']:,.0f} events/s",
                    file=sys.stderr,
                )
    finally:
        delete_topics(args.bootstrap, [topic, topic + ".dlq"])
    rows = summarise(runs)
    report = {
        "benchmark": "scrape_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "events": args.events,
            "segments": args.segments,
            "partitions": args.partitions,
            "rounds": args.rounds,
            "target_slowdown": TARGET_SLOWDOWN,
        },
        "summary": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
