"""Detection benchmark: false alarms on clean controls, delays on injected faults, and the
mean-shift study, measured in one run.

``python -m bench.detection`` (``make bench-detect``) runs every detector id registered in
``detectors.DETECTORS`` in one :class:`~detectors.DetectorBank` per segment at the default
budget, on

- clean controls (``bench.scenarios.CONTROLS`` x environments x seeds): false alarms per
  million events per segment, for each detector, and the bank's pages;
- fault trials (``bench.faults.FAULTS``, several magnitudes, a random onset after the
  warm-up): recall, median and 90th-percentile delay (events of the segment from the onset
  to the first alarm of the target detector id), and false alarms of the target before the
  onset;
- the mean-shift study (``bench.mean_shift``).

It writes ``bench/results/detection.json`` and the markdown report
``docs/detection-benchmark.md`` generated from the same numbers (``bench.report``).
``--quick`` runs a small subset in well under a minute (the regression test uses it) and
writes nothing unless ``--out`` is given. ``--only ID[,ID...]`` runs only those detector ids
(each at its share of the full bank's budget) on the clean controls and on their own faults,
without the mean-shift study, and also writes nothing unless ``--out`` is given: a quick look
at the detectors being worked on.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import mean_shift as ms
from bench.faults import FAULTS, Fault
from bench.report import render
from bench.scenarios import (
    CONTROLS,
    ENVS,
    EVENT_RATES,
    FAILURE_MODE_IDS,
    SegmentSpec,
    events,
    generate,
)
from detectors import DETECTORS, BankConfig, DetectorBank

__all__ = ["Plan", "main", "run", "run_clean", "run_trial"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "detection.json"
DEFAULT_DOC = ROOT / "docs" / "detection-benchmark.md"
#: Target of the bank: at most one page per this many clean events per segment.
PAGE_BUDGET_EVENTS = 1_000_000
RECALL_TARGET = 0.95
ORACLE_RATIO_TARGET = 1.5
#: ADWIN's median delays (samples) at 0.5, 1 and 2 standard deviations, river defaults.
ADWIN_ANCHOR = {0.5: 79, 1.0: 47, 2.0: 15}


_GROUP_TIMEOUT = (
    "`timeout_s = 60` seconds of event time and `timeout_spans = 4` times the longest span "
    "(in episodes) of the recent complete groups, whichever comes later"
)
#: Why a known shortfall happens: a note in the report whenever the numbers show it (recall
#: of the large magnitudes of that fault below the target).
EXPLANATIONS: dict[str, str] = {
    "group_extra_member": "an episode arriving after its group completed reopens the group, "
    "which is judged when it times out after " + _GROUP_TIMEOUT,
    "group_missing_member": "a short group is only judged when it times out after "
    + _GROUP_TIMEOUT,
    "component_saturation": "with the efficiency component pinned on 90% of the episodes its "
    "standard deviation narrows to about half, at the saturation factor `collapse = 0.5`; "
    "the change is then reported by the dominance test of the other component, about 1 800 "
    "events after the onset",
    "reward_hack": "the hack ramps up over 2 000 events; the reward detector paired with the "
    "length absorbs part of the ramp into its baseline (half-life 1 000 events), and the slow "
    "one (half-life 4 000 events, paired with the repetition) needs the full ramp when the "
    "reward rise is small (tool environment: about 0.1)",
    "format_dominance": "the format component is already at its maximum on 97% of the clean "
    "math episodes; with 60% of the episodes forced to the maximum, the share off it falls to "
    "1.2% and its standard deviation to about 0.6 of the baseline, a change that even a "
    "CUSUM knowing both rates needs 2 300 to 2 800 events to see at this detector's budget, "
    "and that the variance test sees within the 5 000 events of a trial in about 70% of the "
    "trials; the "
    "rest of the fault is a fall of correctness (`reward_shift`'s), which no component "
    "comes to dominate",
}


#: Why a detector raises more false alarms than its share of the budget on the clean
#: controls: a note in the report whenever the numbers show it.
CLEAN_EXPLANATIONS: dict[str, str] = {
    "reward_shift": "its CUSUM runs on means of 8 consecutive rewards and takes them as "
    "independent; the episodes of a group (one task; task difficulty has a logit sd of 1.8 "
    "in `math`) are interleaved with the neighbouring groups over two or three batches, so "
    "consecutive batch means are correlated and the statistic drifts further than its "
    "calibration assumes (docs/detectors.md measured groups aligned with the batches); worst "
    "on `grouped` (groups of 16 with an extra group effect)",
    "group_invariant": "a healthy group timed out short: its episodes straddled a pause of "
    "the stream longer than " + _GROUP_TIMEOUT,
}


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    quick: bool
    seed: int
    clean_seeds: int
    clean_events: int
    trials: int
    largest_only: bool
    horizon: int
    onsets: tuple[int, int]
    ms_trials: int
    kswin_trials: int
    ours_fa_samples: int
    ours_fa_tasks: int
    rate_fa_samples: int
    river_fa_samples: int
    kswin_fa_samples: int
    #: Detector ids to run (all when empty); see :func:`bank_config`.
    only: tuple[str, ...] = ()

    @classmethod
    def make(cls, quick: bool, seed: int, only: tuple[str, ...] = ()) -> Plan:
        if quick:
            return cls(True, seed, 1, 8_000, 10, True, 5000, (2000, 3000),
                       20, 3, 1_000_000, 2, 500_000, 200_000, 5_000, only)  # fmt: skip
        return cls(False, seed, 10, 50_000, 30, False, 5000, (2000, 5000),
                   200, 40, 100_000_000, 4, 10_000_000, 5_000_000, 200_000, only)  # fmt: skip


def bank_config(only: tuple[str, ...] = ()) -> BankConfig:
    """Every registered detector id at the default budget; with ``only``, just those ids,
    each with the budget it gets in the full bank."""
    full = BankConfig(enabled=tuple(DETECTORS))
    if not only:
        return full
    share = {"arl0": full.detector_arl0}
    overrides = {i: share for i in only if DETECTORS[i].budgeted}
    return BankConfig(arl0=full.arl0, enabled=only, overrides=overrides)


# --------------------------------------------------------------------------------------------
# work units (run in the worker processes)


def run_clean(spec: SegmentSpec, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Alarms of a fresh bank over one clean segment: ``(index, detector, severity)``."""
    bank = DetectorBank(bank_config(only))
    alarms = []
    n = 0
    for i, event in enumerate(events(generate(spec))):
        n += 1
        for alarm in bank.update(event):
            alarms.append((i, alarm.detector, alarm.severity))
    return {"events": n, "alarms": alarms}


