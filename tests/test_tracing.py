"""Tracing (OpenTelemetry): one trace from the producer to the provider, nothing secret in it.

Spans land in the SDK's in-memory exporter, behind the redaction every exporter gets
(`switchyard.tracing.start`); workers run in this process (`start_worker`) so their spans
land there too. Tracing is switched off again after this module.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pika
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

import schedules
from actors import email as email_family
from integrations.http import Http
from switchyard import boot as runtime
from switchyard import tracing
from switchyard.base import logs, tracecontext
from switchyard.clock import Clock
from switchyard.ingress import sqs
from switchyard.ingress.bridge import Bridge
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Context, Job, job
from tests.fakes.resend import ResendFake
from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY
from tests.fakes.telegram import TelegramFake
from tests.support.jobs import finished
from tests.support.services import RABBITMQ_URL, answers, missing
from tests.support.waiting import wait_for
from web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
API_TOKEN = "tok-tracing-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
CREDENTIALS = {"web_username": "operator", "web_password": "pw-tracing-correct-horse",
               "api_token": API_TOKEN}
#: What a payload holds that no span may: a value of its own, an address, a code, a token.
SECRET = "Zq7-payload-secret-3f9c"
EMAIL = "jane.roe.tracing@example.com"
CODE = "S3CR3T42"
BOT_TOKEN = "123456789:AAF0traceTokenabcdefghijklmnopqrstuv"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.start([memory], batch=False)
    yield memory
    tracing.stop()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def attr(span: ReadableSpan, *names: str) -> Any:
    """The first of `names` the span has (the HTTP conventions' old and new names)."""
    attributes = span.attributes or {}
    return next((attributes[name] for name in names if name in attributes), None)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def runs(exporter: InMemorySpanExporter, message_id: str, count: int) -> list[ReadableSpan]:
    """The run spans of `message_id` once there are `count` of them, by attempt."""
    found = [span for span in exporter.get_finished_spans() if span.name.startswith("run ")
             and attr(span, "messaging.message.id") == message_id]
    if len(found) < count:
        return []
    return sorted(found, key=lambda span: attr(span, "switchyard.attempt"))


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def descendants(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        children.setdefault(parent_id(span), []).append(span)
    found, todo = [], [span_id(root)]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(span_id(child))
    return found


def render(spans: Sequence[ReadableSpan], shown: Callable[[ReadableSpan], bool] = bool,
           ) -> str:
    """The trace as an indented tree: name, kind and attributes (for docs/operations.md)."""
    ids = {span_id(span) for span in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = parent_id(span)
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        if shown(span):
            attributes = ", ".join(f"{k}={shown_as(v)}".replace("\n", " | ")
                                   for k, v in sorted((span.attributes or {}).items()))
            status = " ERROR" if span.status.status_code is StatusCode.ERROR else ""
            lines.append(f"{'  ' * depth}{span.name} [{span.kind.name}{status}] {attributes}")
        for child in children.get(span_id(span), []):
            walk(child, depth + 1 if shown(span) else depth)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)


def otp_job(queue: str) -> Job[Any]:
    """The real `send_otp` job (Resend through `integrations/http.py`), on this test's queue."""
    real = email_family.send_otp
    options = {k: v for k, v in email_family.OPTIONS.items() if k != "queue_name"}
    return Job(real.fn, real.model, real.name, queue, options)


def test_one_trace_covers_the_request_its_job_the_retry_and_the_provider_calls(
        build_switchyard: Callable[..., runtime.App], start_worker: Callable[..., Any],
        spans: InMemorySpanExporter, queue: str) -> None:
    # Given: Resend answers the first attempt with a 503, the retry with its 200.
    resend = ResendFake(rate_limit=None)
    resend.script(ResendFake.error(503, "internal_server_error", "Unavailable"))
    try:
        sy = build_switchyard(**CREDENTIALS, email_backend="resend",
                              resend_api_key=resend.api_key, resend_api_url=resend.url,
                              email_from="Acme <noreply@acme.example>",
                              min_backoff_ms=50, max_backoff_ms=100)
        sy.declare([otp_job(queue)])
        client = TestClient(create_app(sy), headers=BEARER)
        start_worker(sy)

        # When: a client sends it over the HTTP API.
        response = client.post("/api/jobs/send_otp", json={"email": EMAIL, "code": CODE})
        assert response.status_code == 202, response.text
        message_id = response.json()["message_id"]
        first, second = wait_for(lambda: runs(spans, message_id, 2), timeout=30,
                                 what="both runs' spans")
        assert finished(sy, message_id) == {message_id: "done"}
    finally:
        resend.stop()

    # Then: one trace, from the request to each provider call.
    everything = spans.get_finished_spans()
    [request] = [s for s in everything if s.kind is SpanKind.SERVER
                 and attr(s, "http.route") == "/api/jobs/send_otp"]
    [sent] = named(everything, "enqueue send_otp")
    assert sent.kind is SpanKind.PRODUCER
    assert attr(sent, "messaging.message.id") == message_id
    assert sent in descendants(everything, request)
    for run in (first, second):
        assert run.kind is SpanKind.CONSUMER and parent_id(run) == span_id(sent)
        assert trace_id(run) == trace_id(request)
    assert [attr(r, "switchyard.attempt") for r in (first, second)] == [1, 2]
    assert attr(first, "switchyard.outcome") == "retried"
    assert attr(first, "error.type") == "RetryableError"
    assert first.status.status_code is StatusCode.ERROR
    assert 40 <= attr(first, "switchyard.retry_delay_ms") <= 110
    assert attr(second, "switchyard.outcome") == "done"
    assert second.status.status_code is not StatusCode.ERROR
    calls = [[s for s in descendants(everything, run) if s.kind is SpanKind.CLIENT
              and attr(s, "http.request.method", "http.method") == "POST"]
             for run in (first, second)]
    assert [[attr(c, "http.response.status_code", "http.status_code") for c in made]
            for made in calls] == [[503], [200]]
    assert any(attr(s, "db.system", "db.system.name") == "redis"
               for s in descendants(everything, first))


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str
    email: str


def probe_job(queue: str, telegram_url: str) -> Job[Any]:
    """Touches every instrumented library with the payload's values: the database, S3, a
    Bot API URL with its token, Redis (its idempotency key is made of the secret)."""

    @job(Probe, actor_name="tracing_probe", queue_name=queue, max_retries=0)
    def tracing_probe(ctx: Context, payload: Probe) -> dict[str, Any]:
        with ctx.database.session() as session:
            session.execute(text("SELECT :secret, :email"),
                            {"secret": payload.secret, "email": payload.email})
        ctx.providers.storage().put(f"probe/{ctx.message_id}", payload.secret.encode())
        Http("telegram", telegram_url).request("POST", f"/bot{BOT_TOKEN}/getMe",
                                               json={"secret": payload.secret})
        return {"trace_id": logs.job_fields().get("trace_id")}

    return tracing_probe


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_no_span_holds_a_secret_or_a_payload_value(
        build_switchyard: Callable[..., runtime.App], start_worker: Callable[..., Any],
        spans: InMemorySpanExporter, queue: str, moto_s3: Any, migrated_sqlite: Path,
        tmp_path: Path) -> None:
    # Given: a job whose payload holds a secret and an address, sent over HTTP with a key
    # made of the secret, that hands them to the database, S3, a Bot API URL and Redis.
    telegram = TelegramFake(BOT_TOKEN)
    bucket = moto_s3.new_bucket()
    database = tmp_path / "probe.db"
    shutil.copyfile(migrated_sqlite, database)
    try:
        sy = build_switchyard(**CREDENTIALS, database_url=f"sqlite:///{database}",
                              storage_backend="s3", s3_bucket=bucket,
                              s3_endpoint_url=moto_s3.url, s3_access_key_id=ACCESS_KEY,
                              s3_secret_access_key=SECRET_KEY)
        sy.declare([probe_job(queue, telegram.url)])
        client = TestClient(create_app(sy), headers=BEARER)
        start_worker(sy)

        # When: it runs.
        response = client.post("/api/jobs/tracing_probe",
                               json={"secret": SECRET, "email": EMAIL},
                               headers={"Idempotency-Key": f"key-{SECRET}"})
        assert response.status_code == 202, response.text
        message_id = response.json()["message_id"]
        [run] = wait_for(lambda: runs(spans, message_id, 1), timeout=30, what="the run")
        assert finished(sy, message_id) == {message_id: "done"}
        record = sy.state.history.get(message_id)
        assert record is not None
        result = record["result"]
    finally:
        telegram.stop()
        moto_s3.drop_bucket(bucket)

    # Then: the database, S3 and the Bot API are in the run's trace...
    everything = spans.get_finished_spans()
    below = descendants(everything, run)
    assert any(attr(s, "db.system", "db.system.name") == "sqlite" for s in below)
    assert any(attr(s, "rpc.method") == "PutObject" for s in below)
    [bot] = [s for s in below if "getMe" in str(attr(s, "url.full", "http.url"))]
    assert "/bot[redacted]/getMe" in str(attr(bot, "url.full", "http.url"))
    # ... the job's JSON log lines name that trace ...
    result = json.loads(result) if isinstance(result, str) else result
    assert result["trace_id"] == f"{trace_id(run):032x}"
    # ... and no name, attribute, event or status of any span holds what it was given.
    leaks = [f"{span.name}: {where}" for span in everything for where in texts(span)
             if any(value in where for value in (SECRET, EMAIL, BOT_TOKEN, API_TOKEN,
                                                  SECRET_KEY))]
    assert leaks == []
    # Statements keep their shape, never their values.
    assert "SELECT ?, ?" in [attr(s, "db.statement", "db.query.text") for s in below]
    redis = [str(attr(s, "db.statement", "db.query.text")) for s in everything
             if attr(s, "db.system", "db.system.name") == "redis"]
    shapes = {" ".join(w if w == "?" or w.isupper() else "VALUE" for w in line.split())
              for statement in redis for line in statement.split("\n")}
    assert shapes and not [shape for shape in shapes if "VALUE" in shape]


def texts(span: ReadableSpan) -> list[str]:
    """Everything a span carries as text: name, attributes, events, links, status."""
    found = [span.name, str(span.status.description or "")]
    found += [f"{k}={shown_as(v)}" for k, v in (span.attributes or {}).items()]
    for event in span.events:
        found += [f"{event.name} {k}={shown_as(v)}" for k, v in (event.attributes or {}).items()]
    for link in span.links:
        found += [f"link {k}={shown_as(v)}" for k, v in (link.attributes or {}).items()]
    return found


def shown_as(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Push(BaseModel):
    model_config = ConfigDict(extra="allow")


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_bridge_continues_the_traceparent_an_amqp_producer_sent(
        build_switchyard: Callable[..., runtime.App], start_worker: Callable[..., Any],
        spans: InMemorySpanExporter, queue: str) -> None:
    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    # Given: a producer (seed 003's Node publisher) in trace 4bf9...36 sends a push with
    # its span's context in the AMQP headers.
    remote_trace, remote_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    sy = build_switchyard()

    @job(Push, actor_name="send_push", queue_name=queue, max_retries=0)
    def send_push(ctx: Context, payload: Push) -> None:
        return None

    sy.declare([send_push])
    start_worker(sy)
    bridge = Bridge(sy, RABBITMQ_URL)
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        amqp_queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", amqp_queue, b'{"userId": "u1", "title": "hi"}',
                              pika.BasicProperties(message_id=f"m-{queue}", headers={
                                  "traceparent": f"00-{remote_trace}-{remote_span}-01"}))

        # When: the bridge takes the delivery (its own callback) and enqueues its job.
        method, properties, body = wait_for(lambda: _got(channel.basic_get(amqp_queue)),
                                            what="the published delivery")
        bridge.on_delivery("switchyard.ingress.notification")(
            channel, _Method(method.delivery_tag, "notification.push"), properties, body)
        assert [d.trace for d in bridge.pending][0]["traceparent"].startswith("00-4bf9")
        assert bridge.handle_some(bridge.pending) == bridge.pending
    finally:
        connection.close()

    # Then: the bridge's span is a child of the producer's, and so is the job's run.
    everything = wait_for(lambda: spans.get_finished_spans()
                          if any(s.name == "run send_push" for s in spans.get_finished_spans())
                          else None, what="the run's span")
    [received] = named(everything, "bridge switchyard.ingress.notification")
    assert f"{trace_id(received):032x}" == remote_trace
    assert f"{parent_id(received):016x}" == remote_span
    assert attr(received, "switchyard.ingress.outcome") == "enqueued"
    [sent] = named(everything, "enqueue send_push")
    [run] = named(everything, "run send_push")
    assert parent_id(sent) == span_id(received) and parent_id(run) == span_id(sent)
    assert trace_id(run) == trace_id(received)


class _Method:
    """What pika's callback gets as `method` for a delivery routed with `routing_key`."""

    def __init__(self, delivery_tag: int, routing_key: str) -> None:
        self.delivery_tag, self.routing_key, self.redelivered = delivery_tag, routing_key, False


def _got(answer: tuple[Any, Any, Any]) -> tuple[Any, Any, Any] | None:
    return answer if answer[0] is not None else None


def test_a_job_sent_from_a_python_helper_is_traced_too(
        build_switchyard: Callable[..., runtime.App], spans: InMemorySpanExporter,
        queue: str) -> None:
    sy = build_switchyard()
    sy.declare([otp_job(queue)])
    sent = enqueue(sy, "send_otp", {"email": EMAIL, "code": CODE}, delay=60_000)
    [span] = named(spans.get_finished_spans(), "enqueue send_otp")
    assert attr(span, "messaging.message.id") == sent.message_id
    assert attr(span, "switchyard.delay_ms") == 60_000
    assert parent_id(span) is None  # a trace of its own: no request around it


def test_a_clock_slot_is_a_span_around_its_enqueue(
        build_switchyard: Callable[..., runtime.App], spans: InMemorySpanExporter,
        queue: str) -> None:
    sy = build_switchyard()

    @job(Push, actor_name="tracing_tick", queue_name=queue)
    def tracing_tick(ctx: Context, payload: Push) -> None:
        return None

    sy.declare([tracing_tick])
    at = datetime.datetime(2026, 3, 1, 12, 0, 30, tzinfo=datetime.UTC)
    every_minute = schedules.Schedule("tick", "tracing_tick", "* * * * *")
    [fired] = Clock(sy, [every_minute], now=lambda: at).tick()
    everything = spans.get_finished_spans()
    [slot] = named(everything, "clock tick")
    assert attr(slot, "switchyard.schedule.slot") == "2026-03-01T12:00+00:00"
    [sent] = named(everything, "enqueue tracing_tick")
    assert parent_id(sent) == span_id(slot)
    assert attr(sent, "messaging.message.id") == fired.message_id


def test_an_sqs_message_continues_the_trace_in_its_attributes(
        spans: InMemorySpanExporter) -> None:
    remote_trace, remote_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    message = {"MessageId": "m-1", "Body": "{}", "MessageAttributes": {"traceparent": {
        "DataType": "String", "StringValue": f"00-{remote_trace}-{remote_span}-01"}}}
    with sqs.traced(message):
        pass
    [received] = named(spans.get_finished_spans(), "sqs receive")
    assert f"{trace_id(received):032x}" == remote_trace
    assert f"{parent_id(received):016x}" == remote_span
    assert received.kind is SpanKind.CONSUMER


def test_what_is_exported_is_redacted(spans: InMemorySpanExporter) -> None:
    # Given: a span with what instrumentations could record: a Bot API URL with its token,
    # a signed URL's query, an exception quoting an address, a status description.
    tracer = tracecontext.tracer()
    with tracer.start_as_current_span("POST", attributes={
            "url.full": f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage",
            "url.query": "signature=abc123def&expires=99", "peer": EMAIL}) as span:
        span.record_exception(ValueError(f"no such user {EMAIL}"))
        span.set_status(StatusCode.ERROR, f"refused {EMAIL}")
    # Then: the exporter got it masked, the exception's type without its text.
    [exported] = named(spans.get_finished_spans(), "POST")
    assert attr(exported, "url.full") == "https://api.telegram.org/bot[redacted]/sendMessage"
    assert attr(exported, "url.query") == "signature=[redacted]&expires=99"
    assert attr(exported, "peer") == "[email]"
    [event] = exported.events
    assert dict(event.attributes or {}) == {"exception.type": "ValueError",
                                            "exception.escaped": "False"}
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.status.description is None


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={**clean, **env}, timeout=60)


SEND_PING = ("import sys, runpy; sys.argv = ['switchyard', 'send', 'ping', '{}']\n"
             "try:\n    runpy.run_module('switchyard.cli', run_name='__main__')\n"
             "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
             "print('LOADED ' + ' '.join(sys.modules), file=sys.stderr)")


#: What tracing loads, and nothing else does.
TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter",
                   "opentelemetry.instrumentation", "opentelemetry.propagate",
                   "opentelemetry.trace.propagation.tracecontext")


