"""Alertmanager configurations: the example and the local stack's template.

Both are checked with amtool; routing is tested with ``amtool config routes test`` and
inhibition with a real Alertmanager started on a free port (its notifications go to a closed
port, never to the stack's webhook receiver).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from stack import wait_until

REPO = Path(__file__).resolve().parent.parent
AM_DIR = REPO / "deploy" / "alertmanager"
EXAMPLE = AM_DIR / "alertmanager.example.yml"
TEMPLATE = AM_DIR / "alertmanager.yml.template"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: install it with deploy/install.sh")
    return path


@pytest.fixture(scope="module")
def amtool() -> str:
    return tool("amtool")


def render_template(webhook_port: int) -> str:
    """The template with its placeholders filled, as deploy/stack.sh does."""
    values = {"WEBHOOK_PORT": str(webhook_port)}
    text = TEMPLATE.read_text(encoding="utf-8")
    rendered = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    left = PLACEHOLDER.findall(rendered)
    assert not left, f"placeholders the test does not know: {left}"
    return rendered


def local_example(webhook_port: int) -> str:
    """The example with its local webhook moved to ``webhook_port``."""
    return EXAMPLE.read_text(encoding="utf-8").replace(
        "http://127.0.0.1:9099/", f"http://127.0.0.1:{webhook_port}/"
    )


@pytest.fixture(scope="module", params=["example", "template"])
def config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each configuration as a file, its webhooks pointing at a closed port."""
    port = free_port()
    text = local_example(port) if request.param == "example" else render_template(port)
    path = tmp_path_factory.mktemp(request.param) / "alertmanager.yml"
    path.write_text(text, encoding="utf-8")
    return path


def amtool_run(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, check=False)


def test_check_config(amtool: str, config: Path) -> None:
    result = amtool_run(amtool, "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "detector=error_rate"], "pager"),
        (["severity=warning", "detector=length_anomaly"], "ticket"),
        (["severity=info", "detector=feature_drift"], "null"),
        (["alertname=Manual"], "webhook"),
    ],
)
def test_routes_by_severity(amtool: str, config: Path, labels: list[str], receiver: str) -> None:
    result = amtool_run(
        amtool, "config", "routes", "test", f"--config.file={config}", "run=r1", "env=math", *labels
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_template_keeps_placeholders_and_fast_timers() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    urls = re.findall(r"^\s*- url: (\S+)$", text, re.M)
    assert urls and set(urls) == {"http://127.0.0.1:${WEBHOOK_PORT}/"}
    assert re.search(r"^  group_wait: 0s$", text, re.M)
    assert re.search(r"^  group_interval: 1s$", text, re.M)
    assert set(PLACEHOLDER.findall(text)) == {"WEBHOOK_PORT"}


def test_template_and_example_share_routing_and_inhibition(amtool: str, tmp_path: Path) -> None:
    example = tmp_path / "example.yml"
    example.write_text(EXAMPLE.read_text("utf-8"), encoding="utf-8")
    template = tmp_path / "template.yml"
    template.write_text(render_template(9099), encoding="utf-8")

    def tree(path: Path) -> str:
        result = amtool_run(amtool, "config", "routes", "show", f"--config.file={path}")
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert tree(example) == tree(template)

    def inhibit_rules(text: str) -> list[str]:
        section = text.split("\ninhibit_rules:\n", 1)[1].split("\nreceivers:\n", 1)[0]
        return [
            line.strip()
            for line in section.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]

    assert inhibit_rules(EXAMPLE.read_text("utf-8")) == inhibit_rules(TEMPLATE.read_text("utf-8"))


# -- inhibition, on a real Alertmanager ------------------------------------------------------


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def alertmanager(config: Path, tmp_path: Path) -> Iterator[str]:
    binary = tool("prometheus-alertmanager")
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: (
                process.poll() is None
                and urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
            ),
            timeout=20,
            retry_on=(urllib.error.URLError, ConnectionError),
            message=f"Alertmanager on {url} (log: {tmp_path / 'alertmanager.log'})",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def alert(**labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


INHIBITION_CASES: list[tuple[dict[str, str], bool]] = [
    # r1/math: the harness pages on error_rate; the other detectors' alerts are muted.
    (
        dict(
            alertname="RolloutErrorRate",
            detector="error_rate",
            severity="page",
            run="r1",
            env="math",
        ),
        False,
    ),
    (
        dict(
            alertname="RolloutRewardShift",
            detector="reward_shift",
            severity="page",
            run="r1",
            env="math",
        ),
        True,
    ),
    (
        dict(
            alertname="RolloutLengthAnomaly",
            detector="length_anomaly",
            severity="warning",
            run="r1",
            env="math",
        ),
        True,
    ),
    # ... not in another environment of the run, nor info alerts.
    (
        dict(
            alertname="RolloutLengthAnomaly",
            detector="length_anomaly",
            severity="warning",
            run="r1",
            env="code",
        ),
        False,
    ),
    (
        dict(
            alertname="RolloutFeatureDrift",
            detector="feature_drift",
            severity="info",
            run="r1",
            env="math",
        ),
        False,
    ),
    # Prometheus' copy of the error_rate page duplicates the daemon's post: muted.
    (
        dict(
            alertname="RolloutDetectorAlarm",
            detector="error_rate",
            severity="page",
            run="r1",
            env="math",
        ),
        True,
    ),
    # A copy without the daemon's post (direct delivery failed) goes through.
    (
        dict(
            alertname="RolloutDetectorAlarm",
            detector="truncation_rate",
            severity="warning",
            run="r3",
            env="math",
        ),
        False,
    ),
    # r2/code fell silent: its other alerts are muted, the silence alert itself is not.
    (
        dict(
            alertname="RolloutEnvironmentSilent",
            detector="silence",
            severity="page",
            run="r2",
            env="code",
        ),
        False,
    ),
    (
        dict(
            alertname="RolloutZeroVarianceGroups",
            detector="zero_variance_groups",
            severity="warning",
            run="r2",
            env="code",
        ),
        True,
    ),
    # Daemon health has no run/env/detector: never muted by the harness rules.
    (dict(alertname="RolloutMonitorDeadLetterRate", severity="warning"), False),
]


def test_inhibition(alertmanager: str) -> None:
    alerts = [alert(**labels) for labels, _ in INHIBITION_CASES]
    http_json("POST", f"{alertmanager}/api/v2/alerts", alerts)

    def key(labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(k, "") for k in ("alertname", "detector", "run", "env"))

    expected = {key(labels): muted for labels, muted in INHIBITION_CASES}
    got: dict[tuple[str, ...], bool] = {}
    # The inhibitor learns of source alerts asynchronously: poll until the states settle.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = {
            key(a["labels"]): bool(a["status"]["inhibitedBy"])
            for a in http_json("GET", f"{alertmanager}/api/v2/alerts")
        }
        if got == expected:
            return
        time.sleep(0.2)
    wrong = {k: v for k, v in got.items() if expected.get(k) != v}
    pytest.fail(f"inhibited state differs from expected (alert: muted?): {wrong}")
