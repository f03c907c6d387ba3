"""OpenTelemetry tracing for a Switchyard process: off unless the `OTEL_*` variables ask.

`init()`, called by `switchyard.boot.boot()`, switches tracing on when an exporter is
configured (`configured()`): OTEL_TRACES_EXPORTER names one (`otlp`, `console`; `none`
keeps tracing off), or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and OTEL_SDK_DISABLED is not `true`. Otherwise
Switchyard imports no OpenTelemetry module: a `switchyard send` stays as quick as it was.
The SDK, the exporter and the instrumentations are the `tracing` extra, installed where
traces are wanted only: redis-py 8 imports the SDK's metrics whenever the SDK is
installed, which every process would pay for, tracing or not.

Once on (`start()`), the process has:

- the SDK's tracer provider, configured by the standard variables (OTEL_SERVICE_NAME,
  default `switchyard`; OTEL_RESOURCE_ATTRIBUTES; OTEL_TRACES_SAMPLER and its _ARG; the
  batch processor's OTEL_BSP_*; the span limits), and a sampler around the configured one
  that drops client spans outside a trace: a worker's polling, heartbeats and buffer
  flushes would otherwise each be a trace of one Redis call;
- its exporters behind `redacting`, the last word on what leaves the process;
- the instrumentations, whose spans join the current trace: httpx2 (every provider's
  HTTP client, `integrations/http.py`), Redis (statements always sanitized to
  `COMMAND ? ?` by the instrumentation), SQLAlchemy (statements with placeholders,
  never their parameters), botocore (S3, SQS: operation names, no parameters);
  FastAPI traces requests natively once a provider is set;
- `switchyard.base.tracecontext` switched on: enqueue spans, run spans
  (`middleware/tracing.py`), the `traceparent` message option, `trace_id` in JSON logs.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from switchyard.base import redis_client, tracecontext
from switchyard.base.redaction import scrub_text

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import Sampler

logger = logging.getLogger("switchyard.tracing")

#: The service name when OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names none.
DEFAULT_SERVICE_NAME = "switchyard"
#: Variables that configure where spans go: any of them set switches tracing on.
EXPORT_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: Libraries instrumented (`instrument`: provider HTTP, the state store and broker, S3 and
#: SQS, the database) -> their instrumentation's name in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
LIBRARIES = {"httpx2": "httpx", "redis": "redis", "botocore": "botocore",
             "sqlalchemy": "sqlalchemy"}
#: Attributes of an exception event that hold its text: left out (they can quote a
#: payload value, a key or a URL); `exception.type` stays.
EXCEPTION_TEXT = frozenset({"exception.message", "exception.stacktrace"})


class TracingError(ValueError):
    """The OTEL_* variables ask for something this process cannot do."""


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not any(environ.get(name, "").strip() for name in EXPORT_VARIABLES):
        return False
    return exporter_names(environ) != []


def installed() -> bool:
    """Whether the `tracing` extra is: the SDK, the exporter, the instrumentations."""
    return all(importlib.util.find_spec(name) is not None for name in (
        "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry.instrumentation.redis"))


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"
    return [name.strip().lower() for name in names.split(",")
            if name.strip() and name.strip().lower() != "none"]


def exporters(environ: Mapping[str, str] = os.environ) -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names: `otlp` (OTLP over HTTP/protobuf, or
    gRPC if its exporter is installed), `console` (JSON on stderr)."""
    found = []
    for name in exporter_names(environ):
        if name == "otlp":
            found.append(_otlp(environ))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter(out=sys.stderr))  # stdout is the CLI's
        else:
            raise TracingError(f"OTEL_TRACES_EXPORTER={name} is not supported: use otlp, "
                               "console or none")
    return found


def _otlp(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # it reads OTEL_EXPORTER_OTLP_* (endpoint, headers, ...)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise TracingError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
                               "opentelemetry-exporter-otlp-proto-grpc; Switchyard ships "
                               "http/protobuf") from None
        return GrpcExporter()  # type: ignore[no-any-return]
    raise TracingError(f"OTLP protocol {protocol!r} is not supported: use http/protobuf "
                       "or grpc")


