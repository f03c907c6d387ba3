"""`switchyard ...`: run, send, inspect and replay jobs.

Every failure a user can cause (unknown actor, bad JSON, invalid payload, unreachable
Redis or RabbitMQ, bad setting) ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dramatiq
import pika.exceptions
import redis

from switchyard.redaction import masked_url
from switchyard.settings import get

if TYPE_CHECKING:
    from switchyard.app import App

#: Exit codes: 1 the job (or check) failed, 2 bad input, 3 a service is unreachable.
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def emit(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def booted() -> App:
    """Boot the process with every job family (what a worker does)."""
    from switchyard.entry import boot

    app = boot()
    app.state.client.ping()  # every command needs the state store: fail early and clearly
    return app


def parse_payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"payload is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise CliError("payload must be a JSON object")
    return payload


def cmd_send(args: argparse.Namespace) -> int:
    from switchyard.enqueue import enqueue
    from switchyard.errors import InvalidPayload, UnknownJob

    app = booted()
    payload = parse_payload(args.payload)
    try:
        message_id = enqueue(app, args.actor, payload, key=args.idempotency_key,
                             delay=args.delay).message_id
    except (UnknownJob, InvalidPayload) as error:
        raise CliError(error.message) from None
    print(message_id, flush=True)
    if not args.wait:
        return 0
    history = app.state.history
    job = history.wait(message_id, timeout=args.timeout)
    if job is None:
        last = history.get(message_id)
        status = last["status"] if last else "unknown"
        raise CliError(f"job {message_id} not finished after {args.timeout:g}s "
                       f"(status: {status})", EXIT_FAILED)
    emit(job)
    return 0 if job["status"] in ("done", "skipped") else EXIT_FAILED


def emit_found(record: dict[str, Any] | None, missing: str) -> int:
    if record is None:
        raise CliError(missing, EXIT_FAILED)
    emit(record)
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    return emit_found(booted().state.history.get(args.id),
                      f"no job {args.id} (unknown, or past its history retention)")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from state.dead_letters import summary

    store = booted().state.dead_letters
    queues = [args.queue] if args.queue else store.queues()
    rows = [summary(item) for queue in queues for item in store.list(queue, limit=args.limit)]
    if args.json:
        emit(rows)
    elif not rows:
        print("no dead letters")
    for row in [] if args.json else rows:
        print(f"{row['message_id']}  {row['queue']}  {row['actor']}  "
              f"{row['error']}: {row['message']}  (attempts: {row['attempts']})")
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    return emit_found(booted().state.dead_letters.show(args.id), f"no dead letter {args.id}")


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    if not args.all and not args.ids:
        raise CliError("name the message ids to replay, or --all")
    app = booted()
    replayed = app.state.dead_letters.replay(app.broker, args.queue,
                                             None if args.all else args.ids)
    app.state.buffer.flush()
    missing = sorted(set(args.ids) - set(replayed))
    print(f"replayed {len(replayed)} from {args.queue}")
    if missing:
        print(f"not in the dead letters of {args.queue}: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    print(f"purged {booted().state.dead_letters.purge(args.queue)} from {args.queue}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from switchyard.health import check

    report = check(booted(), ping_timeout=args.ping)
    emit(report) if args.json else print("\n".join(
        f"{name}: {'ok' if item['ok'] else 'FAIL'}  {item['detail']}"
        for name, item in report["checks"].items()))
    return 0 if report["ok"] else EXIT_FAILED


def cmd_actors(args: argparse.Namespace) -> int:
    app = booted()
    rows: list[dict[str, Any]] = [
        {"actor": a.actor_name, "queue": a.queue_name, "priority": a.priority,
         "options": {k: v if isinstance(v, int | str | float | bool) else repr(v)
                     for k, v in sorted(a.options.items())}}
        for a in sorted(app.broker.actors.values(), key=lambda a: a.actor_name)]
    if args.json:
        emit(rows)
        return 0
    print(f"{'ACTOR':<28} {'QUEUE':<22} OPTIONS")
    for row in rows:
        options = " ".join(f"{k}={v}" for k, v in row["options"].items())
        print(f"{row['actor']:<28} {row['queue']:<22} {options}")
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    from switchyard import embedded_redis

    settings = get()
    if settings.redis_url is not None:
        raise CliError("REDIS_URL is set: the embedded Redis is only for the default setup")
    print(f"embedded Redis on {settings.embedded_redis_url}, data in "
          f"{settings.var_dir / 'redis'}", flush=True)
    embedded_redis.run(settings)
    return 0


def cmd_clock(args: argparse.Namespace) -> int:
    """Run periodiq on the periodic actors; with none declared yet, idle until stopped."""
    app = booted()
    if any("periodic" in a.options for a in app.broker.actors.values()):
        import periodiq

        parsed = periodiq.make_argument_parser().parse_args(["switchyard.entry:boot"])
        return int(periodiq.main(parsed))
    print("clock: no periodic actors declared; idling", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """Migrate the database (`upgrade`) or say which migration it is at (`current`)."""
    from sqlalchemy.exc import OperationalError

    from store import migrate
    from store.urls import masked as masked_db

    url = get().db_url
    try:
        if args.sub == "upgrade":
            migrate.upgrade(url)
        found = migrate.current(url)
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise CliError(f"cannot reach the database at {masked_db(url)}: {reason}",
                       EXIT_UNREACHABLE) from None
    head = migrate.head()
    print(f"database {masked_db(url)} at {found or 'nothing'} (newest: {head})")
    return 0 if found == head else EXIT_FAILED


def cmd_dev(args: argparse.Namespace) -> int:
    settings = get()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    processes = ["web", "worker", "clock"]
    if settings.redis_url is None:
        processes.insert(0, "redis")
    port = os.environ.setdefault("WEB_PORT", str(settings.web_port))
    # The web process wants credentials: make some for this run where none are set
    # (only those are printed; configured secrets never are).
    import secrets

    made = {"WEB_USERNAME": "dev"} if settings.web_username is None else {}
    if settings.web_password is None:
        made["WEB_PASSWORD"] = secrets.token_urlsafe(12)
    if settings.api_token is None:
        made["API_TOKEN"] = secrets.token_urlsafe(24)
    os.environ.update(made)
    shown = {name: made.get(name, "(set)") for name in ("WEB_PASSWORD", "API_TOKEN")}
    print("Switchyard (development):")
    print(f"  redis   {masked_url(settings.state_url)}"
          + ("  (embedded, data in var/redis)" if settings.redis_url is None else ""))
    print(f"  broker  {masked_url(settings.queue_url)}")
    print(f"  web     http://127.0.0.1:{port}/health")
    print(f"  login   http://127.0.0.1:{port}/dashboard/dead-letters  user "
          f"{made.get('WEB_USERNAME', settings.web_username)}  password {shown['WEB_PASSWORD']}")
    print(f"  api     Authorization: Bearer {shown['API_TOKEN']}")
    print("  worker  dramatiq switchyard.entry:boot (every queue, 8 threads)")
    print("  clock   periodic jobs")
    print("Try:     uv run switchyard send ping '{}' --wait", flush=True)
    os.execvp("honcho", ["honcho", "-f", "Procfile.dev", "start", *processes])
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> Any:
        cmd = sub.add_parser(name, help=help)
        cmd.set_defaults(fn=fn)
        return cmd

    add("dev", cmd_dev, "run Redis, web, worker and clock for development (Procfile.dev)")
    send = add("send", cmd_send, "send a job: switchyard send ACTOR JSON")
    send.add_argument("actor")
    send.add_argument("payload", help="the payload, a JSON object")
    send.add_argument("--idempotency-key", dest="idempotency_key")
    send.add_argument("--delay", type=int, metavar="MS")
    send.add_argument("--wait", action="store_true", help="wait and print the final status")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits")
    jobs = sub.add_parser("jobs", help="job history").add_subparsers(dest="sub", required=True)
    show = jobs.add_parser("show", help="a job's status, attempts, result or error")
    show.add_argument("id")
    show.set_defaults(fn=cmd_jobs_show)
    add_dlq(sub)
    health = add("health", cmd_health, "exit 0 when broker, state store and a worker answer")
    health.add_argument("--ping", type=float, metavar="SECONDS", default=0,
                        help="also run a ping job through a worker within SECONDS")
    health.add_argument("--json", action="store_true")
    add("actors", cmd_actors, "every actor with its queue and options").add_argument(
        "--json", action="store_true")
    add("redis", cmd_redis, "run the embedded Redis (when REDIS_URL is unset)")
    add("clock", cmd_clock, "enqueue periodic jobs on their schedule")
    db = sub.add_parser("db", help="the database").add_subparsers(dest="sub", required=True)
    db.add_parser("upgrade", help="apply the schema migrations").set_defaults(fn=cmd_db)
    db.add_parser("current", help="the migration the database is at").set_defaults(fn=cmd_db)
    return p


def add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="sub", required=True)
    lst = dlq.add_parser("list", help="dead letters, newest first")
    lst.add_argument("queue", nargs="?")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(fn=cmd_dlq_list)
    show = dlq.add_parser("show", help="one dead letter with its reason")
    show.add_argument("id")
    show.set_defaults(fn=cmd_dlq_show)
    replay = dlq.add_parser("replay", help="enqueue dead letters again")
    replay.add_argument("queue")
    replay.add_argument("ids", nargs="*")
    replay.add_argument("--all", action="store_true")
    replay.set_defaults(fn=cmd_dlq_replay)
    purge = dlq.add_parser("purge", help="drop a queue's dead letters")
    purge.add_argument("queue")
    purge.set_defaults(fn=cmd_dlq_purge)


def unreachable(error: Exception) -> str:
    settings = get()
    if isinstance(error, redis.RedisError):
        hint = "" if settings.redis_url else " (start it with `switchyard redis`, or set REDIS_URL)"
        return f"cannot reach Redis at {masked_url(settings.state_url)}: {error}{hint}"
    detail = str(error) or type(error).__name__
    return f"cannot reach the broker at {masked_url(settings.queue_url)}: {detail}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except CliError as error:
        print(f"switchyard: {error}", file=sys.stderr)
        return error.code
    except (redis.ConnectionError, redis.TimeoutError, dramatiq.errors.BrokerConnectionError,
            pika.exceptions.AMQPConnectionError) as error:
        print(f"switchyard: {unreachable(error)}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
