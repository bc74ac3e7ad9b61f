"""The demo: daemon + simulated trainer with an injected fault on the local stack.

Run by ``make demo`` after ``deploy/stack.sh up``. It creates a fresh topic, starts the daemon
against it, streams a simulated GRPO run (three environments) into Kafka at a steady pace with
an error burst injected into one environment, waits until the page reaches the webhook
receiver through Alertmanager, and prints what fired and where to look. The stack stays up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("STACK_DIR", ROOT / ".stack" / "run"))
KAFKA = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
ALERTMANAGER = f"http://127.0.0.1:{os.environ.get('ALERTMANAGER_PORT', '9093')}"
WEBHOOK = f"http://127.0.0.1:{os.environ.get('WEBHOOK_PORT', '9099')}"
DAEMON = "127.0.0.1:" + os.environ.get("DAEMON_PORT", "9108")
FAULT_ENV = "code-sandbox"
EVENTS, RATE, FAULT_AT = 30_000, 600.0, 12_000


def _get(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"[", b"{") else body.decode()


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def _create_topic(topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": KAFKA})
    for future in admin.create_topics([NewTopic(topic, num_partitions=4)]).values():
        future.result(timeout=30)


def _prom_query(expr: str) -> list[dict[str, Any]]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    result: list[dict[str, Any]] = _get(url)["data"]["result"]
    return result


def main() -> int:
    run_tag = time.strftime("%H%M%S")
    topic = f"rl.rollouts.demo-{run_tag}"
    run_id = f"grpo-demo-{run_tag}"
    STATE.mkdir(parents=True, exist_ok=True)
    alerts_file = STATE / f"demo-alerts-{run_tag}.jsonl"
    _create_topic(topic)
    urllib.request.urlopen(urllib.request.Request(WEBHOOK + "/", method="DELETE"), timeout=3)
    env = dict(
        os.environ,
        ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS=KAFKA,
        ROLLOUT_MONITOR_KAFKA__TOPICS=topic,
        ROLLOUT_MONITOR_KAFKA__GROUP_ID=f"rollout-monitor-demo-{run_tag}",
        ROLLOUT_MONITOR_ALERTMANAGER__URL=ALERTMANAGER,
        ROLLOUT_MONITOR_ALERTMANAGER__ALERTS_FILE=str(alerts_file),
        ROLLOUT_MONITOR_HTTP__LISTEN=DAEMON,
    )
    exe = [sys.executable, "-m", "monitor.cli"]
    log = (STATE / "demo-daemon.log").open("w")
    daemon = subprocess.Popen([*exe, "run"], env=env, stderr=log, stdout=log, cwd=ROOT)
    try:
        _wait("the daemon's /readyz", lambda: _get(f"http://{DAEMON}/readyz") == "ready\n", 60)
        print(
            f"demo: daemon ready on http://{DAEMON}; streaming {EVENTS} events at {RATE:.0f}/s "
            f"into {topic}, error burst in {FAULT_ENV} from event {FAULT_AT}",
            flush=True,
        )
        subprocess.run(
            [
                *exe,
                "simulate",
                "--events",
                str(EVENTS),
                "--rate",
                str(RATE),
                "--realtime",
                "--runs",
                run_id,
                "--kafka",
                KAFKA,
                "--topic",
                topic,
                "--fault",
                f"error_burst:{FAULT_ENV}:{FAULT_AT}:0.35",
            ],
            check=True,
            cwd=ROOT,
        )
        notes = _wait(
            "the page at the webhook receiver",
            lambda: [n for n in _get(WEBHOOK + "/") if _pages_for(n, run_id)],
            60,
        )
        scraped = _wait(
            "Prometheus to scrape the alarm",
            lambda: _prom_query(f'rollout_monitor_alarms_total{{run="{run_id}"}}'),
            30,
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    _report(run_id, alerts_file, notes, scraped)
    return 0


def _pages_for(notification: dict[str, Any], run_id: str) -> bool:
    return any(a["labels"].get("run") == run_id for a in notification.get("alerts", []))


def _report(
    run_id: str, alerts_file: Path, notes: list[dict[str, Any]], scraped: list[dict[str, Any]]
) -> None:
    print("\n== alerts raised by the daemon (alerts file) ==")
    for line in alerts_file.read_text().splitlines():
        a = json.loads(line)
        print(
            f"  {a['status']:8} {a['severity']:7} {a['detector']:16} env={a['env']:13} "
            f"event #{a['event_index']}: {a['summary']}"
        )
    print("\n== notifications delivered by Alertmanager to the webhook ==")
    for n in notes:
        for a in n["alerts"]:
            if a["labels"].get("run") == run_id:
                print(
                    f"  {a['status']:8} {a['labels']['alertname']} "
                    f"detector={a['labels'].get('detector')} env={a['labels'].get('env')}"
                )
    print("\n== Prometheus: rollout_monitor_alarms_total ==")
    for r in scraped:
        m = r["metric"]
        print(
            f"  {m['detector']:16} env={m['env']:13} severity={m['severity']:7} = {r['value'][1]}"
        )
    print(f"""
Where to look (the stack stays up; `make stack-down` stops it):
  Prometheus    {PROMETHEUS}/graph?g0.expr=rollout_monitor_alarms_total
  Alertmanager  {ALERTMANAGER}/#/alerts
  Webhook log   {WEBHOOK}/
  Alerts file   {alerts_file}
  Daemon log    {STATE / "demo-daemon.log"}
""")


if __name__ == "__main__":
    sys.exit(main())
