"""Write the dashboards as JSON, or check that the committed JSON is up to date.

Usage: ``python -m dashboards.generate [--check] [--output DIR]``. With ``--check`` nothing is
written; the exit status is 1 when a file is missing, differs or is not generated any more.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dashboards import JSON_DIR, daemon, environment, fleet
from dashboards._common import dumps

#: File stem -> builder. The stems are the committed file names.
BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "fleet-overview": fleet.build,
    "environment": environment.build,
    "daemon-health": daemon.build,
}


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as JSON data, by file stem."""
    return {stem: build() for stem, build in BUILDERS.items()}


def rendered() -> dict[str, str]:
    """Every dashboard in its committed text form, by file name."""
    return {f"{stem}.json": dumps(data) for stem, data in build_all().items()}


def stale_files(directory: Path) -> list[str]:
    """Files of ``directory`` that differ from what the code generates, or should not exist."""
    expected = rendered()
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    stale += sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return stale


def write(directory: Path) -> list[str]:
    """Write every dashboard and delete JSON files no builder produces; return changed names."""
    changed = stale_files(directory) if directory.is_dir() else list(rendered())
    directory.mkdir(parents=True, exist_ok=True)
    expected = rendered()
    for name, text in expected.items():
        (directory / name).write_text(text, encoding="utf-8")
    for path in directory.glob("*.json"):
        if path.name not in expected:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    parser.add_argument("--output", type=Path, default=JSON_DIR, help="JSON directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.output) if args.output.is_dir() else list(rendered())
        for name in stale:
            print(f"stale: {args.output / name}", file=sys.stderr)
        if stale:
            print("run: python -m dashboards.generate", file=sys.stderr)
        return 1 if stale else 0
    for name in write(args.output):
        print(f"wrote {args.output / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
