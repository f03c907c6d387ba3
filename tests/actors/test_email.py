"""Transactional email (seed 002), end to end against the Resend fake."""

from __future__ import annotations

from tests.actors.conftest import World, unique
from tests.fakes.base import html_error, lost_answer
from tests.fakes.resend import ResendDelivery, ResendFake


def delivered_to(world: World, address: str) -> list[ResendDelivery]:
    return [d for d in world.resend.sent if d.body["to"] in (address, [address])]


def address() -> str:
    return f"{unique('ann')}@example.com"


def test_an_otp_email_is_rendered_and_sent_with_the_jobs_key(world):
    to = address()
    message = world.send("send_otp", {"email": to, "code": "481516", "name": "Ann"})
    job = world.finished(message.message_id)
    assert job["status"] == "done", job
    [mail] = delivered_to(world, to)
    assert mail.body["from"] == "Acme <noreply@acme.example>"
    assert mail.body["subject"] == "Your Acme code: 481516"
    assert "481516" in mail.body["text"] and "481516" in mail.body["html"]
    assert mail.idempotency_key == f"send_otp:{message.message_id}"
    assert job["result"] == {"provider": "resend", "id": mail.id}


def test_welcome_and_verification_emails_escape_what_users_typed(world):
    to = address()
    job = world.run("send_verification_link", {
        "email": to, "name": "<script>alert(1)</script>",
        "link": "https://app.example/verify?token=abc&u=1"})
    assert job["status"] == "done", job
    [mail] = delivered_to(world, to)
    assert "<script>" not in mail.body["html"] and "&lt;script&gt;" in mail.body["html"]
    assert 'href="https://app.example/verify?token=abc&amp;u=1"' in mail.body["html"]
    assert "https://app.example/verify?token=abc&u=1" in mail.body["text"]
    welcome = world.run("send_welcome_email", {"email": to, "name": "Ann"})
    assert welcome["status"] == "done" and len(delivered_to(world, to)) == 2


def test_a_job_sent_twice_with_the_same_key_emails_once(world):
    to = address()
    key = unique("signup-")
    first = world.send("send_welcome_email", {"email": to}, idempotency_key=key)
    second = world.send("send_welcome_email", {"email": to}, idempotency_key=key)
    statuses = sorted(world.finished(m.message_id)["status"] for m in (first, second))
    assert statuses == ["done", "skipped"]
    assert len(delivered_to(world, to)) == 1


def test_a_retry_after_a_lost_answer_does_not_send_twice(world):
    # given Resend takes the first email but its answer never arrives (client timeout)
    to = address()
    world.resend.script(lost_answer(), path="/emails")
    # when the job retries
    job = world.run("send_otp", {"email": to, "code": "123456"}, timeout=40)
    # then the retry carried the same Idempotency-Key, so Resend delivered only once
    assert job["status"] == "done" and job["retries"] == 1, job
    assert len(delivered_to(world, to)) == 1
    keys = {r.headers["idempotency-key"] for r in world.resend.requests
            if r.json() and r.json().get("to") in (to, [to])}
    assert len(keys) == 1


def test_a_validation_error_is_final_at_once(world):
    world.resend.script(ResendFake.error(422, "invalid_parameter", "Invalid `to` field."),
                        path="/emails")
    job = world.run("send_otp", {"email": address(), "code": "123456"})
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["code"] == "invalid_parameter"


def test_a_rate_limit_waits_without_spending_an_attempt(world):
    world.resend.script(ResendFake.error(429, "rate_limit_exceeded", "Too many requests.",
                                         headers={"retry-after": "1"}), path="/emails")
    to = address()
    job = world.run("send_otp", {"email": to, "code": "123456"})
    assert job["status"] == "done" and job["retries"] == 0 and job["deferred_ms"] == 1000
    assert len(delivered_to(world, to)) == 1


def test_a_server_error_is_retried(world):
    world.resend.script(html_error(500, "Internal Server Error"), path="/emails")
    to = address()
    job = world.run("send_otp", {"email": to, "code": "123456"})
    assert job["status"] == "done" and job["retries"] == 1
    assert len(delivered_to(world, to)) == 1


def test_an_invalid_payload_is_final_and_sends_nothing(world):
    before = world.resend.count()
    job = world.run("send_otp", {"email": "not-an-address", "code": "123456"})
    assert job["status"] == "failed" and job["error"]["error"] == "InvalidPayload"
    assert "not-an-address" not in job["error"]["message"]
    assert world.resend.count() == before
