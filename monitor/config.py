"""The daemon's configuration: environment variables and an optional TOML file.

Environment variables use the prefix ``ROLLOUT_MONITOR_`` and ``__`` for nesting, e.g.
``ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``. A TOML file given with
``--config`` supplies the same keys as tables (``[kafka] bootstrap_servers = ...``); environment
variables win over the file. The settings object is frozen and built once in ``main()``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """Where rollout events come from and where refused messages go."""

    model_config = _FROZEN

    backend: Literal["confluent", "kafka-python"] = "confluent"
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: Annotated[tuple[str, ...], NoDecode] = ("rl.rollouts",)
    group_id: str = "rollout-monitor"
    dead_letter_topic: str = "rl.rollouts.dlq"
    # How long the group waits for a member that stopped heartbeating (a killed daemon)
    # before its partitions move; the broker accepts 6,000 ms and more by default.
    session_timeout_ms: int = Field(10_000, ge=1_000, le=3_600_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        return (
            tuple(t.strip() for t in value.split(",") if t.strip())
            if isinstance(value, str)
            else value
        )

    def client_config(self) -> dict[str, str]:
        """Security settings as librdkafka-style keys (both backends accept these)."""
        conf: dict[str, str] = {"security.protocol": self.security_protocol}
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        if conf == {"security.protocol": "PLAINTEXT"}:
            return {}
        return conf


class PipelineSettings(BaseModel):
    """Micro-batching, segment cap and duplicate window."""

    model_config = _FROZEN

    batch_max_events: int = Field(5000, ge=1, le=1_000_000)
    batch_max_seconds: float = Field(0.2, gt=0, le=60)
    max_segments: int = Field(1000, ge=1, le=1_000_000)
    dedup_window: int = Field(100_000, ge=0, le=10_000_000)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    commit_every_seconds: float = Field(5.0, gt=0)


class DetectorSettings(BaseModel):
    """Detector set and the false-alarm budget thresholds are derived from."""

    model_config = _FROZEN

    budget_events: float = Field(
        1_000_000,
        gt=10,
        description="expected clean events between false alarms per segment (page severity)",
    )
    enabled: Annotated[tuple[str, ...] | None, NoDecode] = None
    resolve_after_seconds: float = Field(
        300.0, gt=0, description="event-time span without alarm after which an alert resolves"
    )

    @field_validator("enabled", mode="before")
    @classmethod
    def _split_enabled(cls, value: Any) -> Any:
        return (
            tuple(t.strip() for t in value.split(",") if t.strip())
            if isinstance(value, str)
            else value
        )


class AlertmanagerSettings(BaseModel):
    """Where alerts are posted (Alertmanager v2 API) and how delivery behaves."""

    model_config = _FROZEN

    url: str | None = "http://127.0.0.1:9093"
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    resend_seconds: float = Field(60.0, gt=0)
    expire_seconds: float = Field(300.0, gt=0)
    queue_size: int = Field(10_000, ge=1)
    timeout_seconds: float = Field(5.0, gt=0)
    max_backoff_seconds: float = Field(60.0, gt=0)
    # Where the detector docs are served; alerts link to {runbook_base_url}#{detector_id}.
    runbook_base_url: str = "docs/detectors.md"
    alerts_file: Path | None = None


class HttpSettings(BaseModel):
    """The metrics and health endpoints."""

    model_config = _FROZEN

    listen: str = "127.0.0.1:9108"
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class CheckpointSettings(BaseModel):
    """Where per-partition detector state is checkpointed before offsets are committed."""

    model_config = _FROZEN

    store: Literal["directory", "kafka", "none"] = "directory"
    directory: Path = Path(".rollout-monitor/checkpoints")
    topic: str = "rl.rollouts.monitor-state"


class LogSettings(BaseModel):
    model_config = _FROZEN

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = False


class Settings(BaseSettings):
    """Every setting of the daemon. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="ROLLOUT_MONITOR_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    pipeline: PipelineSettings = PipelineSettings()
    detectors: DetectorSettings = DetectorSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    http: HttpSettings = HttpSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # TOML comes last: environment variables override the file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def masked_dump(self) -> dict[str, Any]:
        """The effective configuration, secrets shown as ``**********``."""
        return self.model_dump(mode="json")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        settings_cls = type(
            "Settings",
            (Settings,),
            {"model_config": {**Settings.model_config, "toml_file": config_file}},
        )
    try:
        return settings_cls()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        lines.append(f"{field}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(lines)
