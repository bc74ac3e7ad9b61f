"""The deployment examples in ``deploy/`` hold settings the daemon accepts.

The example configuration file, the systemd unit's command and environment, and the
environment of the Kubernetes sidecar each go through ``rollout-monitor check-config`` (the
settings the daemon would run with) or the CLI itself; the unit's "no restart" exit status
is the one the CLI gives a configuration error; the sidecar's port, probes and scrape
annotations agree with its listen address and with the endpoints the HTTP server answers.
"""

from __future__ import annotations

import configparser
import json
import shlex
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from test_security import cli

from monitor.http import MonitorHTTPServer

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
EXAMPLE = DEPLOY / "rollout-monitor.example.toml"
UNIT = DEPLOY / "systemd" / "rollout-monitor.service"
SIDECAR = DEPLOY / "kubernetes" / "trainer-with-monitor.yaml"


def check_config(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = cli("check-config", *args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    settings: dict[str, Any] = json.loads(done.stdout)
    return settings


def test_the_example_configuration_is_accepted() -> None:
    settings = check_config(["--config", str(EXAMPLE)], {})
    assert settings["checkpoint"]["store"] == "kafka"
    assert settings["http"]["listen"] == "0.0.0.0:9108"
    assert settings["kafka"]["topics"] == ["rl.rollouts"]
    assert settings["log"]["json_lines"] is True


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNIT)
    return unit


def test_the_systemd_unit_runs_the_daemon_with_settings_it_accepts() -> None:
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/.venv/bin/rollout-monitor") and argv[1] == "run"
    assert argv[2:] == ["--config", "/etc/rollout-monitor/config.toml"]
    name, _, value = service["Environment"].partition("=")
    settings = check_config(["--config", str(EXAMPLE)], {name: value})
    assert settings["checkpoint"]["directory"] == value
    assert value.startswith(service["WorkingDirectory"])
    assert service["KillSignal"] == "SIGTERM"


def test_the_unit_does_not_restart_on_the_exit_status_of_a_configuration_error(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\nbackend = "nope"\n')
    for args in (["run", "--config", str(bad)], ["run", "--config", str(tmp_path / "none")]):
        done = cli(*args)
        assert str(done.returncode) == _unit()["Service"]["RestartPreventExitStatus"], args


def _sidecar() -> tuple[dict[str, Any], dict[str, Any]]:
    (job,) = list(yaml.safe_load_all(SIDECAR.read_text()))
    pod = job["spec"]["template"]
    (monitor,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "rollout-monitor"]
    return pod, monitor


def test_the_kubernetes_sidecar_environment_is_accepted() -> None:
    pod, monitor = _sidecar()
    assert monitor["restartPolicy"] == "Always", "a native sidecar"
    assert monitor["command"] == ["rollout-monitor", "run"]
    env = {e["name"]: e["value"] for e in monitor["env"]}
    assert all(name.startswith("ROLLOUT_MONITOR_") for name in env)
    settings = check_config([], env)
    assert settings["kafka"]["topics"] == [env["ROLLOUT_MONITOR_KAFKA__TOPICS"]]
    assert settings["checkpoint"]["store"] == "kafka"
    (trainer,) = pod["spec"]["containers"]
    trainer_env = {e["name"]: e["value"] for e in trainer["env"]}
    assert trainer_env["ROLLOUT_TOPIC"] == env["ROLLOUT_MONITOR_KAFKA__TOPICS"]


def test_the_sidecar_port_probes_and_scrape_annotations_match_the_server() -> None:
    pod, monitor = _sidecar()
    env = {e["name"]: e["value"] for e in monitor["env"]}
    port = int(env["ROLLOUT_MONITOR_HTTP__LISTEN"].rpartition(":")[2])
    (exposed,) = monitor["ports"]
    assert exposed["containerPort"] == port
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    probes = [monitor["readinessProbe"]["httpGet"], monitor["livenessProbe"]["httpGet"]]
    assert all(p["port"] == exposed["name"] for p in probes)
    # the paths are answered by the daemon's HTTP server (here with a ready daemon)
    server = MonitorHTTPServer(
        "127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ready"), extra=lambda: b""
    ).start()
    try:
        for path in (annotations["prometheus.io/path"], *(p["path"] for p in probes)):
            url = f"http://127.0.0.1:{server.port}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, path
    finally:
        server.close()
