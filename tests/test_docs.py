"""The documentation agrees with the tree: links, commands and settings it names exist.

Reads only files and the CLI's parser: no service, no process.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.base.settings import Settings
from switchyard.cli import parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The README is the front door; the rest of the documentation is under docs/.
README_MAX_LINES = 170
#: Upper-case names the docs write that are not Switchyard settings: the test and CI
#: environment, the mutation-testing script, boto3's own credentials, make's variables,
#: Python's `TYPE_CHECKING`, seed 001's operation types, and settings a release removed
#: (UPGRADING.md says so). A trailing `*` stands for any name with that prefix.
NOT_SETTINGS = frozenset({
    "CI", "PYTHONDONTWRITEBYTECODE", "SWITCHYARD_ARTIFACTS", "TEST_POSTGRES_URL",
    "TEST_REDIS_URL", "TEST_RABBITMQ_URL", "MUTANT_CHILDREN", "MUTANT_BROKERS", "AREAS",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OTEL_*", "TYPE_CHECKING",
    "INVITE_USER", "REMOVE_USER", "VERIFY_PERMISSIONS",
    "CONCURRENCY_LEASE_MS",
})

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*"
#: A span that is one name, maybe with a value or a `*` for a family of names.
ONE_NAME = re.compile(rf"({NAME}_?\*?)(?:=.*)?")
#: `NAME=value` anywhere in a command, and `$NAME` in a shell line.
ASSIGNED = re.compile(rf"(?<![\w$-])({NAME})=")
EXPANDED = re.compile(rf"\$\{{?({NAME})\b")
COMMAND = re.compile(r"(?<![\w./-])switchyard ([a-z][\w-]*)(?: ([a-z][\w-]*))?")


def pages() -> list[Path]:
    return [README, ROOT / "UPGRADING.md", *sorted((ROOT / "docs").glob("*.md"))]


def code(text: str) -> Iterator[str]:
    """Every fenced block and every inline code span of a Markdown text."""
    blocks = [match.group(0) for match in FENCE.finditer(text)]
    yield from blocks
    yield from INLINE.findall(FENCE.sub("", text))


def setting_names(text: str) -> set[str]:
    """The upper-case names a page writes in code as settings or environment variables."""
    found: set[str] = set()
    for span in code(text):
        whole = ONE_NAME.fullmatch(span.strip())
        if whole and ("_" in whole.group(1) or "=" in span):
            found.add(whole.group(1))
        found.update(ASSIGNED.findall(span))
        if span.startswith("```"):
            found.update(EXPANDED.findall(span))
    return {name for name in found if len(name) > 1}  # `T=...`: a shell line's own


def is_setting(name: str, fields: set[str]) -> bool:
    if name.endswith("*"):
        return any(field.startswith(name.rstrip("*")) for field in fields)
    return name in fields


def allowed(name: str) -> bool:
    return name in NOT_SETTINGS or any(
        name.startswith(other.rstrip("*")) for other in NOT_SETTINGS if other.endswith("*"))


def subcommands(cli: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Each subcommand of the CLI, with its own subcommands (empty when it has none)."""
    found: dict[str, set[str]] = {}
    for action in cli._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                found[name] = {n for a in nested for n in a.choices}
    return found


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for command in ("make dev", "make test", "make test-fast"):
        assert command in text, f"the README does not show `{command}`"


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_a_file(page: Path) -> None:
    targets = [target for target in LINK.findall(page.read_text())
               if not re.match(r"[a-z]+:", target)]
    missing = []
    for target in targets:
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md"
                                   and anchor not in anchors(linked)):
            missing.append(target)
    assert missing == []


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_command_shown_is_one_the_cli_has(page: Path) -> None:
    known = subcommands(parser())
    wrong = []
    for span in code(page.read_text()):
        for command, sub in COMMAND.findall(span):
            if command not in known:
                wrong.append(f"switchyard {command}")
            elif sub and known[command] and sub not in known[command]:
                wrong.append(f"switchyard {command} {sub}")
    assert wrong == []


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_setting_named_is_one_switchyard_reads(page: Path) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    unknown = sorted(name for name in setting_names(page.read_text())
                     if not is_setting(name, fields) and not allowed(name))
    assert unknown == []


def test_the_readers_find_what_they_look_for() -> None:
    """The checks themselves: wrong settings and commands are caught, anchors read."""
    text = ("Set `REDIS_URLL`, `PAYLOAD_ENCRYPTION=false` and `REDIS_TLS_*`; not `CI=true`.\n"
            "```sh\nFOO_BAR=1 uv run switchyard sendd x\nT=\"$API_TOKEN\"\n```\n")
    assert setting_names(text) == {"REDIS_URLL", "PAYLOAD_ENCRYPTION", "REDIS_TLS_*", "CI",
                                   "FOO_BAR", "API_TOKEN"}
    fields = {name.upper() for name in Settings.model_fields}
    assert [n for n in sorted(setting_names(text)) if not is_setting(n, fields)
            and not allowed(n)] == ["FOO_BAR", "REDIS_URLL"]
    assert [c for span in code(text) for c, _ in COMMAND.findall(span)] == ["sendd"]
    assert {"send", "dlq", "db"} <= set(subcommands(parser()))
    assert "replay" in subcommands(parser())["dlq"]
    assert {"the-message-path", "adding-a-job-family"} <= anchors(ROOT / "docs" / "architecture.md")
