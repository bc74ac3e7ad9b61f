"""Where the daemon spends its time per event: ``python -m bench.profile_e2e``.

Preloads a topic, runs the daemon over it as ``bench._measure`` does for ``e2e``, under
``py-spy record`` (``pip install py-spy``), and prints the functions with the most samples in
the consume loop (stacks through ``Daemon._loop``), by own time and including callees.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._kafka_load import create_topic, delete_groups, delete_topics, preload, unique_topic
from bench.throughput import REPO_DIR, _child_env, daemon_spec

LOOP_FRAME = "Daemon._loop"


Shares = list[tuple[str, float]]


def hotspots(raw: str, within: str = LOOP_FRAME, top: int = 25) -> dict[str, Shares]:
    """Own and inclusive sample shares of the frames in stacks that pass through ``within``.

    ``raw`` is py-spy's ``--format raw`` output: one ``frame;frame;... count`` per line.

    >>> text = "main;Daemon._loop (d.py:1);f (x.py:2) 3\\nmain;Daemon._loop (d.py:1) 1\\n"
    >>> hotspots(text)["own"]
    [('f (x.py:2)', 0.75), ('Daemon._loop (d.py:1)', 0.25)]
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if within not in stack:
            continue
        frames = stack.split(";")
        frames = frames[next(i for i, f in enumerate(frames) if within in f) :]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "own": [(f, n / total) for f, n in own.most_common(top)],
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(top)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_e2e", description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--segments", type=int, default=1000)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--cpu", type=int, default=1, help="core to pin the daemon to (-1: none)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25, help="rows per table")
    p.add_argument("--raw", type=Path, help="also keep py-spy's raw output here")
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    topic = unique_topic("bench.profile")
    group = unique_topic("bench.profile.group")
    create_topic(a.bootstrap, topic, 4)
    try:
        preload(a.bootstrap, topic, a.events, a.segments, 4)
        spec = daemon_spec(a.bootstrap, topic, group, a.events, a.segments, a.cpu)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "profile.txt"
            command = [sys.executable, "-m", "bench._measure", json.dumps(spec)]
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    str(a.rate),
                    "-o",
                    str(out),
                    "--",
                    *command,
                ],
                cwd=REPO_DIR,
                env=_child_env(),
                check=True,
                capture_output=True,
            )
            raw = out.read_text()
    finally:
        delete_topics(a.bootstrap, [topic])
        delete_groups(a.bootstrap, [group])
    if a.raw is not None:
        a.raw.write_text(raw)
    for kind, rows in hotspots(raw, top=a.top).items():
        print(f"\n{kind} time, share of samples in {LOOP_FRAME}:")
        for frame, share in rows:
            print(f"  {share:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
