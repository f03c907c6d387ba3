"""Middleware hooks sent only to the middleware that implement them.

Dramatiq's broker calls every middleware for every hook (`emit_before`, `emit_after`),
and most of them inherit the base class's empty method for most hooks: with the
pipeline's twenty middleware, that is some hundred and fifty calls per job, nearly all
of them no-ops. `SelectiveHooks` resolves, once per hook name, the bound methods of the
middleware that define it, and calls only those, in Dramatiq's order (before-hooks in
the stack's order, after-hooks in reverse) and with its error handling: a
`MiddlewareError` from a before-hook propagates, any other exception is logged and the
next middleware still runs.

Hooks no middleware of Dramatiq's declares (`after_fetch`, `before_requeue`, see
`switchyard.brokers.redis_broker`) are sent to the middleware that define them and to no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import MiddlewareError

from switchyard.base.hooks import is_declared_only

Hook = Callable[..., Any]


class SelectiveHooks:
    """Broker mixin: `emit_before`/`emit_after` call only the middleware that implement
    the hook. Adding middleware (`add_middleware`) refreshes the lists."""

    middleware: list[dramatiq.Middleware]
    logger: Any

    def _hooks(self, name: str, *, reverse: bool) -> list[tuple[dramatiq.Middleware, Hook]]:
        cache: dict[str, tuple[int, list[tuple[dramatiq.Middleware, Hook]]]]
        cache = self.__dict__.setdefault("_hook_cache", {})
        entry = cache.get(name)
        if entry is not None and entry[0] == len(self.middleware):
            return entry[1]
        default = getattr(dramatiq.Middleware, name, None)
        hooks = []
        for middleware in reversed(self.middleware) if reverse else self.middleware:
            hook = getattr(middleware, name, None)
            if hook is None or getattr(hook, "__func__", None) is default \
                    or is_declared_only(hook):
                continue  # not implemented, or a base class's no-op
            hooks.append((middleware, hook))
        cache[name] = (len(self.middleware), hooks)
        return hooks

    def implements(self, signal: str) -> bool:
        """Some middleware implements `signal` (e.g. "after_fetch")."""
        return bool(self._hooks(signal, reverse=False))

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "before_" + signal
        for middleware, hook in self._hooks(signal, reverse=False):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware,
                                     exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "after_" + signal
        for middleware, hook in self._hooks(signal, reverse=True):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware,
                                     exc_info=True)

    def add_middleware(self, middleware: dramatiq.Middleware, **kwargs: Any) -> None:
        super().add_middleware(middleware, **kwargs)  # type: ignore[misc]
        self.__dict__.pop("_hook_cache", None)