def run_trial(spec: SegmentSpec, horizon: int, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """One fault trial: the target's delay (None: missed), its alarms before the onset, and
    the first post-onset alarm of every other detector up to the target's detection."""
    assert spec.fault is not None and spec.onset is not None
    target = FAULTS[spec.fault].detector
    onset = spec.onset
    bank = DetectorBank(bank_config(only))
    delay = None
    early = 0
    others: dict[str, int] = {}
    for i, event in enumerate(events(generate(spec))):
        if i >= onset + horizon:
            break
        for alarm in bank.update(event):
            if alarm.detector == target:
                if i < onset:
                    early += 1
                elif delay is None:
                    delay = i - onset
            elif i >= onset:
                others.setdefault(alarm.detector, i - onset)
        if delay is not None:
            break
    return {"delay": delay, "early": early, "others": others}


def _work(task: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any, float]:
    start = time.perf_counter()
    kind = task[0]
    result: Any
    if kind == "clean":
        result = run_clean(task[1], *task[2:])
    elif kind == "fault":
        result = run_trial(task[1], task[2], *task[3:])
    elif kind == "fa":
        result = ms.false_alarms(*task[1:])
    elif kind == "delay":
        result = ms.delays(*task[1:])
    else:
        raise ValueError(f"unknown task {kind!r}")
    return task, result, time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# the plan as tasks


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def clean_specs(plan: Plan) -> list[SegmentSpec]:
    return [
        SegmentSpec(control, env, plan.clean_events, _seed(plan.seed, "clean", control, env, k))
        for control in CONTROLS
        for env in ENVS
        for k in range(plan.clean_seeds)
    ]


def fault_specs(plan: Plan, fault: Fault, magnitude: float) -> list[SegmentSpec]:
    """The trials of one fault and magnitude: controls and environments in rotation."""
    controls = list(CONTROLS)
    specs = []
    for t in range(plan.trials):
        seed = _seed(plan.seed, fault.name, magnitude, t)
        onset = int(np.random.default_rng(seed).integers(*plan.onsets))
        env = fault.envs[t % len(fault.envs)]
        control = controls[t % len(controls)]
        specs.append(
            SegmentSpec(control, env, onset + plan.horizon, seed, fault.name, magnitude, onset)
        )
    return specs


def magnitudes(plan: Plan, fault: Fault) -> tuple[float, ...]:
    return fault.magnitudes[-1:] if plan.largest_only else fault.magnitudes


def mean_shift_tasks(plan: Plan) -> list[tuple[Any, ...]]:
    seed = plan.seed
    per = plan.ours_fa_samples // plan.ours_fa_tasks
    tasks: list[tuple[Any, ...]] = [
        ("fa", "ours", "normal", per, _seed(seed, "fa-ours", k)) for k in range(plan.ours_fa_tasks)
    ]
    tasks += [
        ("fa", "ours", "bernoulli", plan.rate_fa_samples, _seed(seed, "fa-ours-rate")),
        ("fa", "kswin", "normal", plan.kswin_fa_samples, _seed(seed, "fa-kswin")),
    ]
    for name in ("adwin", "page_hinkley"):
        tasks.append(("fa", name, "normal", plan.river_fa_samples, _seed(seed, "fa", name)))
    for name in ("adwin", "page_hinkley", "ddm", "hddm_a"):
        tasks.append(("fa", name, "bernoulli", plan.river_fa_samples, _seed(seed, "fa-r", name)))
    for shift in ms.SHIFTS:
        for name in ("ours", "adwin", "page_hinkley"):
            tasks.append(("delay", name, "normal", shift, plan.ms_trials, seed))
        tasks.append(("delay", "kswin", "normal", shift, plan.kswin_trials, seed, ms.KSWIN_ONSETS))
    for p1 in ms.RATE_P1:
        for name in ("ours", "adwin", "page_hinkley", "ddm", "hddm_a"):
            tasks.append(("delay", name, "bernoulli", p1, plan.ms_trials, seed))
    return tasks


def all_tasks(plan: Plan) -> list[tuple[Any, ...]]:
    only = plan.only
    tasks: list[tuple[Any, ...]] = [] if only else mean_shift_tasks(plan)
    tasks += [("clean", spec, only) for spec in clean_specs(plan)]
    for fault in FAULTS.values():
        if fault.detector not in (only or DETECTORS):
            continue
        for magnitude in magnitudes(plan, fault):
            specs = fault_specs(plan, fault, magnitude)
            tasks += [("fault", spec, plan.horizon, only) for spec in specs]
    return tasks


def _cost(task: tuple[Any, ...]) -> float:
    """Rough seconds, to hand out the long tasks first."""
    kind = task[0]
    if kind == "fa":
        return float(task[3]) * (180e-6 if task[1] == "kswin" else 0.4e-6)
    if kind == "delay":
        return float(task[4]) * (700 * 180e-6 if task[1] == "kswin" else 3500 * 0.4e-6)
    if kind == "clean":
        return float(task[1].events) * 10e-6
    return float(task[1].events) * 10e-6


def execute(
    tasks: Sequence[tuple[Any, ...]], workers: int, progress: Callable[[str], None]
) -> list[tuple[tuple[Any, ...], Any, float]]:
    ordered = sorted(tasks, key=_cost, reverse=True)
    results = []
    step = max(len(ordered) // 10, 1)
    if workers <= 1:
        iterator: Iterable[tuple[tuple[Any, ...], Any, float]] = map(_work, ordered)
        results = _collect(iterator, len(ordered), step, progress)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            iterator = pool.imap_unordered(_work, ordered, chunksize=1)
            results = _collect(iterator, len(ordered), step, progress)
    return results


def _collect(
    iterator: Iterable[tuple[tuple[Any, ...], Any, float]],
    total: int,
    step: int,
    progress: Callable[[str], None],
) -> list[tuple[tuple[Any, ...], Any, float]]:
    out = []
    for done, item in enumerate(iterator, 1):
        out.append(item)
        if done % step == 0 or done == total:
            progress(f"{done}/{total} tasks")
    return out


# --------------------------------------------------------------------------------------------
# summaries


def _r(x: float | None, digits: int = 3) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def poisson_upper95(count: int) -> float:
    """One-sided 95% upper bound of a Poisson mean given ``count`` (Wilson-Hilferty)."""
    c = count + 1.0
    return c * (1.0 - 1.0 / (9.0 * c) + 1.645 / (3.0 * math.sqrt(c))) ** 3


def delay_stats(delays: Sequence[int | None]) -> dict[str, Any]:
    found = [d for d in delays if d is not None]
    n = len(delays)
    return {
        "trials": n,
        "detected": len(found),
        "recall": _r(len(found) / n) if n else None,
        "miss_rate": _r(1.0 - len(found) / n) if n else None,
        "median_delay": _r(float(np.median(found)), 1) if found else None,
        "p90_delay": _r(float(np.percentile(found, 90)), 1) if found else None,
    }


def summarize_clean(
    plan: Plan, items: list[tuple[SegmentSpec, dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The clean section and per-detector false-alarm numbers."""
    events_total = sum(r["events"] for _, r in items)
    by_control: dict[str, Counter[str]] = defaultdict(Counter)
    per_detector: dict[str, Counter[str]] = defaultdict(Counter)
    per_detector_control: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for spec, r in items:
        by_control[spec.control]["events"] += r["events"]
        by_control[spec.control]["segments"] += 1
        for index, detector, severity in r["alarms"]:
            by_control[spec.control]["alarms"] += 1
            by_control[spec.control]["pages"] += severity == "page"
            per_detector[detector][severity] += 1
            per_detector_control[detector][spec.control] += 1
            if len(examples[detector]) < 5:
                example = {"control": spec.control, "env": spec.env, "seed": spec.seed}
                examples[detector].append({**example, "index": index, "severity": severity})
    alarms_total = sum(c["alarms"] for c in by_control.values())
    pages_total = sum(c["pages"] for c in by_control.values())
    clean = {
        "segments": len(items),
        "events_per_segment": plan.clean_events,
        "events": events_total,
        "envs": list(ENVS),
        "controls": {
            name: {
                "description": control.description,
                "segments": by_control[name]["segments"],
                "events": by_control[name]["events"],
                "alarms": by_control[name]["alarms"],
                "pages": by_control[name]["pages"],
                "pages_per_million": _r(
                    1e6 * by_control[name]["pages"] / max(by_control[name]["events"], 1)
                ),
            }
            for name, control in CONTROLS.items()
        },
        "alarms": alarms_total,
        "pages": pages_total,
        "alarms_per_million": _r(1e6 * alarms_total / max(events_total, 1)),
        "pages_per_million": _r(1e6 * pages_total / max(events_total, 1)),
        "pages_per_million_upper95": _r(1e6 * poisson_upper95(pages_total) / max(events_total, 1)),
        "measured_arl": _r(events_total / alarms_total, 0) if alarms_total else None,
    }
    detectors: dict[str, dict[str, Any]] = {}
    for detector_id in DETECTORS:
        counts = per_detector[detector_id]
        total = sum(counts.values())
        detectors[detector_id] = {
            "clean_events": events_total,
            "false_alarms": total,
            "false_alarms_by_severity": dict(sorted(counts.items())),
            "pages": counts["page"],
            "false_alarms_per_million": _r(1e6 * total / max(events_total, 1)),
            "false_alarms_per_million_upper95": _r(
                1e6 * poisson_upper95(total) / max(events_total, 1)
            ),
            "measured_arl": _r(events_total / total, 0) if total else None,
            "by_control": {c: per_detector_control[detector_id][c] for c in CONTROLS},
            "examples": examples[detector_id],
        }
    return clean, detectors


def summarize_faults(
    plan: Plan, items: list[tuple[SegmentSpec, dict[str, Any]]]
) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, float], list[tuple[SegmentSpec, dict[str, Any]]]] = defaultdict(list)
    for spec, r in items:
        assert spec.fault is not None
        grouped[(spec.fault, spec.magnitude)].append((spec, r))
    rows = []
    for fault in FAULTS.values():
        for magnitude in magnitudes(plan, fault):
            # in trial order (the workers finish them in any order)
            order = {spec: t for t, spec in enumerate(fault_specs(plan, fault, magnitude))}
            trials = sorted(grouped.get((fault.name, magnitude), []), key=lambda x: order[x[0]])
            row: dict[str, Any] = {
                "fault": fault.name,
                "detector": fault.detector,
                "implemented": fault.detector in DETECTORS,
                "magnitude": magnitude,
                "large": magnitude in fault.large,
                "meaning": fault.meaning,
                "envs": list(fault.envs),
            }
            if trials:
                row.update(delay_stats([r["delay"] for _, r in trials]))
                others: Counter[str] = Counter()
                for _, r in trials:
                    others.update(r["others"].keys())
                row["pre_onset_false_alarms"] = sum(r["early"] for _, r in trials)
                row["pre_onset_events"] = sum(s.onset or 0 for s, _ in trials)
                row["other_detectors"] = dict(sorted(others.items()))
                row["delays"] = [r["delay"] for _, r in trials]
                by_rate: dict[float, list[int | None]] = defaultdict(list)
                for spec, r in trials:
                    by_rate[EVENT_RATES[spec.seed % len(EVENT_RATES)]].append(r["delay"])
                row["recall_by_event_rate"] = {
                    str(rate): _r(sum(d is not None for d in ds) / len(ds))
                    for rate, ds in sorted(by_rate.items())
                }
                row["misses"] = [
                    {"control": s.control, "env": s.env, "seed": s.seed, "onset": s.onset}
                    for s, r in trials
                    if r["delay"] is None
                ][:5]
            rows.append(row)
    return rows


def detector_section(
    clean: dict[str, dict[str, Any]], fault_rows: list[dict[str, Any]], config: BankConfig
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    ids = list(FAILURE_MODE_IDS) + [i for i in DETECTORS if i not in FAILURE_MODE_IDS]
    for detector_id in ids:
        cls = DETECTORS.get(detector_id)
        entry: dict[str, Any] = {"implemented": cls is not None}
        if cls is not None:
            entry["severity"] = cls.severity
            entry["budgeted"] = cls.budgeted
            entry["arl0"] = config.detector_arl0 if cls.budgeted else None
            entry.update(clean[detector_id])
        else:
            entry.update(
                {key: None for key in ("clean_events", "false_alarms_per_million", "measured_arl")}
            )
        rows = [r for r in fault_rows if r["detector"] == detector_id]
        entry["faults"] = sorted({r["fault"] for r in rows})
        large = [d for r in rows if r["large"] and "delays" in r for d in r["delays"]]
        stats = (
            delay_stats(large)
            if large
            else dict.fromkeys(
                ("trials", "detected", "recall", "miss_rate", "median_delay", "p90_delay")
            )
        )
        entry.update(stats)
        entry["pre_onset_false_alarms"] = (
            sum(r.get("pre_onset_false_alarms", 0) for r in rows) if cls is not None else None
        )
        out[detector_id] = entry
    return out


def summarize_mean_shift(
    plan: Plan, results: dict[tuple[Any, ...], Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    seed = plan.seed
    fa: dict[tuple[str, str], list[int]] = defaultdict(list)
    fa_samples: dict[tuple[str, str], int] = defaultdict(int)
    for task, alarms in results.items():
        if task[0] == "fa":
            fa[(task[1], task[2])].append(alarms)
            fa_samples[(task[1], task[2])] += task[3]
    config = bank_config()
    configured = config.detector_arl0

    def rate(name: str, kind: str) -> tuple[int, int]:
        return sum(fa[(name, kind)]), fa_samples[(name, kind)]

    def row(base: dict[str, Any], name: str, kind: str, delays: list[int | None], early: int):
        alarms, samples = rate(name, kind)
        out = dict(base)
        out.update(
            {
                "detector": name,
                "false_alarms": alarms,
                "false_alarm_samples": samples,
                "false_alarms_per_million": _r(1e6 * alarms / samples) if samples else None,
                "false_alarm_source": "measured",
            }
        )
        out.update(delay_stats(delays))
        out["pre_onset_alarms"] = early
        return out

    oracle_info: dict[str, Any] = {"configured_arl0": configured}
    tables: dict[str, list[dict[str, Any]]] = {"normal": [], "bernoulli": []}
    for kind, changes in (("normal", ms.SHIFTS), ("bernoulli", ms.RATE_P1)):
        alarms, samples = rate("ours", kind)
        target_arl = samples / alarms if alarms else configured
        oracle_info[kind] = {
            "ours_false_alarms": alarms,
            "ours_samples": samples,
            "target_arl0": _r(target_arl, 0),
            "target_source": "measured"
            if alarms
            else "the configured budget: no false alarm measured",
            "thresholds": {},
        }
        for change in changes:
            if kind == "normal":
                base: dict[str, Any] = {"shift_sigma": change}
                llr = ms.gaussian_llr(change)
            else:
                sigma = math.sqrt(ms.RATE_P0 * (1.0 - ms.RATE_P0))
                base = {"p0": ms.RATE_P0, "p1": change,
                        "shift_sigma": _r((ms.RATE_P0 - change) / sigma)}  # fmt: skip
                llr = ms.bernoulli_llr(ms.RATE_P0, change)
            h = ms.oracle_threshold(llr, target_arl, seed, kind)
            info: dict[str, Any] = {"h_llr": _r(h)}
            if kind == "normal":
                info["h_siegmund"] = _r(ms.siegmund_threshold(change, target_arl))
            oracle_info[kind]["thresholds"][str(change)] = info
            streams = ms.trial_streams(kind, change, plan.ms_trials, seed)
            o_delays, o_early = ms.oracle_delays(streams, llr, h)
            orow = row(base, "oracle_cusum", kind, o_delays, o_early)
            orow.update(
                {
                    "false_alarms": None,
                    "false_alarm_samples": None,
                    "false_alarms_per_million": _r(1e6 / target_arl),
                    "false_alarm_source": "matched to ours (threshold by simulation)",
                }
            )
            names: tuple[str, ...] = ("ours", "adwin", "kswin", "page_hinkley")
            if kind == "bernoulli":
                names = ("ours", "adwin", "page_hinkley", "ddm", "hddm_a")
            for name in names:
                key = [t for t in results if t[0] == "delay" and t[1] == name and t[2] == kind
                       and t[3] == change]  # fmt: skip
                delays, early = results[key[0]]
                tables[kind].append(row(base, name, kind, delays, early))
                if name == "ours":
                    tables[kind].append(orow)
    for rows in tables.values():
        for r in rows:
            if r["detector"] == "kswin":
                r["note"] = (
                    f"{plan.kswin_trials} trials with onsets in {list(ms.KSWIN_ONSETS)} "
                    f"(about 200 µs per update); false alarms over {plan.kswin_fa_samples} samples"
                )
    return tables["normal"], tables["bernoulli"], oracle_info


def poisson_tail(count: int, mean: float) -> float:
    """P(X >= count) for X ~ Poisson(mean)."""
    term = math.exp(-mean)
    below = 0.0
    for k in range(count):
        below += term
        term *= mean / (k + 1)
    return max(1.0 - below, 0.0)


def over_budget(results: dict[str, Any]) -> dict[str, int]:
    """Detectors whose clean false alarms are significantly above their share of the budget
    (any false alarm of a detector without a budget)."""
    events = results["clean"]["events"]
    out = {}
    for detector_id, d in results["detectors"].items():
        if not d["implemented"] or not d["false_alarms"]:
            continue
        # an exact invariant (no budget) must never fire on a clean stream
        if not d["arl0"] or poisson_tail(d["false_alarms"], events / d["arl0"]) < 0.01:
            out[detector_id] = d["false_alarms"]
    return out


def _fmt_int(x: float) -> str:
    return f"{int(x):,}".replace(",", " ")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    detectors = results["detectors"]
    missing = [i for i, d in detectors.items() if not d["implemented"]]
    low = {
        i: d["recall"]
        for i, d in detectors.items()
        if d["implemented"] and d["recall"] is not None and d["recall"] < RECALL_TARGET
    }
    out.append(
        {
            "target": f"recall >= {RECALL_TARGET} per detector id at the large magnitudes",
            "met": not low and not missing,
            "detail": (f"below: {low}; " if low else "all implemented ids met it; ")
            + (f"not implemented: {missing}" if missing else "every id implemented"),
        }
    )
    clean = results["clean"]
    worst = max(clean["controls"].items(), key=lambda kv: kv[1]["pages_per_million"] or 0.0)
    limit = 1e6 / PAGE_BUDGET_EVENTS
    ok = (clean["pages_per_million"] or 0.0) <= limit and (
        worst[1]["pages_per_million"] or 0.0
    ) <= limit
    out.append(
        {
            "target": "at most 1 page per million clean events per segment, every control",
            "met": ok,
            "detail": f"{clean['pages']} pages in {_fmt_int(clean['events'])} events "
            f"({clean['pages_per_million']} per million); worst control {worst[0]} "
            f"({worst[1]['pages_per_million']} per million)",
        }
    )
    arl0 = results["budget"]["bank_arl0"]
    over = over_budget(results)
    out.append(
        {
            "target": "false alarms of every severity within the bank's budget (one per "
            f"{_fmt_int(arl0)} events per segment)",
            "met": (clean["alarms_per_million"] or 0.0) <= 1e6 / arl0,
            "detail": f"{clean['alarms']} alarms ({clean['alarms_per_million']} per million); "
            + (
                f"over their share (Poisson p < 0.01; any alarm of an invariant): {over}"
                if over
                else "no detector significantly over its share"
            ),
        }
    )
    rows = results["mean_shift"]
    if not rows:  # a run restricted to some detector ids (--only) has no mean-shift study
        return out
    by = {(r["shift_sigma"], r["detector"]): r for r in rows}
    ratio_detail, adwin_detail = [], []
    ratio_ok = adwin_ok = True
    for shift in ms.SHIFTS:
        ours = by[(shift, "ours")]["median_delay"]
        oracle = by[(shift, "oracle_cusum")]["median_delay"]
        adwin = by[(shift, "adwin")]["median_delay"]
        ratio = ours / oracle if ours is not None and oracle else None
        ratio_ok &= ratio is not None and ratio <= ORACLE_RATIO_TARGET
        ratio_detail.append(f"{shift} sd: {ours} vs {oracle} ({_r(ratio, 2)}x)")
        anchor = ADWIN_ANCHOR[shift]
        better = ours is not None and adwin is not None and ours < min(adwin, anchor)
        adwin_ok &= better
        adwin_detail.append(f"{shift} sd: {ours} vs ADWIN {adwin} here, {anchor} anchor")
    out.append(
        {
            "target": f"mean shifts: median delay within {ORACLE_RATIO_TARGET}x of the oracle "
            "CUSUM at the same false-alarm rate",
            "met": ratio_ok,
            "detail": "; ".join(ratio_detail),
        }
    )
    out.append(
        {
            "target": "mean shifts: median delay below ADWIN's defaults (79 / 47 / 15)",
            "met": adwin_ok,
            "detail": "; ".join(adwin_detail),
        }
    )
    return out


# --------------------------------------------------------------------------------------------
# the run


def run(
    quick: bool = False,
    seed: int = 0,
    workers: int = 2,
    command: str = "python -m bench.detection",
    progress: Callable[[str], None] | None = None,
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the benchmark and return the results (the JSON document); ``only`` restricts it
    to those detector ids (see the module docstring)."""
    say = progress or (lambda message: None)
    plan = Plan.make(quick, seed, only)
    started = datetime.now(UTC)
    wall = time.perf_counter()
    load = os.getloadavg()
    tasks = all_tasks(plan)
    say(f"{len(tasks)} tasks on {workers} worker(s); detectors: {', '.join(only or DETECTORS)}")
    done = execute(tasks, workers, say)
    cpu = sum(seconds for _, _, seconds in done)
    by_task = {task: result for task, result, _ in done}
    clean_items = [(t[1], r) for t, r in by_task.items() if t[0] == "clean"]
    fault_items = [(t[1], r) for t, r in by_task.items() if t[0] == "fault"]
    clean, clean_detectors = summarize_clean(plan, clean_items)
    fault_rows = summarize_faults(plan, fault_items)
    config = bank_config()
    mean_rows: list[dict[str, Any]] = []
    rate_rows: list[dict[str, Any]] = []
    oracle: dict[str, Any] = {}
    if not only:
        mean_rows, rate_rows, oracle = summarize_mean_shift(plan, by_task)
    results: dict[str, Any] = {
        "schema": 1,
        "command": command,
        "quick": quick,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(cpu, 1),
        "machine": {
            "cores": os.cpu_count(),
            "workers": workers,
            "load_average_at_start": [round(x, 2) for x in load],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "river": _version("river"),
        },
        "seeds": {"base": seed, "derivation": "crc32 of (base seed, scenario, index)"},
        "source": source_state(),
        "plan": asdict(plan),
        "budget": {
            "bank_arl0": config.arl0,
            "detector_arl0": config.detector_arl0,
            "enabled": list(config.enabled),
            "pages_per_million_target": 1e6 / PAGE_BUDGET_EVENTS,
            "recall_target": RECALL_TARGET,
        },
        "clean": clean,
        "detectors": detector_section(clean_detectors, fault_rows, config),
        "faults": fault_rows,
        "mean_shift": mean_rows,
        "rate_shift": rate_rows,
        "oracle": oracle,
    }
    results["targets"] = targets(results)
    results["not_implemented"] = [i for i in FAILURE_MODE_IDS if i not in DETECTORS]
    results["notes"] = notes(plan, results)
    return results


def notes(plan: Plan, results: dict[str, Any]) -> list[str]:
    """Method notes, and the known causes of the shortfalls that the numbers show."""
    cusum = ms.our_cusum()
    batches = math.ceil(cusum.threshold / (cusum.clip - cusum.k))
    out = [
        f"KSWIN (about 200 µs per update) ran {plan.kswin_trials} trials per shift with "
        f"onsets in {list(ms.KSWIN_ONSETS)}, and its false-alarm rate was measured on "
        f"{plan.kswin_fa_samples} samples; `KSWIN(seed=...)` is seeded per trial so that the "
        "run can be repeated, its parameters are otherwise the defaults.",
        f"`ours` decides at batch boundaries (batches of {cusum.batch_size}) and clips a "
        f"standardized batch mean at {cusum.clip:g}: a 2 sd shift is "
        f"{2 * math.sqrt(cusum.batch_size):.1f} sd of a batch mean, so each batch adds at most "
        f"{cusum.clip - cusum.k:g} to the statistic and the threshold h = {cusum.threshold:.1f} "
        f"takes {batches} batches ({batches * cusum.batch_size} samples) however large the "
        "shift. Batching is what keeps the false-alarm budget on binary and group-correlated "
        "rewards (see docs/detectors.md).",
    ]
    over = over_budget(results)
    for detector_id, text in CLEAN_EXPLANATIONS.items():
        if detector_id in over:
            count = results["detectors"][detector_id]["false_alarms"]
            out.append(f"`{detector_id}` ({count} false alarms on the clean controls): {text}.")
    low: dict[str, list[str]] = defaultdict(list)
    for row in results["faults"]:
        if row.get("large") and row.get("recall") is not None and row["recall"] < RECALL_TARGET:
            low[row["fault"]].append(f"{row['recall']} at {row['magnitude']:g}")
    for fault, recalls in low.items():
        if fault in EXPLANATIONS:
            out.append(f"`{fault}` (recall {', '.join(recalls)}): {EXPLANATIONS[fault]}.")
    return out


def source_state() -> dict[str, Any]:
    """The commit the run started from and the detector files changed since (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "detectors", "bench")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted": sorted(line[3:] for line in changed.splitlines()),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def rerender(out: Path, doc: Path) -> None:
    """Recompute the derived parts (targets, notes) of stored results and rewrite the report:
    for a change of wording, without measuring again."""
    results = json.loads(out.read_text())
    stored = results["plan"]
    plan = Plan(
        **{**stored, "onsets": tuple(stored["onsets"]), "only": tuple(stored.get("only", ()))}
    )
    results["targets"] = targets(results)
    results["notes"] = notes(plan, results)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    doc.write_text(render(results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the fast subset (tests)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON path ({DEFAULT_OUT})")
    parser.add_argument("--doc", type=Path, default=None, help=f"markdown path ({DEFAULT_DOC})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2 here)")
    parser.add_argument(
        "--only",
        default="",
        metavar="ID[,ID...]",
        help="run only these detector ids on the clean controls and their own faults",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-derive targets and notes of an existing JSON and rewrite it and the report",
    )
    args = parser.parse_args(argv)
    only = tuple(i for i in args.only.split(",") if i)
    unknown = [i for i in only if i not in DETECTORS]
    if unknown:
        parser.error(f"--only: unknown detector ids {unknown}; known: {', '.join(DETECTORS)}")
    if args.render_only:
        rerender(args.out or DEFAULT_OUT, args.doc or DEFAULT_DOC)
        return
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.detection", *given])
    partial = args.quick or bool(only)
    out = args.out if args.out is not None or partial else DEFAULT_OUT
    doc = args.doc if args.doc is not None or partial else DEFAULT_DOC

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    results = run(args.quick, args.seed, args.workers, command, say, only)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        say(f"wrote {out}")
    if doc is not None:
        doc.write_text(render(json.loads(json.dumps(results))))
        say(f"wrote {doc}")
    for target in results["targets"]:
        print(f"{'met' if target['met'] else 'NOT MET'}: {target['target']} ({target['detail']})")


if __name__ == "__main__":
    main()
