"""The daemon's configuration: environment variables and an optional TOML file.

Environment variables use the prefix ``ROLLOUT_MONITOR_`` and ``__`` for nesting, e.g.
``ROLLOUT_MONITOR_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``. A TOML file given with
``--config`` supplies the same keys as tables (``[kafka] bootstrap_servers = ...``); environment
variables win over the file. The settings object is frozen and built once in ``main()``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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

    # 20,000: a batch then visits each of 1,000 segments' detector state once for about 20
    # events instead of 5; at 5,000 those visits cost a fifth of the CPU per event
    # (docs/architecture.md, "Micro-batches").
    batch_max_events: int = Field(20_000, ge=1, le=1_000_000)
    # The longest a poll waits for a batch to fill, counted from when the previous poll
    # returned: messages that arrived while a batch was processed do not wait for more.
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


def _check_http_url(value: str | None, *, where: str) -> str | None:
    """An ``http(s)://host[:port][/prefix]`` URL without credentials in it (they would be
    printed by ``check-config``); empty means "not configured"."""
    if not value:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, e.g. {where}")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parsed.username is not None or parsed.password is not None:
        raise ValueError("must not contain credentials; use the username/password settings")
    return value


def _check_credentials(
    section: str,
    token_field: str,
    token: SecretStr | None,
    username: str | None,
    password: SecretStr | None,
) -> None:
    if (username is None) != (password is None):
        raise ValueError(f"{section}.username and {section}.password must be given together")
    if token is not None and username is not None:
        raise ValueError(
            f"give either {section}.{token_field} or {section}.username and password, not both"
        )


class AlertmanagerSettings(BaseModel):
    """Where alerts are posted (Alertmanager v2 API) and how delivery behaves."""

    model_config = _FROZEN

    url: str | None = "http://127.0.0.1:9093"
    # Basic auth, or a bearer token; at most one of the two, as in Alertmanager's own
    # http_config.
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    resend_seconds: float = Field(60.0, gt=0)
    expire_seconds: float = Field(300.0, gt=0)
    queue_size: int = Field(10_000, ge=1)
    timeout_seconds: float = Field(5.0, gt=0)
    max_backoff_seconds: float = Field(60.0, gt=0)
    # TLS of an https:// url: verify against the system CAs, or only ca_file's.
    verify_tls: bool = True
    ca_file: FilePath | None = None
    # Where the detector docs are served; alerts link to {runbook_base_url}#{detector_id}.
    runbook_base_url: str = "docs/detectors.md"
    alerts_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _check_http_url(value, where="http://127.0.0.1:9093")

    @model_validator(mode="after")
    def _check_consistency(self) -> AlertmanagerSettings:
        _check_credentials(
            "alertmanager", "bearer_token", self.bearer_token, self.username, self.password
        )
        if self.resend_seconds >= self.expire_seconds:
            raise ValueError(
                "alertmanager.resend_seconds must be below alertmanager.expire_seconds, "
                "or Alertmanager resolves firing alerts between two re-sends"
            )
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("alertmanager.ca_file is set but alertmanager.verify_tls is false")
        return self


class GrafanaSettings(BaseModel):
    """The Grafana that ``dashboards push`` writes to, through its HTTP API."""

    model_config = _FROZEN

    url: str = "http://127.0.0.1:3000"
    # A service-account token (sent as a bearer token), or a user's basic-auth credentials.
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # Sent as X-Grafana-Org-Id (a service-account token is bound to its own organisation).
    org_id: int | None = Field(None, ge=1)
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    verify_tls: bool = True
    ca_file: FilePath | None = None
    # Folder title the dashboards go to, created when missing; None is Grafana's General.
    folder: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        checked = _check_http_url(value, where="http://127.0.0.1:3000")
        if checked is None:
            raise ValueError("must not be empty")
        return checked

    @model_validator(mode="after")
    def _check_consistency(self) -> GrafanaSettings:
        _check_credentials("grafana", "token", self.token, self.username, self.password)
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("grafana.ca_file is set but grafana.verify_tls is false")
        return self

    @property
    def has_credentials(self) -> bool:
        return self.token is not None or self.username is not None

    def credential(self) -> str | tuple[str, str] | None:
        """The token, or (username, password), as grafana-client takes them."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.username is not None and self.password is not None:
            return (self.username, self.password.get_secret_value())
        return None

    def tls_verify(self) -> bool | str:
        """``verify`` for the HTTP client: a CA bundle path, or whether to check at all."""
        return str(self.ca_file) if self.ca_file is not None else self.verify_tls


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
    grafana: GrafanaSettings = GrafanaSettings()
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


_Section = TypeVar("_Section", bound=BaseModel)


def with_overrides(section: _Section, name: str, **values: Any) -> _Section:
    """A copy of the settings section ``name`` with ``values`` (e.g. command-line flags)
    replacing its fields, validated like the file and the environment are."""
    try:
        return type(section).model_validate({**dict(section), **values})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix=(name,))) from None


_SECRET_WORDS = ("password", "token", "secret")


def _describe(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in (*prefix, *err["loc"]))
        given = err.get("input")
        # Not shown: a section-level error's input (the whole section, secrets included),
        # secrets, and URLs that carry credentials.
        secret = any(word in field for word in _SECRET_WORDS)
        if isinstance(given, dict) or secret or (isinstance(given, str) and "@" in given):
            lines.append(f"{field}: {err['msg']}")
        else:
            lines.append(f"{field}: {err['msg']} (got {given!r})")
    return "invalid configuration: " + "; ".join(lines)
