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
        ("ROLLOUT_MONITOR_ALERTMANAGER__URL", "127.0.0.1:9093", "alertmanager.url"),
        ("ROLLOUT_MONITOR_ALERTMANAGER__URL", "http://127.0.0.1:port", "alertmanager.url"),
        ("ROLLOUT_MONITOR_GRAFANA__URL", "ftp://grafana.example", "grafana.url"),
        ("ROLLOUT_MONITOR_GRAFANA__URL", "", "grafana.url"),
        ("ROLLOUT_MONITOR_GRAFANA__ORG_ID", "0", "grafana.org_id"),
        ("ROLLOUT_MONITOR_GRAFANA__TIMEOUT_SECONDS", "-1", "grafana.timeout_seconds"),
        ("ROLLOUT_MONITOR_GRAFANA__VERIFY_TLS", "maybe", "grafana.verify_tls"),
        ("ROLLOUT_MONITOR_GRAFANA__CA_FILE", "/nonexistent/ca.pem", "grafana.ca_file"),
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


def test_grafana_settings_from_the_environment_and_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed until a request is made\n")
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[grafana]\nurl = "https://grafana.example/grafana"\nusername = "admin"\n'
        f'password = "pw-from-file"\norg_id = 3\nca_file = "{ca}"\nfolder = "RL"\n'
    )
    monkeypatch.setenv("ROLLOUT_MONITOR_GRAFANA__TIMEOUT_SECONDS", "2.5")
    grafana = load_settings(toml).grafana
    assert grafana.url == "https://grafana.example/grafana" and grafana.org_id == 3
    assert grafana.credential() == ("admin", "pw-from-file")
    assert grafana.tls_verify() == str(ca) and grafana.timeout_seconds == 2.5
    assert grafana.folder == "RL"

    monkeypatch.setenv("ROLLOUT_MONITOR_GRAFANA__TOKEN", "glsa_token")
    with pytest.raises(ConfigError, match=r"either grafana\.token or grafana\.username"):
        load_settings(toml)  # a token from the environment and a password from the file


def test_grafana_token_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    grafana = load_settings().grafana
    assert grafana.url == "http://127.0.0.1:3000" and not grafana.has_credentials
    assert grafana.credential() is None and grafana.tls_verify() is True
    monkeypatch.setenv("ROLLOUT_MONITOR_GRAFANA__TOKEN", "glsa_token")
    monkeypatch.setenv("ROLLOUT_MONITOR_GRAFANA__VERIFY_TLS", "false")
    grafana = load_settings().grafana
    assert grafana.credential() == "glsa_token" and grafana.tls_verify() is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"GRAFANA__TOKEN": "t", "GRAFANA__USERNAME": "u", "GRAFANA__PASSWORD": "p"},
            ["grafana.token", "grafana.username"],
        ),
        ({"GRAFANA__USERNAME": "u"}, ["grafana.username", "grafana.password"]),
        (
            {"GRAFANA__VERIFY_TLS": "false", "GRAFANA__CA_FILE": "pyproject.toml"},
            ["grafana.ca_file", "grafana.verify_tls"],
        ),
        ({"ALERTMANAGER__PASSWORD": "p"}, ["alertmanager.username", "alertmanager.password"]),
        (
            {
                "ALERTMANAGER__BEARER_TOKEN": "t",
                "ALERTMANAGER__USERNAME": "u",
                "ALERTMANAGER__PASSWORD": "p",
            },
            ["alertmanager.bearer_token", "alertmanager.username"],
        ),
        (
            {"ALERTMANAGER__RESEND_SECONDS": "300"},
            ["alertmanager.resend_seconds", "alertmanager.expire_seconds"],
        ),
    ],
)
def test_inconsistent_credentials_name_the_fields(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv("ROLLOUT_MONITOR_" + key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for field in named:
        assert field in str(info.value)
    assert "'p'" not in str(info.value) and "'t'" not in str(info.value), "no secret echoed"


def test_alertmanager_url_may_be_empty_to_disable_posting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROLLOUT_MONITOR_ALERTMANAGER__URL", "")
    assert load_settings().alertmanager.url is None
