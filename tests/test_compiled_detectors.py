"""The mypyc build of the detector library: in use, up to date, and the same as the Python.

``make install`` compiles ``detectors/`` (``deploy/compile_detectors.py``). These tests fail,
saying so, when the build is missing; they run the same simulated streams with faults
through the compiled modules (this process) and through the Python sources (a subprocess
that imports a copy of ``detectors/`` without the extensions), and compare every alarm,
every detector's statistic, threshold and ``active`` flag along the way, and checkpoints
written by one and restored by the other.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import detectors
from detectors.compiled import (
    COMPILED_MODULES,
    MANIFEST,
    StaleBuildError,
    built_files,
    check,
    source_digests,
    source_path,
)

ROOT = Path(__file__).resolve().parent.parent

# The comparison: one function, run here (compiled) and in a subprocess (Python). It
# returns what it saw, and pickles its banks halfway (a checkpoint) or resumes from one.
RUN = textwrap.dedent(
    """
    import pickle
    from detectors import DetectorBank
    from monitor.events import InvalidEvent, decode_event
    from monitor.simulate import Fault, SimulationConfig, generate

    FAULTS = (
        Fault("error_burst", "math-v2", 3000, end=5000),
        Fault("reward_drop", "code-sandbox", 4000),
        Fault("masked_failure", "tool-use", 5000),
        Fault("truncation", "math-v2", 6000),
        Fault("length_explosion", "tool-use", 7000),
        Fault("zero_variance", "code-sandbox", 8000),
        Fault("reward_hack", "math-v2", 9000),
    )

    def observe(bank):
        return [
            (i, d.statistic, d.threshold, d.active) for i, d in bank.detectors.items()
        ]

    def run(events, chunk, checkpoint, resume):
        stream = []
        for message in generate(SimulationConfig(seed=11, events=events, faults=FAULTS)):
            try:
                stream.append(decode_event(message))
            except InvalidEvent:
                continue
        half = len(stream) // 2
        if resume is None:
            banks, start = {}, 0
        else:
            with open(resume, "rb") as f:
                banks, start = pickle.load(f), half
        seen = []
        starts = [*range(0, half, chunk), *range(half, len(stream), chunk), len(stream)]
        for first, end in zip(starts, starts[1:]):
            if first < start:
                continue
            if first == half and checkpoint is not None:
                with open(checkpoint, "wb") as f:
                    pickle.dump(banks, f)
            by_segment = {}
            for i in range(first, end):
                event = stream[i]
                by_segment.setdefault((event.run_id, event.env_id), []).append(i)
            for key, positions in by_segment.items():
                bank = banks.get(key)
                if bank is None:
                    bank = banks[key] = DetectorBank()
                found, failed = bank.update_batch([stream[i] for i in positions])
                assert not failed, failed
                for at, alarm in found:
                    seen.append((positions[at], key, alarm.detector, alarm.severity,
                                 alarm.value, alarm.threshold, alarm.summary))
                seen.append((first, key, observe(bank)))
        return seen
    """
)
CHUNK = 250  # events per batch; the checkpoint is taken at half the valid events
EVENTS = 12_000


def _run_here(**kwargs: Any) -> list[Any]:
    namespace: dict[str, Any] = {}
    exec(RUN, namespace)
    result: list[Any] = namespace["run"](EVENTS, CHUNK, **kwargs)
    return result


@pytest.fixture(scope="module")
def python_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``detectors/`` and ``monitor/`` with their sources only: imported from there,
    they run as Python."""
    root = tmp_path_factory.mktemp("python-detectors")
    for package in ("detectors", "monitor"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("*.so"))
    (root / MANIFEST).unlink(missing_ok=True)
    return root


