"""Selecting providers by settings: defaults, one client per process, clear failures."""

from __future__ import annotations

import logging

import pytest

from integrations.discord import Discord
from integrations.outbox import EmailOutbox, PushOutbox, SmsOutbox
from integrations.providers import Providers, warn_local_backends
from integrations.storage import LocalStorage
from integrations.telegram_outbox import TelegramBotOutbox, TelegramUserOutbox
from switchyard import settings
from switchyard.errors import NotConfigured


def providers(**overrides: object) -> Providers:
    return Providers(settings.load(_env_file=None, **overrides))


def test_development_defaults_write_local_files(tmp_path):
    chosen = providers(var_dir=str(tmp_path))
    assert isinstance(chosen.email(), EmailOutbox)
    assert isinstance(chosen.sms(), SmsOutbox)
    assert isinstance(chosen.push(), PushOutbox)
    assert isinstance(chosen.telegram_bot(), TelegramBotOutbox)
    assert isinstance(chosen.telegram_user(), TelegramUserOutbox)
    storage = chosen.storage()
    assert isinstance(storage, LocalStorage) and storage.root == (tmp_path / "storage").resolve()


def test_each_client_is_built_once_per_process():
    chosen = providers()
    assert chosen.email() is chosen.email()


@pytest.mark.parametrize(("selected", "get", "setting"), [
    ({"email_backend": "resend"}, "email", "RESEND_API_KEY"),
    ({"email_backend": "smtp"}, "email", "SMTP_HOST"),
    ({"sms_backend": "twilio"}, "sms", "TWILIO_ACCOUNT_SID"),
    ({"sms_backend": "twilio", "twilio_account_sid": "AC1", "twilio_auth_token": "t"}, "sms",
     "TWILIO_FROM"),
    ({"push_backend": "fcm"}, "push", "FCM_CREDENTIALS_FILE"),
    ({"storage_backend": "s3"}, "storage", "S3_BUCKET"),
    ({"telegram_backend": "api"}, "telegram_bot", "TELEGRAM_BOT_TOKEN"),
    ({"telegram_backend": "api"}, "telegram_user", "TELEGRAM_API_ID"),
    ({"discord_backend": "api"}, "discord", "DISCORD_BOT_TOKEN"),
])
def test_selected_but_not_configured_names_the_missing_setting(selected, get, setting):
    chosen = providers(**selected)
    with pytest.raises(NotConfigured) as caught:
        getattr(chosen, get)()
    assert setting in str(caught.value)
    assert caught.value.code == "not_configured"


def test_configured_providers_are_built(tmp_path):
    chosen = providers(email_backend="resend", resend_api_key="re_test_key_123456",
                       sms_backend="twilio", twilio_account_sid="AC123",
                       twilio_auth_token="secret", twilio_from="+15550001111",
                       telegram_backend="api", telegram_bot_token="123456:" + "A" * 35,
                       discord_backend="api", discord_bot_token="token")
    assert chosen.email().name == "resend"
    assert chosen.sms().name == "twilio"
    assert chosen.telegram_bot().bot_id == 123456
    discord = chosen.discord()
    assert isinstance(discord, Discord) and discord is chosen.discord()
    chosen.close()


def test_production_warns_about_backends_that_deliver_nothing(caplog):
    config = settings.load(_env_file=None, switchyard_env="production",
                           redis_url="redis://127.0.0.1:6379/0",
                           database_url="postgresql://127.0.0.1/db", email_backend="smtp",
                           smtp_host="mail.example.com")
    with caplog.at_level(logging.WARNING, logger="switchyard.providers"):
        warn_local_backends(config)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "SMS_BACKEND=outbox" in warned and "STORAGE_BACKEND=local" in warned
    assert "EMAIL_BACKEND" not in warned
