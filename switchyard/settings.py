"""Every setting, typed, read from the environment (and an optional `.env`) once.

A missing or invalid value stops the process with one line naming the variable;
secrets are `SecretStr`, so they print as `**********`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Port of the embedded Redis that `switchyard redis` runs when REDIS_URL is unset.
DEFAULT_EMBEDDED_REDIS_PORT = 6399
#: Where, under VAR_DIR, `switchyard redis` records the URL and pid of the embedded Redis.
EMBEDDED_REDIS_RECORD = "embedded-redis.json"

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Longest delay Dramatiq's brokers accept (they refuse 7 days or more).
MAX_DELAY_MS = 7 * DAY_MS - 1
#: Most worker processes one `switchyard worker` starts.
MAX_WORKER_PROCESSES = 256
#: What a provider's base URL must look like.
_HTTP_URL = r"^https?://[^\s]+$"
#: A payload key's id (PAYLOAD_KEYS' `<id>:<key>`).
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


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
    # Every Redis call (state store and broker) gives up after this; a blocking result
    # wait after its own wait plus this. RabbitMQ: connecting and its handshake.
    redis_timeout_ms: int = Field(3_000, ge=100)
    rabbitmq_connect_timeout_ms: int = Field(3_000, ge=100)
    key_prefix: str = Field("switchyard", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    broker_namespace: str = Field("dramatiq", min_length=1)
    # Redis broker: a worker silent this long is dead and its unacked messages are requeued.
    redis_heartbeat_timeout_ms: int = Field(15_000, ge=1_000)
    redis_maintenance_chance: int = Field(1_000, ge=0, le=1_000_000)  # per million fetches
    # Redis broker: how often each consumer requeues its queue's dead workers' messages.
    redis_maintenance_interval_ms: int = Field(5_000, ge=100)

    # Worker processes (`switchyard worker`): how many ("auto": one per core the worker
    # may run on), and whether each is pinned to a core of its own (unset: pinned with
    # "auto"): processes moved between cores hand the GIL across them (docs/deployment.md).
    worker_processes: int | Literal["auto"] = 1
    worker_pin_cpus: bool | None = None

    # Beyond one machine (docs/deployment.md).
    # rediss:// URLs: verify the server's certificate (off for Heroku Redis's self-signed
    # one), against this CA file if given, else the system's CAs.
    redis_tls_verify: bool = True
    redis_tls_ca_file: Path | None = None
    # Redis Sentinel: "host:port,host:port"; REDIS_URL then gives only the scheme,
    # credentials and database, and every process follows the primary they name.
    redis_sentinels: str | None = Field(None, pattern=r"^\s*[^\s,:]+:\d+(\s*,\s*[^\s,:]+:\d+)*\s*$")
    redis_sentinel_service: str = Field("mymaster", min_length=1)
    redis_sentinel_password: SecretStr | None = None
    # Redis broker: an enqueue returns only once this many replicas have the message
    # (WAIT), or fails after REDIS_ENQUEUE_WAIT_MS. 0: as soon as the primary has it.
    redis_enqueue_replicas: int = Field(0, ge=0, le=16)
    redis_enqueue_wait_ms: int = Field(1_000, ge=1)
    # RabbitMQ: "quorum" declares every queue replicated across the cluster's nodes;
    # a message returned unacked more than this many times goes to its .XQ.
    rabbitmq_queue_type: Literal["classic", "quorum"] = "classic"
    rabbitmq_delivery_limit: int = Field(20, ge=1, le=1_000)

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
    # A job's id-only key (no idempotency key given) guards against a redelivery of the
    # same message for this long after it succeeded, not IDEMPOTENCY_TTL_MS.
    redelivery_guard_ms: int = Field(60_000, ge=1_000)
    dead_letter_keep: int = Field(10_000, ge=1)  # per queue, newest kept
    dead_letter_ttl_ms: int = Field(30 * DAY_MS, ge=1_000)
    # Largest payload accepted at enqueue (bytes of JSON), and kept with a dead letter.
    max_payload_bytes: int = Field(256 * 1024, ge=1_024, le=64 * 1024 * 1024)
    flush_interval_ms: int = Field(100, ge=5)
    worker_heartbeat_ms: int = Field(5_000, ge=100)
    # The dashboard's job counts over time: per-minute buckets, per-hour buckets kept so long.
    timeline_minute_ttl_ms: int = Field(2 * HOUR_MS, ge=HOUR_MS)
    timeline_hour_ttl_ms: int = Field(2 * DAY_MS, ge=DAY_MS)

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

    # Discord interactions and events: Discord REST, or files under var/outbox/discord.
    discord_backend: Literal["api", "outbox"] = "outbox"
    # The application whose interaction webhooks answer (follow-ups, edit original);
    # an interaction's own `applicationId` wins.
    discord_application_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")
    # Defer only when this much of Discord's 3 s remains (one HTTP round trip).
    discord_defer_margin_ms: int = Field(300, ge=0, le=2_900)
    # An interaction is given up this long before its 15-minute token dies.
    discord_token_margin_ms: int = Field(30_000, ge=0, le=600_000)
    discord_session_ttl_ms: int = Field(10 * 60_000, ge=1_000, le=DAY_MS)  # multi-step flows
    discord_cooldown_ms: int = Field(3_000, ge=0, le=HOUR_MS)  # per user, per command
    discord_rate_limit: int = Field(20, ge=1, le=10_000)  # commands per user per window
    discord_rate_window_ms: int = Field(60_000, ge=1_000, le=DAY_MS)
    discord_event_ttl_ms: int = Field(DAY_MS, ge=1_000, le=7 * DAY_MS)  # an event id runs once

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
    # Local storage: objects are served by the web process at MEDIA_URL_BASE/media/<key>,
    # only with a valid expiring HMAC signature (MEDIA_URL_SECRET, else one derived
    # from the newest payload key).
    media_url_base: str = Field("http://127.0.0.1:8000", pattern=_HTTP_URL)
    media_url_secret: SecretStr | None = Field(None, min_length=32)

    # Media jobs.
    media_max_bytes: int = Field(200 * 1024 * 1024, ge=1_024)  # an upload larger is refused
    media_max_pixels: int = Field(50_000_000, ge=10_000)  # decompression-bomb cap per image
    media_max_duration_ms: int = Field(30 * 60_000, ge=1_000)  # longest video or audio
    media_ffmpeg_timeout_ms: int = Field(10 * 60_000, ge=1_000)  # then ffmpeg is killed
    media_image_max_side: int = Field(2_048, ge=16, le=16_384)
    media_thumbnail_side: int = Field(200, ge=16, le=1_024)
    media_image_quality: int = Field(82, ge=1, le=95)  # JPEG and WebP
    media_temp_max_age_ms: int = Field(DAY_MS, ge=60_000)  # older temp files are swept

    # Cleanup jobs and the clock.
    cleanup_batch_size: int = Field(500, ge=1, le=1_000)  # rows per commit, keys per delete
    cleanup_run_budget_ms: int = Field(5 * 60_000, ge=1_000)  # a run stops, the next goes on
    cleanup_story_ttl_ms: int = Field(DAY_MS, ge=60_000)
    cleanup_session_idle_ms: int = Field(30 * DAY_MS, ge=60_000)
    cleanup_message_media_ttl_ms: int = Field(365 * DAY_MS, ge=60_000)
    cleanup_temp_file_ttl_ms: int = Field(DAY_MS, ge=60_000)
    cleanup_used_prekey_ttl_ms: int = Field(30 * DAY_MS, ge=0)
    cleanup_prekey_minimum: int = Field(10, ge=0, le=1_000)
    cleanup_orphan_grace_ms: int = Field(DAY_MS, ge=0)
    # Only objects under this prefix are candidates for the orphaned-media job ("": all).
    cleanup_orphan_prefix: str = Field("", max_length=512)
    # The clock: missed slots within this window are caught up on start (one run per
    # schedule unless CLOCK_COALESCE=false); a slot claimed by a clock that died is
    # taken over after CLOCK_LEASE_MS.
    clock_catch_up_ms: int = Field(DAY_MS, ge=0, le=MAX_DELAY_MS)
    clock_coalesce: bool = True
    clock_lease_ms: int = Field(30_000, ge=1_000)
    clock_tick_ms: int = Field(1_000, ge=10, le=60_000)

    # Ingress: the RabbitMQ bridge and SQS.
    # The RabbitMQ the bridge consumes; unset: BROKER_URL when it names RabbitMQ.
    amqp_url: SecretStr | None = None
    bridge_prefetch: int = Field(500, ge=1, le=65_535)  # unacked deliveries at most
    bridge_heartbeat_ms: int = Field(30_000, ge=1_000)  # AMQP heartbeat (sent in seconds)
    bridge_shutdown_timeout_ms: int = Field(20_000, ge=0)  # to finish deliveries on SIGTERM
    bridge_max_backoff_ms: int = Field(30_000, ge=100)  # longest wait between retries
    # How often the bridge looks for seed 004's queues and publishes new `<queue>.dead`s.
    bridge_recheck_ms: int = Field(30_000, ge=100)
    # Seed 001's SQS FIFO queue of bot operations (`switchyard sqs`); SQS_ENDPOINT for
    # any SQS-compatible server. Credentials: boto3's own (AWS_ACCESS_KEY_ID, a role...).
    bot_operations_queue_url: str | None = Field(None, pattern=_HTTP_URL)
    sqs_endpoint: str | None = Field(None, pattern=_HTTP_URL)
    aws_region: str = Field("us-east-1", min_length=1)
    sqs_wait_ms: int = Field(20_000, ge=0, le=20_000)  # long poll (SQS allows up to 20 s)

    # Payload encryption: job arguments, results and dead letters sealed at rest
    # (switchyard/sealing.py). PAYLOAD_KEYS: `<id>:<base64 of 32 bytes>` entries, newest
    # first, comma-separated (or a JSON list): new seals use the first, every one listed
    # still opens. Production refuses to start without one unless PAYLOAD_ENCRYPTION=false;
    # development and tests use VAR_DIR/payload-keys, generated on first use.
    payload_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    payload_encryption: bool = True

    @field_validator("payload_keys", mode="before")
    @classmethod
    def _split_payload_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("it is not a JSON list of `<id>:<key>` entries") from None
            return [item for item in re.split(r"[,\s]+", text) if item]
        return value

    @field_validator("payload_keys")
    @classmethod
    def _check_payload_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        ids = [parse_payload_key(entry.get_secret_value(), number)[0]
               for number, entry in enumerate(value, 1)]
        if len(set(ids)) != len(ids):
            raise ValueError("two entries have the same key id")
        return value

    @field_validator("worker_processes", mode="before")
    @classmethod
    def _count_processes(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ValueError("it is neither `auto` nor a whole number") from None
        if not 1 <= count <= MAX_WORKER_PROCESSES:
            raise ValueError(f"it must be `auto` or 1 to {MAX_WORKER_PROCESSES}")
        return count

    @model_validator(mode="before")
    @classmethod
    def _running_embedded_redis(cls, data: Any) -> Any:
        """Without REDIS_URL or EMBEDDED_REDIS_PORT, take the port of the embedded Redis
        `switchyard redis` runs, so a second shell finds one started on another port."""
        if not isinstance(data, dict) or data.get("redis_url") or "embedded_redis_port" in data:
            return data
        port = recorded_embedded_port(Path(data.get("var_dir") or "var"))
        return data if port is None else {**data, "embedded_redis_port": port}

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> Settings:
        if self.switchyard_env == "production" and self.redis_url is None:
            raise ValueError("REDIS_URL is required when SWITCHYARD_ENV=production")
        if self.switchyard_env == "production" and self.database_url is None:
            raise ValueError("DATABASE_URL is required when SWITCHYARD_ENV=production")
        return self

    @model_validator(mode="after")
    def _redis_beyond_one_machine(self) -> Settings:
        if self.redis_sentinels and self.redis_url is None:
            raise ValueError("REDIS_SENTINELS needs REDIS_URL (its scheme, password, database)")
        if self.redis_tls_ca_file is not None and not self.redis_tls_ca_file.is_file():
            raise ValueError(f"REDIS_TLS_CA_FILE {self.redis_tls_ca_file} is not a file")
        if self.redis_enqueue_replicas and self.redis_enqueue_wait_ms >= self.redis_timeout_ms:
            raise ValueError("REDIS_ENQUEUE_WAIT_MS must be below REDIS_TIMEOUT_MS")
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        pairs = (item.strip().rsplit(":", 1) for item in (self.redis_sentinels or "").split(","))
        return [(host, int(port)) for host, port in (p for p in pairs if len(p) == 2)]

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

    @property
    def rabbitmq_url(self) -> str:
        """The broker's amqp URL(s) with pika's connect and handshake timeouts
        (RABBITMQ_CONNECT_TIMEOUT_MS) where a URL sets none: pika's own wait 15 s."""
        seconds = f"{self.rabbitmq_connect_timeout_ms / 1000:g}"
        return ";".join(_with_defaults(url, socket_timeout=seconds, stack_timeout=seconds)
                        for url in self.queue_url.split(";"))