def _run_python(tree: Path, **kwargs: Any) -> list[Any]:
    out = tree / "result.pickle"
    script = RUN + textwrap.dedent(
        f"""
        import detectors, sys
        import monitor.segments
        assert not detectors.COMPILED and detectors.__file__.startswith({str(tree)!r})
        assert monitor.segments.__file__.endswith(".py")
        with open({str(out)!r}, "wb") as f:
            pickle.dump(run({EVENTS}, {CHUNK}, **{kwargs!r}), f)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tree, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, "rb") as f:
        result: list[Any] = pickle.load(f)
    return result


def test_the_detectors_run_compiled() -> None:
    """``make install`` (``deploy/compile_detectors.py``) builds them; without it this fails."""
    assert detectors.COMPILED, (
        "the detector library is not compiled: run `make compile` (needs a C compiler and the "
        "Python headers; the detectors then run as Python, with more CPU per event)"
    )
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in COMPILED_MODULES:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.endswith(suffix), module.__file__


@pytest.mark.parametrize(
    "module", [name for name in COMPILED_MODULES if not name.startswith("detectors.")]
)
def test_a_compiled_module_outside_detectors_runs_the_build_check(module: str) -> None:
    """Importing it alone imports ``detectors``, whose ``__init__`` refuses a stale build:
    otherwise an edited module could run compiled from its old source."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('detectors' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_compiled_and_python_detectors_see_the_same(python_tree: Path, tmp_path: Path) -> None:
    assert detectors.COMPILED, "the detector library is not compiled: run `make compile`"
    compiled_checkpoint = tmp_path / "compiled.pickle"
    python_checkpoint = tmp_path / "python.pickle"
    compiled = _run_here(checkpoint=str(compiled_checkpoint), resume=None)
    python = _run_python(python_tree, checkpoint=str(python_checkpoint), resume=None)
    alarms = [s for s in compiled if len(s) == 7]
    fired = {a[2] for a in alarms}
    # the faults fired several kinds of detector: the comparison covered alarms
    assert len(fired) >= 5, sorted(fired)
    assert len(compiled) == len(python)
    for mine, theirs in zip(compiled, python, strict=True):
        assert mine == theirs
    # Checkpoints cross over: each build resumes from the other's and goes on the same.
    from_python = _run_here(checkpoint=None, resume=str(python_checkpoint))
    from_compiled = _run_python(python_tree, checkpoint=None, resume=str(compiled_checkpoint))
    half = min(s[0] for s in from_python)
    expected = [s for s in compiled if s[0] >= half]
    assert half > 0 and expected == compiled[len(compiled) - len(expected) :]
    assert from_python == expected
    assert from_compiled == expected


def _fake_build(tmp_path: Path) -> Path:
    """A repository holding the detector sources and empty stand-ins for the extensions."""
    for name in COMPILED_MODULES:
        source_path(name, tmp_path).parent.mkdir(exist_ok=True)
        shutil.copy(source_path(name, ROOT), source_path(name, tmp_path))
    for path in built_files(tmp_path):
        path.touch()
    (tmp_path / MANIFEST).write_text(json.dumps(source_digests(tmp_path)))
    return tmp_path


def test_the_build_check_accepts_a_matching_build_and_no_build(tmp_path: Path) -> None:
    repo = _fake_build(tmp_path)
    assert check(repo) is True
    for path in built_files(repo):
        path.unlink()
    assert check(repo) is False  # sources only: the Python modules run


def test_the_build_check_refuses_a_stale_build(tmp_path: Path) -> None:
    repo = _fake_build(tmp_path)
    source = repo / "detectors" / "cusum.py"
    source.write_text(source.read_text() + "\n# edited\n")
    match = r"older than their sources \(detectors.cusum\).*make compile"
    with pytest.raises(StaleBuildError, match=match):
        check(repo)


def test_the_build_check_refuses_missing_and_unknown_extensions(tmp_path: Path) -> None:
    repo = _fake_build(tmp_path)
    built_files(repo)[0].unlink()
    with pytest.raises(StaleBuildError, match="incomplete"):
        check(repo)
    built_files(repo)[0].touch()
    (built_files(repo)[0].parent / f"gone{importlib.machinery.EXTENSION_SUFFIXES[0]}").touch()
    with pytest.raises(StaleBuildError, match="not in the build"):
        check(repo)
    (repo / MANIFEST).unlink()
    with pytest.raises(StaleBuildError, match="without a readable build record"):
        check(repo)


def test_the_build_check_refuses_a_build_of_modules_no_longer_compiled(tmp_path: Path) -> None:
    """A module dropped from the list (its extension deleted) still has its code in the
    build's shared library, where the modules that call it call into it."""
    repo = _fake_build(tmp_path)
    recorded = json.loads((repo / MANIFEST).read_text())
    recorded["monitor.dropped"] = "0" * 64
    (repo / MANIFEST).write_text(json.dumps(recorded))
    with pytest.raises(StaleBuildError, match=r"no longer compiled \(monitor.dropped\)"):
        check(repo)


def test_an_object_with_an_attribute_not_set_pickles_by_name_in_the_python_build(
    python_tree: Path,
) -> None:
    """Compiled, an attribute cannot be left unset or deleted; in Python it can, and such an
    object pickles as ``(None, {name: value})`` of the attributes that are set."""
    script = textwrap.dedent(
        """
        import pickle
        import detectors
        from detectors._base import Pickled
        assert not detectors.COMPILED

        class Pair(Pickled):
            __slots__ = ("a", "b")

        pair = Pair()
        pair.a = 1
        assert pair.__getstate__() == (None, {"a": 1}), pair.__getstate__()
        copy = pickle.loads(pickle.dumps(pair))
        assert copy.a == 1 and not hasattr(copy, "b")
        pair.b = 2
        assert pair.__getstate__() == [1, 2]
        copy = pickle.loads(pickle.dumps(pair))
        assert (copy.a, copy.b) == (1, 2)
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(python_tree), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=python_tree, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
