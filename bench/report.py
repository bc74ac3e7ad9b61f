"""The markdown report of the detection benchmark, rendered from its JSON results only.

``docs/detection-benchmark.md`` is ``render(json.load(open("bench/results/detection.json")))``;
the regression test checks that the committed pair agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["render"]


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 100:
            return f"{int(value):,}".replace(",", " ")
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |"
              for r in rows]  # fmt: skip
    return [*lines, ""]


def _detectors(results: dict[str, Any]) -> list[str]:
    rows = []
    for detector_id, d in results["detectors"].items():
        if not d["implemented"]:
            rows.append([f"`{detector_id}`", "not implemented", *["-"] * 8])
            continue
        arl = d["measured_arl"]
        budget = d["arl0"]
        run_length = f"{_fmt(arl) if arl else '> ' + _fmt(d['clean_events'])}"
        run_length += f" / {_fmt(budget)}" if budget else " / no budget"
        rows.append(
            [
                f"`{detector_id}`",
                d["severity"],
                d["false_alarms"],
                f"{_fmt(d['false_alarms_per_million'], 3)} "
                f"(≤ {_fmt(d['false_alarms_per_million_upper95'], 3)})",
                run_length,
                d["trials"],
                _fmt(d["recall"]),
                _fmt(d["median_delay"], 1),
                _fmt(d["p90_delay"], 1),
                _fmt(d["pre_onset_false_alarms"]),
            ]
        )
    header = [
        "detector id",
        "severity",
        "false alarms",
        "per million (95% upper)",
        "events per false alarm / budget",
        "fault trials (large)",
        "recall",
        "median delay",
        "p90 delay",
        "alarms before onset",
    ]
    return _table(header, rows)


def _controls(results: dict[str, Any]) -> list[str]:
    clean = results["clean"]
    rows = [
        [
            f"`{name}`",
            c["description"],
            c["segments"],
            c["events"],
            c["alarms"],
            c["pages"],
            _fmt(c["pages_per_million"], 3),
        ]
        for name, c in clean["controls"].items()
    ]
    rows.append(
        ["all", "", clean["segments"], clean["events"], clean["alarms"], clean["pages"],
         f"{_fmt(clean['pages_per_million'], 3)} (≤ {_fmt(clean['pages_per_million_upper95'], 3)})"]
    )  # fmt: skip
    header = ["control", "what it adds", "segments", "events", "alarms", "pages", "pages / million"]
    lines = _table(header, rows)
    controls = list(clean["controls"])
    matrix = [
        [f"`{i}`", *[d["by_control"][c] for c in controls]]
        for i, d in results["detectors"].items()
        if d["implemented"]
    ]
    lines += ["False alarms (all severities) per detector and control:", ""]
    lines += _table(["detector id", *[f"`{c}`" for c in controls]], matrix)
    return lines


def _faults(results: dict[str, Any]) -> list[str]:
    rows = []
    for r in results["faults"]:
        if not r["implemented"] or "trials" not in r:
            rows.append([f"`{r['fault']}`", f"`{r['detector']}`", _fmt(r["magnitude"], 3),
                         _fmt(r["large"]), "not implemented", *["-"] * 5])  # fmt: skip
            continue
        others = ", ".join(f"{k} {v}" for k, v in r["other_detectors"].items()) or "-"
        rows.append(
            [
                f"`{r['fault']}`",
                f"`{r['detector']}`",
                _fmt(r["magnitude"], 3),
                _fmt(r["large"]),
                r["trials"],
                _fmt(r["recall"]),
                _fmt(r["median_delay"], 1),
                _fmt(r["p90_delay"], 1),
                r["pre_onset_false_alarms"],
                others,
            ]
        )
    header = ["fault", "detector id", "magnitude", "large", "trials", "recall", "median delay",
              "p90 delay", "target alarms before onset", "other detectors (trials)"]  # fmt: skip
    lines = _table(header, rows)
    lines += ["What the magnitudes mean:", ""]
    seen = set()
    for r in results["faults"]:
        if r["fault"] not in seen:
            seen.add(r["fault"])
            envs = ", ".join(r["envs"])
            lines.append(f"- `{r['fault']}` ({envs}): {r['meaning']}")
    return [*lines, ""]


def _shift_table(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    body = [
        [
            *[_fmt(r[k], 2) for k in keys],
            f"`{r['detector']}`",
            _fmt(r["false_alarms_per_million"], 3),
            r["false_alarm_source"],
            r["trials"],
            _fmt(r["median_delay"], 1),
            _fmt(r["p90_delay"], 1),
            _fmt(r["miss_rate"]),
            r["pre_onset_alarms"],
        ]
        for r in rows
    ]
    header = [*keys, "detector", "false alarms / million", "false-alarm rate", "trials",
              "median delay", "p90 delay", "miss rate", "alarms before onset"]  # fmt: skip
    return _table(header, body)


def _mean_shift(results: dict[str, Any]) -> list[str]:
    oracle = results["oracle"]
    normal = oracle["normal"]
    lines = ["## Mean shifts", ""]
    lines.append(
        "N(0, 1) samples whose mean steps up by `shift_sigma` standard deviations at a random "
        "onset. `ours` is the CUSUM inside `reward_shift` (default parameters, batches of 8) at "
        f"its share of the bank's budget ({_fmt(oracle['configured_arl0'])} samples between "
        f"false alarms); on {_fmt(normal['ours_samples'])} clean samples it raised "
        f"{normal['ours_false_alarms']} false alarms. The oracle CUSUM knows both means "
        f"(`k = shift / 2`) and is thresholded to a run length of "
        f"{_fmt(normal['target_arl0'])} samples ({normal['target_source']}). river's detectors "
        "run with their default parameters; their false-alarm rates are measured on the same "
        "kind of clean stream."
    )
    lines.append("")
    lines += _shift_table(results["mean_shift"], ["shift_sigma"])
    thresholds = ", ".join(
        f"{k} sd: h = {v['h_llr']} (Siegmund {v.get('h_siegmund')})"
        for k, v in normal["thresholds"].items()
    )
    lines += [f"Oracle thresholds in log-likelihood units: {thresholds}.", ""]
    rate = oracle["bernoulli"]
    lines += ["## Rate shifts", ""]
    lines.append(
        f"Bernoulli successes whose probability drops from `p0` to `p1` (`shift_sigma` is the "
        f"drop in standard deviations of the pre-change outcome). DDM and HDDM_A watch the "
        f"failure indicator. `ours` raised {rate['ours_false_alarms']} false alarms on "
        f"{_fmt(rate['ours_samples'])} clean samples; the oracle is thresholded to "
        f"{_fmt(rate['target_arl0'])} samples ({rate['target_source']})."
    )
    lines.append("")
    lines += _shift_table(results["rate_shift"], ["p0", "p1", "shift_sigma"])
    return lines


def render(results: dict[str, Any]) -> str:
    """The markdown report for the results of one run."""
    machine = results["machine"]
    budget = results["budget"]
    clean = results["clean"]
    lines = [
        "# Detection benchmark",
        "",
        "Generated by `bench/detection.py` from `bench/results/detection.json`; "
        "regenerate both with `make bench-detect`, never edit by hand.",
        "",
        f"- command: `{results['command']}`{' (quick subset)' if results['quick'] else ''}",
        f"- run: {results['started']} to {results['finished']}, {results['wall_seconds']} s "
        f"wall, {results['cpu_seconds']} s in the workers; {machine['cores']} cores, "
        f"{machine['workers']} worker processes; Python {machine['python']}, "
        f"river {machine['river']}, numpy {machine['numpy']}",
        f"- seed {results['seeds']['base']}; budget: the bank of every segment runs "
        f"{len(budget['enabled'])} detector ids at `arl0 = {_fmt(budget['bank_arl0'])}`, "
        f"{_fmt(budget['detector_arl0'])} events per false alarm for each budgeted detector",
        f"- clean controls: {clean['segments']} segments of {_fmt(clean['events_per_segment'])} "
        f"events ({_fmt(clean['events'])} events) over environments "
        f"{', '.join(clean['envs'])}",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "met", "measured"],
        [[t["target"], "yes" if t["met"] else "**no**", t["detail"]] for t in results["targets"]],
    )
    if results["not_implemented"]:
        ids = ", ".join(f"`{i}`" for i in results["not_implemented"])
        lines += [f"Not implemented at the time of the run (no numbers): {ids}.", ""]
    lines += ["## Detectors", ""]
    lines.append(
        "False alarms on the clean controls, all severities (the `info` alarms of a rise "
        "included); recall and delays over the trials of the large magnitudes of the faults "
        "that target the id. A delay is the number of events of the segment from the onset "
        "to the first alarm of the target id; a trial without one within "
        f"{_fmt(results['plan']['horizon'])} events is a miss."
    )
    lines.append("")
    lines += _detectors(results)
    lines += ["## Clean controls", ""]
    lines += _controls(results)
    lines += ["## Faults", ""]
    lines.append(
        f"{results['plan']['trials']} trials per fault and magnitude, onsets uniform in "
        f"{results['plan']['onsets']}, controls and environments in rotation. 'Other "
        "detectors' counts the trials in which another id alarmed after the onset and before "
        "the target did."
    )
    lines.append("")
    lines += _faults(results)
    lines += _mean_shift(results)
    if results.get("notes"):
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in results["notes"]]
        lines.append("")
    lines += _METHOD
    return "\n".join(lines).rstrip() + "\n"


_METHOD = [
    "## How the streams are made",
    "",
    "`bench/scenarios.py` draws each segment with numpy and yields `monitor.events."
    "RolloutEvent` objects, the type the daemon hands to the detectors. Every segment, clean "
    "or not, has: GRPO groups (8 episodes, 16 in `grouped`) of one task at one policy "
    "version, emitted interleaved with the neighbouring groups; 2 048 tasks with a fixed "
    "difficulty (so some groups are all-0 or all-1); three environment kinds (`math`: "
    "0.9 x correct + 0.1 x format; `code`: share of 4-20 unit tests passed; `tool`: 0.8 x a "
    "continuous task score + 0.2 x efficiency, with turns and tool calls, 3% of calls "
    "failing); log-normal completion lengths with 0.5-1% cut at the token limit (scored "
    "0, every component 0); 0.6-0.9% failed episodes (`reward: null`, `error` set) and 0.05% "
    "aborted; a block of 64 eval episodes every 2 500; 15% of training answers are one of two "
    "canonical answers of their task, which a deterministic verifier always scores the same; "
    "policy versions that advance every 11 groups with the trainer 0-2 versions ahead; "
    "event rates of 0.5, 5 or 50 per second by seed, in bursts. A faulted stream equals the "
    "clean stream of the same seed before the onset.",
    "",
    "Counting: a false alarm is any alarm on a clean segment (warm-ups included in the "
    "events); 'per million' divides by all clean events of all segments, i.e. it is the rate "
    "per segment. The 95% upper bound is the one-sided Poisson bound. In a fault trial the "
    "delay counts the events of the segment from the onset to the first alarm of the target "
    "id at or after it; alarms of the target before the onset are reported as false alarms.",
    "",
]