class _Tracing:
    """What `start()` installed, for `stop()`."""

    def __init__(self) -> None:
        # Reentrant: an import hook may run while `start()` holds it.
        self.lock = threading.RLock()
        self.provider: TracerProvider | None = None
        self.processors: list[Any] = []
        self.instrumentors: list[Any] = []
        self.engines: Any = None


_installed = _Tracing()


def init(environ: Mapping[str, str] = os.environ) -> bool:
    """Switch tracing on when the environment asks for it; whether it is on."""
    if tracecontext.active():
        return True
    if not configured(environ):
        return False
    if not installed():
        raise TracingError("the OTEL_* variables configure tracing, but its packages are "
                           "not installed: install Switchyard with its `tracing` extra "
                           "(uv sync --extra tracing)")
    start(exporters(environ))
    logger.info("Tracing on: exporting spans with %s",
                ", ".join(exporter_names(environ)))
    return True


def start(exporters: Sequence[SpanExporter], *, batch: bool = True) -> TracerProvider:
    """Trace this process into `exporters` (each behind `redacting`); `batch=False` exports
    each span as it ends (tests). The provider is set once per process; `stop()` then
    `start()` again exports to new exporters."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    processor = BatchSpanProcessor if batch else SimpleSpanProcessor
    with _installed.lock:
        if _installed.provider is None:
            _installed.provider = provider()
            trace.set_tracer_provider(_installed.provider)
        for exporter in exporters:
            added = processor(redacting(exporter))
            _installed.provider.add_span_processor(added)
            _installed.processors.append(added)
        tracecontext.activate()
        instrument(_installed.provider)
        return _installed.provider


def stop() -> None:
    """Switch tracing off: no span is sampled, the instrumentations are removed, what
    was recorded is exported."""
    with _installed.lock:
        tracecontext.activate(False)
        for instrumentor in _installed.instrumentors:
            instrumentor.uninstrument()
        _installed.instrumentors.clear()
        redis_client.traced = False
        if _installed.engines is not None:
            _installed.engines.close()
            _installed.engines = None
        for processor in _installed.processors:
            processor.shutdown()
        _installed.processors.clear()


def provider() -> TracerProvider:
    """The SDK's provider with the environment's resource and sampler (see `sampling`)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    configured = TracerProvider(shutdown_on_exit=False).sampler  # OTEL_TRACES_SAMPLER's
    return TracerProvider(sampler=sampling(configured), resource=resource)


