"""What the delivery backends send, and what they answer.

Email, SMS and push each have one small interface (`EmailSender`, `SmsSender`,
`PushSender`) with a provider backend and an outbox backend; settings pick one
(`integrations.providers`). Every `send` takes the job's idempotency key: backends
that can use it (Resend's `Idempotency-Key`, the outbox's file names, SMTP's
Message-ID) do, so a retried job does not deliver twice.
"""

from __future__ import annotations

import email.utils
import hashlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from switchyard.base.errors import PermanentError


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


def message_id(idempotency_key: str | None, sender: str) -> str:
    """A Message-ID: derived from the job's key, so a retried send carries the same one."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "switchyard.invalid"
    if idempotency_key is None:
        return email.utils.make_msgid(domain=domain)
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def to_mime(mail: Email, *, sender: str, idempotency_key: str | None = None) -> EmailMessage:
    """The RFC 5322 message for `mail`: text, with an HTML alternative when given.

    A header that would break the message (a line break in the subject, say) is a
    `PermanentError`: the same input can never be sent.
    """
    if not mail.to:
        raise PermanentError("an email needs at least one recipient", code="no_recipient")
    try:
        return _mime(mail, sender=sender, idempotency_key=idempotency_key)
    except ValueError as error:
        raise PermanentError(f"invalid email: {error}", code="invalid_email") from error


def _mime(mail: Email, *, sender: str, idempotency_key: str | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail.sender or sender
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(idempotency_key, mail.sender or sender)
    if mail.reply_to:
        msg["Reply-To"] = mail.reply_to
    for name, value in mail.headers.items():
        msg[name] = value
    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    return msg
