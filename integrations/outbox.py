"""The development backends: what would be sent is written as files under `var/outbox`.

Email becomes an `.eml` file (open it in any mail client), SMS and push a `.json` file
with what the provider would have received. A send with an idempotency key writes a
file named after the key, so a retried job finds its file already there and does not
"deliver" twice; every file is written to a temporary name and renamed into place, so
a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from integrations.fcm import build_message
from integrations.messages import Email, Push, Sent, Sms, to_mime
from switchyard.base.errors import RetryableError

PROVIDER = "outbox"


class Outbox:
    """One folder of the outbox (`email`, `sms`, `push`), written file by file."""

    def __init__(self, root: Path, kind: str, suffix: str) -> None:
        self.dir = root / kind
        self.suffix = suffix

    def write(self, content: bytes, idempotency_key: str | None) -> Sent:
        if idempotency_key is None:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
        else:
            name = "key-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        path = self.dir / f"{name}{self.suffix}"
        if path.exists():  # the same job, again: already "delivered"
            return Sent(PROVIDER, name)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            os.replace(tmp, path)
        except OSError as error:  # a full or read-only disk may recover
            raise RetryableError(f"could not write to the outbox: {error.strerror}",
                                 code="disk", provider=PROVIDER) from error
        return Sent(PROVIDER, name)


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, ensure_ascii=False).encode()


class EmailOutbox:
    """`EmailSender` that writes each email as `var/outbox/email/<name>.eml`."""

    name = PROVIDER

    def __init__(self, root: Path, *, sender: str) -> None:
        self.outbox = Outbox(root, "email", ".eml")
        self.sender = sender

    def send(self, email: Email, *, idempotency_key: str | None = None) -> Sent:
        message = to_mime(email, sender=self.sender, idempotency_key=idempotency_key)
        return self.outbox.write(message.as_bytes(), idempotency_key)


class SmsOutbox:
    """`SmsSender` that writes each SMS as `var/outbox/sms/<name>.json`."""

    name = PROVIDER

    def __init__(self, root: Path) -> None:
        self.outbox = Outbox(root, "sms", ".json")

    def send(self, sms: Sms, *, idempotency_key: str | None = None) -> Sent:
        record = {"to": sms.to, "body": sms.body, "at": _now()}
        return self.outbox.write(_json(record), idempotency_key)


class PushOutbox:
    """`PushSender` that writes the FCM v1 message it would send to `var/outbox/push/`."""

    name = PROVIDER

    def __init__(self, root: Path) -> None:
        self.outbox = Outbox(root, "push", ".json")

    def send(self, push: Push, *, idempotency_key: str | None = None) -> Sent:
        # The real message builder, so data that FCM would refuse is refused here too.
        record = {"message": build_message(push), "at": _now()}
        return self.outbox.write(_json(record), idempotency_key)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
