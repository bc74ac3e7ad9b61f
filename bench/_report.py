"""``docs/throughput.md``: the results of ``bench/results/throughput.json`` as tables."""

from __future__ import annotations

from typing import Any

CONFIGURATIONS = (
    ("ceiling", "ceiling: confluent-kafka batched consume + msgspec typed decode"),
    ("ceiling_default", "ceiling with librdkafka's default prefetch"),
    ("e2e", "rollout-monitor daemon, confluent-kafka backend"),
    ("e2e_default_prefetch", "daemon, confluent-kafka, librdkafka's default prefetch"),
    ("e2e_no_checkpoint", "daemon, confluent-kafka, checkpoints off"),
    ("e2e_kafka_python", "daemon, kafka-python backend"),
    ("naive", "naive: kafka-python, json.loads, river, prometheus_client per event"),
)

METHOD = """\
## Method

- Every configuration runs in a fresh process with its own consumer group over the same
  preloaded topic; peak RSS is that process's `VmHWM`. Rounds interleave the configurations,
  and ratios are taken against the ceiling of the same round before the median is taken.
- Events per second count from the first consumed event; group join and start-up are left
  out. A measurement ends after all the topic's events (the kafka-python configurations: a
  prefix of them) or after the time cap, whichever comes first; "events measured" says
  which.
- The ceiling consumer and the daemon run with a tuned prefetch (`fetch.queue.backoff.ms=10`,
  `queued.max.messages.kbytes=16384`, the daemon's defaults). With librdkafka's defaults
  (1000 ms, 65536 KB) the fetcher pauses for a second whenever the local queue is full, which
  caps any consumer that spends more than about a microsecond per message, and the queue
  holds up to 64 MiB.
- CPU time is the measured process's (all threads, `time.process_time`) from its first
  event to its last; on a shared machine it is steadier than events per wall-clock second.
- e2e runs `monitor.daemon.Daemon.run()` itself (source, pipeline with the default detector
  set, dead-letter producer, metrics registry, HTTP server, checkpoints in a temporary
  directory, offset commits); Alertmanager delivery is off. A watcher thread reads the
  pipeline's processed counter (what `rollout_monitor_events_processed_total` exports) every
  10 ms. At the end it holds back further batches (the source returns empty ones, as on a
  drained topic), scrapes `/metrics` over HTTP from the idle daemon and stops it. The
  scrapes are told apart by how many segments the render read afresh: the first one ("cold":
  it also builds each segment's kept text), later ones that read every segment again (the
  scrape time, their median: what a scrape costs when every segment changed, as on a busy
  daemon) and the last, which reuses every segment's text ("idle"). Of those that read every
  segment, one follows an empty batch and the others each follow fresh events fed through
  the held-back source in batches of the daemon's size until every segment got some (one
  batch of 20,000 at 1,000 segments; at 10,000, several), which the daemon processes as any
  others (its state is then out of the CPU caches, as after real batches). The benchmark
  makes those events inside the daemon's process, which the peak RSS after the scrapes
  includes.
- Latency: the daemon consumes a fresh one-partition topic while the benchmark produces at a
  steady rate with `ts` = produce wall time, from the other core(s) than the daemon's (the
  broker, not pinned, serves both); the latency of the k-th event is the first time
  the processed counter reached k minus the time of its `produce` call (produce to exported
  counter). The first seconds (warm-up) are left out. When the daemon falls behind, the run
  ends shortly after the last produce and unprocessed events count with their latency so
  far, so the percentiles are lower bounds (marked >=).
- Segment state: in a fresh process per point and without Kafka, a pipeline with the default
  settings (duplicate window off) is fed the same number of events per segment; the growth
  of its RSS is the state.
- Topics are uncompressed: kafka-python cannot read lz4 batches without the `lz4` package.
"""


