"""The settings reference: generated from the model, complete, and never a secret in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from switchyard.base import settings_doc
from switchyard.base.settings import SECTIONS, Settings
from tests.support.processes import ROOT

FIELDS = list(Settings.model_fields)
#: A value no page may show: set as a secret in the subprocess's environment.
SECRET = "s3cret-Token-0123456789-never-shown"


def test_the_committed_page_is_what_the_generator_prints() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_doc.markdown(), (
        f"docs/settings.md is out of date: run `{settings_doc.COMMAND}`")


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_has_a_description(name: str) -> None:
    description = Settings.model_fields[name].description or ""
    text, _ = settings_doc.split_unset(description)
    assert text.strip(), f"{name.upper()} has no description (Field(..., description=...))"


def test_every_field_is_in_exactly_one_section() -> None:
    listed = [name for names in SECTIONS.values() for name in names]
    assert sorted(set(FIELDS) - set(listed)) == [], "in no section of SECTIONS"
    assert sorted(set(listed) - set(FIELDS)) == [], "in SECTIONS but no field"
    assert sorted(name for name in set(listed) if listed.count(name) > 1) == []


def test_every_section_is_non_empty_and_in_model_order() -> None:
    for title, names in SECTIONS.items():
        assert names, f"section {title!r} is empty"
        assert list(names) == sorted(names, key=FIELDS.index), f"{title!r}: not in model order"


@pytest.mark.parametrize("name", FIELDS)
def test_only_a_setting_that_can_be_unset_says_what_unset_means(name: str) -> None:
    info = Settings.model_fields[name]
    _, unset = settings_doc.split_unset(info.description or "")
    if unset is not None:
        assert info.get_default(call_default_factory=True) in (None, [], ""), name.upper()


@pytest.mark.parametrize("name, shown", [
    ("IDEMPOTENCY_TTL_MS", "`86400000` (1 day)"),
    ("DEFER_MS", "`1000` (1 s)"),
    ("FLUSH_INTERVAL_MS", "`50`"),
    ("MEDIA_MAX_BYTES", "`209715200` (200 MiB)"),
    ("REDIS_TLS_VERIFY", "`true`"),
    ("VAR_DIR", "`var`"),
    ("SENTRY_ENVIRONMENT", "unset: `SWITCHYARD_ENV`"),
    ("TELEGRAM_BOT_TOKEN", "unset"),
    ("PAYLOAD_KEYS", "empty: outside production, `VAR_DIR/payload-keys`, generated on first use"),
])
def test_defaults_are_shown_for_people(name: str, shown: str) -> None:
    (line,) = [line for line in settings_doc.markdown().splitlines()
               if line.startswith(f"| `{name}` |")]
    assert line.split(" | ")[2] == shown


def test_settings_json_needs_no_service_and_prints_no_secret() -> None:
    """Secrets set, and Redis and the broker pointing where nothing answers."""
    nowhere = f"redis://:{SECRET}@127.0.0.1:1/0"
    env = {**os.environ, "API_TOKEN": SECRET, "WEB_PASSWORD": SECRET, "REDIS_URL": nowhere,
           "BROKER_URL": nowhere, "PAYLOAD_KEYS": f"k1:{SECRET}"}
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", "settings", "--json"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert len(rows) == len(FIELDS)
    assert rows["API_TOKEN"]["secret"] is True and rows["API_TOKEN"]["default"] is None
    assert rows["API_TOKEN"]["description"]
