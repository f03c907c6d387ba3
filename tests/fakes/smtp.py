"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

Replies can be set per recipient (`refuse("x@example.com", "550 5.1.1 No such user")`)
and for the DATA and MAIL commands, so each reply class of RFC 5321 is tested against a
real SMTP conversation. With `username`/`password` it requires AUTH (over plain text:
loopback only). With `echo = True` a set reply repeats what it refuses (the address,
or the message's headers and text), as many servers do.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.services import free_port


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, written under `directory`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return cert_path, key_path


class SmtpFake:
    def __init__(self, *, username: str | None = None, password: str | None = None,
                 tls: bool = False) -> None:
        self.delivered: list[Delivered] = []
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.echo = False
        self.sessions = 0
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {}
        if username is not None:
            kwargs = {"auth_required": True, "auth_require_tls": False,
                      "authenticator": self._authenticator(username, password or "")}
        self._dir = Path(tempfile.mkdtemp(prefix="switchyard-smtp-"))
        self.cert: Path | None = None
        if tls:
            self.cert, key = self_signed(self._dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            kwargs.update(tls_context=context, require_starttls=True)
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server's certificate."""
        assert self.cert is not None, "started without tls=True"
        return ssl.create_default_context(cafile=str(self.cert))

    def refuse(self, address: str, reply: str) -> None:
        """Answer RCPT TO:<address> with `reply` (e.g. "450 4.2.0 Greylisted")."""
        self.rcpt_replies[address] = reply

    @staticmethod
    def _authenticator(username: str, password: str) -> Any:
        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = (isinstance(data, LoginPassword) and data.login.decode() == username
                  and data.password.decode() == password)
            return AuthResult(success=ok, handled=False)

        return check

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,  # noqa: N802
                          responses: list[str]) -> list[str]:
        with self._lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    def _echoed(self, reply: str, refused: str) -> str:
        """`reply`, repeating on its one line what it refuses when `echo` is on."""
        return f"{reply}: {' '.join(refused.split())}" if self.echo else reply

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if self.mail_reply:
            return self._echoed(self.mail_reply, f"<{address}>")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return self._echoed(reply, f"<{address}>")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if self.data_reply:
            return self._echoed(self.data_reply, _summary(message))
        with self._lock:
            self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos),
                                            message,  # type: ignore[arg-type]
                                            tls=session.ssl is not None))
        return "250 2.0.0 Message accepted for delivery"

    def stop(self) -> None:
        self.controller.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _summary(message: Any) -> str:
    """What a server quotes of a message it refuses: its addresses, subject and text."""
    body = message.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    return f"From {message['From']} To {message['To']} Subject {message['Subject']} {text}"
