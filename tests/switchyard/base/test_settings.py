"""Settings: read once, typed, one clear line on a bad value, secrets never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from switchyard.base import settings


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


def test_rabbitmq_connections_get_timeouts_unless_the_url_sets_them():
    plain = settings.load(_env_file=None, broker_url="amqp://guest:pw@127.0.0.1:5672/%2F",
                          rabbitmq_connect_timeout_ms=2500)
    assert plain.rabbitmq_url == ("amqp://guest:pw@127.0.0.1:5672/%2F"
                                  "?socket_timeout=2.5&stack_timeout=2.5")
    own = settings.load(_env_file=None, broker_url="amqp://h1/?stack_timeout=9;amqp://h2/")
    assert own.rabbitmq_url == ("amqp://h1/?stack_timeout=9&socket_timeout=3;"
                                "amqp://h2/?socket_timeout=3&stack_timeout=3")


def record_embedded_redis(var_dir, port, pid):
    var_dir.mkdir(parents=True, exist_ok=True)
    (var_dir / settings.EMBEDDED_REDIS_RECORD).write_text(
        json.dumps({"url": f"redis://127.0.0.1:{port}/0", "pid": pid}))


def test_the_running_embedded_redis_port_is_the_default(tmp_path, monkeypatch):
    # given `switchyard redis` recorded port 6401 and is running (this process's pid)
    monkeypatch.delenv("EMBEDDED_REDIS_PORT", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    record_embedded_redis(tmp_path, 6401, os.getpid())
    # then a process that sets no port uses it, and one that sets a port or a URL does not
    assert settings.load(_env_file=None, var_dir=tmp_path).state_url == \
        "redis://127.0.0.1:6401/0"
    assert settings.load(_env_file=None, var_dir=tmp_path,
                         embedded_redis_port=6402).state_url == "redis://127.0.0.1:6402/0"
    assert settings.load(_env_file=None, var_dir=tmp_path,
                         redis_url="redis://elsewhere:6379/0").embedded_redis_port == 6399


def test_a_record_whose_redis_is_gone_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBEDDED_REDIS_PORT", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record_embedded_redis(tmp_path, 6401, int(gone.stdout))
    assert settings.load(_env_file=None, var_dir=tmp_path).embedded_redis_port == 6399
