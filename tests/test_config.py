"""Settings: environment, TOML file, precedence, masking, and errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, load_settings


def test_defaults_bind_loopback() -> None:
    settings = load_settings()
    assert settings.http.listen == "127.0.0.1:9108"
    assert settings.kafka.topics == ("rl.rollouts",)
    assert settings.kafka.dead_letter_topic == "rl.rollouts.dlq"


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[kafka]\nbootstrap_servers = "k:1"\n[pipeline]\nmax_segments = 50\n')
    monkeypatch.setenv("ROLLOUT_MONITOR_PIPELINE__MAX_SEGMENTS", "7")
    settings = load_settings(toml)
    assert settings.kafka.bootstrap_servers == "k:1"
    assert settings.pipeline.max_segments == 7


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.pipeline.max_segments = 3  # type: ignore[misc]


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_MONITOR_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("ROLLOUT_MONITOR_ALERTMANAGER__BEARER_TOKEN", "tok-123")
    settings = load_settings()
    dumped = json.dumps(settings.masked_dump())
    assert "hunter2" not in dumped and "tok-123" not in dumped
    assert settings.kafka.client_config()["sasl.password"] == "hunter2"


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("ROLLOUT_MONITOR_PIPELINE__MAX_SEGMENTS", "lots", "pipeline.max_segments"),
        ("ROLLOUT_MONITOR_PIPELINE__MAX_SEGMENTS", "0", "pipeline.max_segments"),
        ("ROLLOUT_MONITOR_HTTP__LISTEN", "nowhere", "http.listen"),
        ("ROLLOUT_MONITOR_KAFKA__BACKEND", "rdkafka-go", "kafka.backend"),
        ("ROLLOUT_MONITOR_DETECTORS__BUDGET_EVENTS", "-1", "detectors.budget_events"),
    ],
)
def test_bad_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert field in str(info.value)


def test_check_config_exits_2_on_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLOUT_MONITOR_PIPELINE__BATCH_MAX_EVENTS", "many")
    assert main(["check-config"]) == 2
    assert "pipeline.batch_max_events" in capsys.readouterr().err


def test_check_config_prints_masked_effective_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLOUT_MONITOR_HTTP__BASIC_AUTH_PASSWORD", "s3cret")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["http"]["basic_auth_password"] == "**********"
    assert "s3cret" not in out


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["check-config", "--config", str(tmp_path / "absent.toml")]) == 2


def test_schema_command_prints_json_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert "RolloutEvent" in json.loads(out)["$defs"]