def loaded(stderr: str) -> list[str]:
    line = next(line for line in stderr.splitlines() if line.startswith("LOADED "))
    return line.split()[1:]


def test_with_tracing_off_switchyard_loads_nothing_of_opentelemetry(
        test_env: dict[str, str]) -> None:
    """A send, and a worker's boot, import no OpenTelemetry module of their own: only
    what `import redis` loads by itself (redis-py 8 imports the SDK's metrics whenever
    the SDK is installed: with the `tracing` extra, as in the tests' environment)."""
    by_redis = set(loaded(run_python("import sys, redis\n"
                                     "print('LOADED ' + ' '.join(sys.modules), file=sys.stderr)",
                                     test_env).stderr))
    send = run_python(SEND_PING, test_env)
    assert send.returncode == 0, send.stderr
    boot = run_python("import sys, switchyard.entry as e; e.boot()\n"
                      "print('LOADED ' + ' '.join(sys.modules), file=sys.stderr)", test_env)
    assert boot.returncode == 0, boot.stderr
    for process in (send, boot):
        ours = [m for m in loaded(process.stderr)
                if m.startswith("opentelemetry") and m not in by_redis]
        assert ours == []
        assert not [m for m in loaded(process.stderr) if m.startswith(TRACING_MODULES)]


def test_with_an_exporter_configured_a_send_exports_its_enqueue_span(
        test_env: dict[str, str]) -> None:
    send = run_python(SEND_PING, {**test_env, "OTEL_TRACES_EXPORTER": "console",
                                  "OTEL_SERVICE_NAME": "switchyard-cli"})
    assert send.returncode == 0, send.stderr
    assert '"name": "enqueue ping"' in send.stderr
    assert '"service.name": "switchyard-cli"' in send.stderr
    assert "opentelemetry.sdk.trace" in loaded(send.stderr)
    assert "sqlalchemy" not in loaded(send.stderr)  # instrumented only where imported


@pytest.mark.parametrize("environ, on", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "switchyard"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
])
def test_tracing_is_on_only_when_an_exporter_is_configured(environ: dict[str, str],
                                                           on: bool) -> None:
    assert tracing.configured(environ) is on


def test_an_exporter_switchyard_cannot_build_is_refused() -> None:
    with pytest.raises(tracing.TracingError, match="zipkin"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(tracing.TracingError, match="http/json"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "otlp",
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_configured_tracing_without_its_packages_refuses_to_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "installed", lambda: False)
    monkeypatch.setattr(tracecontext, "_on", False)
    with pytest.raises(tracing.TracingError, match="tracing` extra"):
        tracing.init({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})


def test_off_the_helpers_do_nothing(exporter: InMemorySpanExporter) -> None:
    tracecontext.activate(False)
    try:
        assert tracecontext.span("x") is tracecontext.OFF
        assert tracecontext.enqueuing("x").options == {}
        assert tracecontext.carried({"traceparent": "00-x"}) == {}
        assert tracecontext.trace_id() is None
    finally:
        tracecontext.activate(True)
