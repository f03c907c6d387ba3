"""Selecting providers by settings: defaults, one client per process, clear failures."""

from __future__ import annotations

import logging

import pytest

import actors
from integrations.discord import Discord
from integrations.outbox import EmailOutbox, PushOutbox, SmsOutbox
from integrations.providers import Providers, backends, warn_backends
from integrations.storage import LocalStorage
from integrations.telegram_outbox import TelegramBotOutbox, TelegramUserOutbox
from switchyard import health
from switchyard.base import settings
from switchyard.base.errors import NotConfigured
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Job, jobs_of
from tests.support.waiting import wait_for


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


def production(**overrides: object) -> settings.Settings:
    """Production settings as a deployment sets them: services and keys, no backend."""
    return settings.load(_env_file=None, switchyard_env="production",
                         redis_url="redis://127.0.0.1:6379/0",
                         database_url="postgresql://127.0.0.1/db", **overrides)


@pytest.mark.parametrize(("get", "setting"), [
    ("email", "EMAIL_BACKEND"), ("sms", "SMS_BACKEND"), ("push", "PUSH_BACKEND"),
    ("storage", "STORAGE_BACKEND"), ("telegram_bot", "TELEGRAM_BACKEND"),
    ("telegram_user", "TELEGRAM_BACKEND"), ("discord", "DISCORD_BACKEND"),
])
def test_production_replaces_no_unset_backend_with_a_stand_in(tmp_path, get, setting):
    # given production settings that name no backend
    chosen = Providers(production(var_dir=str(tmp_path)))
    # when a job asks for the provider, then it is refused naming the setting
    with pytest.raises(NotConfigured) as caught:
        getattr(chosen, get)()
    assert caught.value.message.startswith(f"{setting} is not set (SWITCHYARD_ENV=production")
    assert caught.value.setting == setting and caught.value.code == "not_configured"
    # and nothing was written locally
    assert list(tmp_path.iterdir()) == []


def test_production_runs_an_outbox_only_when_named_and_says_so(tmp_path, caplog):
    # given production settings naming the email outbox, and a real SMS provider
    config = production(var_dir=str(tmp_path), email_backend="outbox", sms_backend="twilio",
                        storage_backend="local")
    # when the process starts
    with caplog.at_level(logging.WARNING, logger="switchyard.providers"):
        warn_backends(config)
    # then one line warns about each stand-in named, one about each backend left unset
    lines = [r.getMessage() for r in caplog.records]
    assert [x for x in lines if "EMAIL_BACKEND" in x] == [
        f"EMAIL_BACKEND=outbox named in production: email only writes files under "
        f"{tmp_path}, nothing leaves this host."]
    assert len([x for x in lines if x.startswith("STORAGE_BACKEND=local named")]) == 1
    assert not [x for x in lines if "SMS_BACKEND" in x]
    assert {x.split(" ")[0] for x in lines if "is not set" in x} == {
        "PUSH_BACKEND", "TELEGRAM_BACKEND", "DISCORD_BACKEND"}
    # and the named stand-ins run, reported as explicit
    chosen = Providers(config)
    assert isinstance(chosen.email(), EmailOutbox) and isinstance(chosen.storage(), LocalStorage)
    labels = {name: item["label"] for name, item in backends(config).items()}
    assert labels == {"email": "outbox (explicit)", "sms": "twilio",
                      "storage": "local (explicit)", "push": "unconfigured",
                      "telegram": "unconfigured", "discord": "unconfigured"}


def test_development_keeps_its_stand_ins_and_warns_about_nothing(caplog):
    config = settings.load(_env_file=None, switchyard_env="development")
    with caplog.at_level(logging.WARNING, logger="switchyard.providers"):
        warn_backends(config)
    assert caplog.records == []
    assert {name: item["label"] for name, item in backends(config).items()} == {
        "email": "outbox", "sms": "outbox", "push": "outbox", "storage": "local",
        "telegram": "outbox", "discord": "outbox"}


# A production worker: it delivers through no outbox it was not told to use.

def production_app(build_switchyard, tmp_path, queue, **backends_named):
    """A production Switchyard (services, database and payload keys set) running the
    email family's jobs (on a queue of the test's own: RabbitMQ's queue names are
    shared), with the given backends named."""
    sy = build_switchyard(switchyard_env="production",
                          database_url=f"sqlite:///{tmp_path / 'unused.db'}", **backends_named)
    (email,) = actors.families(["email"])
    sy.declare([Job(j.fn, j.model, j.name, queue, j.options) for j in jobs_of(email)])
    return sy


def finished(sy, message_id):
    def final():
        sy.state.buffer.flush()
        job = sy.state.history.get(message_id)
        return job if job and job["status"] in ("done", "failed") else None
    return wait_for(final, timeout=20, what=f"job {message_id} to finish")


OTP = {"email": "ann@example.com", "code": "481516"}


def test_a_production_worker_dead_letters_a_job_whose_backend_is_unset(
    build_switchyard, start_worker, tmp_path, queue,
):
    # given a production worker whose settings name no email backend
    sy = production_app(build_switchyard, tmp_path, queue)
    start_worker(sy)
    # when an email job runs
    job = finished(sy, enqueue(sy, "send_otp", OTP).message_id)
    # then it is dead-lettered naming the setting, and nothing was written as if sent
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["code"] == "not_configured"
    assert job["error"]["message"].startswith("EMAIL_BACKEND is not set")
    assert not (sy.settings.var_dir / "outbox").exists()
    # and health reports the provider unconfigured
    email = health.check(sy, deadline_ms=5_000)["checks"]["email"]
    assert email == {"ok": False, "unreachable": False, "detail": (
        "unconfigured: EMAIL_BACKEND is not set, its jobs are dead-lettered")}


def test_a_production_worker_runs_an_outbox_it_was_told_to_use_and_reports_it(
    build_switchyard, start_worker, tmp_path, queue,
):
    # given a production worker told to use the email outbox
    sy = production_app(build_switchyard, tmp_path, queue, email_backend="outbox")
    start_worker(sy)
    # when an email job runs, then it is written to the outbox
    job = finished(sy, enqueue(sy, "send_otp", OTP).message_id)
    assert job["status"] == "done", job
    assert len(list((sy.settings.var_dir / "outbox" / "email").iterdir())) == 1
    # and health names the backend as explicit
    report = health.check(sy, deadline_ms=5_000)["checks"]
    assert report["email"] == {"ok": True, "unreachable": False, "detail": "outbox (explicit)"}
    assert report["sms"]["ok"] is False