def instrument(provider: TracerProvider, environ: Mapping[str, str] = os.environ) -> None:
    """Instrument each library Switchyard calls out with as (if) it is imported: a traced
    `switchyard send` still loads only what it uses. OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    leaves some out (`httpx`, `redis`, `botocore`, `sqlalchemy`)."""
    import wrapt

    disabled = {name.strip() for name in
                environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    for library, name in LIBRARIES.items():
        if name not in disabled:
            wrapt.register_post_import_hook(functools.partial(_imported, provider), library)


def _imported(provider: TracerProvider, module: Any) -> None:
    library = module.__name__
    with _installed.lock:
        if not tracecontext.active() or _installed.provider is not provider:
            return  # stopped since (the hook stays registered)
        try:
            _instrument(library, provider)
        except Exception:  # never fail the import that triggered it
            logger.warning("Could not instrument %s for tracing", library, exc_info=True)


def _instrument(library: str, provider: TracerProvider) -> None:
    if library == "sqlalchemy":
        if _installed.engines is None:
            _installed.engines = Engines(provider)
        return
    instrumentor = _instrumentor(library)
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
        _installed.instrumentors.append(instrumentor)
    if library == "redis":  # our calls go through what it wraps, and keep their spans
        redis_client.traced = True


def _instrumentor(library: str) -> Any:
    if library == "httpx2":
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

        return HTTPX2ClientInstrumentor()
    if library == "redis":
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        return RedisInstrumentor()
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    return BotocoreInstrumentor()


class Engines:
    """SQLAlchemy's instrumentation on every engine, on its first connection: the
    instrumentor's own hook wraps `create_engine` as it stands when it runs, which
    misses `store/db.py` (it bound the name at import) and engines made before."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.instrumentation.sqlalchemy import __version__
        from opentelemetry.metrics import get_meter
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy",
                                          __version__)
        self.usage = get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
            "db.client.connections.usage", unit="connections")
        self.traced: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()
        event.listen(Engine, "engine_connect", self.connected)

    def connected(self, connection: Any) -> None:
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        engine = connection.engine
        if engine in self.traced:
            return
        with self.lock:
            if engine not in self.traced:
                # Its listeners record each statement with placeholders, never parameters
                # (no SQL commenter: statements are sent as written).
                EngineTracer(self.tracer, engine, self.usage)
                self.traced.add(engine)

    def close(self) -> None:
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "engine_connect", self.connected)
        EngineTracer.remove_all_event_listeners()


def sampling(configured: Sampler) -> Sampler:
    """`configured` (OTEL_TRACES_SAMPLER's sampler), except: nothing while tracing is off
    (`stop()`), and no client span (a Redis command, an HTTP request) outside a trace."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class Sampling(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: SpanKind | None = None, attributes: Any = None,
                          links: Any = None, trace_state: Any = None) -> SamplingResult:
            if not tracecontext.active() or (
                    kind is SpanKind.CLIENT
                    and not get_current_span(parent_context).get_span_context().is_valid):
                return SamplingResult(Decision.DROP)
            return configured.should_sample(parent_context, trace_id, name, kind, attributes,
                                            links, trace_state)

        def get_description(self) -> str:
            return f"Switchyard({configured.get_description()})"

    return Sampling()


def redacting(exporter: SpanExporter) -> SpanExporter:
    """`exporter`, handed each span with secrets and personal data masked by
    `switchyard.base.redaction.scrub_text` (bot tokens in URL paths, bearer tokens,
    signed-URL parameters, credentials in URLs, email addresses, phone numbers) in its
    name and in every attribute of it, its events and its links; exception texts and
    status descriptions left out (they can quote a payload value). The sources record
    no payload in the first place: this is the last word on what leaves the process."""
    from opentelemetry.sdk.trace.export import SpanExporter

    class Redacting(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return exporter.export([redacted(span) for span in spans])

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Redacting()


def redacted(span: ReadableSpan) -> ReadableSpan:
    """`span` as `redacting` exports it (the same object when nothing is to mask)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    name = scrub_text(span.name)
    attributes = _masked(span.attributes)
    events = [(event, _masked(event.attributes, EXCEPTION_TEXT)) for event in span.events]
    links = [(link, _masked(link.attributes)) for link in span.links]
    if (name == span.name and attributes is span.attributes
            and span.status.description is None
            and all(masked is event.attributes for event, masked in events)
            and all(masked is link.attributes for link, masked in links)):
        return span
    return ReadableSpan(
        name=name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=attributes, kind=span.kind, status=Status(span.status.status_code),
        events=[Event(event.name, masked, event.timestamp) for event, masked in events],
        links=[Link(link.context, masked) for link, masked in links],
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope)


def _masked(attributes: Mapping[str, Any] | None,
            dropped: frozenset[str] = frozenset()) -> Any:
    """`attributes` with every text scrubbed and `dropped` left out; the same object
    when nothing changes."""
    if not attributes:
        return attributes
    changed = {key: _mask(key, value) for key, value in attributes.items()}
    if all(changed[key] is value for key, value in attributes.items()) and not (
            dropped & attributes.keys()):
        return attributes
    return {key: value for key, value in changed.items() if key not in dropped}


def _mask(key: str, value: Any) -> Any:
    if isinstance(value, str):
        # A query string alone (url.query) has no `?` for the parameter rules to anchor on.
        masked = scrub_text("?" + value)[1:] if key == "url.query" else scrub_text(value)
        return value if masked == value else masked
    if isinstance(value, tuple | list) and any(isinstance(item, str) for item in value):
        items = tuple(_mask(key, item) for item in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