def _with_defaults(url: str, **query: str) -> str:
    """`url` with the query parameters it does not set yet."""
    parts = urlsplit(url)
    given = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in given}
    added = [(name, value) for name, value in query.items() if name not in names]
    return urlunsplit(parts._replace(query=urlencode(given + added)))


def recorded_embedded_port(var_dir: Path) -> int | None:
    """The port `switchyard redis` recorded under `var_dir`, while that process runs."""
    try:
        record = json.loads((var_dir / EMBEDDED_REDIS_RECORD).read_text())
        pid, port = int(record["pid"]), urlsplit(str(record["url"])).port
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return port if port is not None and _running(pid) else None


def _running(pid: int) -> bool:
    """Whether process `pid` exists (a record outlives the Redis it names)."""
    if pid <= 0 or os.name != "posix":
        return pid > 0
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_payload_key(entry: str, number: int = 1) -> tuple[str, bytes]:
    """A PAYLOAD_KEYS entry's id and 32-byte key; the error names the entry by number
    (never by its value: it is a secret)."""
    key_id, _, encoded = entry.strip().partition(":")
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if not KEY_ID.fullmatch(key_id) or len(key) != 32:
        raise ValueError(f"entry {number} is not `<id>:<base64 of 32 bytes>` "
                         "(id: letters, digits, - or _, up to 32)")
    return key_id, key


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
