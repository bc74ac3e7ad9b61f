"""From raw measurements to the numbers of ``bench/results/throughput.json``."""

from __future__ import annotations

import glob
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

Row = dict[str, Any]

#: Configurations whose events/s are reported, with the key of the top-level summary.
THROUGHPUT_KEYS = {
    "ceiling": "ceiling_events_per_s",
    "ceiling_default": "ceiling_default_events_per_s",
    "e2e": "e2e_events_per_s",
    "e2e_default_prefetch": "e2e_default_prefetch_events_per_s",
    "e2e_no_checkpoint": "e2e_no_checkpoint_events_per_s",
    "e2e_kafka_python": "e2e_kafka_python_events_per_s",
    "naive": "naive_events_per_s",
    "ceiling_large": "ceiling_events_per_s_large",
    "e2e_large": "e2e_events_per_s_large",
}
#: Largest deviation of the middle RSS point from the line through the outer ones, as a share
#: of the growth between them, that still counts as linear.
LINEAR_TOLERANCE = 0.10


def environment(repo_dir: Path) -> dict[str, Any]:
    """Cores, CPU model, platform and the versions of what is measured."""
    import confluent_kafka

    versions = {"python": platform.python_version()}
    for dist in (
        "rollout-monitor",
        "confluent-kafka",
        "kafka-python",
        "msgspec",
        "river",
        "prometheus-client",
        "numpy",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    libs = os.environ.get("KAFKA_LIBS_DIR", str(repo_dir / ".stack" / "kafka" / "libs"))
    jars = sorted(glob.glob(os.path.join(libs, "kafka_2.13-*.jar")))
    versions["kafka_broker"] = (
        Path(jars[-1]).stem.removeprefix("kafka_2.13-") if jars else "unknown"
    )
    import detectors

    versions["mypyc"] = metadata.version("mypy") if detectors.COMPILED else "not compiled"
    return {
        "git": _git_state(repo_dir),
        "detectors_compiled": detectors.COMPILED,
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _git_state(repo_dir: Path) -> dict[str, Any]:
    """The commit measured and whether the working tree had changes (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or None, "modified_files": len(status.splitlines())}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _by_round(rows: list[Row], name: str) -> dict[int, Row]:
    return {r["round"]: r for r in rows if r["name"] == name}


def _median_of(rows: list[Row], name: str, get: Callable[[Row], float]) -> float | None:
    return _median([get(r) for r in rows if r["name"] == name])


def _ratio(rows: list[Row], name: str, base: str) -> float | None:
    """Median over rounds of ``name``'s events/s over ``base``'s in the same round."""
    top, bottom = _by_round(rows, name), _by_round(rows, base)
    return _median([top[i]["events_per_s"] / bottom[i]["events_per_s"] for i in top if i in bottom])


def _state_scaling(state: list[Row]) -> dict[str, Any] | None:
    """Pipeline state against segments, and how far the middle points are from a line."""
    if len(state) < 2:
        return None
    points = sorted((r["segments_seen"], r["extra"]["state_mb"]) for r in state)
    (s0, m0), (s1, m1) = points[0], points[-1]
    slope = (m1 - m0) / (s1 - s0)
    deviations = [abs(m - (m0 + slope * (n - s0))) / abs(m1 - m0) for n, m in points[1:-1]]
    worst = max(deviations) if deviations else None
    return {
        "events_per_segment": state[0]["events"] // state[0]["segments_seen"],
        "points": [{"segments": n, "state_mb": m} for n, m in points],
        "slope_kb_per_segment": 1024 * slope,
        "max_deviation_share": worst,
        "linear": worst is not None and worst <= LINEAR_TOLERANCE,
    }


def _latency(runs: list[Row]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        return _median([r[key] for r in runs])

    return {
        "latency_p50_s": med("p50_s"),
        "latency_p99_s": med("p99_s"),
        "latency_max_s": med("max_s"),
        "latency_lower_bound": any(r["lower_bound"] for r in runs),
        "latency_rate": runs[0]["rate"] if runs else None,
        "latency_seconds": runs[0]["seconds"] if runs else None,
        "latency_achieved_rate": med("achieved_rate"),
        "latency_sample_interval_ms": med("sample_interval_ms"),
        "latency_rss_peak_mb": med("rss_peak_mb"),
    }


def _targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    def target(name: str, value: Any, goal: str, met: bool | None) -> dict[str, Any]:
        return {"target": name, "value": value, "goal": goal, "met": met}

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    scaling = s.get("state_scaling")
    steady = (s["latency_rate"] or 0) >= 50_000 and (s["latency_achieved_rate"] or 0) >= 47_500
    return [
        target(
            "e2e / ceiling (one core)",
            s["e2e_ratio_to_ceiling"],
            ">= 0.30",
            at_least(s["e2e_ratio_to_ceiling"], 0.30),
        ),
        target(
            "e2e / naive",
            s["e2e_speedup_over_naive"],
            ">= 10",
            at_least(s["e2e_speedup_over_naive"], 10.0),
        ),
        target(
            f"peak RSS at {s['segments']:,} segments (MB)",
            s["rss_mb_1k_segments"],
            "<= 150",
            at_most(s["rss_mb_1k_segments"], 150.0),
        ),
        target(
            "segment state linear in segments (max deviation share)",
            scaling["max_deviation_share"] if scaling else None,
            f"<= {LINEAR_TOLERANCE}",
            scaling["linear"] if scaling else None,
        ),
        target(
            f"scrape at {s['segments']:,} segments (ms)",
            s["scrape_ms_1k_segments"],
            "<= 50",
            at_most(s["scrape_ms_1k_segments"], 50.0),
        ),
        target(
            f"latency p99 at {s['latency_rate']:,.0f} events/s (s)",
            s["latency_p99_s"],
            "<= 1 at 50,000 events/s",
            # A daemon that fell behind has an unbounded latency at that rate.
            (not s["latency_lower_bound"] and at_most(s["latency_p99_s"], 1.0)) if steady else None,
        ),
    ]


def _cpu_us_per_event(row: Row) -> float | None:
    """CPU time of the measured process per event counted, in microseconds."""
    counted = row["events_per_s"] * row["seconds"]
    cpu = row.get("cpu_seconds") or 0.0
    return 1e6 * cpu / counted if counted > 0 and cpu > 0 else None


def summarise(
    info: dict[str, Any], rows: list[Row], latency_runs: list[Row], state: list[Row]
) -> dict[str, Any]:
    """The results document: settings, medians, ratios, targets, and every raw measurement."""
    s: dict[str, Any] = dict(info)
    for name, key in THROUGHPUT_KEYS.items():
        s[key] = _median_of(rows, name, lambda r: r["events_per_s"])
    s["runs_by_configuration"] = {
        name: {
            "events_measured": _median_of(rows, name, lambda r: r["events"]),
            "all_complete": all(r["complete"] for r in rows if r["name"] == name),
            "segments_seen": _median_of(rows, name, lambda r: r["segments_seen"]),
        }
        for name in THROUGHPUT_KEYS
        if any(r["name"] == name for r in rows)
    }
    for name in ("e2e", "e2e_default_prefetch", "e2e_no_checkpoint", "e2e_kafka_python", "naive",
                 "ceiling_default"):  # fmt: skip
        s[f"{name}_ratio_to_ceiling"] = _ratio(rows, name, "ceiling")
    s["e2e_ratio_to_ceiling_large"] = _ratio(rows, "e2e_large", "ceiling_large")
    s["e2e_speedup_over_naive"] = _ratio(rows, "e2e", "naive")
    for suffix, name in (("1k_segments", "e2e"), ("10k_segments", "e2e_large")):
        s[f"rss_mb_{suffix}"] = _median_of(rows, name, lambda r: r["rss_peak_mb"])
        s[f"rss_mb_before_scrape_{suffix}"] = _median_of(
            rows, name, lambda r: r["extra"]["rss_after_consume_mb"]
        )
        for kind in ("scrape_ms", "scrape_cold_ms", "scrape_idle_ms"):
            values = [r["extra"].get(kind) for r in rows if r["name"] == name]
            s[f"{kind}_{suffix}"] = _median([v for v in values if v is not None])
        s[f"scrape_bytes_{suffix}"] = _median_of(rows, name, lambda r: r["extra"]["scrape_bytes"])
        s[f"scrape_series_{suffix}"] = _median_of(rows, name, lambda r: r["extra"]["scrape_series"])
    cpu = {
        name: [_cpu_us_per_event(r) for r in rows if r["name"] == name] for name in THROUGHPUT_KEYS
    }
    s["cpu_us_per_event"] = {
        name: _median([v for v in values if v is not None])
        for name, values in cpu.items()
        if any(v is not None for v in values)
    }
    s["rss_mb_ceiling"] = _median_of(rows, "ceiling", lambda r: r["rss_peak_mb"])
    s["rss_mb_e2e_default_prefetch"] = _median_of(
        rows, "e2e_default_prefetch", lambda r: r["rss_peak_mb"]
    )
    s["rss_mb_naive"] = _median_of(rows, "naive", lambda r: r["rss_peak_mb"])
    small, large = s["rss_mb_1k_segments"], s["rss_mb_10k_segments"]
    seen = s["runs_by_configuration"]
    seen_small = seen.get("e2e", {}).get("segments_seen")
    seen_large = seen.get("e2e_large", {}).get("segments_seen")
    s["rss_growth_mb_per_1k_segments"] = (
        1000 * (large - small) / (seen_large - seen_small)
        if None not in (small, large, seen_small, seen_large) and seen_large != seen_small
        else None
    )
    s["state_scaling"] = _state_scaling(state)
    s.update(_latency(latency_runs))
    loads = [r["load_start"] for r in rows] + [r["load_end"] for r in rows]
    s["load_average_1m_median"] = _median(loads)
    s["load_average_1m_max"] = max(loads) if loads else None
    s["targets"] = _targets(s)
    s["measurements"] = rows
    s["latency_runs"] = latency_runs
    s["state_runs"] = state
    return s
