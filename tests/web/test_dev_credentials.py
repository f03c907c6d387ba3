"""`switchyard dev` makes web credentials when none are set, keeps them under VAR_DIR for
the next run, hands them to the processes through the environment, and prints them."""

from __future__ import annotations

import os

import pytest

from store import samples
from store.db import Database
from switchyard import cli
from switchyard.base import settings
from web.auth import DEV_CREDENTIALS_FILE, dev_credentials, weakness


class Started(Exception):
    """Stands in for exec'ing honcho."""


@pytest.fixture
def dev(monkeypatch, tmp_path):
    saved = dict(os.environ)  # `dev` sets variables for its children: put them all back
    for name in ("WEB_USERNAME", "WEB_PASSWORD", "API_TOKEN", "WEB_PORT", "SWITCHYARD_ENV",
                 "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env
    settings.get.cache_clear()
    execs: list[list[str]] = []

    def execvp(file: str, argv: list[str]) -> None:
        execs.append(argv)
        raise Started

    monkeypatch.setattr(os, "execvp", execvp)
    yield execs
    settings.get.cache_clear()
    os.environ.clear()
    os.environ.update(saved)


def test_dev_generates_prints_and_passes_credentials(dev, capsys):
    with pytest.raises(Started):
        cli.main(["dev"])

    out = capsys.readouterr().out
    password, token = os.environ["WEB_PASSWORD"], os.environ["API_TOKEN"]
    assert os.environ["WEB_USERNAME"] == "dev" and len(password) >= 12 and len(token) >= 24
    assert f"user dev  password {password}" in out and f"Bearer {token}" in out
    assert dev[0][:3] == ["honcho", "-f", "Procfile.dev"]


def test_dev_keeps_and_never_prints_configured_credentials(dev, monkeypatch, capsys):
    monkeypatch.setenv("WEB_USERNAME", "me")
    monkeypatch.setenv("WEB_PASSWORD", "my-own-password")
    monkeypatch.setenv("API_TOKEN", "my-own-token-0123456789")

    with pytest.raises(Started):
        cli.main(["dev"])

    out = capsys.readouterr().out
    assert os.environ["WEB_PASSWORD"] == "my-own-password"
    assert "my-own-password" not in out and "my-own-token-0123456789" not in out


def test_dev_makes_credentials_production_would_accept(dev, capsys):
    with pytest.raises(Started):
        cli.main(["dev"])

    password, token = os.environ["WEB_PASSWORD"], os.environ["API_TOKEN"]
    assert weakness("WEB_PASSWORD", password) is None
    assert weakness("API_TOKEN", token) is None


def test_dev_seeds_the_samples_and_prints_commands_for_them(dev, tmp_path, capsys):
    with pytest.raises(Started):
        cli.main(["dev"])

    out = capsys.readouterr().out
    ids = samples.seed(Database(f"sqlite:///{tmp_path}/switchyard.db"))  # already there
    for command in samples.send_commands(ids):
        assert command in out
    assert ids["user_id"] in out and ids["subscription_id"] in out


def test_dev_seeds_nothing_outside_development(dev, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SWITCHYARD_ENV", "test")

    with pytest.raises(Started):
        cli.main(["dev"])

    assert "join_channel" not in capsys.readouterr().out
    assert not (tmp_path / "switchyard.db").exists()


def test_dev_credentials_outlive_a_restart(dev, tmp_path):
    first = dev_credentials(settings.get())
    settings.get.cache_clear()  # the next `switchyard dev` reads its settings afresh

    again = dev_credentials(settings.get())

    assert again == first and set(first) == {"WEB_USERNAME", "WEB_PASSWORD", "API_TOKEN"}
    assert (tmp_path / DEV_CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600


def test_dev_prints_the_same_login_after_a_restart(dev, capsys):
    with pytest.raises(Started):
        cli.main(["dev"])
    token = os.environ.pop("API_TOKEN")  # a new shell: nothing handed down
    os.environ.pop("WEB_PASSWORD")
    os.environ.pop("WEB_USERNAME")
    settings.get.cache_clear()

    with pytest.raises(Started):
        cli.main(["dev"])

    assert os.environ["API_TOKEN"] == token
    assert capsys.readouterr().out.count(f"Bearer {token}") == 2


def test_dev_credentials_keep_what_is_configured_out_of_the_file(dev, monkeypatch, tmp_path):
    monkeypatch.setenv("API_TOKEN", "my-own-token-0123456789")

    made = dev_credentials(settings.get())

    assert "API_TOKEN" not in made
    assert "my-own-token-0123456789" not in (tmp_path / DEV_CREDENTIALS_FILE).read_text()


def test_dev_credentials_are_never_made_in_production(dev, monkeypatch, tmp_path):
    monkeypatch.setenv("SWITCHYARD_ENV", "production")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/switchyard.db")

    assert dev_credentials(settings.get()) == {}
    assert not (tmp_path / DEV_CREDENTIALS_FILE).exists()


def test_a_damaged_credentials_file_is_named(dev, tmp_path, capsys):
    (tmp_path / DEV_CREDENTIALS_FILE).write_text("{not json")

    with pytest.raises(SystemExit) as exited:
        dev_credentials(settings.get())

    assert exited.value.code == 2
    assert DEV_CREDENTIALS_FILE in capsys.readouterr().err


def test_dev_token_prints_the_token_dev_uses(dev, capsys):
    assert cli.main(["dev-token"]) == 0
    printed = capsys.readouterr().out.strip()
    settings.get.cache_clear()

    with pytest.raises(Started):
        cli.main(["dev"])

    assert printed == os.environ["API_TOKEN"]


@pytest.mark.parametrize("env", ["production", "test"])
def test_dev_token_refuses_outside_development(dev, monkeypatch, tmp_path, capsys, env):
    monkeypatch.setenv("SWITCHYARD_ENV", env)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/switchyard.db")

    assert cli.main(["dev-token"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and "SWITCHYARD_ENV=development" in err
    assert not (tmp_path / DEV_CREDENTIALS_FILE).exists()
