"""Which modules are compiled with mypyc, and whether the build matches the sources.

``deploy/compile_detectors.py`` (run by ``make install``) compiles :data:`COMPILED_MODULES`
into C extensions next to their sources and records the SHA-256 of each source in
:data:`MANIFEST`. The import system prefers an extension to its ``.py``, so a build older
than an edit would run the old code without a word: :func:`check`, called by
``detectors/__init__`` before any detector module is imported, refuses that. Without a
build the pure-Python modules run (same results, more CPU per event). A compiled module
outside ``detectors`` imports ``detectors`` while it is imported (directly or through its
imports), so that a stale build fails there whichever module is imported first (a test holds
them to it).

This module imports nothing from the package (the build script loads it on its own).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
from pathlib import Path

#: The modules compiled: the detector library but the package's ``__init__``, this module,
#: the two measurement scripts run by hand (``_timing``, ``_calibration``) and the two that
#: only declare types (``protocol``: Protocol classes, read by ``vars()``; ``alarm``: the
#: frozen dataclass of an alarm, built only when one is raised); and the daemon's per-batch
#: path: routing (``monitor.pipeline``), per-segment counters (``monitor.segments``), the
#: ``/metrics`` render (``monitor.exposition``) and the records of a confluent-kafka poll
#: (``monitor.source._records``).
COMPILED_MODULES = (
    *(
        f"detectors.{name}"
        for name in (
            "_base",
            "_mean_shift",
            "bank",
            "batch_ks",
            "bernoulli_cusum",
            "component_imbalance",
            "cusum",
            "error_rate",
            "feature_drift",
            "group_invariant",
            "groups",
            "invalid_reward",
            "invariant",
            "length_anomaly",
            "masked_failure",
            "policy_staleness",
            "rate_bound",
            "reward_distribution",
            "reward_hacking",
            "reward_shift",
            "tool_failure_rate",
            "truncation_rate",
            "verifier_flakiness",
            "zero_variance_groups",
        )
    ),
    "monitor.exposition",
    "monitor.pipeline",
    "monitor.segments",
    "monitor.source._records",
)
#: The build's record of its sources, relative to the repository.
MANIFEST = "detectors/.compiled.json"
#: The mypyc group of the modules: its shared runtime is the module ``<GROUP>__mypyc``.
GROUP = "detectors.native"

_REPO = Path(__file__).resolve().parent.parent
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def source_path(module: str, repo: Path = _REPO) -> Path:
    """The source file of a module of :data:`COMPILED_MODULES`."""
    return repo.joinpath(*module.split(".")).with_suffix(".py")


def source_digests(repo: Path = _REPO) -> dict[str, str]:
    """SHA-256 of each compiled module's source, by module name."""
    return {
        name: hashlib.sha256(source_path(name, repo).read_bytes()).hexdigest()
        for name in COMPILED_MODULES
    }


def built_files(repo: Path = _REPO, existing: bool = False) -> list[Path]:
    """The extension files a build writes; with ``existing``, every extension module in the
    packages that hold compiled modules instead (a module no longer in the list leaves one
    behind)."""
    if existing:
        folders = sorted({source_path(name, repo).parent for name in COMPILED_MODULES})
        return sorted(
            p for d in folders if d.is_dir() for p in d.iterdir() if p.name.endswith(_SUFFIX)
        )
    paths = [source_path(name, repo).with_suffix(_SUFFIX) for name in COMPILED_MODULES]
    paths.append(source_path(f"{GROUP}__mypyc", repo).with_suffix(_SUFFIX))
    return paths


class StaleBuildError(ImportError):
    """Compiled detector modules that were not built from the sources next to them."""


def check(repo: Path = _REPO) -> bool:
    """Whether the detector modules will load compiled; raises :class:`StaleBuildError`
    when some are compiled but the build does not match the sources."""
    present = built_files(repo, existing=True)
    if not present:
        return False
    fix = (
        "run `make compile` to rebuild them, or "
        "`.venv/bin/python deploy/compile_detectors.py --clean` to run the pure-Python modules"
    )
    try:
        recorded = json.loads((repo / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise StaleBuildError(
            f"compiled modules without a readable build record ({exc}): {fix}"
        ) from None
    dropped = sorted(set(recorded) - set(COMPILED_MODULES))
    if dropped:  # the shared library still holds their code, and its callers call into it
        raise StaleBuildError(
            f"compiled modules built with others no longer compiled ({', '.join(dropped)}): {fix}"
        )
    current = source_digests(repo)
    changed = sorted(n for n in COMPILED_MODULES if recorded.get(n) != current[n])
    if changed:
        raise StaleBuildError(
            f"compiled modules older than their sources ({', '.join(changed)}): {fix}"
        )
    expected = built_files(repo)
    missing = [p.name for p in expected if p not in present]
    if missing:
        raise StaleBuildError(f"compiled modules incomplete (missing {missing}): {fix}")
    extra = [p.name for p in present if p not in expected]
    if extra:
        raise StaleBuildError(f"compiled modules not in the build ({extra}): {fix}")
    return True
