"""End to end: a real worker process running the product's actors, a real broker (Redis),
the loopback provider fakes, and a real database (SQLite and PostgreSQL).

One `world` per database engine serves every test of this folder (a worker process
takes seconds to start); tests keep out of each other's way with ids of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

from store.db import Database
from switchyard import boot as runtime
from switchyard.base import settings
from tests.fakes.discord import DiscordFake
from tests.fakes.fcm import FcmFake
from tests.fakes.resend import ResendFake
from tests.fakes.telegram import TelegramFake
from tests.fakes.telethon import TelethonScript
from tests.fakes.twilio import TwilioFake
from tests.support.processes import WorkerProcesses
from tests.support.waiting import wait_for

BOT_TOKEN = "7000001:AAE" + "x" * 32
#: The Discord application whose interactions the world's worker answers.
DISCORD_APPLICATION = "1100000000000000001"
#: The queue of each actor: the contract the HTTP API and other services rely on.
QUEUES = {
    "join_channel": "channel-ops", "leave_channel": "channel-ops",
    "invite_user": "bot-operations", "remove_user": "bot-operations",
    "verify_permissions": "bot-operations",
    "send_otp": "email", "send_welcome_email": "email", "send_verification_link": "email",
    "send_push": "notification", "send_email_notification": "notification",
    "send_sms": "notification", "send_batch_notifications": "notification",
    "send_batch_push": "notification", "record_batch_notifications": "notification",
    "discord_interaction": "discord-interactions", "discord_guild_event": "discord-events",
}


@dataclass
class World:
    sy: runtime.App
    db: Database
    telegram: TelegramFake
    telethon: TelethonScript
    resend: ResendFake
    twilio: TwilioFake
    fcm: FcmFake
    var_dir: Path
    discord: DiscordFake

    def send(self, actor: str, payload: dict[str, Any], **options: Any) -> dramatiq.Message[Any]:
        """Enqueue a job by actor name, as another service would."""
        queue = QUEUES[actor]
        self.sy.broker.declare_queue(queue)
        return self.sy.broker.enqueue(dramatiq.Message(
            queue_name=queue, actor_name=actor, args=(), kwargs=payload, options=options))

    def batch_members(self, batch_id: str) -> list[str]:
        """The message ids of a batch's members (as `send_batch` makes them)."""
        import uuid

        from switchyard.runtime.batches import BATCH_NAMESPACE

        total = self.sy.state.batches.get(batch_id)["total"]  # type: ignore[index]
        return [str(uuid.uuid5(BATCH_NAMESPACE, f"{batch_id}:{n}")) for n in range(total)]

    def job(self, message_id: str) -> dict[str, Any] | None:
        self.sy.state.buffer.flush()
        return self.sy.state.history.get(message_id)

    def finished(self, message_id: str, timeout: float = 30) -> dict[str, Any]:
        """The job's history record once it is done, skipped or failed."""
        def final() -> dict[str, Any] | None:
            job = self.job(message_id)
            return job if job and job["status"] in ("done", "skipped", "failed") else None
        return wait_for(final, timeout=timeout, what=f"job {message_id} to finish")

    def run(self, actor: str, payload: dict[str, Any], *, timeout: float = 30,
            **options: Any) -> dict[str, Any]:
        """Send a job and wait for its final history record."""
        return self.finished(self.send(actor, payload, **options).message_id, timeout)

    def result(self, message: dramatiq.Message[Any], timeout_ms: int = 30_000) -> Any:
        """The job's result from the results backend (raises ResultFailure if it failed)."""
        backend = self.sy.broker.get_results_backend()
        return message.get_result(backend=backend, block=True, timeout=timeout_ms)


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    var_dir = tmp_path_factory.mktemp("world")
    if request.param == "sqlite":
        from store.migrate import upgrade

        database_url = f"sqlite:///{var_dir}/switchyard.db"
        upgrade(database_url)
    else:
        database_url = request.getfixturevalue("postgres_database")
    prefix = unique("w")
    fakes = (TelegramFake(BOT_TOKEN), ResendFake(rate_limit=None), TwilioFake(), FcmFake(),
             DiscordFake(bucket_limit=1_000))
    telegram, resend, twilio, fcm, discord = fakes
    env = {
        "REDIS_URL": redis_url, "KEY_PREFIX": prefix, "BROKER_NAMESPACE": f"{prefix}-broker",
        "FLUSH_INTERVAL_MS": "20", "DEFER_MS": "100", "WORKER_HEARTBEAT_MS": "500",
        "SWITCHYARD_ENV": "test", "DATABASE_URL": database_url, "VAR_DIR": str(var_dir),
        # The default schedule (5 s, 10 s, 20 s) made quick; the bot keeps its own 1 s, 2 s.
        "MIN_BACKOFF_MS": "100", "MAX_BACKOFF_MS": "400", "HTTP_TIMEOUT_MS": "3000",
        "TELEGRAM_BACKEND": "api", "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_API_URL": telegram.url, "TEST_TELETHON": "scripted",
        "EMAIL_BACKEND": "resend", "RESEND_API_KEY": resend.api_key,
        "RESEND_API_URL": resend.url, "EMAIL_FROM": "Acme <noreply@acme.example>",
        "APP_NAME": "Acme",
        "SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": twilio.account_sid,
        "TWILIO_AUTH_TOKEN": twilio.auth_token, "TWILIO_FROM": "+15550000000",
        "TWILIO_API_URL": twilio.url,
        "PUSH_BACKEND": "fcm", "FCM_API_URL": fcm.url,
        "FCM_CREDENTIALS_FILE": str(fcm.write_service_account(var_dir / "fcm.json")),
        "DISCORD_BACKEND": "api", "DISCORD_BOT_TOKEN": discord.token,
        "DISCORD_API_URL": discord.api_url, "DISCORD_APPLICATION_ID": DISCORD_APPLICATION,
        "DISCORD_COOLDOWN_MS": "5000",
    }
    workers = WorkerProcesses(env, module="tests.support.product_worker")
    try:
        workers.start()
        sy = runtime.build(settings.load(_env_file=None, **{
            k.lower(): v for k, v in env.items() if k != "TEST_TELETHON"}))
    except BaseException:
        workers.stop_all()
        raise
    state = redis.Redis.from_url(redis_url)
    yield World(sy, Database(database_url), telegram, TelethonScript(state, prefix), resend,
                twilio, fcm, var_dir, discord)
    workers.stop_all()
    sy.close()
    for fake in fakes:
        fake.stop()
    for key in state.scan_iter(f"{prefix}*", count=1000):
        state.delete(key)
    state.close()
