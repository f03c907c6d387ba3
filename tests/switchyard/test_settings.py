"""Settings: read once, typed, one clear line on a bad value, secrets never printed."""

from __future__ import annotations

import pytest

from switchyard import settings


def test_invalid_value_stops_with_one_line_naming_the_variable(capsys):
    with pytest.raises(SystemExit) as exit_info:
        settings.load(_env_file=None, max_retries="many")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("switchyard: setting MAX_RETRIES is invalid")


def test_production_requires_redis_url(capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SystemExit):
        settings.load(_env_file=None, switchyard_env="production")
    assert "REDIS_URL is required" in capsys.readouterr().err


def test_production_requires_database_url(capsys, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit):
        settings.load(_env_file=None, switchyard_env="production",
                      redis_url="redis://127.0.0.1:6379/0")
    assert "DATABASE_URL is required" in capsys.readouterr().err


def test_misspelled_name_in_env_file_is_refused(tmp_path, capsys):
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URLL=redis://127.0.0.1:6379/0\n")
    with pytest.raises(SystemExit):
        settings.load(_env_file=env_file)
    assert "unknown setting REDIS_URLL in .env" in capsys.readouterr().err


def test_secrets_never_show_in_repr():
    loaded = settings.load(
        _env_file=None, redis_url="redis://:hunter2@127.0.0.1:6379/0",
        sentry_dsn="https://key123@sentry.example/1",
    )
    assert "hunter2" not in repr(loaded) and "key123" not in repr(loaded)
    assert "hunter2" not in str(loaded.model_dump())
    assert loaded.state_url == "redis://:hunter2@127.0.0.1:6379/0"


def test_broker_defaults_to_the_state_store_and_switches_to_rabbitmq():
    redis_only = settings.load(_env_file=None, redis_url="redis://127.0.0.1:6379/3")
    assert redis_only.queue_url == redis_only.state_url and not redis_only.uses_rabbitmq
    rabbit = settings.load(_env_file=None, broker_url="amqp://guest:guest@127.0.0.1:5672/")
    assert rabbit.uses_rabbitmq
