"""Redis clients that never wait for ever on a Redis that stopped answering.

Every Switchyard process talks to Redis through `redis_client`: the state store and the
Redis broker alike (and so the web process, the CLI, the clock and the bridge, which use
them). A blocking wait (a result wait, the broker's doorbell) needs a longer socket
timeout than ordinary commands: it gets a connection of its own, made with
`connection_settings`, which copies the pool's TLS and Sentinel settings too.

Beyond one machine (docs/deployment.md):

- `rediss://` URLs speak TLS; REDIS_TLS_VERIFY=false accepts a self-signed certificate
  (Heroku Redis), REDIS_TLS_CA_FILE trusts a CA of one's own.
- With REDIS_SENTINELS, the client asks the Sentinels where the primary of
  REDIS_SENTINEL_SERVICE is each time it connects, so a dropped connection after a
  failover reconnects to the new primary, and a demoted primary's "READONLY" answer
  drops the connection: no restart is needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.connection import HiredisRespSerializer, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from switchyard.base.settings import Settings

try:
    import hiredis
except ImportError:  # redis-py packs and parses in Python
    hiredis = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Socket time (ms) a blocking command gets on top of its own wait before it gives up.
BLOCKING_MARGIN = 2_000
#: Blocking commands whose last argument is their wait (seconds, 0: for ever).
_WAIT_LAST = frozenset({"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"})
#: Blocking commands whose first argument is their wait.
_WAIT_FIRST = frozenset({"BLMPOP", "BZMPOP"})
#: What a refused certificate says, and what to do about it.
TLS_HINT = ("the Redis server's TLS certificate is not trusted: set REDIS_TLS_CA_FILE to "
            "its CA, or REDIS_TLS_VERIFY=false for a self-signed one (Heroku Redis)")
#: Connection settings a redis-py pool manages itself, left out when one is copied.
_POOL_MANAGED = ("maint_notifications", "orig_", "himport")


def connection_settings(pool: redis.ConnectionPool, **changes: Any) -> dict[str, Any]:
    """The settings of `pool`'s connections, for a connection of one's own, with
    `changes` (a longer socket timeout for a blocking wait, a client name...)."""
    settings = {key: value for key, value in pool.connection_kwargs.items()
                if not key.startswith(_POOL_MANAGED)}
    return {**settings, **changes}


def blocking_wait(args: tuple[Any, ...]) -> float | None:
    """How long (s) a command asks Redis to block (0: for ever); None if it does not."""
    name = str(args[0]).upper()
    if name in _WAIT_LAST and len(args) > 1:
        return float(args[-1])
    if name in _WAIT_FIRST and len(args) > 1:
        return float(args[1])
    return None


class TimedRedis(redis.Redis):
    """A Redis client on which no call waits for ever for a Redis that stopped answering.

    Ordinary commands get the pool's socket timeout (REDIS_TIMEOUT_MS). A blocking one
    (Dramatiq's result wait is a BRPOPLPUSH) legitimately waits longer: it runs on a
    connection of its own whose timeout is its wait plus `BLOCKING_MARGIN`, so the
    pool's connections keep their short timeout.
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        wait = blocking_wait(args)
        if wait is None:
            if (traced or self.connection is not None
                    or getattr(self.connection_pool, "cache", None) is not None):
                return super().execute_command(*args, **options)
            return _one_command(self.connection_pool, args, options, self.response_callbacks)
        with self._waiting_client(wait) as client:
            return client.execute_command(*args, **options)

    @contextmanager
    def _waiting_client(self, wait: float) -> Iterator[redis.Redis]:
        pool = self.connection_pool
        timeout = wait + BLOCKING_MARGIN / 1000 if wait > 0 else None
        own = redis.ConnectionPool(connection_class=pool.connection_class,
                                   **connection_settings(pool, socket_timeout=timeout))
        try:
            yield redis.Redis(connection_pool=own)
        finally:
            own.disconnect()


def queue_script(pipe: Any, script: Any, keys: list[Any], args: list[Any]) -> None:
    """Queue a registered script on a pipeline as EVALSHA, run with `execute_loading`.
    redis-py's own way sends SCRIPT EXISTS before every pipeline that holds a script: a
    round trip more per enqueue and per buffer flush, for what is known after the first."""
    pending: dict[int, tuple[Any, list[Any], list[Any]]] = pipe.__dict__.setdefault(
        "switchyard_scripts", {})
    pending[len(pipe.command_stack)] = (script, keys, args)
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


#: The round trip the commands of this thread's `later` calls share (`one_round_trip`).
_shared = threading.local()


@contextmanager
def one_round_trip() -> Iterator[None]:
    """Within it, this thread's `later` calls queue their commands instead of sending
    them; on leaving, they are sent together, one pipeline per client, and each
    caller's `then` gets its replies (or its `fail` the error). Used around a batch
    hook whose middleware each need a lookup (`after_fetch`): one round trip, not one
    each. Nested, the outermost one sends."""
    if getattr(_shared, "calls", None) is not None:
        yield
        return
    calls: list[tuple[Any, Any, Callable[[list[Any]], None],
                      Callable[[redis.RedisError], None]]] = []
    _shared.calls = calls
    try:
        yield
    finally:
        _shared.calls = None
    by_client: dict[int, list[tuple[Any, Any, Callable[[list[Any]], None],
                                    Callable[[redis.RedisError], None]]]] = {}
    for call in calls:
        by_client.setdefault(id(call[0]), []).append(call)
    for group in by_client.values():
        _send(group)


def later(client: Any, queue: Callable[[Any], Any], then: Callable[[list[Any]], None],
          fail: Callable[[redis.RedisError], None]) -> None:
    """Queue commands on a pipeline of `client` (`queue`) and give their replies to
    `then`, or the error to `fail` (Redis did not answer, or refused one of them): at
    once, or, within `one_round_trip`, when it ends, with the others'."""
    calls = getattr(_shared, "calls", None)
    if calls is None:
        _send([(client, queue, then, fail)])
    else:
        calls.append((client, queue, then, fail))


def _send(calls: list[tuple[Any, Any, Callable[[list[Any]], None],
                            Callable[[redis.RedisError], None]]]) -> None:
    pipe = calls[0][0].pipeline(transaction=False)
    bounds = []
    for _, queue, _, _ in calls:
        start = len(pipe.command_stack)
        queue(pipe)
        bounds.append((start, len(pipe.command_stack)))
    try:
        replies = execute_loading(pipe, raise_on_error=False)
    except redis.RedisError as error:
        for _, _, _, fail in calls:
            fail(error)
        return
    for (_, _, then, fail), (start, end) in zip(calls, bounds, strict=True):
        own = replies[start:end]
        refused = next((r for r in own if isinstance(r, redis.RedisError)), None)
        try:
            if refused is not None:
                fail(refused)
            else:
                then(own)
        except Exception:  # one caller's bug must not keep the others' replies from them
            logger.exception("A caller of a shared round trip failed on its replies.")


def execute_loading(pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
    """Execute `pipe`; a script Redis does not know (first use, a restart, SCRIPT FLUSH,
    a new primary) is loaded and that command alone run again, so nothing else in the
    pipeline is applied twice. Raises the first other error, once all ran (as
    `execute()` does), unless `raise_on_error` is False (errors are then replies)."""
    scripts: dict[int, tuple[Any, list[Any], list[Any]]] = pipe.__dict__.pop(
        "switchyard_scripts", {})
    results: list[Any] = run_pipeline(pipe)
    for index, (script, keys, args) in scripts.items():
        if isinstance(results[index], redis.exceptions.NoScriptError):
            try:
                results[index] = script(keys=keys, args=args)  # loads it, then runs it
            except redis.exceptions.ResponseError as error:
                results[index] = error
    if raise_on_error:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results


#: Whether a tracer watches redis-py (`switchyard.tracing`): commands and pipelines then
#: go through redis-py's own calls, which the instrumentation wraps, so they keep their
#: spans.
traced = False


def _one_command(pool: Any, args: tuple[Any, ...], options: dict[str, Any],
                 callbacks: Any) -> Any:
    """`Redis.execute_command` for one command, as `run_pipeline` sends a pipeline."""
    [reply] = _round_trip(pool, [(args, options)], callbacks)
    if isinstance(reply, redis.ResponseError):  # refused: raised, as redis-py does
        raise reply
    return reply


def run_pipeline(pipe: Any) -> list[Any]:
    """`pipe.execute(raise_on_error=False)` in one round trip, without redis-py's layers
    around each pipeline (its observability records, HIMPORT's preparation, a dispatch
    per reply), which cost about a third of a round trip's CPU on the worker's hot path
    (bench/production.py). Kept: the retry on a dropped connection (the client's
    `retry`), the response callbacks, a refused command's error as its reply. A
    transaction, a watching or bound pipeline, or one with redis-py's own scripts goes
    through redis-py, as does every pipeline while a tracer watches redis-py. A
    `TimedRedis`'s single commands go out the same way (`_one_command`)."""
    commands = pipe.command_stack
    if (traced or pipe.transaction or pipe.explicit_transaction or pipe.watching
            or pipe.connection is not None or pipe.scripts):
        return list(pipe.execute(raise_on_error=False))
    if not commands:
        return []
    try:
        return _round_trip(pipe.connection_pool, commands, pipe.response_callbacks)
    finally:
        pipe.command_stack = []


def _round_trip(pool: Any, commands: list[tuple[tuple[Any, ...], dict[str, Any]]],
                callbacks: Any) -> list[Any]:
    """`commands` on a connection of `pool`, sent again once on a new one if it dropped
    (the client's `retry`); each reply, a refusal as its error."""
    connection = pool.get_connection()
    try:
        return list(connection.retry.call_with_retry(
            lambda: _send_and_read(connection, commands, callbacks),
            lambda _error: connection.disconnect()))
    finally:
        pool.release(connection)


def _send_and_read(connection: Any, commands: list[tuple[tuple[Any, ...], dict[str, Any]]],
                   callbacks: Any) -> list[Any]:
    try:
        connection.send_packed_command(_packed(connection, commands))
        replies: list[Any] = []
        for args, options in commands:
            try:
                reply = connection.read_response(disable_decoding=NEVER_DECODE in options)
            except redis.ResponseError as error:
                replies.append(options.get(EMPTY_RESPONSE, error))
                continue
            callback = callbacks.get(args[0])
            if callback is not None:
                reply = callback(reply, **{k: v for k, v in options.items()
                                           if k not in _NOT_FOR_CALLBACKS})
            replies.append(reply)
        return replies
    except BaseException:
        # Replies may still be due (a time limit raised between two reads): a
        # connection out of step is never handed back to the pool.
        connection.disconnect()
        raise


_NOT_FOR_CALLBACKS = frozenset({NEVER_DECODE, EMPTY_RESPONSE, "keys"})


def _packed(connection: Any, commands: list[tuple[tuple[Any, ...], dict[str, Any]]]
            ) -> list[bytes]:
    """The commands in Redis's protocol: by hiredis at once when the connection packs
    with it (redis-py's packer checks each argument again, in Python), else by redis-py."""
    if hiredis is not None and isinstance(getattr(connection, "_command_packer", None),
                                          HiredisRespSerializer):
        try:
            return [b"".join(hiredis.pack_command(
                args if " " not in args[0] else (*args[0].split(), *args[1:]))
                for args, _ in commands)]
        except TypeError:  # an argument hiredis does not take (a memoryview): redis-py's
            pass
    return connection.pack_commands([args for args, _ in commands])


def redis_client(url: str, settings: Settings) -> TimedRedis:
    """A client whose every call gives up after REDIS_TIMEOUT_MS (blocking waits: see
    `TimedRedis`). A dropped connection is retried once, at once (a restarted Redis
    leaves dead sockets in the pool, a failover a dead primary); a timeout is not: that
    Redis is not answering. TLS and Sentinel as the settings say."""
    options = {**_timeouts(settings), **tls_options(url, settings)}
    if settings.redis_sentinels:
        return _sentinel_client(url, settings, options)
    client = TimedRedis.from_url(url, **options)
    assert isinstance(client, TimedRedis)
    return client


def _timeouts(settings: Settings) -> dict[str, Any]:
    timeout = settings.redis_timeout_ms / 1000
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1,
                  supported_errors=(redis.ConnectionError,))
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "socket_keepalive": True, "health_check_interval": 30, "retry": retry}


