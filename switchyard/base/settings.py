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
#: The delivery backends and the development stand-in each takes when unset outside
#: production (docs/deployment.md, "Production never pretends").
STAND_INS = {"email_backend": "outbox", "sms_backend": "outbox", "push_backend": "outbox",
             "storage_backend": "local", "telegram_backend": "outbox",
             "discord_backend": "outbox"}
#: How each backend's description ends (the reference's default column).
UNSET_BACKEND = ("Unset: `{stand_in}` outside production; in production nothing, and each "
                 "job that needs it is dead-lettered naming this setting (`switchyard health` "
                 "reports it unconfigured).")


class SettingsError(SystemExit):
    """Raised (and exits the process) when a setting is missing or invalid."""


class Settings(BaseSettings):
    """Switchyard's configuration; field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="forbid", frozen=True)

    # Processes and services.
    switchyard_env: Literal["development", "production", "test"] = Field(
        "development", description=(
            "The kind of deployment. `production` refuses to start without `REDIS_URL`, "
            "`DATABASE_URL` and `PAYLOAD_KEYS` (unless `PAYLOAD_ENCRYPTION=false`), starts the "
            "web process only with `WEB_USERNAME` and a strong `WEB_PASSWORD` and `API_TOKEN`, "
            "and uses no delivery backend it was not told to: an unset `*_BACKEND` is not "
            "replaced by an outbox or local storage (the jobs that need it are dead-lettered "
            "naming it), and one named `outbox` or `local` is warned about at start. "
            "`development` lets `switchyard dev` add sample records; `test` is "
            "development without them. Also Sentry's environment, unless `SENTRY_ENVIRONMENT` "
            "is set."))
    var_dir: Path = Field(Path("var"), description=(
        "Directory of local data, relative to the working directory: the embedded Redis "
        "(`redis/`), the SQLite database without `DATABASE_URL` (`switchyard.db`), the "
        "development payload key (`payload-keys`), the outbox backends' files (`outbox/`), "
        "local storage (`storage/`), media work files (`tmp/media/`) and the worker "
        "processes' core locks (`cpus/`)."))
    # Read by the Procfiles' shell, not by Switchyard: listed so a .env may set them
    # (unknown names are refused).
    port: int = Field(8000, ge=1, le=65535, description=(
        "The port the production web process binds (the Procfile's `web`: "
        "`--bind 0.0.0.0:$PORT`); the platform sets it (Heroku does). The Procfile reads it "
        "from the environment (or `.env`), not from Switchyard, so this default is not "
        "applied there."))
    web_port: int = Field(8000, ge=1, le=65535, description=(
        "The port of the development web process: `switchyard dev` binds it on 127.0.0.1 "
        "(`Procfile.dev`'s `$WEB_PORT`) and prints its URLs with it."))

    # Redis and the brokers.
    redis_url: SecretStr | None = Field(None, description=(
        "The state store's Redis (idempotency keys, limits, results, history, metrics, "
        "dead letters, workers, the clock), and the broker unless `BROKER_URL` is set: "
        "`redis://`, or `rediss://` for TLS (see `REDIS_TLS_VERIFY`). Required in "
        "production. Unset: the embedded Redis on 127.0.0.1 at `EMBEDDED_REDIS_PORT`, run "
        "by `switchyard redis`."))
    broker_url: SecretStr | None = Field(None, description=(
        "The broker: a `redis://` or `rediss://` URL (the Redis broker), or `amqp://` or "
        "`amqps://` (RabbitMQ); for a RabbitMQ cluster, its nodes' URLs separated by `;`, "
        "tried in turn. Unset: the state store's Redis (`REDIS_URL`)."))
    embedded_redis_port: int = Field(DEFAULT_EMBEDDED_REDIS_PORT, ge=1, le=65535, description=(
        "Port of the embedded Redis that `switchyard redis` runs (127.0.0.1, data under "
        "`VAR_DIR/redis`) when `REDIS_URL` is unset. With neither this nor `REDIS_URL` set, "
        "a process uses the port the running `switchyard redis` recorded in "
        "`VAR_DIR/embedded-redis.json`, so another shell finds the one `switchyard dev` "
        "started."))
    redis_timeout_ms: int = Field(3_000, ge=100, description=(
        "Every Redis call (state store and Redis broker, in every process), connecting "
        "included, gives up after this many ms; a blocking wait (a result wait, the "
        "broker's doorbell) gives up 2 s after its own wait."))
    rabbitmq_connect_timeout_ms: int = Field(3_000, ge=100, description=(
        "Connecting to RabbitMQ, and its handshake, give up after this many ms (pika's "
        "`socket_timeout` and `stack_timeout`), unless a `BROKER_URL` sets those itself."))
    rabbitmq_management_url: SecretStr | None = Field(None, description=(
        "RabbitMQ broker: its management API, `https://user:password@host` (hosted "
        "RabbitMQ such as CloudAMQP gives it; locally `http://guest:guest@127.0.0.1:15672` "
        "with the `rabbitmq_management` plugin), for what AMQP cannot tell without taking "
        "a message: each queue's unacked messages and the age of its oldest waiting one. "
        "Unset: \"active\" is what the workers' heartbeats report running, and the oldest "
        "waiting job is not known."))
    key_prefix: str = Field(
        "switchyard", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description=(
            "Prefix of every key the state store writes in Redis (history, dead letters, "
            "idempotency keys, results, metrics, the clock, rate limits): letters, digits, "
            "`_`, `.` and `-`. Deployments sharing one Redis need different prefixes."))
    broker_namespace: str = Field("dramatiq", min_length=1, description=(
        "Namespace of the Redis broker's keys (queues, delay and dead-letter queues, "
        "heartbeats). RabbitMQ does not use it."))
    redis_heartbeat_timeout_ms: int = Field(15_000, ge=1_000, description=(
        "Redis broker: a worker silent this many ms counts as dead, and the messages it "
        "fetched but did not ack are requeued for the other workers (RabbitMQ requeues them "
        "as soon as the worker's connection drops)."))
    redis_maintenance_chance: int = Field(1_000, ge=0, le=1_000_000, description=(
        "Redis broker: out of a million fetches, how many also requeue dead workers' "
        "messages (Dramatiq's random maintenance). 0: only every "
        "`REDIS_MAINTENANCE_INTERVAL_MS`."))
    redis_maintenance_interval_ms: int = Field(5_000, ge=100, description=(
        "Redis broker: how often (ms) each consumer requeues the messages its queue's dead "
        "workers held (see `REDIS_HEARTBEAT_TIMEOUT_MS`), so an idle queue does not wait "
        "for `REDIS_MAINTENANCE_CHANCE`."))

    # Processes and services: the worker processes (docs/deployment.md).
    worker_processes: int | Literal["auto"] = Field(1, description=(
        f"Worker processes one `switchyard worker` starts (1 to {MAX_WORKER_PROCESSES}), or "
        "`auto`: one per core the command may run on (`taskset` and container CPU sets "
        "count, CPU quotas do not). `--processes` on the command line wins."))
    worker_pin_cpus: bool | None = Field(None, description=(
        "Pin each worker process to a core of its own (claimed with a lock under "
        "`VAR_DIR/cpus`): processes moved between cores hand the GIL across them. Where a "
        "process cannot be pinned, the worker says why and runs unpinned. `--pin` and "
        "`--no-pin` win. Unset: pinned with `WORKER_PROCESSES=auto`, not otherwise."))
    worker_prefetch: int | None = Field(None, ge=1, le=65_535, description=(
        "Messages each worker process takes from a queue ahead of its threads. Unset: "
        "Dramatiq's default, twice its threads (the Redis broker refills at half of it, "
        "so 16 and 64 ran the production job at the same rate: `bench/production.py "
        "--prefetch`). A killed worker's prefetched jobs come back after "
        "REDIS_HEARTBEAT_TIMEOUT_MS on Redis, at once on RabbitMQ."))
    worker_timeout_ms: int = Field(1_000, ge=10, le=60_000, description=(
        "How long a worker's consumers and threads wait for work before they look again "
        "(Dramatiq's default). Lower, an idle worker sends Redis more commands (a wait "
        "and a fetch per queue each time) for no gain on the Redis broker, whose "
        "consumers are woken when work arrives."))

    # Beyond one machine (docs/deployment.md).
    redis_tls_verify: bool = Field(True, description=(
        "`rediss://` URLs: verify the Redis server's certificate and host name. `false` "
        "still encrypts but accepts any certificate, such as Heroku Redis's self-signed "
        "one."))
    redis_tls_ca_file: Path | None = Field(None, description=(
        "`rediss://` URLs: verify the server's certificate against this CA file (PEM), "
        "which must exist, instead of the system's CAs; not used with "
        "`REDIS_TLS_VERIFY=false`. Unset: the system's CAs."))
    redis_sentinels: str | None = Field(
        None, pattern=r"^\s*[^\s,:]+:\d+(\s*,\s*[^\s,:]+:\d+)*\s*$", description=(
            "Redis Sentinel: `host:port,host:port,...`. Every client asks these Sentinels "
            "for the primary of `REDIS_SENTINEL_SERVICE` whenever it connects, so a failover "
            "needs no restart. `REDIS_URL` (required) then gives only the scheme, "
            "credentials and database; its host is ignored. A `redis://` `BROKER_URL` goes "
            "through the same Sentinels. Unset: no Sentinel."))
    redis_sentinel_service: str = Field("mymaster", min_length=1, description=(
        "Redis Sentinel: the name the Sentinels monitor the primary as."))
    redis_sentinel_password: SecretStr | None = Field(None, description=(
        "Redis Sentinel: the Sentinels' own password. Unset: they need none."))
    redis_enqueue_replicas: int = Field(0, ge=0, le=16, description=(
        "Redis broker: an enqueue returns only once this many replicas hold the message "
        "(`WAIT`), and fails otherwise after `REDIS_ENQUEUE_WAIT_MS`, so an enqueue that "
        "returned survives a failover; while fewer replicas are connected, no enqueue "
        "succeeds. 0: an enqueue returns as soon as the primary has it."))
    redis_enqueue_wait_ms: int = Field(1_000, ge=1, description=(
        "Redis broker, with `REDIS_ENQUEUE_REPLICAS`: how long (ms) an enqueue waits for "
        "the replicas before it fails (`NotReplicated`). Must be below `REDIS_TIMEOUT_MS`."))
    rabbitmq_queue_type: Literal["classic", "quorum"] = Field("classic", description=(
        "`quorum` declares every queue Switchyard declares (job queues, their `.DQ` and "
        "`.XQ`, the bridge's) as a quorum queue, replicated across the RabbitMQ cluster's "
        "nodes; quorum queues ignore priorities on RabbitMQ 3. A queue's type cannot change "
        "once it exists (docs/deployment.md)."))
    rabbitmq_max_priority: int = Field(0, ge=0, le=9, description=(
        "Classic queues: declared with `x-max-priority` of this many levels, so a job's "
        "priority (0 to 9, higher first) orders its queue; 0 declares none, and a job "
        "sent with a priority is refused. Quorum queues take none (docs/deployment.md). "
        "An existing queue's arguments cannot change: drain and delete it first."))
    rabbitmq_delivery_limit: int = Field(20, ge=1, le=1_000, description=(
        "Quorum queues: a message returned unacked more than this many times (a worker "
        "killed, a connection lost) goes to its dead-letter queue (`<queue>.XQ`, the "
        "bridge's `<family>.dead`) instead of coming back for ever."))

    # Processes and services: the database.
    database_url: SecretStr | None = Field(None, description=(
        "The database: `postgresql://user:password@host/db` (or `postgres://`; psycopg 3). "
        "Required in production. Unset: SQLite at `VAR_DIR/switchyard.db`."))
    # Processes and services: logs (docs/operations.md#logs).
    log_format: Literal["text", "json"] = Field("text", description=(
        "How every process writes its log lines: `text`, or `json`: one JSON object a "
        "line with `time` (ISO 8601, UTC), `level`, `logger`, `message`, `exc` (a "
        "traceback) and, while a job runs, its `message_id`, `actor`, `queue` and "
        "`attempt`; secrets, email addresses and phone numbers masked. Workers, the clock, "
        "the bridges, the CLI and the web process (gunicorn's and uvicorn's lines too); "
        "the supervising `dramatiq` process of `switchyard worker` keeps its few start and "
        "stop lines in text."))

    # What the jobs say to people (Email, Telegram).
    app_name: str = Field("Switchyard", min_length=1, max_length=64, description=(
        "The product name the emails speak of (one-time codes, welcome, notifications)."))
    invite_link_ttl_ms: int = Field(DAY_MS, ge=60_000, le=366 * DAY_MS, description=(
        "How long (ms) a subscriber's single-use Telegram invite link (`invite_user`) "
        "stays valid."))

    # The pipeline and retention (milliseconds, like Dramatiq). An actor's own option
    # (`max_retries`, `min_backoff`...) wins over these defaults.
    max_retries: int = Field(3, ge=0, description=(
        "Retries of a job that failed with a retryable or unknown error, after which it is "
        "dead-lettered. An actor's `max_retries` wins."))
    min_backoff_ms: int = Field(5_000, ge=0, description=(
        "The first retry's wait (ms); each further retry doubles it, up to "
        "`MAX_BACKOFF_MS`, with jitter. An actor's `min_backoff` wins."))
    max_backoff_ms: int = Field(20_000, ge=0, description=(
        "Longest wait (ms) before a retry. An actor's `max_backoff` wins."))
    max_deferral_ms: int = Field(HOUR_MS, ge=0, description=(
        "Longest total wait (ms) of one job its provider rate limits (each wait as long as "
        "the provider asks, spending no attempt); past it, the job is dead-lettered. An "
        "actor's `max_deferral` wins."))
    defer_ms: int = Field(1_000, ge=10, description=(
        "How long (ms) a job waits, without spending an attempt, before it is tried again "
        "when a job with the same idempotency key is running. (Paused queues, ordered groups "
        "and concurrency limits hold jobs where they wait, with no retry.)"))
    idempotency_ttl_ms: int = Field(DAY_MS, ge=1_000, description=(
        "How long (ms) a job with an idempotency key (given at enqueue, or made by its "
        "actor's `idempotency_key` function) turns duplicates away after it succeeded. An "
        "actor's `idempotency_ttl` wins; a job without a key uses `REDELIVERY_GUARD_MS`."))
    idempotency_lease_ms: int = Field(30_000, ge=300, description=(
        "A running job's hold on its idempotency key lasts this long (ms) unless renewed; "
        "it is renewed while the job runs, so a dead worker's hold frees itself within it."))
    batch_ttl_ms: int = Field(7 * DAY_MS, ge=60_000, description=(
        "How long (ms) a batch's counts and callback are kept after its last change: a "
        "member that ends later than this is not counted, and its callback never runs."))
    lane_hold_ms: int = Field(HOUR_MS, ge=1_000, description=(
        "How long (ms) a job's place in its ordered group or concurrency limit outlives its "
        "last claim (admission, start, retry; never less than twice its `time_limit`). It "
        "lapses only for a job whose message was deleted outside Switchyard: then the next "
        "job of its group or limit goes through."))
    history_keep_done: int = Field(100, ge=0, description=(
        "Done (and skipped) jobs kept in the history, per queue, newest first."))
    history_keep_failed: int = Field(500, ge=0, description=(
        "Failed jobs kept in the history, per queue, newest first."))
    history_ttl_ms: int = Field(7 * DAY_MS, ge=1_000, description=(
        "Longest time (ms) a finished job stays in the history, whatever the counts."))
    events_keep: int = Field(100_000, ge=0, description=(
        "Job changes kept in the state store for clients of the event stream "
        "(`GET /api/events`), newest first, about this many; 0: no events."))
    result_ttl_ms: int = Field(DAY_MS, ge=1_000, description=(
        "How long (ms) a job's result is kept for those who wait for it or ask for it."))
    redelivery_guard_ms: int = Field(60_000, ge=1_000, description=(
        "How long (ms) a job without an idempotency key (its key is its message id) turns "
        "away a redelivery of the same message after it succeeded (an ack lost to a broker "
        "restart)."))
    dead_letter_keep: int = Field(10_000, ge=1, description=(
        "Dead letters kept per queue, newest first."))
    dead_letter_ttl_ms: int = Field(30 * DAY_MS, ge=1_000, description=(
        "Longest time (ms) a dead letter is kept, to inspect and replay."))
    max_payload_bytes: int = Field(256 * 1024, ge=1_024, le=64 * 1024 * 1024, description=(
        "Largest job payload (its arguments as compact JSON, as they are sealed): every "
        "producer's enqueue (HTTP API, CLI, bridges, Python) refuses a larger one, naming "
        "this limit. A dead letter whose payload is larger (only a producer writing to the "
        "broker directly can make one) is kept without it, so it cannot be replayed."))
    flush_interval_ms: int = Field(50, ge=5, description=(
        "How often (ms) each process writes its buffered state-store writes (history, "
        "metrics, done marks) to Redis; also on shutdown, and in a worker before each "
        "batch of acks. A job's change reaches the event stream within it."))
    worker_heartbeat_ms: int = Field(5_000, ge=100, description=(
        "How often (ms) each worker records that it is alive; one silent for three beats "
        "counts as gone (`switchyard health`, the dashboard)."))
    timeline_minute_ttl_ms: int = Field(2 * HOUR_MS, ge=HOUR_MS, description=(
        "How long (ms) the dashboard's per-minute job counts are kept."))
    timeline_hour_ttl_ms: int = Field(2 * DAY_MS, ge=DAY_MS, description=(
        "How long (ms) the dashboard's per-hour job counts are kept."))

    # The web process: production refuses to start it without credentials (web/auth.py).
    web_username: str | None = Field(None, min_length=1, description=(
        "User name of HTTP basic auth, for people (the dashboard, the API). Required in "
        "production. Unset: `switchyard dev` uses `dev`; elsewhere no basic login works."))
    web_password: SecretStr | None = Field(None, min_length=8, description=(
        "Password of HTTP basic auth. Production requires at least 12 characters, 6 "
        "different ones, no common password, and 3 kinds of character (lower case, upper "
        "case, digits, symbols). Unset: `switchyard dev` generates one for its run and "
        "prints it; elsewhere no basic login works."))
    web_reveal_username: str | None = Field(None, min_length=1, description=(
        "User name of a second HTTP basic login, for operators who may also reveal a "
        "dead-lettered job's arguments (known secret fields masked; each reveal logged "
        "with who and when). Unset: nobody may."))
    web_reveal_password: SecretStr | None = Field(None, min_length=8, description=(
        "Password of `WEB_REVEAL_USERNAME`; production holds it to `WEB_PASSWORD`'s "
        "rules."))
    api_token: SecretStr | None = Field(None, min_length=16, description=(
        "Bearer token for services (`Authorization: Bearer ...`), on every path that needs "
        "credentials. Production requires at least 32 characters, 6 different ones, no "
        "common password, and 3 kinds of character or enough randomness (64 hex digits "
        "pass). Unset: `switchyard dev` generates one for its run and prints it; elsewhere "
        "no token works."))
    max_request_bytes: int = Field(1024 * 1024, ge=1_024, le=64 * 1024 * 1024, description=(
        "Largest HTTP request body (bytes) the web process reads; a larger one is answered "
        "413 naming this limit, unread. It bounds what the server takes in at all; a job's "
        "payload within it is then held to `MAX_PAYLOAD_BYTES` (also a 413)."))

    # Alerts.
    sentry_dsn: SecretStr | None = Field(None, description=(
        "Sentry project DSN: one event per dead letter (none per retried attempt), with "
        "tokens, addresses, phone numbers and message bodies scrubbed and no job "
        "arguments. Unset: no Sentry."))
    sentry_environment: str | None = Field(None, description=(
        "The environment Sentry files events under. Unset: `SWITCHYARD_ENV`."))
    release: str | None = Field(None, description=(
        "The release Sentry files events under (a version or commit). Unset: the Sentry "
        "SDK's own guess."))

    # Outbound HTTP (every provider's client).
    http_connect_timeout_ms: int = Field(5_000, ge=100, description=(
        "Every provider call (Telegram, Discord, FCM, Resend, Twilio, S3): connecting gives "
        "up after this many ms."))
    http_timeout_ms: int = Field(15_000, ge=100, description=(
        "Every provider's HTTP call: each read, write or wait for a pooled connection gives "
        "up after this many ms (not the call as a whole). Also the SMTP socket timeout, and "
        "S3's read timeout (at least 30 s)."))

    # Telegram: the Bot API, and a user account (Telethon) for channel joins.
    telegram_backend: Literal["api", "outbox"] | None = Field(None, description=(
        "`api`: the Telegram Bot API (`TELEGRAM_BOT_TOKEN`) and a user account "
        "(`TELEGRAM_API_ID`, `TELEGRAM_API_HASH`, `TELEGRAM_SESSION`) for channel joins; "
        "`outbox`: calls written as files under `VAR_DIR/outbox/telegram` (development). A "
        "missing credential fails only the jobs that need it, dead-lettered naming it. "
        + UNSET_BACKEND.format(stand_in="outbox")))
    telegram_bot_token: SecretStr | None = Field(None, description=(
        "The bot's token from @BotFather (bot operations: invites, removals, rights "
        "checks)."))
    telegram_api_url: str = Field("https://api.telegram.org", pattern=_HTTP_URL, description=(
        "Base URL of the Bot API server (a self-hosted one works too)."))
    telegram_api_id: int | None = Field(None, ge=1, description=(
        "The user account's app id, from my.telegram.org (channel joins)."))
    telegram_api_hash: SecretStr | None = Field(None, description=(
        "The user account's app hash, from my.telegram.org."))
    telegram_session: SecretStr | None = Field(None, description=(
        "The user account's Telethon `StringSession`: a full login to the account."))

    # Discord REST v10.
    discord_bot_token: SecretStr | None = Field(None, description=(
        "The Discord bot's token (`DISCORD_BACKEND=api`)."))
    discord_api_url: str = Field("https://discord.com/api/v10", pattern=_HTTP_URL, description=(
        "Base URL of Discord's REST API (v10)."))
    discord_invalid_request_budget: int = Field(1_000, ge=1, le=10_000, description=(
        "Invalid answers (401, 403, 429) one process may get from Discord within 10 "
        "minutes; past it, the process stops calling Discord until the oldest ages out. "
        "Cloudflare bans the IP at 10,000: keep processes times this below that."))

    # Discord interactions and events.
    discord_backend: Literal["api", "outbox"] | None = Field(None, description=(
        "`api`: Discord's REST API answers interactions and guild events; `outbox`: calls "
        "written as files under `VAR_DIR/outbox/discord`, interaction tokens left out "
        "(development: an interaction may be answered for its token's whole 15 minutes). "
        + UNSET_BACKEND.format(stand_in="outbox")))
    discord_application_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$", description=(
        "The Discord application whose interaction webhooks answer (follow-ups, editing "
        "the original response); an interaction's own `applicationId` wins. Unset: an "
        "interaction without `applicationId` cannot be answered."))
    discord_defer_margin_ms: int = Field(300, ge=0, le=2_900, description=(
        "An interaction is deferred only while at least this much (ms) of Discord's 3 s "
        "for the first response remains (about one HTTP round trip); later, it is given up "
        "as a missed deadline."))
    discord_token_margin_ms: int = Field(30_000, ge=0, le=600_000, description=(
        "An interaction is given up this long (ms) before its 15-minute token expires."))
    discord_session_ttl_ms: int = Field(10 * 60_000, ge=1_000, le=DAY_MS, description=(
        "A multi-step flow (such as verification) expires this long (ms) after its last "
        "step."))
    discord_cooldown_ms: int = Field(3_000, ge=0, le=HOUR_MS, description=(
        "After a user runs a command (each step of a multi-step one apart), the same user's "
        "next run of it within this many ms is refused. 0: no cooldown."))
    discord_rate_limit: int = Field(20, ge=1, le=10_000, description=(
        "Commands one user may run within `DISCORD_RATE_WINDOW_MS` (a sliding window); "
        "more are refused."))
    discord_rate_window_ms: int = Field(60_000, ge=1_000, le=DAY_MS, description=(
        "The sliding window (ms) of `DISCORD_RATE_LIMIT`."))
    discord_event_ttl_ms: int = Field(DAY_MS, ge=1_000, le=7 * DAY_MS, description=(
        "A guild event id runs once within this window (ms); a repeat inside it is "
        "skipped."))

    # Push: Firebase Cloud Messaging HTTP v1.
    push_backend: Literal["fcm", "outbox"] | None = Field(None, description=(
        "`fcm`: Firebase Cloud Messaging HTTP v1 (`FCM_CREDENTIALS_FILE`); `outbox`: each "
        "push written as a `.json` file under `VAR_DIR/outbox/push` (development). "
        + UNSET_BACKEND.format(stand_in="outbox")))
    fcm_credentials_file: Path | None = Field(None, description=(
        "Path of the Firebase service account's JSON key (`PUSH_BACKEND=fcm`)."))
    fcm_project_id: str | None = Field(None, description=(
        "The Firebase project. Unset: the one the key file names."))
    fcm_api_url: str = Field("https://fcm.googleapis.com", pattern=_HTTP_URL, description=(
        "Base URL of the FCM API."))
    fcm_rate_limit: int = Field(500, ge=1, description=(
        "Push messages per second, across every process (counted in Redis); past it a send "
        "waits briefly for the next second, then is rate limited (tried again later without "
        "spending an attempt)."))

    # Email: Resend or SMTP.
    email_backend: Literal["resend", "smtp", "outbox"] | None = Field(None, description=(
        "`resend`: the Resend API (`RESEND_API_KEY`); `smtp`: an SMTP server "
        "(`SMTP_HOST`); `outbox`: each email written as an `.eml` file under "
        "`VAR_DIR/outbox/email` (development). " + UNSET_BACKEND.format(stand_in="outbox")))
    email_from: str = Field("Switchyard <noreply@localhost>", min_length=3, description=(
        "The sender (From) of every email."))
    resend_api_key: SecretStr | None = Field(None, description=(
        "Resend API key, `re_...` (`EMAIL_BACKEND=resend`)."))
    resend_api_url: str = Field("https://api.resend.com", pattern=_HTTP_URL, description=(
        "Base URL of the Resend API."))
    smtp_host: str | None = Field(None, description=(
        "The SMTP server's host name (`EMAIL_BACKEND=smtp`)."))
    smtp_port: int = Field(587, ge=1, le=65535, description=(
        "The SMTP server's port (587 for STARTTLS, usually 465 for `ssl`)."))
    smtp_username: str | None = Field(None, description=(
        "SMTP login name; needs `SMTP_PASSWORD`. Unset: no login (no AUTH)."))
    smtp_password: SecretStr | None = Field(None, description=(
        "SMTP login password."))
    smtp_security: Literal["starttls", "ssl", "none"] = Field("starttls", description=(
        "`starttls`: upgrade the connection with STARTTLS; `ssl`: implicit TLS (usually "
        "port 465); `none`: no encryption."))

    # SMS: Twilio.
    sms_backend: Literal["twilio", "outbox"] | None = Field(None, description=(
        "`twilio`: the Twilio API (`TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`); `outbox`: "
        "each SMS written as a `.json` file under `VAR_DIR/outbox/sms` (development). "
        + UNSET_BACKEND.format(stand_in="outbox")))
    twilio_account_sid: str | None = Field(None, description=(
        "Twilio account SID (`SMS_BACKEND=twilio`)."))
    twilio_auth_token: SecretStr | None = Field(None, description=(
        "Twilio auth token (`SMS_BACKEND=twilio`)."))
    twilio_from: str | None = Field(None, description=(
        "The sending phone number. `TWILIO_FROM` or `TWILIO_MESSAGING_SERVICE_SID` is "
        "needed; given both, both are sent."))
    twilio_messaging_service_sid: str | None = Field(None, description=(
        "The Twilio messaging service that sends (instead of, or with, `TWILIO_FROM`)."))
    twilio_api_url: str = Field("https://api.twilio.com", pattern=_HTTP_URL, description=(
        "Base URL of the Twilio API."))
    twilio_rate_limit: int = Field(1, ge=1, le=1_000, description=(
        "Messages a second the sending number may send, shared by every process (Twilio "
        "queues what goes faster: a US long code sends 1 a second, toll-free 3, a short "
        "code 100; a messaging service's pool more)."))

    # Object storage: S3 (or any S3-compatible server), or local disk.
    storage_backend: Literal["s3", "local"] | None = Field(None, description=(
        "`s3`: S3 or any S3-compatible server (`S3_BUCKET`); `local`: files under "
        "`VAR_DIR/storage`, served by the web process at signed URLs (`MEDIA_URL_BASE`): "
        "in production only where every worker and the web process share that disk. "
        + UNSET_BACKEND.format(stand_in="local")))
    s3_bucket: str | None = Field(None, description=(
        "The bucket (`STORAGE_BACKEND=s3`). The orphaned-media cleanup deletes objects "
        "nothing refers to: the bucket (or `CLEANUP_ORPHAN_PREFIX`) must be Switchyard's "
        "alone."))
    s3_endpoint_url: str | None = Field(None, pattern=_HTTP_URL, description=(
        "An S3-compatible server's URL (path-style addressing). Unset: AWS."))
    s3_region: str = Field("us-east-1", description=(
        "The bucket's region."))
    s3_access_key_id: str | None = Field(None, description=(
        "S3 access key id; needs `S3_SECRET_ACCESS_KEY`. Unset: boto3's default "
        "credentials (its environment variables, a profile, an instance role...)."))
    s3_secret_access_key: SecretStr | None = Field(None, description=(
        "S3 secret access key."))
    s3_max_attempts: int = Field(5, ge=1, le=20, description=(
        "Attempts per S3 call, the first included (botocore's standard retry mode)."))
    storage_url_ttl_ms: int = Field(HOUR_MS, ge=1_000, le=7 * DAY_MS, description=(
        "How long (ms) a media URL the API hands out stays valid: a presigned GET on S3, "
        "a signed `/media/` URL on local storage."))
    media_url_base: str = Field("http://127.0.0.1:8000", pattern=_HTTP_URL, description=(
        "Local storage: the web process's base URL in the media URLs it signs "
        "(`<base>/media/<key>?expires=...&signature=...`, served only while the signature "
        "is valid). It does not follow `WEB_PORT`."))
    media_url_secret: SecretStr | None = Field(None, min_length=32, description=(
        "Local storage: the HMAC secret that signs media URLs. Unset: one derived from the "
        "newest payload key (no media URLs at all when there is no key and "
        "`PAYLOAD_ENCRYPTION=false`)."))

    # Media jobs: hostile or broken input is dead-lettered at once (`BadMedia`).
    media_max_bytes: int = Field(200 * 1024 * 1024, ge=1_024, description=(
        "An original larger than this many bytes is refused."))
    media_max_pixels: int = Field(50_000_000, ge=10_000, description=(
        "An image, or a video frame, with more pixels than this is refused (the "
        "decompression-bomb cap)."))
    media_max_duration_ms: int = Field(30 * 60_000, ge=1_000, description=(
        "A video or audio longer than this (ms) is refused."))
    media_ffmpeg_timeout_ms: int = Field(10 * 60_000, ge=1_000, description=(
        "An ffmpeg run still going after this many ms is killed, and its job "
        "dead-lettered."))
    media_image_max_side: int = Field(2_048, ge=16, le=16_384, description=(
        "Processed images are shrunk to fit a square of this side (pixels), never "
        "enlarged."))
    media_thumbnail_side: int = Field(200, ge=16, le=1_024, description=(
        "Side (pixels) of the square, centre-cropped thumbnail."))
    media_image_quality: int = Field(82, ge=1, le=95, description=(
        "JPEG and WebP quality of processed images."))
    media_temp_max_age_ms: int = Field(DAY_MS, ge=60_000, description=(
        "Media work files older than this (ms), left by a killed worker under "
        "`VAR_DIR/tmp/media`, are swept."))

    # Cleanup jobs and the clock.
    cleanup_batch_size: int = Field(500, ge=1, le=1_000, description=(
        "Rows per commit in the cleanup jobs, and storage keys per batch the "
        "orphaned-media job checks."))
    cleanup_run_budget_ms: int = Field(5 * 60_000, ge=1_000, description=(
        "A cleanup run stops after this many ms (`\"more\": true` in its result); the next "
        "run goes on."))
    cleanup_story_ttl_ms: int = Field(DAY_MS, ge=60_000, description=(
        "`cleanup_stories`: a story created longer ago than this (ms) is soft-deleted and "
        "its media deleted."))
    cleanup_session_idle_ms: int = Field(30 * DAY_MS, ge=60_000, description=(
        "`cleanup_sessions`: a session idle longer than this (ms) is deleted; a device left "
        "with no session is signed out."))
    cleanup_message_media_ttl_ms: int = Field(365 * DAY_MS, ge=60_000, description=(
        "`cleanup_messages`: a message older than this (ms) loses its media (the message "
        "is kept)."))
    cleanup_temp_file_ttl_ms: int = Field(DAY_MS, ge=60_000, description=(
        "`cleanup_temp_files`: a temporary file created longer ago than this (ms) is "
        "deleted."))
    cleanup_used_prekey_ttl_ms: int = Field(30 * DAY_MS, ge=0, description=(
        "`cleanup_prekeys`: prekeys used longer ago than this (ms) are deleted."))
    cleanup_prekey_minimum: int = Field(10, ge=0, le=1_000, description=(
        "`cleanup_prekeys`: every user is then topped up to this many unused prekeys."))
    cleanup_orphan_grace_ms: int = Field(DAY_MS, ge=0, description=(
        "`cleanup_orphaned_media`: an object no row refers to is deleted only once written "
        "longer ago than this (ms), so an upload in flight is kept."))
    cleanup_orphan_prefix: str = Field("", max_length=512, description=(
        "`cleanup_orphaned_media`: only objects under this key prefix can be collected. "
        "Unset: every object in the bucket (or under `VAR_DIR/storage`)."))
    notification_delivery_retention_ms: int = Field(30 * DAY_MS, ge=DAY_MS, description=(
        "`cleanup_records`: a notification delivery (a row per push, email or SMS) created "
        "longer ago than this (ms) is deleted. A retried or replayed job finds what it "
        "already delivered by these rows: keep it at least `DEAD_LETTER_TTL_MS`."))
    cleanup_run_retention_ms: int = Field(90 * DAY_MS, ge=DAY_MS, description=(
        "`cleanup_records`: a cleanup log row (`cleanup_runs`) started longer ago than this "
        "(ms) is deleted."))
    clock_catch_up_ms: int = Field(DAY_MS, ge=0, le=MAX_DELAY_MS, description=(
        "A clock that starts sends the slots it missed within this many ms, one run per "
        "schedule unless `CLOCK_COALESCE=false`."))
    clock_coalesce: bool = Field(True, description=(
        "A schedule's missed slots are sent as one run (the newest); `false`: one run per "
        "slot."))
    clock_lease_ms: int = Field(30_000, ge=1_000, description=(
        "A clock claims each slot for this long (ms) before it enqueues it; a slot claimed "
        "by a clock that died is taken over when the claim ends."))
    clock_tick_ms: int = Field(1_000, ge=10, le=60_000, description=(
        "How often (ms) a clock looks for due slots."))

    # Ingress: the RabbitMQ bridge and SQS.
    amqp_url: SecretStr | None = Field(None, description=(
        "The RabbitMQ the bridge (`switchyard bridge`) consumes: one `amqp://` or "
        "`amqps://` URL (not a `;` list of nodes). Unset: `BROKER_URL` when it names "
        "RabbitMQ; with neither, the bridge refuses to start."))
    bridge_prefetch: int = Field(500, ge=1, le=65_535, description=(
        "Most deliveries the bridge holds unacked on each of its two channels "
        "(interactions, the rest): while Redis or the broker is away, RabbitMQ stops "
        "sending there."))
    bridge_heartbeat_ms: int = Field(30_000, ge=1_000, description=(
        "The AMQP heartbeat the bridge asks for (ms, sent as whole seconds)."))
    bridge_shutdown_timeout_ms: int = Field(20_000, ge=0, description=(
        "On SIGTERM, the bridge stops consuming and finishes the deliveries in hand within "
        "this many ms; the rest stays unacked, for RabbitMQ to deliver again."))
    bridge_max_backoff_ms: int = Field(30_000, ge=100, description=(
        "Longest wait (ms) between the bridge's retries while RabbitMQ, Redis or the "
        "broker is away (exponential backoff with jitter)."))
    bridge_recheck_ms: int = Field(30_000, ge=100, description=(
        "How often (ms) the bridge publishes new dead letters to seed 003's `<queue>.dead`."))
    bridge_queue_look_ms: int = Field(1_000, ge=100, le=60_000, description=(
        "How often (ms) the bridge looks for seed 004's queues their producer has not "
        "declared yet (a passive declare each), so that a queue is consumed about this long "
        "after it appears: an interaction has 3 s to be answered."))
    bot_operations_queue_url: str | None = Field(None, pattern=_HTTP_URL, description=(
        "Seed 001's SQS FIFO queue of bot operations, which `switchyard sqs` long-polls; "
        "credentials are boto3's own (`AWS_ACCESS_KEY_ID`, a role...). Unset: `switchyard "
        "sqs` refuses to start."))
    sqs_endpoint: str | None = Field(None, pattern=_HTTP_URL, description=(
        "An SQS-compatible server's URL. Unset: AWS SQS."))
    aws_region: str = Field("us-east-1", min_length=1, description=(
        "The SQS queue's AWS region."))
    sqs_wait_ms: int = Field(20_000, ge=0, le=20_000, description=(
        "Long poll (ms, sent as whole seconds) of each SQS receive; SQS allows up to 20 s."))

    # Payload encryption (switchyard/base/sealing.py).
    payload_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description=(
            "Keys that seal job arguments, results and dead letters at rest (AES-256-GCM): "
            "`<id>:<base64 of 32 bytes>` entries, newest first, separated by commas or spaces "
            "(or a JSON list). New seals use the first; every listed key still opens. "
            "`switchyard keys generate` prints a new entry. Required in production unless "
            "`PAYLOAD_ENCRYPTION=false`. Unset: outside production, `VAR_DIR/payload-keys`, "
            "generated on first use."))
    payload_encryption: bool = Field(True, description=(
        "`false` seals nothing new (what is sealed under a listed key still opens), accepts "
        "plain messages from producers without the keys, and lets production start without "
        "`PAYLOAD_KEYS`."))

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

    @model_validator(mode="before")
    @classmethod
    def _development_stand_ins(cls, data: Any) -> Any:
        """Outside production, an unset delivery backend is its stand-in (an outbox, local
        storage), so `make dev` runs every job; production keeps it unset (never pretends)."""
        if not isinstance(data, dict) or data.get("switchyard_env") == "production":
            return data
        unset = {name: stand_in for name, stand_in in STAND_INS.items()
                 if data.get(name) is None}
        return {**data, **unset} if unset else data

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


#: The sections of the settings reference (docs/settings.md, `switchyard settings`), in
#: page order: every field in exactly one, in model order (tests/switchyard/base/
#: test_settings_doc.py checks both).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Processes and services": (
        "switchyard_env", "var_dir", "port", "web_port", "worker_processes",
        "worker_pin_cpus", "worker_prefetch", "worker_timeout_ms", "database_url",
        "log_format"),
    "Redis and the brokers": (
        "redis_url", "broker_url", "embedded_redis_port", "redis_timeout_ms",
        "rabbitmq_connect_timeout_ms", "rabbitmq_management_url", "key_prefix",
        "broker_namespace", "redis_heartbeat_timeout_ms", "redis_maintenance_chance",
        "redis_maintenance_interval_ms"),
    "Beyond one machine": (
        "redis_tls_verify", "redis_tls_ca_file", "redis_sentinels", "redis_sentinel_service",
        "redis_sentinel_password", "redis_enqueue_replicas", "redis_enqueue_wait_ms",
        "rabbitmq_queue_type", "rabbitmq_max_priority", "rabbitmq_delivery_limit"),
    "The pipeline": (
        "max_retries", "min_backoff_ms", "max_backoff_ms", "max_deferral_ms", "defer_ms",
        "idempotency_ttl_ms", "idempotency_lease_ms", "batch_ttl_ms", "lane_hold_ms",
        "redelivery_guard_ms", "flush_interval_ms", "worker_heartbeat_ms"),
    "Retention": (
        "history_keep_done", "history_keep_failed", "history_ttl_ms", "events_keep",
        "result_ttl_ms",
        "dead_letter_keep", "dead_letter_ttl_ms", "max_payload_bytes",
        "timeline_minute_ttl_ms", "timeline_hour_ttl_ms"),
    "The web process": ("web_username", "web_password", "web_reveal_username",
                        "web_reveal_password", "api_token", "max_request_bytes"),
    "Alerts": ("sentry_dsn", "sentry_environment", "release"),
    "Providers: HTTP": ("http_connect_timeout_ms", "http_timeout_ms"),
    "Telegram": (
        "invite_link_ttl_ms", "telegram_backend", "telegram_bot_token", "telegram_api_url",
        "telegram_api_id", "telegram_api_hash", "telegram_session"),
    "Discord": (
        "discord_bot_token", "discord_api_url", "discord_invalid_request_budget",
        "discord_backend", "discord_application_id", "discord_defer_margin_ms",
        "discord_token_margin_ms", "discord_session_ttl_ms", "discord_cooldown_ms",
        "discord_rate_limit", "discord_rate_window_ms", "discord_event_ttl_ms"),
    "Push": (
        "push_backend", "fcm_credentials_file", "fcm_project_id", "fcm_api_url",
        "fcm_rate_limit"),
    "Email": (
        "app_name", "email_backend", "email_from", "resend_api_key", "resend_api_url",
        "smtp_host", "smtp_port", "smtp_username", "smtp_password", "smtp_security"),
    "SMS": (
        "sms_backend", "twilio_account_sid", "twilio_auth_token", "twilio_from",
        "twilio_messaging_service_sid", "twilio_api_url", "twilio_rate_limit"),
    "Storage and media": (
        "storage_backend", "s3_bucket", "s3_endpoint_url", "s3_region", "s3_access_key_id",
        "s3_secret_access_key", "s3_max_attempts", "storage_url_ttl_ms", "media_url_base",
        "media_url_secret", "media_max_bytes", "media_max_pixels", "media_max_duration_ms",
        "media_ffmpeg_timeout_ms", "media_image_max_side", "media_thumbnail_side",
        "media_image_quality", "media_temp_max_age_ms"),
    "Cleanup and the clock": (
        "cleanup_batch_size", "cleanup_run_budget_ms", "cleanup_story_ttl_ms",
        "cleanup_session_idle_ms", "cleanup_message_media_ttl_ms", "cleanup_temp_file_ttl_ms",
        "cleanup_used_prekey_ttl_ms", "cleanup_prekey_minimum", "cleanup_orphan_grace_ms",
        "cleanup_orphan_prefix", "notification_delivery_retention_ms",
        "cleanup_run_retention_ms", "clock_catch_up_ms", "clock_coalesce", "clock_lease_ms",
        "clock_tick_ms"),
    "Ingress": (
        "amqp_url", "bridge_prefetch", "bridge_heartbeat_ms", "bridge_shutdown_timeout_ms",
        "bridge_max_backoff_ms", "bridge_recheck_ms", "bridge_queue_look_ms",
        "bot_operations_queue_url", "sqs_endpoint", "aws_region", "sqs_wait_ms"),
    "Payload encryption": ("payload_keys", "payload_encryption"),
}


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
