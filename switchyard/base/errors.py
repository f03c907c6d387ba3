"""The failure taxonomy: every integration raises these, every middleware reads them.

```
JobError
  PermanentError      never retried: not found, forbidden, invalid payload (too large,
                      too), not configured, unknown actor or queue
  RetryableError      network, timeout, 5xx: exponential backoff
    RateLimited       carries retry_after (seconds): wait exactly that, spend no attempt
```
"""

from __future__ import annotations

from typing import Any


class JobError(Exception):
    """Base of every classified job failure; keeps the provider's code and HTTP status.

    `message` is ours, never the provider's text (providers echo the request back:
    see `integrations/error_text.py`).

    `code` is the provider's own error code (`UNREGISTERED`, `50013`, `21211`, ...),
    `status` the HTTP status it came with, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | int | None = None,
        provider: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary for history, dead letters and API answers."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "code": self.code,
            "provider": self.provider,
            "status": self.status,
        }

    def __str__(self) -> str:
        prefix = f"{self.provider} " if self.provider else ""
        code = f"[{self.code}] " if self.code is not None else ""
        return f"{prefix}{code}{self.message}"


class PermanentError(JobError):
    """Running the job again cannot succeed: dead-letter it after this run."""


class RetryableError(JobError):
    """A transient failure: retry with exponential backoff."""


class Cancelled(JobError):
    """The job was cancelled while it ran, and stopped (`Context.cancelled` said so): it
    ends `cancelled`, neither retried nor dead-lettered (`middleware.cancel`)."""

    def __init__(self, message: str = "cancelled while it ran") -> None:
        super().__init__(message, code="cancelled")


class RateLimited(RetryableError):
    """The provider asked us to wait `retry_after` seconds; waiting spends no attempt."""

    def __init__(
        self,
        message: str = "rate limited",
        *,
        retry_after: float,
        code: str | int | None = None,
        provider: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, provider=provider, status=status)
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        self.retry_after = retry_after

    @property
    def retry_after_ms(self) -> int:
        return int(round(self.retry_after * 1000))

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "retry_after": self.retry_after}


class InvalidPayload(PermanentError):
    """The job's payload does not match its actor's model."""


class InvalidOptions(InvalidPayload):
    """A job's options (delay, idempotency key) are out of range."""


class PayloadTooLarge(InvalidPayload):
    """A job's payload is larger than MAX_PAYLOAD_BYTES: refused before it is queued."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the payload is {size} bytes as JSON, over MAX_PAYLOAD_BYTES "
                         f"({limit} bytes)", code="payload_too_large")
        self.size = size
        self.limit = limit


class UnknownQueue(PermanentError):
    """No queue is declared, has actors or holds dead letters by that name."""

    def __init__(self, queue: str) -> None:
        super().__init__(f"unknown queue {queue!r}: no queue is declared, has actors or "
                         "holds dead letters by that name", code="unknown_queue")
        self.queue = queue


class UnknownJob(PermanentError):
    """No actor (job type) of that name is declared."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        listed = f" (known: {', '.join(sorted(known)) or 'none'})" if known is not None else ""
        super().__init__(f"unknown actor {name!r}{listed}", code="unknown_actor")
        self.name = name


class DuplicateJob(PermanentError):
    """A job with the same idempotency key is already queued, running or done."""

    def __init__(self, existing: str) -> None:
        super().__init__("a job with this idempotency key is already queued, running or done",
                         code="duplicate")
        #: The message id of that job ("" when it is not known by id).
        self.existing = existing


class NotConfigured(PermanentError):
    """A provider is selected (or needed) but a setting it requires is missing."""

    def __init__(self, provider: str, setting: str, *, why: str | None = None) -> None:
        reason = why or f"{provider} is selected"
        super().__init__(f"{setting} is not set ({reason})", code="not_configured",
                         provider=provider)
        self.setting = setting


def describe(exc: BaseException) -> dict[str, Any]:
    """Summarise any exception the way history and dead letters store it."""
    if isinstance(exc, JobError):
        return exc.as_dict()
    return {"error": type(exc).__name__, "message": str(exc), "code": None, "provider": None,
            "status": None}


def invalid_payload(model_name: str, error: Any) -> InvalidPayload:
    """An `InvalidPayload` naming each bad field; the offending values are left out (PII)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    return InvalidPayload(f"invalid {model_name} payload: " + "; ".join(problems), code="invalid")
