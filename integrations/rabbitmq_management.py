"""RabbitMQ's management API: what AMQP cannot tell of a queue without taking a message.

Over AMQP a queue says only how many messages are ready. The management API
(`RABBITMQ_MANAGEMENT_URL`) also says how many are delivered and not acked yet, and the
`timestamp` property of the message at its head, when that message carries one (AMQP
timestamps are whole seconds). One `GET /api/queues/<vhost>` answers for every queue of
the broker's vhost; the server refreshes these numbers every few seconds (its
`collect_statistics_interval`, 5 s by default), so they lag by that much.

A look has a short deadline: the dashboard and the Prometheus scrape wait for it, and
one that does not answer is reported unknown there, never an error of the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from switchyard.base.errors import PermanentError

if TYPE_CHECKING:
    from switchyard.base.settings import Settings

PROVIDER = "rabbitmq-management"
#: The longest a look at the management API may take (ms), connecting included.
DEFAULT_TIMEOUT_MS = 2_000
#: What is asked of each queue (the API leaves out every other field).
COLUMNS = "name,messages_ready,messages_unacknowledged,head_message_timestamp"


@dataclass(frozen=True)
class QueueStats:
    """One queue as the management API last measured it."""

    ready: int = 0
    unacked: int = 0
    #: The head message's `timestamp` property (ms since the epoch); None when no message
    #: waits or the one at the head carries no timestamp.
    head_timestamp_ms: int | None = None


class Management:
    """Reads the queues of one vhost from RabbitMQ's management API."""

    def __init__(self, url: str, vhost: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        parts = urlsplit(url)
        self.base_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.auth = None if parts.username is None else (
            unquote(parts.username), unquote(parts.password or ""))
        self.vhost = vhost
        self.timeout_ms = timeout_ms

    def __repr__(self) -> str:  # the URL's credentials are never shown
        return f"Management({self.base_url!r}, vhost={self.vhost!r})"

    def queues(self) -> dict[str, QueueStats]:
        """Every queue of the vhost by name; raises a `JobError` (`RetryableError` for a
        server that did not answer) when the API cannot tell."""
        # Imported here: a process that never looks (a worker, a producer) loads no httpx.
        from integrations.http import Http, HttpConfig, body_json, classify

        # A client per look: one request every few seconds needs no pool to outlive it.
        config = HttpConfig(connect_timeout_ms=self.timeout_ms, timeout_ms=self.timeout_ms)
        http = Http(PROVIDER, self.base_url, config=config, auth=self.auth)
        try:
            response = http.request("GET", f"/api/queues/{quote(self.vhost, safe='')}",
                                    params={"columns": COLUMNS})
        finally:
            http.close()
        if response.status_code != 200:
            raise classify(response, provider=PROVIDER, code=response.status_code)
        data = body_json(response)
        if not isinstance(data, list):
            raise PermanentError("the management API answered without a list of queues",
                                 code="bad_response", provider=PROVIDER,
                                 status=response.status_code)
        return {str(item["name"]): stats(item) for item in data
                if isinstance(item, dict) and "name" in item}


def stats(item: dict[str, Any]) -> QueueStats:
    """A queue's numbers from its JSON; a field the server left out (no statistics yet)
    counts as zero, a timestamp that is not a number as none."""
    stamp = item.get("head_message_timestamp")
    return QueueStats(ready=_count(item.get("messages_ready")),
                      unacked=_count(item.get("messages_unacknowledged")),
                      head_timestamp_ms=_count(stamp) * 1000 if _count(stamp) > 0 else None)


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def vhost_of(amqp_url: str) -> str:
    """The vhost an `amqp://` URL names, as pika reads it: `/` when the path is empty."""
    path = urlsplit(amqp_url.split(";")[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def from_settings(settings: Settings) -> Management | None:
    """The broker's management API, or None: not configured, or the broker is not RabbitMQ."""
    if settings.rabbitmq_management_url is None or not settings.uses_rabbitmq:
        return None
    return Management(settings.rabbitmq_management_url.get_secret_value(),
                      vhost_of(settings.queue_url))
