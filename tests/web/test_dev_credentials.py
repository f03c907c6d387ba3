"""`switchyard dev` makes web credentials when none are set, hands them to the
processes through the environment, and prints them."""

from __future__ import annotations

import os

import pytest

from store import samples
from store.db import Database
from switchyard import cli, settings
from web.auth import weakness


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
