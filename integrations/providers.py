"""Which backend serves each kind of delivery, picked by the settings, built on first use.

| setting | values | default |
|---|---|---|
| `EMAIL_BACKEND` | `resend`, `smtp`, `outbox` | `outbox` (`.eml` files under `var/outbox/email`) |
| `SMS_BACKEND` | `twilio`, `outbox` | `outbox` |
| `PUSH_BACKEND` | `fcm`, `outbox` | `outbox` |
| `STORAGE_BACKEND` | `s3`, `local` | `local` (`var/storage`) |
| `TELEGRAM_BACKEND` | `api`, `outbox` | `outbox` (calls written under `var/outbox/telegram`) |
| `DISCORD_BACKEND` | `api`, `outbox` | `outbox` (calls written under `var/outbox/discord`) |

A provider that is selected but not configured raises `NotConfigured` (a
`PermanentError` naming the missing setting) when a job first needs it, so the job is
dead-lettered with that reason and the worker keeps serving everything else. Nothing is
built at import time; each client is built once per process and shared by its threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from integrations.messages import EmailSender, PushSender, SmsSender
from switchyard.settings import Settings

if TYPE_CHECKING:  # imported where used: boto3 and telethon are slow to import
    from integrations.discord import DiscordApi
    from integrations.storage import Storage, UrlSigner
    from integrations.telegram_bot import BotApi
    from integrations.telegram_gateway import TelegramGateway

logger = logging.getLogger("switchyard.providers")

T = TypeVar("T")


class Providers:
    """The process's provider clients, built lazily from the settings."""

    def __init__(self, settings: Settings, state: redis.Redis | None = None) -> None:
        self.settings = settings
        self.state = state
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()  # NotConfigured propagates, nothing is cached
            return self._built[name]  # type: ignore[no-any-return]

    def use(self, name: str, client: Any) -> None:
        """Serve `name` (email, sms, push, storage, telegram_bot, ...) with `client`."""
        with self._lock:
            self._built[name] = client

    def email(self) -> EmailSender:
        return self._get("email", lambda: build_email(self.settings))

    def sms(self) -> SmsSender:
        return self._get("sms", lambda: build_sms(self.settings))

    def push(self) -> PushSender:
        return self._get("push", lambda: build_push(self.settings, self.state))

    def storage(self) -> Storage:
        return self._get("storage", lambda: build_storage(self.settings))

    def telegram_bot(self) -> BotApi:
        return self._get("telegram_bot", lambda: build_telegram_bot(self.settings))

    def telegram_user(self) -> TelegramGateway:
        return self._get("telegram_user", lambda: build_telegram_user(self.settings))

    def discord(self) -> DiscordApi:
        return self._get("discord", lambda: build_discord(self.settings))

    def close(self) -> None:
        with self._lock:
            built, self._built = self._built, {}
        for client in built.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()


def build_email(settings: Settings) -> EmailSender:
    if settings.email_backend == "resend":
        from integrations.resend import Resend

        return Resend.from_settings(settings)
    if settings.email_backend == "smtp":
        from integrations.smtp import Smtp

        return Smtp.from_settings(settings)
    from integrations.outbox import EmailOutbox

    return EmailOutbox(settings.outbox_dir, sender=settings.email_from)


def build_sms(settings: Settings) -> SmsSender:
    if settings.sms_backend == "twilio":
        from integrations.twilio import Twilio

        return Twilio.from_settings(settings)
    from integrations.outbox import SmsOutbox

    return SmsOutbox(settings.outbox_dir)


def build_push(settings: Settings, state: redis.Redis | None) -> PushSender:
    if settings.push_backend == "fcm":
        from integrations.fcm import Fcm

        return Fcm.from_settings(settings, state)
    from integrations.outbox import PushOutbox

    return PushOutbox(settings.outbox_dir)


def build_telegram_bot(settings: Settings) -> BotApi:
    if settings.telegram_backend == "outbox":
        from integrations.telegram_outbox import TelegramBotOutbox

        return TelegramBotOutbox(settings.outbox_dir)
    from integrations.telegram_bot import TelegramBot

    return TelegramBot.from_settings(settings)


def build_telegram_user(settings: Settings) -> TelegramGateway:
    if settings.telegram_backend == "outbox":
        from integrations.telegram_outbox import TelegramUserOutbox

        return TelegramUserOutbox(settings.outbox_dir)
    from integrations.telegram_user import TelethonGateway

    return TelethonGateway.from_settings(settings)


def build_discord(settings: Settings) -> DiscordApi:
    if settings.discord_backend == "outbox":
        from integrations.discord_outbox import DiscordOutbox

        return DiscordOutbox(settings.outbox_dir)
    from integrations.discord import Discord

    return Discord.from_settings(settings)


def build_storage(settings: Settings) -> Storage:
    from integrations.storage import LocalStorage, S3Storage

    if settings.storage_backend == "s3":
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir, signer=url_signer(settings))


def url_signer(settings: Settings) -> UrlSigner | None:
    """Signs local-storage URLs: MEDIA_URL_SECRET, else a secret derived from the
    newest payload key; None (no URLs to give) when there is neither."""
    from integrations.storage import UrlSigner
    from switchyard.sealing import keyring_for

    if settings.media_url_secret is not None:
        secret = settings.media_url_secret.get_secret_value().encode()
    else:
        keyring = keyring_for(settings)
        if keyring is None:
            return None
        secret = keyring.derive(b"media-url")
    return UrlSigner(secret, settings.media_url_base, settings.storage_url_ttl_ms)


#: (setting, development default) pairs that only write local files.
LOCAL_DEFAULTS = (("EMAIL_BACKEND", "outbox"), ("SMS_BACKEND", "outbox"),
                  ("PUSH_BACKEND", "outbox"), ("STORAGE_BACKEND", "local"),
                  ("TELEGRAM_BACKEND", "outbox"), ("DISCORD_BACKEND", "outbox"))


def warn_local_backends(settings: Settings) -> None:
    """In production, say loudly which deliveries only go to local files."""
    if settings.switchyard_env != "production":
        return
    for name, local in LOCAL_DEFAULTS:
        if getattr(settings, name.lower()) == local:
            logger.warning("%s=%s in production: nothing is delivered, only written under %s.",
                           name, local, settings.var_dir)
