"""Which backend serves each kind of delivery, picked by the settings, built on first use.

| setting | values | unset, outside production |
|---|---|---|
| `EMAIL_BACKEND` | `resend`, `smtp`, `outbox` | `outbox` (`.eml` files under `var/outbox/email`) |
| `SMS_BACKEND` | `twilio`, `outbox` | `outbox` |
| `PUSH_BACKEND` | `fcm`, `outbox` | `outbox` |
| `STORAGE_BACKEND` | `s3`, `local` | `local` (`var/storage`) |
| `TELEGRAM_BACKEND` | `api`, `outbox` | `outbox` (calls written under `var/outbox/telegram`) |
| `DISCORD_BACKEND` | `api`, `outbox` | `outbox` (calls written under `var/outbox/discord`) |

Production never pretends: there an unset backend stays unset, and an outbox or local
storage runs only when named (with a warning at start, `warn_backends`). A provider that
is unset, or selected but not configured, raises `NotConfigured` (a `PermanentError`
naming the missing setting) when a job first needs it, so the job is dead-lettered with
that reason and the worker keeps serving everything else; `backends` says which backend
each provider runs on, for `switchyard health`. Nothing is built at import time; each
client is built once per process and shared by its threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from integrations.messages import EmailSender, PushSender, SmsSender
from switchyard.base.errors import NotConfigured
from switchyard.base.settings import STAND_INS, Settings

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
        return self._get("discord", lambda: build_discord(self.settings, self.state))

    def close(self) -> None:
        with self._lock:
            built, self._built = self._built, {}
        for client in built.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()


#: Each provider family and the setting that picks its backend.
BACKENDS = {"email": "EMAIL_BACKEND", "sms": "SMS_BACKEND", "push": "PUSH_BACKEND",
            "storage": "STORAGE_BACKEND", "telegram": "TELEGRAM_BACKEND",
            "discord": "DISCORD_BACKEND"}


def backend(settings: Settings, provider: str) -> str:
    """The backend `provider` runs on; `NotConfigured` naming its setting when unset
    (production only: elsewhere an unset backend is its stand-in)."""
    setting = BACKENDS[provider]
    chosen: str | None = getattr(settings, setting.lower())
    if chosen is None:
        raise NotConfigured(provider, setting, why=(
            "SWITCHYARD_ENV=production uses no outbox or local stand-in unless it is named"))
    return chosen


def build_email(settings: Settings) -> EmailSender:
    chosen = backend(settings, "email")
    if chosen == "resend":
        from integrations.resend import Resend

        return Resend.from_settings(settings)
    if chosen == "smtp":
        from integrations.smtp import Smtp

        return Smtp.from_settings(settings)
    from integrations.outbox import EmailOutbox

    return EmailOutbox(settings.outbox_dir, sender=settings.email_from)


def build_sms(settings: Settings) -> SmsSender:
    if backend(settings, "sms") == "twilio":
        from integrations.twilio import Twilio

        return Twilio.from_settings(settings)
    from integrations.outbox import SmsOutbox

    return SmsOutbox(settings.outbox_dir)


def build_push(settings: Settings, state: redis.Redis | None) -> PushSender:
    if backend(settings, "push") == "fcm":
        from integrations.fcm import Fcm

        return Fcm.from_settings(settings)
    from integrations.outbox import PushOutbox

    return PushOutbox(settings.outbox_dir)


def build_telegram_bot(settings: Settings) -> BotApi:
    if backend(settings, "telegram") == "outbox":
        from integrations.telegram_outbox import TelegramBotOutbox

        return TelegramBotOutbox(settings.outbox_dir)
    from integrations.telegram_bot import TelegramBot

    return TelegramBot.from_settings(settings)


def build_telegram_user(settings: Settings) -> TelegramGateway:
    if backend(settings, "telegram") == "outbox":
        from integrations.telegram_outbox import TelegramUserOutbox

        return TelegramUserOutbox(settings.outbox_dir)
    from integrations.telegram_user import TelethonGateway

    return TelethonGateway.from_settings(settings)


def build_discord(settings: Settings, state: redis.Redis | None = None) -> DiscordApi:
    if backend(settings, "discord") == "outbox":
        from integrations.discord_outbox import DiscordOutbox

        return DiscordOutbox(settings.outbox_dir)
    from integrations.discord import Discord

    return Discord.from_settings(settings, state)


def build_storage(settings: Settings) -> Storage:
    if backend(settings, "storage") == "s3":
        from integrations.storage import S3Storage

        return S3Storage.from_settings(settings)
    from integrations.storage import LocalStorage

    return LocalStorage(settings.storage_dir, signer=url_signer(settings))


def url_signer(settings: Settings) -> UrlSigner | None:
    """Signs local-storage URLs: MEDIA_URL_SECRET, else a secret derived from the
    newest payload key; None (no URLs to give) when there is neither."""
    from integrations.storage import UrlSigner
    from switchyard.base.sealing import keyring_for

    if settings.media_url_secret is not None:
        secret = settings.media_url_secret.get_secret_value().encode()
    else:
        keyring = keyring_for(settings)
        if keyring is None:
            return None
        secret = keyring.derive(b"media-url")
    return UrlSigner(secret, settings.media_url_base, settings.storage_url_ttl_ms)


def backends(settings: Settings) -> dict[str, dict[str, str | None]]:
    """Which backend each provider runs on: `backend` (None when unset, production only)
    and `label`: `resend`, `outbox`, `outbox (explicit)` (a stand-in named in
    production), or `unconfigured`."""
    production = settings.switchyard_env == "production"
    report: dict[str, dict[str, str | None]] = {}
    for provider, setting in BACKENDS.items():
        chosen: str | None = getattr(settings, setting.lower())
        stand_in = chosen == STAND_INS[setting.lower()]
        label = ("unconfigured" if chosen is None
                 else f"{chosen} (explicit)" if production and stand_in else chosen)
        report[provider] = {"setting": setting, "backend": chosen, "label": label}
    return report


def warn_backends(settings: Settings) -> None:
    """In production, one WARNING line per backend that is unset (its jobs will be
    dead-lettered) or named as a stand-in that delivers nothing (an outbox, local storage)."""
    if settings.switchyard_env != "production":
        return
    for provider, item in backends(settings).items():
        if item["backend"] is None:
            logger.warning("%s is not set in production: every job that needs %s is "
                           "dead-lettered naming it.", item["setting"], provider)
        elif item["label"] != item["backend"]:
            logger.warning("%s=%s named in production: %s only writes files under %s, "
                           "nothing leaves this host.", item["setting"], item["backend"],
                           provider, settings.var_dir)
