"""Transactional email (seed 002): render the HTML and text parts, then send.

Templates live in `processing/templates/email`; HTML is autoescaped, so a name or a
title can never inject markup, and a missing variable is an error rather than a blank.
The functions take the sender (`integrations.messages.EmailSender`) as an argument:
no broker, no settings, testable on their own.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from integrations.messages import Email, EmailSender

TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> tuple[str, str]:
    """The HTML and plain-text bodies of template `email/<template>`."""
    env = environment()
    html = env.get_template(f"email/{template}.html").render(**context)
    text = env.get_template(f"email/{template}.txt").render(**context)
    return html, text


def compose(template: str, *, to: str, subject: str, app_name: str, **context: Any) -> Email:
    html, text = render(template, subject=subject, app_name=app_name, **context)
    return Email(to=[to], subject=subject, text=text, html=html, tags={"template": template})


def otp(to: str, code: str, *, app_name: str, name: str | None = None,
        expires_minutes: int = 10) -> Email:
    return compose("otp", to=to, subject=f"Your {app_name} code: {code}", app_name=app_name,
                   code=code, name=name, expires_minutes=expires_minutes)


def welcome(to: str, *, app_name: str, name: str | None = None,
            link: str | None = None) -> Email:
    return compose("welcome", to=to, subject=f"Welcome to {app_name}", app_name=app_name,
                   name=name, link=link)


def verification(to: str, link: str, *, app_name: str, name: str | None = None,
                 expires_in: str = "24 hours") -> Email:
    return compose("verification", to=to, subject=f"Confirm your {app_name} email",
                   app_name=app_name, link=link, name=name, expires_in=expires_in)


def notification(to: str, title: str, body: str, data: dict[str, str], *,
                 app_name: str) -> Email:
    """A notification email (seed 003): the title, the body, a button for the first link."""
    link = next((v for k, v in data.items() if _is_link(k, v)), None)
    details = [(_label(k), v) for k, v in data.items() if v != link and not _is_id(k)]
    return compose("notification", to=to, subject=title, app_name=app_name, title=title,
                   body=body, link=link, details=details)


def send(sender: EmailSender, email: Email, *, idempotency_key: str | None) -> dict[str, Any]:
    """Send `email`; the job's result: which provider took it and its id."""
    sent = sender.send(email, idempotency_key=idempotency_key)
    return {"provider": sent.provider, "id": sent.id}


def _is_link(key: str, value: str) -> bool:
    return key.lower().endswith(("link", "url")) and value.startswith(("https://", "http://"))


def _is_id(key: str) -> bool:
    return key.lower().endswith("id") or key == "type"


def _label(key: str) -> str:
    """`expiresIn` -> `Expires in`."""
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in key).replace("_", " ")
    return words.strip().capitalize()
