"""`switchyard ...`: run, send, inspect and replay jobs.

Every failure a user can cause (unknown actor or queue, bad JSON, invalid payload or
options, a bad argument, unreachable Redis or RabbitMQ, bad setting) ends in one line on
stderr and a non-zero exit: 2 for bad input, 3 when a service does not answer (every
call to one has a timeout), 1 when the job or check failed. Output cut short by its
reader (`switchyard actors --json | head`) ends quietly, as a command stopped by the
closed pipe would (141).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any, NoReturn

import redis

from switchyard.base.errors import PermanentError
from switchyard.base.redaction import masked_url
from switchyard.base.redis_client import describe_refusal
from switchyard.base.settings import get

if TYPE_CHECKING:
    from switchyard.base.settings import Settings
    from switchyard.runtime.app import App

#: Exit codes: 1 the job (or check) failed, 2 bad input, 3 a service is unreachable.
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
#: `state.history.STATES`, written out: the parser is built without importing the stores.
JOB_STATES = ("waiting", "scheduled", "running", "retrying", "done", "failed", "cancelled")
#: Exit code when stdout's reader went away: a shell's for a writer SIGPIPE stopped.
EXIT_PIPE = 128 + signal.SIGPIPE
#: What a payload nested deeper than Python can parse or encode gets as an answer.
TOO_DEEP = "payload is nested too deeply"


def unreachable_errors() -> tuple[type[Exception], ...]:
    """Failures that mean Redis or the broker did not answer (exit 3). pika's are among
    them only where it is loaded (a command on the Redis broker never imports it)."""
    import dramatiq

    found: tuple[type[Exception], ...] = (
        redis.ConnectionError, redis.TimeoutError, dramatiq.errors.BrokerConnectionError)
    if "pika" in sys.modules:
        import pika.exceptions
        from pika.adapters.utils.connection_workflow import AMQPConnectorException

        found += (pika.exceptions.AMQPConnectionError, AMQPConnectorException)
    return found


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def emit(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def booted(*, ping: bool = True, only: list[str] | None = None) -> App:
    """Boot the process with every job family (what a worker does), or with `only` the
    families of those actors (a send; none for a command that only reads the state
    store); booting connects to nothing, so with `ping` the state store is asked first,
    to fail early and clearly."""
    from switchyard.entry import boot

    app = boot(only=only)
    if ping:
        app.state.client.ping()
    return app


def parse_payload(text: str) -> dict[str, Any]:
    """The payload argument as a JSON object, parsed as the API and the bridges parse a
    body (`parse_json`: nesting bounded, whatever `json` raises named)."""
    from switchyard.base.decoding import BadJson, parse_json

    try:
        payload = parse_json(text)
    except BadJson as error:
        raise CliError(f"payload is {error}") from None
    if not isinstance(payload, dict):
        raise CliError("payload must be a JSON object")
    return payload


def cmd_send(args: argparse.Namespace) -> int:
    """Refuse bad input before any service is asked, then make sure the state store
    answers before anything is queued (a job whose history cannot be kept is not sent)."""
    from switchyard.runtime.enqueue import check_priority, enqueue

    payload = parse_payload(args.payload)
    try:
        known(args.actor)
        app = booted(ping=False, only=[args.actor])
        check_input(app, args.actor, payload, args.idempotency_key, args.delay)
        if args.priority:
            check_priority(app, args.priority)
        app.state.client.ping()
        message_id = enqueue(app, args.actor, payload, key=args.idempotency_key,
                             delay=args.delay, priority=args.priority).message_id
    except PermanentError as error:  # unknown actor, invalid payload or options
        raise CliError(error.message) from None
    except RecursionError:
        raise CliError(TOO_DEEP) from None
    print(message_id, flush=True)
    return wait_for_job(app, message_id, args.timeout) if args.wait else 0


def known(name: str) -> None:
    """Refuse an actor no family declares, before any family is imported."""
    import actors
    from switchyard.base.errors import UnknownJob

    if name not in actors.ACTORS:
        raise UnknownJob(name, list(actors.ACTORS))


def check_input(app: App, name: str, payload: dict[str, Any], key: str | None,
                delay: int | None) -> None:
    """`enqueue`'s own checks, in its order (it runs them again): they need no service."""
    from switchyard.base.errors import UnknownJob
    from switchyard.runtime.enqueue import check_options, check_size
    from switchyard.runtime.jobs import dump

    job = app.jobs.get(name)
    if job is None:
        raise UnknownJob(name, list(app.jobs))
    check_options(key, delay)
    check_size(dump(job.model, payload), app.settings.max_payload_bytes)


