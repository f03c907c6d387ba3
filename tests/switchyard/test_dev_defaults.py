"""Every seed job type through `switchyard send --wait` on the development defaults:
outbox providers for Telegram, email, SMS and push, SQLite under VAR_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.db import Database
from store.models import Device, User
from tests.support.processes import ROOT, WorkerProcesses

#: A product worker process and a CLI process per job.
pytestmark = pytest.mark.e2e

USER = "user-uuid-123"
CHANNEL = -1001234567890

#: (actor, seed-shaped payload, what the outbox should hold afterwards)
JOBS = [
    ("send_otp", {"email": "ann@example.com", "code": "481516"}, "email"),
    ("send_welcome_email", {"email": "ann@example.com", "name": "Ann"}, "email"),
    ("send_verification_link", {"email": "ann@example.com",
                                "link": "https://app.example/verify/abc"}, "email"),
    ("send_push", {"type": "push", "userId": USER, "fcmToken": "firebase-token",
                   "title": "New Message", "body": "John: Hey, how are you?",
                   "data": {"type": "message", "chatId": "chat-uuid"}}, "push"),
    ("send_email_notification", {"type": "email", "userId": USER, "email": "ann@example.com",
                                 "title": "Password Reset", "body": "Click the link below",
                                 "data": {"resetLink": "https://app.example/reset/t"}}, "email"),
    ("send_sms", {"type": "sms", "userId": USER, "phoneNumber": "+1234567890",
                  "title": "OTP Code", "body": "Your verification code is: 123456"}, "sms"),
    ("send_batch_notifications", {"userIds": [USER], "title": "Group Message",
                                  "body": "New message in Tech Team"}, "push"),
    ("join_channel", {"operation": "join", "channelId": "CHANNEL-ID",
                      "username": "technews"}, "telegram"),
    ("leave_channel", {"operation": "leave", "telegramId": CHANNEL}, "telegram"),
    ("invite_user", {"userId": USER, "channelId": CHANNEL, "subscriptionId": "sub-1",
                     "orderId": "order-1"}, "telegram"),
    ("remove_user", {"userId": USER, "channelId": CHANNEL, "subscriptionId": "sub-1",
                     "reason": "expiry"}, "telegram"),
    ("verify_permissions", {"channelId": CHANNEL, "listingId": "listing-1"}, "telegram"),
]


@pytest.fixture
def dev(test_env: dict[str, str]):
    var_dir = Path(test_env["VAR_DIR"])
    env = {**os.environ, **test_env}
    env.pop("DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    assert cli("db", "upgrade").returncode == 0
    database = Database(f"sqlite:///{var_dir / 'switchyard.db'}")
    with database.session() as session:
        session.add(User(id=USER, telegram_user_id=777, email="ann@example.com"))
        session.flush()
        session.add(Device(user_id=USER, push_token="device-token-1"))
    database.dispose()
    workers = WorkerProcesses(test_env, module="tests.support.product_worker")
    workers.start()
    yield cli, var_dir
    workers.stop_all()


def test_every_job_type_runs_end_to_end_on_the_defaults(dev):
    cli, var_dir = dev
    from store import channels

    database = Database(f"sqlite:///{var_dir / 'switchyard.db'}")
    with database.session() as session:
        channel_id = channels.find_or_create(session, "technews")[0].id
    database.dispose()
    for actor, payload, outbox in JOBS:
        before = files_in(var_dir / "outbox" / outbox)
        text = json.dumps(payload).replace("CHANNEL-ID", channel_id)
        result = cli("send", actor, text, "--wait", "--timeout", "60")
        assert result.returncode == 0, f"{actor}: {result.stderr}{result.stdout}"
        job = json.loads(result.stdout.split("\n", 1)[1])
        assert job["status"] == "done", (actor, job)
        # each job left a file of its own (not only one an earlier job wrote)
        assert files_in(var_dir / "outbox" / outbox) - before, actor


def files_in(folder: Path) -> set[Path]:
    return set(folder.iterdir()) if folder.exists() else set()