def _num(value: Any, spec: str, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{format(value, spec)}{unit}"


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("yes" if met else "**no**")


def _setup(r: dict[str, Any]) -> list[str]:
    v = r["versions"]
    pinned = "not pinned" if r["pinned_cpu"] is None else f"pinned to core {r['pinned_cpu']}"
    git = r["git"]
    tree = f"commit {(git['commit'] or 'unknown')[:12]}" + (
        f" with {git['modified_files']} modified files" if git["modified_files"] else ""
    )
    return [
        "## Setup",
        "",
        f"- Machine: {r['cores']} cores ({r['cpu_model']}), measured processes {pinned}; "
        f"shared with other work: 1-minute load average {r['load_average_1m_median']:.2f} "
        f"(median over measurements), {r['load_average_1m_max']:.2f} at most.",
        f"- Broker: Apache Kafka {v['kafka_broker']} at {r['bootstrap']}, "
        f"{r['partitions']} partitions, compression {r['compression']}.",
        f"- Data: {r['events']:,} schema-v1 events over {r['segments']:,} segments, and as many "
        f"over {r['segments_large']:,} segments; {r['runs']} round(s), medians reported. "
        f"Each measurement is capped at {r['max_seconds']:.0f} s; the kafka-python "
        f"configurations read at most the first {r['slow_events']:,} events.",
        f"- Code: {tree}; checkpoints {'on (default store)' if r['checkpoints'] else 'absent'}; "
        + (
            f"detectors and per-batch path compiled with mypyc {v['mypyc']}."
            if r.get("detectors_compiled")
            else "detectors run as Python (not compiled)."
        ),
        f"- Versions: Python {v['python']}, rollout-monitor {v['rollout-monitor']}, "
        f"confluent-kafka {v['confluent-kafka']} (librdkafka {v['librdkafka']}), "
        f"kafka-python {v['kafka-python']}, msgspec {v['msgspec']}, river {v['river']}, "
        f"prometheus-client {v['prometheus-client']}, numpy {v['numpy']}.",
        f"- Wall time of the benchmark: {r['wall_time_s']:.0f} s"
        + (" (quick mode)." if r["quick"] else "."),
        "",
    ]


def _measured(r: dict[str, Any], name: str) -> str:
    info = r["runs_by_configuration"].get(name)
    if info is None:
        return "n/a"
    events = f"{info['events_measured']:,.0f}"
    return events if info["all_complete"] else f"{events} (time cap)"


def _throughput(r: dict[str, Any]) -> list[str]:
    lines = [
        f"## Throughput at {r['segments']:,} segments",
        "",
        "| configuration | events/s (median) | ratio to ceiling (median of rounds) "
        "| events measured |",
        "|---|---:|---:|---:|",
    ]
    for name, label in CONFIGURATIONS:
        rate = r.get(f"{name}_events_per_s")
        if rate is None:
            continue
        ratio = 1.0 if name == "ceiling" else r[f"{name}_ratio_to_ceiling"]
        lines.append(f"| {label} | {rate:,.0f} | {_num(ratio, '.3f')} | {_measured(r, name)} |")
    detectors = next(
        (m["extra"].get("detectors") for m in r["measurements"] if m["name"] == "e2e"), None
    )
    cpu = r.get("cpu_us_per_event") or {}
    if cpu:
        lines += [
            "",
            "CPU time per event (process, all threads; median): "
            + ", ".join(
                f"`{name}` {_num(value, '.2f', ' µs')}"
                for name, value in cpu.items()
                if value is not None
            )
            + ".",
        ]
    lines += [
        "",
        f"e2e over naive: {_num(r['e2e_speedup_over_naive'], '.1f', 'x')} (median of the "
        "per-round ratios). Detectors per segment: "
        + (", ".join(f"`{d}`" for d in detectors) if detectors else "n/a")
        + ".",
        "",
        f"At {r['segments_large']:,} segments: ceiling "
        f"{_num(r['ceiling_events_per_s_large'], ',.0f')} events/s, e2e "
        f"{_num(r['e2e_events_per_s_large'], ',.0f')} events/s "
        f"(events measured: {_measured(r, 'e2e_large')}), ratio "
        f"{_num(r['e2e_ratio_to_ceiling_large'], '.3f')}.",
        "",
    ]
    return lines


def _latency(r: dict[str, Any]) -> list[str]:
    bound = ">= " if r["latency_lower_bound"] else ""
    return [
        "## Event-to-metric latency",
        "",
        "| rate (events/s) | achieved | duration | p50 | p99 | max | counter read every |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {_num(r['latency_rate'], ',.0f')} | {_num(r['latency_achieved_rate'], ',.0f')} "
        f"| {_num(r['latency_seconds'], '.0f', ' s')} "
        f"| {bound}{_num(r['latency_p50_s'], '.3f', ' s')} "
        f"| {bound}{_num(r['latency_p99_s'], '.3f', ' s')} "
        f"| {bound}{_num(r['latency_max_s'], '.3f', ' s')} "
        f"| {_num(r['latency_sample_interval_ms'], '.1f', ' ms')} |",
        "",
    ]


def _memory(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Memory and /metrics",
        "",
        "| topic segments | segments held | peak RSS before the scrapes | peak RSS "
        "| scrape: every segment read | cold (first) | idle | scrape size | series |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for suffix, name, segments in (("1k_segments", "e2e", r["segments"]),
                                   ("10k_segments", "e2e_large", r["segments_large"])):  # fmt: skip
        size = r[f"scrape_bytes_{suffix}"]
        held = r["runs_by_configuration"].get(name, {}).get("segments_seen")
        lines.append(
            f"| {segments:,} | {_num(held, ',.0f')} "
            f"| {_num(r[f'rss_mb_before_scrape_{suffix}'], '.0f', ' MB')} "
            f"| {_num(r[f'rss_mb_{suffix}'], '.0f', ' MB')} "
            f"| {_num(r[f'scrape_ms_{suffix}'], '.1f', ' ms')} "
            f"| {_num(r.get(f'scrape_cold_ms_{suffix}'), '.1f', ' ms')} "
            f"| {_num(r.get(f'scrape_idle_ms_{suffix}'), '.1f', ' ms')} "
            f"| {_num(None if size is None else size / 1e6, '.2f', ' MB')} "
            f"| {_num(r[f'scrape_series_{suffix}'], ',.0f')} |"
        )
    lines += [
        "",
        f"Peak RSS grows by {_num(r['rss_growth_mb_per_1k_segments'], '.1f')} MB per 1,000 "
        "segments held between the two runs (which differ in events per segment too). Peak "
        f"RSS of the ceiling process: {_num(r['rss_mb_ceiling'], '.0f', ' MB')}; of the "
        "daemon with librdkafka's default prefetch: "
        f"{_num(r.get('rss_mb_e2e_default_prefetch'), '.0f', ' MB')}; of the "
        f"naive baseline: {_num(r['rss_mb_naive'], '.0f', ' MB')}.",
        "",
    ]
    scaling = r["state_scaling"]
    if scaling:
        lines += [
            f"Pipeline state at {scaling['events_per_segment']:,} events per segment:",
            "",
            "| segments | state |",
            "|---:|---:|",
            *(f"| {p['segments']:,} | {p['state_mb']:.0f} MB |" for p in scaling["points"]),
            "",
            f"Slope {scaling['slope_kb_per_segment']:.1f} KB per segment; the middle points are "
            f"at most {_num(scaling['max_deviation_share'], '.2%')} of the growth off the line "
            "through the outer ones.",
            "",
        ]
    return lines


def _targets(r: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for t in r["targets"]:
        lines.append(
            f"| {t['target']} | {t['goal']} | {_num(t['value'], '.3f')} | {_met(t['met'])} |"
        )
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    """The markdown page for ``results`` (the content of ``throughput.json``)."""
    lines = [
        "# Throughput benchmark",
        "",
        "Generated by `python -m bench.throughput` (`make bench`) from "
        "`bench/results/throughput.json`; regenerate rather than edit.",
        "",
        *_setup(results),
        *_throughput(results),
        *_latency(results),
        *_memory(results),
        *_targets(results),
        METHOD,
    ]
    return "\n".join(lines)
