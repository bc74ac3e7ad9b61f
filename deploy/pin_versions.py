"""Write or check ``constraints.txt``: the exact versions the project is installed and tested with.

``pyproject.toml`` gives ranges, so that rollout-monitor installs next to a trainer's own
packages. ``deploy/install.sh`` installs the project's virtualenv with ``pip install -c
constraints.txt``, so a fresh machine gets the versions the tests passed with, not whatever
was released since: a new ruff or mypy can add findings that fail the lint tests, and mypy
also compiles the detectors (mypyc).

The file lists every distribution the project needs with the ``test`` and ``compile``
extras (its requirements, theirs, and so on, as the installed distributions declare them),
at the installed version. Run this in the project's virtualenv:

    python deploy/pin_versions.py            # write constraints.txt from the installed versions
    python deploy/pin_versions.py --check    # exit 1, naming each difference, if it is stale
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "rollout-monitor"
EXTRAS = ("test", "compile")
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"
HEADER = (
    "# Exact versions of everything rollout-monitor installs with its test and compile extras.\n"
    "# deploy/install.sh installs with `pip install -c constraints.txt`; regenerate with\n"
    "# `python deploy/pin_versions.py` after changing a dependency (tests/test_install_pins.py\n"
    "# checks that this file matches the virtualenv).\n"
)


def closure(project: str = PROJECT, extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Installed version of each distribution ``project[extras]`` needs, by canonical name.

    Follows the requirements the installed distributions declare, with their extras and
    environment markers evaluated here. A requirement that is not installed is an error.
    """
    versions: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(project, frozenset(extras))]
    while pending:
        name, wanted = pending.pop()
        canonical = canonicalize_name(name)
        if (canonical, wanted) in visited:
            continue
        visited.add((canonical, wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"pin_versions: {name} is required but not installed") from None
        if canonical != PROJECT:
            versions[canonical] = dist.version
        for line in dist.requires or ():
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (*wanted, "")
            ):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return versions


def render(versions: dict[str, str]) -> str:
    """The constraints file for ``versions``: the header, then ``name==version`` sorted."""
    return HEADER + "".join(f"{name}=={versions[name]}\n" for name in sorted(versions))


def parse(text: str) -> dict[str, str]:
    """``name -> version`` of a constraints file's ``name==version`` lines."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def differences(pinned: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What differs between the file's pins and the installed closure, one line each."""
    lines = []
    for name in sorted(pinned.keys() | installed.keys()):
        have, want = installed.get(name), pinned.get(name)
        if want is None:
            lines.append(f"{name}=={have} is needed but not pinned")
        elif have is None:
            lines.append(f"{name}=={want} is pinned but no longer needed")
        elif have != want:
            lines.append(f"{name} is pinned at {want} but {have} is installed")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, write nothing")
    parser.add_argument("--file", type=Path, default=CONSTRAINTS, help="[%(default)s]")
    args = parser.parse_args(argv)
    path: Path = args.file
    installed = closure()
    if not args.check:
        path.write_text(render(installed))
        print(f"pin_versions: wrote {len(installed)} pins to {path}")
        return 0
    if not path.exists():
        print(f"pin_versions: {path} does not exist", file=sys.stderr)
        return 1
    found = differences(parse(path.read_text()), installed)
    for line in found:
        print(f"pin_versions: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