def wait_for_job(app: App, message_id: str, timeout: float) -> int:
    """Print the job's final record; exit 1 unless it is done (or skipped as a duplicate)."""
    history = app.state.history
    job = history.wait(message_id, timeout=timeout)
    if job is None:
        last = history.get(message_id)
        status = last["status"] if last else "unknown"
        raise CliError(f"job {message_id} not finished after {timeout:g}s "
                       f"(status: {status})", EXIT_FAILED)
    emit(job)
    return 0 if job["status"] in ("done", "skipped") else EXIT_FAILED


def emit_found(record: dict[str, Any] | None, missing: str) -> int:
    if record is None:
        raise CliError(missing, EXIT_FAILED)
    emit(record)
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from switchyard.runtime.batches import batch_progress

    app = booted(only=[])
    record = app.state.history.get(args.id)
    batch = batch_progress(app, record)
    return emit_found({**record, "batch": batch} if record and batch else record,
                      f"no job {args.id} (unknown, or past its history retention)")


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """A queue's jobs in one state, a line each (or `--json`: the page)."""
    app = booted()  # every family: what queues there are
    queue = known_queue(app, args.queue)
    page = app.state.history.page(queue, args.state, offset=args.offset, limit=args.limit,
                                  newest=args.newest, actor=args.actor)
    if args.json:
        emit({"queue": queue, "state": args.state, "total": page.total,
              "jobs": [{k: v for k, v in job.items() if k not in ("result", "error")}
                       for job in page.jobs], "next_offset": page.next_offset})
        return 0
    if not page.jobs:
        print(f"no {args.state} jobs in {queue}")
    for job in page.jobs:
        where = f"#{job['position']}  " if "position" in job else ""
        progress = f"  {job['progress']:.0%}" if "progress" in job else ""
        print(f"{where}{job.get('id')}  {job.get('actor')}  {job.get('status')}{progress}")
    if page.next_offset is not None:
        print(f"... {page.total} in all; more with --offset {page.next_offset}")
    return 0


def cmd_jobs_run_now(args: argparse.Namespace) -> int:
    """Run a scheduled job now, or retry a retrying one now; prints `<id> requested`."""
    import getpass

    from state.run_now import REQUESTED, UNKNOWN

    app = booted(only=[])
    answer, was = app.state.run_now.request(args.id, by=f"cli:{getpass.getuser()}")
    if answer == UNKNOWN:
        raise CliError(f"no job {args.id} (unknown, or past its history retention)",
                       EXIT_FAILED)
    if answer != REQUESTED:
        raise CliError(f"job {args.id} is {was}: only a scheduled or retrying job can be "
                       "run now", EXIT_FAILED)
    print(f"{args.id} requested ({was})")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    """Cancel by id, or by `--key ACTOR:KEY`; prints `<id> cancelled|stopping`."""
    import getpass

    from state.cancels import CANCELLED, FINISHED, UNKNOWN
    from switchyard.base.keys import JobKey

    app = booted(only=[])
    message_id = args.id
    if args.key is not None:
        actor, _, key = args.key.partition(":")
        if message_id is not None or not actor or not key:
            raise CliError("give a job id, or --key ACTOR:KEY (not both)", EXIT_USAGE)
        message_id = app.state.keys.holder(JobKey(actor, key))
        if message_id is None:
            raise CliError(f"no job of {actor} holds that idempotency key", EXIT_FAILED)
    elif message_id is None:
        raise CliError("give a job id, or --key ACTOR:KEY", EXIT_USAGE)
    answer, status = app.state.cancels.cancel(message_id, by=f"cli:{getpass.getuser()}",
                                              reason=args.reason)
    if answer == UNKNOWN:
        raise CliError(f"no job {message_id} (unknown, or past its history retention)",
                       EXIT_FAILED)
    if answer == FINISHED:
        raise CliError(f"job {message_id} has already finished ({status})", EXIT_FAILED)
    print(f"{message_id} {'cancelled' if answer == CANCELLED else 'stopping'}")
    return 0