def uses_tls(url: str) -> bool:
    return url.startswith("rediss://")


def tls_options(url: str, settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options for a rediss:// URL (none for redis://)."""
    if not uses_tls(url):
        return {}
    verify = settings.redis_tls_verify
    ca_file = settings.redis_tls_ca_file
    return {"ssl_cert_reqs": "required" if verify else "none", "ssl_check_hostname": verify,
            "ssl_ca_certs": str(ca_file) if verify and ca_file else None}


def _sentinel_client(url: str, settings: Settings, options: dict[str, Any]) -> TimedRedis:
    """A client of the primary the Sentinels name; the URL gives the scheme, the
    credentials and the database, not the host."""
    parsed = parse_url(url)
    node = {key: parsed[key] for key in ("db", "username", "password") if key in parsed}
    sentinel_password = settings.redis_sentinel_password
    sentinels = Sentinel(settings.sentinel_addresses, sentinel_kwargs={
        **options, "ssl": uses_tls(url),
        "password": sentinel_password.get_secret_value() if sentinel_password else None})
    client = sentinels.master_for(settings.redis_sentinel_service, redis_class=TimedRedis,
                                  ssl=uses_tls(url), **node, **options)
    assert isinstance(client, TimedRedis)
    return client


def describe_refusal(error: BaseException) -> str | None:
    """What to set when Redis refused us for its certificate; None for other errors."""
    return TLS_HINT if "CERTIFICATE_VERIFY_FAILED" in str(error) else None
