"""The email processor on its own: no broker, no worker, no provider."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError

from integrations.messages import Email, Sent
from processing import email


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[tuple[Email, str | None]] = []

    def send(self, mail: Email, *, idempotency_key: str | None = None) -> Sent:
        self.sent.append((mail, idempotency_key))
        return Sent("recorder", f"id-{len(self.sent)}")


def test_an_otp_email_has_both_parts_and_the_code():
    mail = email.otp("ann@example.com", "481516", app_name="Acme", name="Ann",
                     expires_minutes=1)
    assert mail.to == ["ann@example.com"] and mail.subject == "Your Acme code: 481516"
    assert "481516" in mail.text and "481516" in (mail.html or "")
    assert "expires in 1 minute." in mail.text


def test_html_is_escaped_and_text_is_not():
    mail = email.welcome("a@example.com", app_name="A&B", name="<b>Ann</b>")
    assert "&lt;b&gt;Ann&lt;/b&gt;" in (mail.html or "") and "<b>Ann</b>" not in (mail.html or "")
    assert "Welcome, <b>Ann</b>!" in mail.text
    assert "A&amp;B" in (mail.html or "") and "A&B" in mail.text


def test_a_notification_email_turns_the_first_link_into_a_button_and_lists_the_rest():
    mail = email.notification("a@example.com", "Password Reset", "Click below", {
        "resetLink": "https://app.example/reset/t", "expiresIn": "1 hour", "userId": "u1"},
        app_name="Acme")
    assert 'href="https://app.example/reset/t"' in (mail.html or "")
    assert "Expires in: 1 hour" in mail.text and "u1" not in mail.text


def test_a_notification_link_that_is_not_http_is_not_a_button():
    mail = email.notification("a@example.com", "t", "b", {"openLink": "javascript:alert(1)"},
                              app_name="Acme")
    html = mail.html or ""
    # then it is listed as a plain detail, in both parts, and nothing links to it
    assert "Open link: javascript:alert(1)" in mail.text
    assert ">Open link</td>" in html and ">javascript:alert(1)</td>" in html
    assert "<a " not in html and "href=\"javascript" not in html


def test_send_passes_the_key_and_returns_the_provider_id():
    recorder = Recorder()
    result = email.send(recorder, email.otp("a@example.com", "1234", app_name="Acme"),
                        idempotency_key="send_otp:m1")
    assert result == {"provider": "recorder", "id": "id-1"}
    assert recorder.sent[0][1] == "send_otp:m1"


def test_a_template_variable_left_out_is_an_error_not_a_blank():
    with pytest.raises(UndefinedError):
        email.render("otp", app_name="Acme", name=None, expires_minutes=5, subject="s")
