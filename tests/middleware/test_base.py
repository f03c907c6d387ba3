"""Every middleware stands on one base that declares Switchyard's batch hooks."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

import middleware
from middleware.base import Middleware
from switchyard.brokers.dispatch import SelectiveHooks


class Broker(SelectiveHooks, StubBroker):
    """A broker that sends each hook only to the middleware that implement it."""


def middleware_classes() -> list[type[Any]]:
    found = []
    for info in pkgutil.iter_modules(middleware.__path__):
        module = importlib.import_module(f"middleware.{info.name}")
        found += [value for _, value in inspect.getmembers(module, inspect.isclass)
                  if issubclass(value, dramatiq.Middleware) and value.__module__ == module.__name__]
    return found


def test_every_middleware_is_a_switchyard_middleware() -> None:
    classes = middleware_classes()
    assert len(classes) >= 12
    assert [c.__name__ for c in classes if not issubclass(c, Middleware)] == []


def test_a_declared_hook_is_not_sent_and_an_implemented_one_is() -> None:
    calls: list[str] = []

    class Declares(Middleware):
        pass

    class Implements(Middleware):
        def after_fetch(self, broker: Any, messages: list[Any]) -> None:
            calls.append(f"fetch {len(messages)}")

    broker = Broker(middleware=[Declares()])
    assert not broker.implements("after_fetch")
    broker.emit_after("fetch", ["m"])  # the declaration is not called (it would do nothing)
    broker.add_middleware(Implements())
    assert broker.implements("after_fetch")
    assert not broker.implements("after_unfetch")
    broker.emit_after("fetch", ["m", "n"])
    assert calls == ["fetch 2"]
