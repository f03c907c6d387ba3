"""The settings reference (docs/settings.md), generated from `Settings`' declarations.

`switchyard settings` prints it as Markdown or as JSON. Only the model is read, never
the environment or `.env`: it needs no service, and no configured secret can reach it.
A description may end with `Unset: <meaning>`, shown beside the default instead.
"""

from __future__ import annotations

import itertools
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from switchyard.base.settings import DAY_MS, HOUR_MS, SECTIONS, Settings

#: The command that writes the page (a test compares the page with what it prints).
COMMAND = "uv run switchyard settings > docs/settings.md"
#: How a description's last sentence starts when it says what an unset value means.
UNSET = "Unset: "
#: Durations shown beside a number of milliseconds, largest first.
DURATIONS = ((DAY_MS, "day"), (HOUR_MS, "hour"), (60_000, "min"), (1_000, "s"))
#: Sizes shown beside a number of bytes, largest first.
SIZES = ((1024 * 1024, "MiB"), (1024, "KiB"))
#: What the secrets' values are shown as, should one ever have a default.
HIDDEN = "**********"
#: The kinds of value a type annotation's member stands for.
KINDS: dict[Any, str] = {bool: "boolean", Path: "path", SecretStr: "secret",
                         list[SecretStr]: "list of secrets"}
HEADER = "| variable | type | default | description |\n|---|---|---|---|"

INTRO = f"""\
# Settings

Every setting comes from the environment or from a `.env` file in the working directory
(the environment wins); the variable is the upper-case name below. A name in `.env` that
is not a setting is refused, and a missing or invalid value stops the process with one
line naming the variable. Secrets (type `secret`) are never printed: this page shows no
value, and Switchyard shows them as `**********` (URLs with their password masked).
Times are in milliseconds, sizes in bytes.

This page is generated from the model in `switchyard/base/settings.py`: change a
description there, then write the page again (a test fails until it matches):

```sh
{COMMAND}
```

`uv run switchyard settings --json` prints the same as JSON, for tools.
"""


@dataclass(frozen=True)
class Row:
    """One setting as the reference shows it; `default` is its JSON value."""

    name: str
    kinds: list[str]
    allowed: list[str]
    default: Any
    secret: bool
    section: str
    description: str
    info: FieldInfo

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": either(self.kinds + self.allowed),
                "allowed": self.allowed or None, "default": self.default,
                "secret": self.secret, "section": self.section,
                "description": self.description}


def rows() -> list[Row]:
    """Every setting, section by section in `SECTIONS`' order, in model order within one
    (a field in no section comes last, so the page still shows it)."""
    section_of = {name: title for title, names in SECTIONS.items() for name in names}
    found = [row(name, info, section_of.get(name, ""))
             for name, info in Settings.model_fields.items()]
    order = [*SECTIONS, ""]
    return sorted(found, key=lambda item: order.index(item.section))


def row(name: str, info: FieldInfo, section: str) -> Row:
    members = parts(info.annotation)
    literals = [m for m in members if typing.get_origin(m) is Literal]
    allowed = [str(value) for m in literals for value in typing.get_args(m)]
    kinds = [kind(name, m, info) for m in members if m not in literals]
    secret = any(m in (SecretStr, list[SecretStr]) for m in members)
    value = info.get_default(call_default_factory=True)
    if secret and value not in (None, []):
        value = HIDDEN
    value = str(value) if isinstance(value, Path) else value
    return Row(name.upper(), kinds, allowed, value, secret, section, info.description or "",
               info)


def parts(annotation: Any) -> list[Any]:
    """The members of a union, `None` left out (a `Literal` stays whole)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [part for arg in typing.get_args(annotation) for part in parts(arg)]
    return [] if annotation is type(None) else [annotation]


def kind(name: str, member: Any, info: FieldInfo) -> str:
    """What a member of the field's type is called here (`milliseconds`, `URL`...)."""
    if member is int:
        units = {"_ms": "milliseconds", "_bytes": "bytes"}
        return next((word for end, word in units.items() if name.endswith(end)), "integer")
    if member is str:
        return "URL" if str(constraint(info, "pattern")).startswith("^https?://") else "text"
    return KINDS.get(member, str(member))


def constraint(info: FieldInfo, name: str) -> Any:
    """A validation bound of the field (`ge`, `le`, `min_length`...), None without one."""
    return next((getattr(meta, name) for meta in info.metadata
                 if getattr(meta, name, None) is not None), None)


def bounds(info: FieldInfo) -> str:
    """The field's numeric and length bounds, as people read them."""
    shortest, longest = constraint(info, "min_length"), constraint(info, "max_length")
    lengths = ("not empty" if (shortest, longest) == (1, None)
               else between(shortest, longest, " characters"))
    said = [between(constraint(info, "ge"), constraint(info, "le"), ""), lengths]
    return ", ".join(part for part in said if part)


def between(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}{unit}"
    if low is not None:
        return f"at least {low}{unit}"
    return f"at most {high}{unit}" if high is not None else ""


def either(words: list[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return " or ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def split_unset(description: str) -> tuple[str, str | None]:
    """The description without its closing `Unset: ...`, and what that says unset means."""
    text, found, meaning = description.partition(UNSET)
    return (text.rstrip(), meaning.strip().removesuffix(".")) if found else (description, None)


def shown_default(item: Row, unset: str | None) -> str:
    """The default as people read it: `true`, `86400000` (1 day), unset: what that means."""
    value = item.default
    if value is None or value in ([], ""):
        said = "unset" if value is None else "empty"
        return f"{said}: {unset}" if unset else said
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int):
        human = (duration(value) if item.kinds == ["milliseconds"]
                 else size(value) if item.kinds == ["bytes"] else None)
        return f"`{value}` ({human})" if human else f"`{value}`"
    return f"`{value}`"


def duration(ms: int) -> str | None:
    """`ms` in the largest unit that divides it (`1 day`, `30 min`); None under a second."""
    for unit_ms, unit in DURATIONS:
        if ms >= unit_ms and ms % unit_ms == 0:
            count = ms // unit_ms
            return f"{count} {unit}{'s' if count > 1 and unit in ('day', 'hour') else ''}"
    return f"{ms / 1000:g} s" if ms >= 1_000 else None


def size(count: int) -> str | None:
    """`count` bytes in whole MiB or KiB (`200 MiB`); None when neither divides it."""
    return next((f"{count // unit} {name}" for unit, name in SIZES
                 if count >= unit and count % unit == 0), None)


def table_row(item: Row) -> str:
    description, unset = split_unset(item.description)
    typed = ", ".join(filter(None, [
        either(item.kinds + [f"`{value}`" for value in item.allowed]), bounds(item.info)]))
    cells = [f"`{item.name}`", typed, shown_default(item, unset), description]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def sections() -> Iterator[tuple[str, list[Row]]]:
    for title, items in itertools.groupby(rows(), key=lambda item: item.section):
        yield title or "In no section", list(items)


def markdown() -> str:
    """The whole page, docs/settings.md."""
    tables = [f"## {title}\n\n{HEADER}\n" + "".join(f"{table_row(item)}\n" for item in items)
              for title, items in sections()]
    return "\n".join([INTRO, *tables])


def as_json() -> str:
    """Every setting as a JSON list (name, type, allowed, default, secret, section,
    description: the description whole, `Unset: ...` included)."""
    return json.dumps([item.as_dict() for item in rows()], indent=2) + "\n"
