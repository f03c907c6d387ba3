"""The outbox backends: what would be sent, as files, once per idempotency key."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from integrations.messages import Email, Push, Sms
from integrations.outbox import EmailOutbox, PushOutbox, SmsOutbox
from switchyard.base.errors import PermanentError, RetryableError

SENDER = "Switchyard <noreply@example.com>"


def files(root, kind):
    return sorted(p for p in (root / kind).glob("*") if not p.name.startswith("."))


def test_an_email_becomes_an_eml_file_a_mail_client_can_read(tmp_path):
    sent = EmailOutbox(tmp_path, sender=SENDER).send(
        Email(to=["ann@example.com"], subject="Welcome", text="Hello Ann", html="<p>Hello</p>"))
    [path] = files(tmp_path, "email")
    assert path.suffix == ".eml" and path.stem == sent.id and sent.provider == "outbox"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ann@example.com" and message["Subject"] == "Welcome"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Hello Ann"
    assert html is not None and html.get_content().strip() == "<p>Hello</p>"


def test_the_same_key_is_delivered_once(tmp_path):
    outbox = EmailOutbox(tmp_path, sender=SENDER)
    mail = Email(to=["ann@example.com"], subject="Code", text="123456")
    first = outbox.send(mail, idempotency_key="otp:1")
    second = outbox.send(mail, idempotency_key="otp:1")
    assert first.id == second.id
    assert len(files(tmp_path, "email")) == 1


def test_sends_without_a_key_are_each_kept(tmp_path):
    outbox = SmsOutbox(tmp_path)
    outbox.send(Sms(to="+15550001111", body="one"))
    outbox.send(Sms(to="+15550001111", body="two"))
    bodies = sorted(json.loads(p.read_text())["body"] for p in files(tmp_path, "sms"))
    assert bodies == ["one", "two"]


def test_a_push_is_written_as_the_fcm_message_it_would_be(tmp_path):
    PushOutbox(tmp_path).send(Push(token="device-token-1", title="New Message",
                                   body="John: Hey", data={"chatId": "c1"}), idempotency_key="k")
    [path] = files(tmp_path, "push")
    message = json.loads(path.read_text())["message"]
    assert message["notification"] == {"title": "New Message", "body": "John: Hey"}
    assert message["data"] == {"chatId": "c1"}
    assert message["android"]["priority"] == "high"


def test_a_push_fcm_would_refuse_is_refused_here_too(tmp_path):
    with pytest.raises(PermanentError):
        PushOutbox(tmp_path).send(Push(token="t", title="x", body="y",
                                       data={"count": 3}))  # type: ignore[dict-item]
    assert list(tmp_path.rglob("*.json")) == []


def test_a_disk_that_cannot_be_written_is_retryable(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the outbox should be")
    with pytest.raises(RetryableError):
        SmsOutbox(root).send(Sms(to="+15550001111", body="hi"))