def cmd_batches_show(args: argparse.Namespace) -> int:
    return emit_found(booted(only=[]).state.batches.get(args.id),
                      f"no batch {args.id} (unknown, or past BATCH_TTL_MS)")


def known_queue(app: App, queue: str) -> str:
    """`queue`, or the API's 404 reason for it, in one line (exit 1)."""
    from switchyard.base.errors import UnknownQueue

    if not app.queues.is_known(queue):
        raise CliError(UnknownQueue(queue).message, EXIT_FAILED)
    return queue


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from state.dead_letters import summary

    app = booted()
    store = app.state.dead_letters
    queues = [known_queue(app, args.queue)] if args.queue else store.queues()
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
    return emit_found(booted(only=[]).state.dead_letters.show(args.id),
                      f"no dead letter {args.id}")


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """Replay; each id that was not replayed gets a line on stderr saying why (exit 1)."""
    if not args.all and not args.ids:
        raise CliError("name the message ids to replay, or --all")
    app = booted()
    store = app.state.dead_letters
    queue = known_queue(app, args.queue)
    wanted = store.matching(queue, {}) if args.all else args.ids
    replayed = store.replay(app.broker, queue, wanted)
    app.state.buffer.flush()
    print(f"replayed {len(replayed)} from {queue}")
    left = sorted(set(wanted) - set(replayed))
    for message_id in left:
        why = store.refusal(queue, message_id) or store.absence(queue, message_id)
        print(f"switchyard: cannot replay {message_id}: {why}", file=sys.stderr)
    return EXIT_FAILED if left else 0


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    app = booted()
    queue = known_queue(app, args.queue)
    print(f"purged {app.state.dead_letters.purge(queue)} from {queue}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Every check, by its deadline; exit 3 when a service did not answer, 1 when a
    check failed."""
    from switchyard.health import check

    report = check(booted(ping=False), ping_timeout=args.ping)
    emit(report) if args.json else print("\n".join(
        f"{name}: {'ok' if item['ok'] else 'FAIL'}  {item['detail']}"
        for name, item in report["checks"].items()))
    if report["unreachable"]:
        print(f"switchyard: not answering: {', '.join(report['unreachable'])}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0 if report["ok"] else EXIT_FAILED


def cmd_actors(args: argparse.Namespace) -> int:
    """Every actor with its queue and options; reads the declarations only (no service)."""
    app = booted(ping=False)
    rows: list[dict[str, Any]] = []
    for a in sorted(app.broker.actors.values(), key=lambda a: a.actor_name):
        job = app.jobs.get(a.actor_name)
        fields = payload_fields(job.model) if job is not None else frozenset()
        rows.append({"actor": a.actor_name, "queue": a.queue_name, "priority": a.priority,
                     "options": {k: describe_option(v, fields)
                                 for k, v in sorted(a.options.items())}})
    if args.json:
        emit(rows)
        return 0
    print(f"{'ACTOR':<28} {'QUEUE':<22} OPTIONS")
    for row in rows:
        options = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                           for k, v in row["options"].items())
        print(f"{row['actor']:<28} {row['queue']:<22} {options}")
    return 0


def payload_fields(model: Any) -> frozenset[str]:
    """A payload model's field names and their wire (camelCase) aliases."""
    return frozenset(name for key, info in model.model_fields.items()
                     for name in (key, info.alias) if name)


def describe_option(value: Any, fields: frozenset[str]) -> Any:
    """An actor option as `actors` shows it: plain values as they are, classes by name,
    and a function (an idempotency key) by the payload fields it reads, never its repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, list | tuple | set | frozenset):
        return [describe_option(item, fields) for item in value]
    if callable(value):
        used = fields_read(value, fields)
        return f"<function of {','.join(used)}>" if used else "<function>"
    return f"<{type(value).__name__}>"


def fields_read(fn: Any, fields: frozenset[str]) -> list[str]:
    """The payload fields a function names in its code (`payload.get("subscriptionId")`),
    in order; a guide for people, not a guarantee."""
    code = getattr(fn, "__code__", None)
    found = [c for c in _constants(code) if c in fields] if code is not None else []
    return list(dict.fromkeys(found))


def _constants(code: CodeType) -> Iterator[str]:
    for constant in code.co_consts:
        if isinstance(constant, str):
            yield constant
        elif isinstance(constant, CodeType):
            yield from _constants(constant)


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
    """Enqueue every schedule's slots once (any number of clocks), until SIGTERM/SIGINT;
    with `--list`, print each schedule, its next slot and the last slot sent."""
    import threading

    from schedules import SCHEDULES
    from switchyard.clock import Clock

    clock = Clock(booted(), SCHEDULES)
    if args.list:
        rows = clock.table()
        print(f"{'SCHEDULE':<24} {'CRON':<14} {'TZ':<8} {'NEXT':<26} LAST")
        for row in rows:
            print(f"{row['schedule']:<24} {row['cron']:<14} {row['timezone']:<8} "
                  f"{row['next'].isoformat() if row['next'] else '-':<26} "
                  f"{row['last'].isoformat() if row['last'] else '-'}")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"clock: {len(SCHEDULES)} schedules", flush=True)
    clock.run(stop)
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
            upgrade_state()
        found = migrate.current(url)
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise CliError(f"cannot reach the database at {masked_db(url)}: {reason}",
                       EXIT_UNREACHABLE) from None
    head = migrate.head()
    print(f"database {masked_db(url)} at {found or 'nothing'} (newest: {head})")
    return 0 if found == head else EXIT_FAILED


def upgrade_state() -> None:
    """What an upgrade changes in Redis: idempotency keys stored in clear get hashed names.
    (Nothing to do without REDIS_URL: the embedded development Redis is not running.)"""
    from state import open_state

    settings = get()
    if settings.redis_url is None:
        return
    state = open_state(settings)
    try:
        renamed = state.keys.adopt_legacy_names()
    except redis.RedisError as error:
        raise CliError(f"cannot reach Redis to upgrade its keys: {error}",
                       EXIT_UNREACHABLE) from None
    finally:
        state.client.close()
    if renamed:
        print(f"idempotency keys: {renamed} renamed to hashed names")


def cmd_dev(args: argparse.Namespace) -> int:
    from store import migrate, samples
    from store.db import Database
    from switchyard.base.sealing import DEV_KEYS_FILE, dev_keys
    from web.auth import DEV_CREDENTIALS_FILE, dev_credentials

    settings = get()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if settings.payload_encryption and not settings.payload_keys:
        dev_keys(settings.var_dir)  # every process of this run seals with it
    processes = ["web", "worker", "clock"]
    if settings.redis_url is None:
        processes.insert(0, "redis")
    if settings.amqp_url is not None or settings.uses_rabbitmq:
        processes.append("bridge")  # seeds 003/004 publish to RabbitMQ
    port = os.environ.setdefault("WEB_PORT", str(settings.web_port))
    # The web process wants credentials: those not set are made once and kept under
    # VAR_DIR (only those are printed; configured secrets never are).
    made = dev_credentials(settings)
    os.environ.update(made)
    shown = {name: made.get(name, "(set)") for name in ("WEB_PASSWORD", "API_TOKEN")}
    tour = ["uv run switchyard send ping '{}' --wait"]
    if settings.switchyard_env == "development":  # sample records for the channel and bot jobs
        migrate.upgrade(settings.db_url)
        database = Database(settings.db_url)
        tour += samples.send_commands(samples.seed(database))
        database.dispose()
    print("Switchyard (development):")
    print(f"  redis   {masked_url(settings.state_url)}"
          + ("  (embedded, data in var/redis)" if settings.redis_url is None else ""))
    print(f"  broker  {masked_url(settings.queue_url)}")
    if settings.payload_encryption:
        print("  keys    " + ("PAYLOAD_KEYS (set)" if settings.payload_keys else
                             f"{settings.var_dir / DEV_KEYS_FILE} (payloads sealed at rest)"))
    print(f"  web     http://127.0.0.1:{port}/health")
    print(f"  login   http://127.0.0.1:{port}/dashboard/  user "
          f"{made.get('WEB_USERNAME', settings.web_username)}  password {shown['WEB_PASSWORD']}")
    print(f"  api     Authorization: Bearer {shown['API_TOKEN']}")
    if made:
        print(f"  kept    {settings.var_dir / DEV_CREDENTIALS_FILE} (until deleted; "
              "`switchyard dev-token` prints the token)")
    print("  worker  switchyard worker (every queue, 8 threads)")
    print("  clock   periodic jobs")
    print("Try:", *tour, sep="\n  ", flush=True)
    os.execvp("honcho", ["honcho", "-f", "Procfile.dev", "start", *processes])
    return 0


def cmd_dev_token(args: argparse.Namespace) -> int:
    """Print the API token `switchyard dev` gives the web process (development only)."""
    from web.auth import dev_credentials

    settings = get()
    if settings.switchyard_env != "development":
        raise CliError("dev-token prints the token of `switchyard dev`, with "
                       "SWITCHYARD_ENV=development only: elsewhere it is API_TOKEN")
    configured = settings.api_token
    print(configured.get_secret_value() if configured is not None
          else dev_credentials(settings)["API_TOKEN"])
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Print a new PAYLOAD_KEYS entry (to put first, before the keys in use)."""
    from switchyard.base.sealing import generate_entry

    print(generate_entry())
    print("switchyard: put it first in PAYLOAD_KEYS on every process, then run "
          "`switchyard keys rotate`", file=sys.stderr)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Re-seal what is stored under the newest payload key; print the counts."""
    from switchyard import reseal
    from switchyard.base.sealing import Unsealable

    try:
        counts = reseal.rotate(booted())
    except Unsealable as error:
        raise CliError(str(error)) from None
    emit(counts)
    return EXIT_FAILED if counts["unopenable"] else 0


def cmd_bridge(args: argparse.Namespace) -> int:
    """Turn the seeds' RabbitMQ messages into jobs until SIGTERM (`switchyard.ingress.bridge`)."""
    from switchyard.ingress import bridge

    app = booted()
    url = bridge.amqp_url(app.settings)
    if url is None:
        raise CliError("the bridge needs RabbitMQ: set AMQP_URL (or a BROKER_URL of amqp://)")
    runner = bridge.Bridge(app, url, ready=lambda: print("ready", flush=True))
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    runner.run()
    app.close()
    return 0


def cmd_sqs(args: argparse.Namespace) -> int:
    """Turn seed 001's SQS bot operations into jobs until SIGTERM (`switchyard.ingress.sqs`)."""
    from switchyard.ingress import sqs as sqs_ingress

    app = booted()
    url = app.settings.bot_operations_queue_url
    if url is None:
        raise CliError("set BOT_OPERATIONS_QUEUE_URL (the bot operations' SQS FIFO queue)")
    consumer = sqs_ingress.Consumer(app, url)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    consumer.run(ready=lambda: print("ready", flush=True))
    app.close()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """Print every setting (docs/settings.md), or them as JSON; reads the model's
    declarations only, so it needs no service and prints no configured secret."""
    from switchyard.base import settings_doc

    print(settings_doc.as_json() if args.json else settings_doc.markdown(), end="")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Become Dramatiq's worker command (`dramatiq switchyard.entry:boot`) with
    WORKER_PROCESSES processes, each pinned to a core of its own when WORKER_PIN_CPUS
    (or "auto") asks (`switchyard.pinning`); every other option is Dramatiq's."""
    from switchyard import pinning

    settings = get()
    processes = settings.worker_processes if args.processes is None else args.processes
    plan = pinning.plan(processes, settings.worker_pin_cpus if args.pin is None else args.pin)
    if plan.reason:
        print(f"switchyard: running unpinned: {plan.reason}", file=sys.stderr, flush=True)
    os.environ.update(worker_env(settings))
    os.execv(sys.executable, [sys.executable, "-m", "dramatiq", plan.boot,
                              "--processes", str(plan.processes), *args.extra])
    return 0  # not reached: this process is Dramatiq's now


def worker_env(settings: Settings) -> dict[str, str]:
    """The variables Dramatiq's worker reads its prefetch and timeout from (it has no
    flags for them), from WORKER_PREFETCH and WORKER_TIMEOUT_MS."""
    variables = {"dramatiq_worker_timeout": str(settings.worker_timeout_ms)}
    if settings.worker_prefetch is not None:
        variables["dramatiq_queue_prefetch"] = str(settings.worker_prefetch)
    return variables


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors end like every bad input: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"switchyard: {message} (see `{self.prog} --help`)\n")


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def whole(text: str) -> int:
    """A whole number, 0 or more (argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def count(text: str) -> int:
    """A whole number, 1 or more (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def processes(text: str) -> int | str:
    """`auto` or a whole number of 1 or more (argparse type)."""
    return "auto" if text.strip().lower() == "auto" else count(text)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="switchyard", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> Any:
        cmd = sub.add_parser(name, help=help)
        cmd.set_defaults(fn=fn)
        return cmd

    add("dev", cmd_dev, "run Redis, web, worker and clock for development (Procfile.dev)")
    add("dev-token", cmd_dev_token, "print the API token `switchyard dev` uses")
    send = add("send", cmd_send, "send a job: switchyard send ACTOR JSON")
    send.add_argument("actor")
    send.add_argument("payload", help="the payload, a JSON object")
    send.add_argument("--idempotency-key", dest="idempotency_key")
    send.add_argument("--delay", type=int, metavar="MS")
    send.add_argument("--priority", type=int, default=0, metavar="0-9",
                      help="higher runs first among the queue's waiting jobs")
    send.add_argument("--wait", action="store_true", help="wait and print the final status")
    send.add_argument("--timeout", type=seconds, default=30.0, help="seconds --wait waits")
    jobs = sub.add_parser("jobs", help="job history").add_subparsers(dest="sub", required=True)
    show = jobs.add_parser("show", help="a job's status, attempts, result or error")
    show.add_argument("id")
    show.set_defaults(fn=cmd_jobs_show)
    listing = jobs.add_parser("list", help="a queue's jobs by state, oldest first")
    listing.add_argument("queue")
    listing.add_argument("--state", default="waiting", choices=JOB_STATES)
    listing.add_argument("--limit", type=count, default=50)
    listing.add_argument("--offset", type=whole, default=0)
    listing.add_argument("--newest", action="store_true", help="newest first")
    listing.add_argument("--actor", help="this actor's jobs only")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(fn=cmd_jobs_list)
    cancel = jobs.add_parser("cancel", help="cancel a job: it never runs, or, running, is "
                             "asked to stop")
    cancel.add_argument("id", nargs="?")
    cancel.add_argument("--key", metavar="ACTOR:KEY", help="the job holding this "
                        "idempotency key")
    cancel.add_argument("--reason", default="", help="why, for the record")
    cancel.set_defaults(fn=cmd_jobs_cancel)
    hurry = jobs.add_parser("run-now", help="run a scheduled job now, or retry a retrying "
                            "one now")
    hurry.add_argument("id")
    hurry.set_defaults(fn=cmd_jobs_run_now)
    batches = sub.add_parser("batches", help="batches of jobs").add_subparsers(
        dest="sub", required=True)
    batch = batches.add_parser("show", help="a batch's members done, failed and pending")
    batch.add_argument("id")
    batch.set_defaults(fn=cmd_batches_show)
    add_dlq(sub)
    add_keys(sub)
    health = add("health", cmd_health, "exit 0 when broker, state store and a worker answer")
    health.add_argument("--ping", type=seconds, metavar="SECONDS", default=0,
                        help="also run a ping job through a worker within SECONDS")
    health.add_argument("--json", action="store_true")
    add("actors", cmd_actors, "every actor with its queue and options").add_argument(
        "--json", action="store_true")
    add_worker(sub)
    add("redis", cmd_redis, "run the embedded Redis (when REDIS_URL is unset)")
    add("clock", cmd_clock, "enqueue periodic jobs on their schedule").add_argument(
        "--list", action="store_true", help="each schedule, its next slot and its last run")
    add("bridge", cmd_bridge, "turn RabbitMQ messages (sup_exchange, arrakis.*) into jobs")
    add("sqs", cmd_sqs, "turn SQS bot operations (BOT_OPERATIONS_QUEUE_URL) into jobs")
    shown = add("settings", cmd_settings, "every setting: its default and meaning "
                "(docs/settings.md)").add_mutually_exclusive_group()
    shown.add_argument("--markdown", action="store_true", help="Markdown (the default)")
    shown.add_argument("--json", action="store_true", help="JSON, for tools")
    db = sub.add_parser("db", help="the database").add_subparsers(dest="sub", required=True)
    db.add_parser("upgrade", help="apply the schema migrations").set_defaults(fn=cmd_db)
    db.add_parser("current", help="the migration the database is at").set_defaults(fn=cmd_db)
    return p


def add_worker(sub: Any) -> None:
    about = ("run jobs: Dramatiq's worker processes, optionally one per core pinned to it; "
             "other options (--threads, --queues, ...) are Dramatiq's")
    # No abbreviations: every option it does not know is Dramatiq's.
    worker = sub.add_parser("worker", allow_abbrev=False, help=about, description=about)
    worker.add_argument("--processes", "-p", type=processes, metavar="N|auto",
                        help="worker processes (default: WORKER_PROCESSES)")
    worker.add_argument("--pin", action=argparse.BooleanOptionalAction,
                        help="pin each process to a core of its own (default: "
                        "WORKER_PIN_CPUS, else only with auto)")
    worker.set_defaults(fn=cmd_worker, passes_on=True)


def add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="sub", required=True)
    lst = dlq.add_parser("list", help="dead letters, newest first")
    lst.add_argument("queue", nargs="?")
    lst.add_argument("--limit", type=count, default=100)
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


