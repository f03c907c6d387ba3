"""Email over plain SMTP (RFC 5321), for providers without an HTTP API.

Replies classify by their first digit: 4yz is transient (retry), 5yz permanent, except
552 on RCPT, which RFC 5321 says to treat as 452 (mailbox full: try later). A dropped
connection, a refused connect and a socket timeout are retryable. `sendmail` returns the
recipients it refused *without raising* when only some were refused: those come back
in `Sent.refused`, and the send counts as done for the rest.

SMTP has no idempotency key; the Message-ID is derived from the job's key instead, so
a retried send carries the same Message-ID and mail clients can fold the copies.

A reply's text often repeats the address or the message it refused ("550 5.1.1
<ann@example.com>: no such user"), so errors and refusals keep the reply code with a
fixed phrase for it (`REPLIES`), never the text; smtplib's exceptions, whose strings
hold that text, are not chained onto the job error either.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from typing import Any

from integrations.error_text import safe_code
from integrations.messages import Email, Sent, to_mime
from switchyard.base.errors import JobError, NotConfigured, PermanentError, RetryableError

logger = logging.getLogger("switchyard.smtp")

PROVIDER = "SMTP"
#: Our phrase for each reply code of RFC 5321 (and RFC 4954's authentication replies).
REPLIES: dict[int, str] = {
    421: "service not available, closing the connection",
    450: "mailbox unavailable, try again later", 451: "local error in processing",
    452: "insufficient storage", 454: "temporary authentication failure",
    500: "command not recognised", 501: "syntax error in parameters",
    502: "command not implemented", 503: "bad sequence of commands",
    504: "command parameter not implemented", 530: "authentication required",
    534: "authentication mechanism too weak", 535: "authentication credentials invalid",
    550: "mailbox unavailable", 551: "user not local", 552: "exceeded storage allocation",
    553: "mailbox name not allowed", 554: "transaction failed",
    555: "MAIL or RCPT parameters not recognised",
}


def reply_phrase(code: int) -> str:
    """Our words for a reply code: its fixed phrase, else its class (4yz or 5yz)."""
    known = REPLIES.get(code)
    if known is not None:
        return f"{known} (reply {code})"
    kind = "temporary failure" if 400 <= code < 500 else "failure"
    return f"{kind} (reply {code})" if safe_code(code) is not None else kind


def classify_reply(code: int, *, rcpt: bool = False) -> JobError:
    """An SMTP reply code as a job error (552 on RCPT counts as 452); its text is not kept."""
    message, kept = reply_phrase(code), safe_code(code)
    if 400 <= code < 500 or (rcpt and code == 552):
        return RetryableError(message, code=kept, provider=PROVIDER)
    return PermanentError(message, code=kept, provider=PROVIDER)


class Smtp:
    """An `EmailSender` that delivers through one SMTP server, one connection per send."""

    name = "smtp"

    def __init__(
        self, host: str, port: int = 587, *, sender: str, username: str | None = None,
        password: str | None = None, security: str = "starttls", timeout_s: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("starttls", "ssl", "none"):
            raise ValueError(f"unknown SMTP security {security!r}")
        self.host, self.port, self.sender = host, port, sender
        self.username, self._password = username, password
        self.security, self.timeout_s = security, timeout_s
        self._ssl = ssl_context

    def __repr__(self) -> str:
        return f"Smtp({self.host!r}, {self.port}, security={self.security!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> Smtp:
        if not settings.smtp_host:
            raise NotConfigured(PROVIDER, "SMTP_HOST", why="EMAIL_BACKEND=smtp")
        if settings.smtp_username and settings.smtp_password is None:
            raise NotConfigured(PROVIDER, "SMTP_PASSWORD", why="SMTP_USERNAME is set")
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            settings.smtp_host, settings.smtp_port, sender=settings.email_from,
            username=settings.smtp_username, password=password,
            security=settings.smtp_security, timeout_s=settings.http_timeout_ms / 1000,
        )

    def send(self, email: Email, *, idempotency_key: str | None = None) -> Sent:
        message = to_mime(email, sender=self.sender, idempotency_key=idempotency_key)
        # smtplib's exceptions hold the server's reply text: none is chained (`from None`).
        try:
            refused = self._deliver(message)
        except smtplib.SMTPRecipientsRefused as error:
            raise _all_refused(error.recipients) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as error:
            raise _connection(error) from None
        except smtplib.SMTPNotSupportedError as error:
            raise PermanentError(f"SMTP server: {error}", code="not_supported",
                                 provider=PROVIDER) from error
        except smtplib.SMTPResponseException as error:  # sender refused, data refused, auth
            raise classify_reply(error.smtp_code) from None
        except OSError as error:  # refused connection, socket timeout, TLS failure
            raise _connection(error) from error
        if refused:
            logger.warning("SMTP server refused %d of %d recipients.", len(refused), len(email.to))
        reasons = {rcpt: reply_phrase(code) for rcpt, (code, _) in refused.items()}
        return Sent("smtp", str(message["Message-ID"]), refused=reasons)

    def _deliver(self, message: Any) -> dict[str, tuple[int, bytes]]:
        context = self._ssl or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self._password or "")
            return smtp.send_message(message)


def _connection(error: Exception) -> RetryableError:
    """A connection that failed or dropped; only the exception's type is said."""
    return RetryableError(f"SMTP connection failed ({type(error).__name__})",
                          code="connection", provider=PROVIDER)


def _all_refused(recipients: dict[str, tuple[int, bytes]]) -> JobError:
    """Every recipient refused: retry if any refusal was transient, else permanent."""
    errors = [classify_reply(code, rcpt=True) for code, _ in recipients.values()]
    codes = sorted({code for code, _ in recipients.values()})
    shown = ", ".join(str(code) for code in codes if safe_code(code) is not None)
    summary = f"all {len(recipients)} recipient(s) refused ({shown})"
    first = errors[0]
    if any(isinstance(e, RetryableError) for e in errors):
        return RetryableError(f"{summary}: {first.message}", code=safe_code(codes[0]),
                              provider=PROVIDER)
    return PermanentError(f"{summary}: {first.message}", code=safe_code(codes[0]),
                          provider=PROVIDER)
