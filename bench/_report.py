"""``docs/throughput.md``: the results of ``bench/results/throughput.json`` as tables."""

from __future__ import annotations

from typing import Any

CONFIGURATIONS = (
    ("ceiling", "ceiling: confluent-kafka batched consume + msgspec typed decode (tuned prefetch)"),
    ("ceiling_default", "ceiling with librdkafka's default prefetch"),
    ("e2e", "rollout-monitor daemon, confluent-kafka backend"),
    ("e2e_tuned", "rollout-monitor daemon, confluent-kafka, tuned prefetch"),
    ("e2e_kafka_python", "rollout-monitor daemon, kafka-python backend"),
    ("naive", "naive: kafka-python, json.loads, river, prometheus_client per event"),
)

METHOD = """\
## Method

- Every configuration runs in a fresh process with its own consumer group over the same
  preloaded topic; peak RSS is that process's `VmHWM`. Rounds interleave the configurations,
  and ratios are taken against the ceiling of the same round before the median is taken.
- Events per second count from the first consumed batch to the last event, so group join and
  start-up are excluded.
- e2e runs `monitor.daemon.Daemon.run()` itself (source, pipeline with the default detector
  set, dead-letter producer, metrics registry, HTTP server, offset commits); Alertmanager
  delivery is off. A watcher thread reads the pipeline's processed counter (the value
  `rollout_monitor_events_processed_total` exports) every 10 ms and stops the daemon after
  the last event; `/metrics` is then scraped over HTTP, five times (two in quick mode), and
  the median is reported.
- Tuned prefetch: `fetch.queue.backoff.ms=10`, `queued.max.messages.kbytes=16384`. With the
  defaults (1000 ms, 65536 KB) librdkafka stops fetching for a second whenever its local
  queue is full, which caps a consumer that spends more than about a microsecond per message.
- Latency: the daemon consumes a fresh one-partition topic while this process produces at a
  steady rate with `ts` = produce wall time; the latency of the k-th event is the first time
  the processed counter reached k minus the time of its `produce` call (produce to exported
  counter). The first seconds (warm-up) are left out.
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
    return [
        "## Setup",
        "",
        f"- Machine: {r['cores']} cores ({r['cpu_model']}), measured processes {pinned}; "
        f"shared with other work: 1-minute load average {r['load_average_1m_median']:.2f} "
        f"(median over measurements), {r['load_average_1m_max']:.2f} at most.",
        f"- Broker: Apache Kafka {v['kafka_broker']} at {r['bootstrap']}, "
        f"{r['partitions']} partitions, compression {r['compression']}.",
        f"- Data: {r['events']:,} schema-v1 events over {r['segments']:,} segments, and "
        f"{r['events']:,} over {r['segments_large']:,} segments; {r['runs']} round(s), "
        f"medians reported. The kafka-python configurations read the first "
        f"{r['slow_events']:,} events.",
        f"- Versions: Python {v['python']}, rollout-monitor {v['rollout-monitor']}, "
        f"confluent-kafka {v['confluent-kafka']} (librdkafka {v['librdkafka']}), "
        f"kafka-python {v['kafka-python']}, msgspec {v['msgspec']}, river {v['river']}, "
        f"prometheus-client {v['prometheus-client']}, numpy {v['numpy']}.",
        f"- Wall time of the benchmark: {r['wall_time_s']:.0f} s"
        + (" (quick mode)." if r["quick"] else "."),
        "",
    ]


def _throughput(r: dict[str, Any]) -> list[str]:
    lines = [
        f"## Throughput at {r['segments']:,} segments",
        "",
        "| configuration | events/s (median) | ratio to ceiling |",
        "|---|---:|---:|",
    ]
    for name, label in CONFIGURATIONS:
        rate = r[f"{name}_events_per_s"]
        if rate is None:
            continue
        ratio = 1.0 if name == "ceiling" else r[f"{name}_ratio_to_ceiling"]
        lines.append(f"| {label} | {rate:,.0f} | {_num(ratio, '.3f')} |")
    lines += [
        "",
        f"e2e over naive: {_num(r['e2e_speedup_over_naive'], '.1f', 'x')} (median of the "
        "per-round ratios).",
        "",
        f"At {r['segments_large']:,} segments: ceiling "
        f"{_num(r['ceiling_events_per_s_large'], ',.0f')} events/s, e2e "
        f"{_num(r['e2e_events_per_s_large'], ',.0f')} events/s, ratio "
        f"{_num(r['e2e_ratio_to_ceiling_large'], '.3f')}.",
        "",
    ]
    return lines


def _latency(r: dict[str, Any]) -> list[str]:
    return [
        "## Event-to-metric latency",
        "",
        "| rate (events/s) | achieved | duration | p50 | p99 | max | counter read every |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {_num(r['latency_rate'], ',.0f')} | {_num(r['latency_achieved_rate'], ',.0f')} "
        f"| {_num(r['latency_seconds'], '.0f', ' s')} | {_num(r['latency_p50_s'], '.3f', ' s')} "
        f"| {_num(r['latency_p99_s'], '.3f', ' s')} | {_num(r['latency_max_s'], '.3f', ' s')} "
        f"| {_num(r['latency_sample_interval_ms'], '.1f', ' ms')} |",
        "",
    ]


def _memory(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Memory and /metrics",
        "",
        "| segments | peak RSS of the daemon | scrape time (median) | scrape size | series |",
        "|---:|---:|---:|---:|---:|",
    ]
    for suffix, segments in (("1k_segments", r["segments"]), ("10k_segments", r["segments_large"])):
        size = r[f"scrape_bytes_{suffix}"]
        lines.append(
            f"| {segments:,} | {_num(r[f'rss_mb_{suffix}'], '.0f', ' MB')} "
            f"| {_num(r[f'scrape_ms_{suffix}'], '.1f', ' ms')} "
            f"| {_num(None if size is None else size / 1e6, '.2f', ' MB')} "
            f"| {_num(r[f'scrape_series_{suffix}'], ',.0f')} |"
        )
    lines += [
        "",
        f"Growth from {r['segments']:,} to {r['segments_large']:,} segments: "
        f"{_num(r['rss_growth_mb_per_1k_segments'], '.1f')} MB per 1,000 segments (the "
        f"larger topic has {r['events_per_segment_large']:,} events per segment, the main one "
        f"{r['events'] // r['segments']:,}). Peak RSS of the ceiling process: "
        f"{_num(r['rss_mb_ceiling'], '.0f', ' MB')}; of the daemon with tuned prefetch: "
        f"{_num(r['rss_mb_e2e_tuned'], '.0f', ' MB')}; of the naive baseline: "
        f"{_num(r['rss_mb_naive'], '.0f', ' MB')}.",
        "",
    ]
    scaling = r["rss_scaling"]
    if scaling:
        lines += [
            f"Peak RSS at {scaling['events_per_segment']:,} events per segment:",
            "",
            "| segments | peak RSS |",
            "|---:|---:|",
            *(f"| {p['segments']:,} | {p['rss_mb']:.0f} MB |" for p in scaling["points"]),
            "",
            f"Slope {scaling['slope_kb_per_segment']:.1f} KB per segment; the middle point is "
            f"off the line through the outer ones by "
            f"{_num(scaling['max_deviation_share'], '.1%')} of the growth.",
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