def add_keys(sub: Any) -> None:
    keys = sub.add_parser("keys", help="payload encryption keys (PAYLOAD_KEYS)")
    keys_sub = keys.add_subparsers(dest="sub", required=True)
    keys_sub.add_parser("generate", help="print a new key entry").set_defaults(
        fn=cmd_keys_generate)
    keys_sub.add_parser("rotate", help="re-seal what is stored under the newest key").set_defaults(
        fn=cmd_keys_rotate)


def unreachable(error: Exception) -> str:
    """Which service did not answer (its URL, password masked), and how."""
    settings = get()
    if isinstance(error, redis.RedisError):
        where = masked_url(settings.state_url)
        if not settings.uses_rabbitmq and settings.queue_url != settings.state_url:
            where += f" (state store) or {masked_url(settings.queue_url)} (broker)"
        if isinstance(error, redis.TimeoutError):
            return (f"Redis at {where} did not answer within {settings.redis_timeout_ms} ms "
                    f"(timed out)")
        hint = "" if settings.redis_url else " (start it with `switchyard redis`, or set REDIS_URL)"
        refusal = describe_refusal(error)  # an untrusted TLS certificate: what to set
        hint = f" ({refusal})" if refusal else hint
        return f"cannot reach Redis at {where}: {error}{hint}"
    detail = str(error) or type(error).__name__
    return f"cannot reach the broker at {masked_url(settings.queue_url)}: {detail}"


def stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (`| head` had enough)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):  # no file descriptor: the error came from elsewhere
        return False


def quiet_exit() -> int:
    """Stop without a traceback: what is left unwritten goes to /dev/null, so the
    interpreter's own flush at exit has nothing to fail on."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, extra = cli.parse_known_args(argv)
    if extra and not getattr(args, "passes_on", False):  # only `worker` passes them on
        cli.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        code = int(args.fn(args))
        sys.stdout.flush()  # so a reader that went away shows here, not at exit
        return code
    except BrokenPipeError:
        if not stdout_gone():
            raise
        return quiet_exit()
    except CliError as error:
        print(f"switchyard: {error}", file=sys.stderr)
        return error.code
    except Exception as error:
        if not isinstance(error, unreachable_errors()):
            raise
        print(f"switchyard: {unreachable(error)}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
