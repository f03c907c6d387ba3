"""Transactional email on queue `email` (seed 002): OTP, welcome, verification link.

The processor (`processing.email`) renders the HTML and text parts; the job's
idempotency key goes to the provider (Resend's Idempotency-Key, the outbox's file
name, SMTP's Message-ID), so a retried job does not send twice. Retries back off 5 s,
10 s, 20 s; a provider's rate limit or daily quota waits without spending attempts.
"""

from __future__ import annotations

from typing import Any

from pydantic import EmailStr, Field, HttpUrl

from processing import email
from switchyard.base.settings import DAY_MS
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "email"
#: Resend's daily quota defers a job until the next day: let it wait that long. A run
#: that passes its time limit (a hung connection) is retried with the usual backoff: the
#: provider deduplicates by the job's key.
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "max_deferral": 2 * DAY_MS,
                           "on_time_limit": "retry"}


class SendOtp(Payload):
    email: EmailStr
    code: str = Field(min_length=4, max_length=12, pattern=r"^[A-Za-z0-9]+$")
    name: str | None = Field(None, max_length=128)
    expires_in_minutes: int = Field(10, ge=1, le=24 * 60)


class SendWelcome(Payload):
    email: EmailStr
    name: str | None = Field(None, max_length=128)
    link: HttpUrl | None = None


class SendVerificationLink(Payload):
    email: EmailStr
    link: HttpUrl
    name: str | None = Field(None, max_length=128)
    expires_in: str = Field("24 hours", max_length=32)


@job(SendOtp, actor_name="send_otp", **OPTIONS)
def send_otp(ctx: Context, payload: SendOtp) -> dict[str, Any]:
    message = email.otp(str(payload.email), payload.code, app_name=ctx.settings.app_name,
                        name=payload.name, expires_minutes=payload.expires_in_minutes)
    return email.send(ctx.providers.email(), message, idempotency_key=str(ctx.key))


@job(SendWelcome, actor_name="send_welcome_email", **OPTIONS)
def send_welcome_email(ctx: Context, payload: SendWelcome) -> dict[str, Any]:
    message = email.welcome(str(payload.email), app_name=ctx.settings.app_name,
                            name=payload.name, link=str(payload.link) if payload.link else None)
    return email.send(ctx.providers.email(), message, idempotency_key=str(ctx.key))


@job(SendVerificationLink, actor_name="send_verification_link", **OPTIONS)
def send_verification_link(ctx: Context, payload: SendVerificationLink) -> dict[str, Any]:
    message = email.verification(str(payload.email), str(payload.link),
                                 app_name=ctx.settings.app_name, name=payload.name,
                                 expires_in=payload.expires_in)
    return email.send(ctx.providers.email(), message, idempotency_key=str(ctx.key))
