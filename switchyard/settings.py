"""Every setting, typed, read from the environment (and an optional `.env`) once.

A missing or invalid value stops the process with one line naming the variable;
secrets are `SecretStr`, so they print as `**********`.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Port of the embedded Redis that `switchyard redis` runs when REDIS_URL is unset.
DEFAULT_EMBEDDED_REDIS_PORT = 6399

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Longest delay Dramatiq's brokers accept (they refuse 7 days or more).
MAX_DELAY_MS = 7 * DAY_MS - 1
#: What a provider's base URL must look like.
_HTTP_URL = r"^https?://[^\s]+$"


class SettingsError(SystemExit):
    """Raised (and exits the process) when a setting is missing or invalid."""


class Settings(BaseSettings):
    """Switchyard's configuration; field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="forbid", frozen=True)

    switchyard_env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("var")
    # Ports the Procfiles use (listed so a .env may set them: unknown names are refused).
    port: int = Field(8000, ge=1, le=65535)
    web_port: int = Field(8000, ge=1, le=65535)

    # Where things run. Without REDIS_URL the embedded Redis under var/ is used.
    redis_url: SecretStr | None = None
    broker_url: SecretStr | None = None
    embedded_redis_port: int = Field(DEFAULT_EMBEDDED_REDIS_PORT, ge=1, le=65535)
    key_prefix: str = Field("switchyard", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    broker_namespace: str = Field("dramatiq", min_length=1)
    # Redis broker: a worker silent this long is dead and its unacked messages are requeued.
    redis_heartbeat_timeout_ms: int = Field(60_000, ge=1_000)
    redis_maintenance_chance: int = Field(1_000, ge=0, le=1_000_000)  # per million fetches

    # The database: SQLite under VAR_DIR unless DATABASE_URL names PostgreSQL.
    database_url: SecretStr | None = None

    # What the jobs say to people.
    app_name: str = Field("Switchyard", min_length=1, max_length=64)
    invite_link_ttl_ms: int = Field(DAY_MS, ge=60_000, le=366 * DAY_MS)

    # Pipeline defaults (milliseconds, like Dramatiq).
    max_retries: int = Field(3, ge=0)
    min_backoff_ms: int = Field(5_000, ge=0)
    max_backoff_ms: int = Field(20_000, ge=0)
    max_deferral_ms: int = Field(HOUR_MS, ge=0)
    defer_ms: int = Field(1_000, ge=10)
    idempotency_ttl_ms: int = Field(DAY_MS, ge=1_000)
    idempotency_lease_ms: int = Field(30_000, ge=300)
    concurrency_lease_ms: int = Field(30_000, ge=300)
    history_keep_done: int = Field(100, ge=0)
    history_keep_failed: int = Field(500, ge=0)
    history_ttl_ms: int = Field(7 * DAY_MS, ge=1_000)
    result_ttl_ms: int = Field(DAY_MS, ge=1_000)
    flush_interval_ms: int = Field(100, ge=5)
    worker_heartbeat_ms: int = Field(5_000, ge=100)

    # Web process credentials: HTTP basic for people, a bearer token for services.
    # Production refuses to start the web process without them (web/auth.py).
    web_username: str | None = Field(None, min_length=1)
    web_password: SecretStr | None = Field(None, min_length=8)
    api_token: SecretStr | None = Field(None, min_length=16)

    # Alerts.
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    release: str | None = None

    # Outbound HTTP (every provider's client).
    http_connect_timeout_ms: int = Field(5_000, ge=100)
    http_timeout_ms: int = Field(15_000, ge=100)

    # Telegram: the Bot API, and a user account (Telethon) for channel joins; or, for
    # development, files under var/outbox/telegram.
    telegram_backend: Literal["api", "outbox"] = "outbox"
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = Field("https://api.telegram.org", pattern=_HTTP_URL)
    telegram_api_id: int | None = Field(None, ge=1)
    telegram_api_hash: SecretStr | None = None
    telegram_session: SecretStr | None = None

    # Discord REST v10.
    discord_bot_token: SecretStr | None = None
    discord_api_url: str = Field("https://discord.com/api/v10", pattern=_HTTP_URL)
    # Invalid requests (401/403/429) one process may make in 10 minutes before it
    # stops calling Discord; Cloudflare bans the IP at 10,000.
    discord_invalid_request_budget: int = Field(1_000, ge=1, le=10_000)

    # Push: Firebase Cloud Messaging HTTP v1, or files under var/outbox.
    push_backend: Literal["fcm", "outbox"] = "outbox"
    fcm_credentials_file: Path | None = None
    fcm_project_id: str | None = None
    fcm_api_url: str = Field("https://fcm.googleapis.com", pattern=_HTTP_URL)
    fcm_rate_limit: int = Field(500, ge=1)  # messages per second, across every process

    # Email: Resend, SMTP, or .eml files under var/outbox.
    email_backend: Literal["resend", "smtp", "outbox"] = "outbox"
    email_from: str = Field("Switchyard <noreply@localhost>", min_length=3)
    resend_api_key: SecretStr | None = None
    resend_api_url: str = Field("https://api.resend.com", pattern=_HTTP_URL)
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"

    # SMS: Twilio, or files under var/outbox.
    sms_backend: Literal["twilio", "outbox"] = "outbox"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_url: str = Field("https://api.twilio.com", pattern=_HTTP_URL)

    # Object storage: S3 (or any S3-compatible server), or local disk under var/storage.
    storage_backend: Literal["s3", "local"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = Field(None, pattern=_HTTP_URL)
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_max_attempts: int = Field(5, ge=1, le=20)
    storage_url_ttl_ms: int = Field(HOUR_MS, ge=1_000, le=7 * DAY_MS)

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.switchyard_env == "production" and self.redis_url is None:
            raise ValueError("REDIS_URL is required when SWITCHYARD_ENV=production")
        if self.switchyard_env == "production" and self.database_url is None:
            raise ValueError("DATABASE_URL is required when SWITCHYARD_ENV=production")
        return self

    @property
    def db_url(self) -> str:
        """The database's SQLAlchemy URL (secret: it may hold a password)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.var_dir / 'switchyard.db'}"

    @property
    def outbox_dir(self) -> Path:
        """Where the outbox backends write email, SMS and push (development)."""
        return self.var_dir / "outbox"

    @property
    def storage_dir(self) -> Path:
        """The local-disk storage backend's root (development)."""
        return self.var_dir / "storage"

    @property
    def embedded_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    @property
    def state_url(self) -> str:
        """The Redis that holds idempotency keys, limits, results, history and metrics."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return self.embedded_redis_url

    @property
    def queue_url(self) -> str:
        """The broker's URL: redis://... (default: the state store) or amqp://..."""
        if self.broker_url is not None:
            return self.broker_url.get_secret_value()
        return self.state_url

    @property
    def uses_rabbitmq(self) -> bool:
        return self.queue_url.startswith(("amqp://", "amqps://"))


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "_".join(str(part) for part in first["loc"]).upper() or "settings"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"unknown setting {name} in .env"
    if not first["loc"]:
        return message.removeprefix("Value error, ")
    return f"setting {name} is invalid: {message}"


def load(**overrides: object) -> Settings:
    """Read the settings; on a bad value, exit with one clear line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        print(f"switchyard: {_describe(error)}", file=sys.stderr)
        raise SettingsError(2) from None


@functools.cache
def get() -> Settings:
    """The process's settings, read once."""
    return load()
