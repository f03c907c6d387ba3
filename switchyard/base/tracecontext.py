"""Trace context across the queue: a job's runs continue the trace that enqueued it.

Tracing is off unless `switchyard.tracing` switches it on (the standard `OTEL_*`
variables, docs/operations.md "Tracing"); until then every helper here is a no-op that
imports nothing. Once on, a producer's span context travels in the message's options as
W3C Trace Context (`traceparent`, `tracestate`: ids and a sampling flag, never payload
nor secret), the way HTTP carries it in headers; the run middleware
(`middleware/tracing.py`), the bridge (AMQP headers) and the SQS consumer (message
attributes) continue it. Only OpenTelemetry's API is imported here, lazily: the SDK and
the exporters are the top layer's (`switchyard/tracing.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer

#: The message options (and AMQP headers, SQS message attributes) that carry a trace.
FIELDS = ("traceparent", "tracestate")
#: The instrumentation scope of Switchyard's own spans.
SCOPE = "switchyard"

Kind = Literal["internal", "producer", "consumer", "client", "server"]
#: What a span's attribute may be: None leaves it out.
Value = str | bool | int | float | None

_on = False


def activate(on: bool = True) -> None:
    """Switch the helpers on (`switchyard.tracing.start`) or off again."""
    global _on
    _on = on


def active() -> bool:
    return _on


def tracer() -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer(SCOPE)


class Span:
    """A span, current on this thread from `start()` (or `with`) until `end()`. This
    base class is the no-op `OFF` that every helper returns while tracing is off."""

    #: Message options carrying this span's context (empty unless a producer's).
    options: Mapping[str, str] = MappingProxyType({})

    def set(self, key: str, value: Value) -> None:
        """Set an attribute: ids, names, counts, codes; never a payload value."""

    def start(self) -> Span:
        return self

    def end(self, error: str | None = None) -> None:
        """End it; `error` (an exception's class name) marks it failed."""

    def __enter__(self) -> Span:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.end(kind.__name__ if kind is not None else None)


OFF = Span()


class _Live(Span):
    def __init__(self, name: str, kind: Kind, attributes: Mapping[str, Value],
                 parent: Context | None, producer: bool) -> None:
        from opentelemetry.trace import SpanKind

        self._span = tracer().start_span(
            name, context=parent, kind=SpanKind[kind.upper()],
            attributes={k: v for k, v in attributes.items() if v is not None})
        self._producer = producer
        self._token: Token[Context] | None = None

    def set(self, key: str, value: Value) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def start(self) -> Span:
        from opentelemetry import context, trace

        current = trace.set_span_in_context(self._span)
        self._token = context.attach(current)
        if self._producer:
            self.options = _inject(current)
        return self

    def end(self, error: str | None = None) -> None:
        from opentelemetry import context
        from opentelemetry.trace import StatusCode

        if error is not None:
            self._span.set_attribute("error.type", error)
            self._span.set_status(StatusCode.ERROR)
        self._span.end()
        if self._token is not None:
            context.detach(self._token)
            self._token = None


def span(name: str, *, kind: Kind = "internal", attributes: Mapping[str, Value] | None = None,
         parent: Mapping[str, Any] | None = None) -> Span:
    """A span named `name`, child of the current one; with `parent` (message options,
    AMQP headers), of the trace they carry (a new trace when they carry none)."""
    if not _on:
        return OFF
    return _Live(name, kind, attributes or {}, _extract(parent), producer=False)


def enqueuing(name: str, attributes: Mapping[str, Value] | None = None) -> Span:
    """The span of one send (or one bulk send): its `options` carry it to the runs."""
    if not _on:
        return OFF
    return _Live(name, "producer", attributes or {}, None, producer=True)


def carried(carrier: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace fields of `carrier` (AMQP headers may hold bytes), when tracing is on."""
    if not _on or not carrier:
        return {}
    found = {}
    for field in FIELDS:
        value = carrier.get(field)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            found[field] = value
    return found


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), for log lines; None outside a trace."""
    if not _on:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _inject(context: Context) -> dict[str, str]:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    options: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(options, context=context)
    return options


def _extract(carrier: Mapping[str, Any] | None) -> Context | None:
    if carrier is None:
        return None
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # An empty base: a carrier without a valid `traceparent` starts a new trace.
    return TraceContextTextMapPropagator().extract(carried(carrier), context=Context())
