"""SMTP email against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from integrations.messages import Email
from integrations.smtp import Smtp
from switchyard.base import settings
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from tests.fakes.smtp import SmtpFake
from tests.integrations.leaks import EMAIL, OTP, PAYLOAD, leaked
from tests.support.services import free_port

SENDER = "Switchyard <noreply@example.com>"


@pytest.fixture
def server() -> Iterator[SmtpFake]:
    fake = SmtpFake()
    yield fake
    fake.stop()


def client(port: int, **kwargs: object) -> Smtp:
    return Smtp("127.0.0.1", port, sender=SENDER, security="none", timeout_s=2, **kwargs)  # type: ignore[arg-type]


def mail(*to: str) -> Email:
    return Email(to=list(to), subject="Your code", text="Code: 123456",
                 html="<p>Code: <b>123456</b></p>")


def test_a_message_is_delivered_with_text_and_html(server):
    # when
    sent = client(server.port).send(mail("ann@example.com"))
    # then
    assert sent.provider == "smtp" and not sent.refused
    [delivered] = server.delivered
    assert delivered.recipients == ["ann@example.com"]
    assert delivered.message["From"] == SENDER
    assert delivered.message.get_body(("plain",)).get_content().strip() == "Code: 123456"
    assert "<b>123456</b>" in delivered.message.get_body(("html",)).get_content()
    assert delivered.message["Message-ID"] == sent.id


def test_a_retried_send_carries_the_same_message_id(server):
    # given a job's idempotency key
    smtp = client(server.port)
    # when the job's send runs twice
    first = smtp.send(mail("ann@example.com"), idempotency_key="otp:42")
    second = smtp.send(mail("ann@example.com"), idempotency_key="otp:42")
    # then both copies say they are the same message
    assert first.id == second.id
    assert [d.message["Message-ID"] for d in server.delivered] == [first.id, first.id]


def test_a_partial_refusal_is_reported_and_the_rest_delivered(server):
    # given one recipient the server refuses, repeating the address as it does so
    server.refuse("gone@example.com", "550 5.1.1 No such user")
    server.echo = True
    # when
    sent = client(server.port).send(mail("ann@example.com", "gone@example.com"))
    # then the other got it and the refusal is in the result, by its reply code only
    assert sent.refused == {"gone@example.com": "mailbox unavailable (reply 550)"}
    assert [d.recipients for d in server.delivered] == [["ann@example.com"]]


def test_an_echoed_message_reaches_no_error(server):
    # given a server that refuses the message and repeats it in its reply
    server.data_reply = "554 5.7.1 Message rejected as spam"
    server.echo = True
    message = Email(to=[EMAIL], subject=f"Your code is {OTP}", text=PAYLOAD)
    # when an email holding a token, a code, a phone number and an address is sent
    with pytest.raises(PermanentError) as caught:
        client(server.port).send(message)
    # then the error keeps the class and the reply code, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, 554, None)
    assert leaked(error) == []
    assert error.message == "transaction failed (reply 554)"


def test_an_echoed_recipient_reaches_no_error(server):
    # given a server that refuses the recipient and repeats the address in its reply
    server.refuse(EMAIL, "450 4.2.0 Greylisted, try again later")
    server.echo = True
    # when the only recipient is refused
    with pytest.raises(RetryableError) as caught:
        client(server.port).send(Email(to=[EMAIL], subject="hi", text=PAYLOAD))
    # then the error keeps the class and the reply code, not the address
    error = caught.value
    assert (type(error), error.code) == (RetryableError, 450)
    assert leaked(error) == []
    assert error.message == ("all 1 recipient(s) refused (450): "
                             "mailbox unavailable, try again later (reply 450)")


@pytest.mark.parametrize(("reply", "expected"), [
    ("421 4.3.2 Service shutting down", RetryableError),
    ("450 4.2.0 Greylisted, try again later", RetryableError),
    ("451 4.3.0 Local error", RetryableError),
    ("452 4.2.2 Mailbox full", RetryableError),
    ("454 4.7.0 Temporary authentication failure", RetryableError),
    ("552 5.2.2 Mailbox over quota", RetryableError),  # on RCPT: treated as 452
    ("550 5.1.1 No such user", PermanentError),
    ("551 5.1.6 User not local", PermanentError),
    ("553 5.1.3 Bad address syntax", PermanentError),
    ("554 5.7.1 Rejected", PermanentError),
])
def test_reference_classification_of_recipient_replies(server, reply, expected):
    # given every recipient refused with this reply
    server.refuse("ann@example.com", reply)
    # when / then
    with pytest.raises(JobError) as caught:
        client(server.port).send(mail("ann@example.com"))
    assert type(caught.value) is expected
    assert caught.value.code == int(reply[:3])
    assert server.delivered == []


@pytest.mark.parametrize(("command", "reply", "expected"), [
    ("mail", "421 4.7.0 Try again later", RetryableError),
    ("mail", "451 4.3.0 Temporary failure", RetryableError),
    ("mail", "501 5.5.4 Syntax error in parameters", PermanentError),
    ("mail", "530 5.7.0 Authentication required", PermanentError),
    ("mail", "550 5.7.1 Sender rejected", PermanentError),
    ("data", "451 4.3.0 Queue unavailable", RetryableError),
    ("data", "552 5.3.4 Message too big", PermanentError),  # 552 outside RCPT: permanent
    ("data", "554 5.6.0 Message rejected as spam", PermanentError),
])
def test_reference_classification_of_mail_and_data_replies(server, command, reply, expected):
    setattr(server, f"{command}_reply", reply)
    with pytest.raises(JobError) as caught:
        client(server.port).send(mail("ann@example.com"))
    assert type(caught.value) is expected
    assert caught.value.code == int(reply[:3])


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_wrong_password_is_permanent():
    # given a server that requires AUTH
    fake = SmtpFake(username="mailer", password="right-password")
    try:
        # when we log in with the wrong password
        with pytest.raises(PermanentError) as caught:
            client(fake.port, username="mailer", password="wrong").send(mail("ann@example.com"))
        # then
        assert caught.value.code == 535
        assert "wrong" not in str(caught.value)
        # and the right one delivers
        client(fake.port, username="mailer", password="right-password").send(mail("a@b.example"))
        assert len(fake.delivered) == 1
    finally:
        fake.stop()


def test_starttls_upgrades_the_connection_before_sending():
    # given a server that requires STARTTLS, with a certificate we trust
    fake = SmtpFake(tls=True)
    try:
        smtp = Smtp("127.0.0.1", fake.port, sender=SENDER, security="starttls", timeout_s=2,
                    ssl_context=fake.client_context())
        # when
        smtp.send(mail("ann@example.com"))
        # then it went through, encrypted
        assert len(fake.delivered) == 1 and fake.delivered[0].tls
    finally:
        fake.stop()


def test_a_certificate_we_do_not_trust_is_retryable_and_sends_nothing():
    fake = SmtpFake(tls=True)
    try:
        smtp = Smtp("127.0.0.1", fake.port, sender=SENDER, security="starttls", timeout_s=2)
        with pytest.raises(RetryableError):
            smtp.send(mail("ann@example.com"))
        assert fake.delivered == []
    finally:
        fake.stop()


def test_a_closed_port_is_retryable():
    with pytest.raises(RetryableError) as caught:
        client(free_port()).send(mail("ann@example.com"))
    assert caught.value.code == "connection"


class RawServer:
    """A TCP server that accepts and then either says nothing or hangs up."""

    def __init__(self, *, hang_up: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.hang_up = hang_up
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        if self.hang_up:
            conn.close()
        else:
            self.done.wait(10)
            conn.close()

    def stop(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.mark.parametrize("hang_up", [False, True], ids=["stalls", "hangs-up"])
def test_a_silent_or_vanishing_server_is_retryable(hang_up):
    raw = RawServer(hang_up=hang_up)
    try:
        smtp = Smtp("127.0.0.1", raw.port, sender=SENDER, security="none", timeout_s=0.3)
        with pytest.raises(RetryableError) as caught:
            smtp.send(mail("ann@example.com"))
        assert not isinstance(caught.value, RateLimited)
    finally:
        raw.stop()


def test_a_header_with_a_line_break_is_refused_before_connecting(server):
    bad = Email(to=["ann@example.com"], subject="hi\r\nBcc: everyone@example.com", text="x")
    with pytest.raises(PermanentError):
        client(server.port).send(bad)
    assert server.sessions == 0


def test_selected_but_unconfigured_names_the_setting():
    config = settings.load(_env_file=None, email_backend="smtp")
    with pytest.raises(NotConfigured) as caught:
        Smtp.from_settings(config)
    assert "SMTP_HOST" in str(caught.value)


def test_the_password_is_not_in_the_repr():
    smtp = Smtp("mail.example.com", 587, sender=SENDER, username="u", password="hunter22")
    # the repr names the server (what a log or a traceback needs), and not the password
    assert repr(smtp) == "Smtp('mail.example.com', 587, security='starttls')"
    assert "hunter22" not in repr(smtp)
