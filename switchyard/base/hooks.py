"""Hooks declared only as a contract: a base class's documented no-op.

Dramatiq's `Middleware` declares each hook as a method that does nothing, and its broker
calls every middleware for every hook. Switchyard's brokers call a hook only on the
middleware that implement it (`switchyard.brokers.dispatch`): a method marked
`declared_only` here is a declaration, not an implementation, so it is skipped like
Dramatiq's own no-ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__switchyard_declared_only__"


def declared_only(fn: F) -> F:
    """Mark `fn` as a hook's declaration (a documented no-op)."""
    setattr(fn, _MARK, True)
    return fn


def is_declared_only(fn: Any) -> bool:
    """`fn` (a function or a bound method) is a hook's declaration, not an implementation."""
    return bool(getattr(getattr(fn, "__func__", fn), _MARK, False))
