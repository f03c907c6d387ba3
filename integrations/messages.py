"""What the delivery backends send, and what they answer.

Email, SMS and push each have one small interface (`EmailSender`, `SmsSender`,
`PushSender`) with a provider backend and an outbox backend; settings pick one
(`integrations.providers`). Every `send` takes the job's idempotency key: backends
that can use it (Resend's `Idempotency-Key`, the outbox's file names, SMTP's
Message-ID) do, so a retried job does not deliver twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Email:
    to: list[str]
    subject: str
    text: str
    html: str | None = None
    sender: str | None = None  # None: the EMAIL_FROM setting
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # addresses and bodies are personal data
        return f"Email(to={len(self.to)} recipient(s))"


@dataclass(frozen=True)
class Sms:
    to: str
    body: str

    def __repr__(self) -> str:
        return "Sms(...)"


@dataclass(frozen=True)
class Push:
    """One push notification to one device token (FCM HTTP v1 shape)."""

    token: str
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)
    priority: str = "high"  # android: "high" or "normal"
    sound: str | None = "default"
    click_action: str | None = None

    def __repr__(self) -> str:  # the device token is a credential for that device
        return f"Push(data keys={sorted(self.data)})"


@dataclass(frozen=True)
class Sent:
    """A delivery the provider accepted: its id, and recipients refused along the way."""

    provider: str
    id: str
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> reason


class EmailSender(Protocol):
    name: str

    def send(self, email: Email, *, idempotency_key: str | None = None) -> Sent: ...


class SmsSender(Protocol):
    name: str

    def send(self, sms: Sms, *, idempotency_key: str | None = None) -> Sent: ...


class PushSender(Protocol):
    name: str

    def send(self, push: Push, *, idempotency_key: str | None = None) -> Sent: ...
