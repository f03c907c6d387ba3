"""Declared rate limits: how often a job (or a job per key) may start.

An actor declares its limits with the `rate_limit` option, one `RateLimit` or a list:

    TELEGRAM = RateLimit("telegram-bot", 30, 1_000)                 # 30 a second, overall
    PER_CHAT = RateLimit("telegram-chat", 1, 1_000, key=lambda **p: p["userId"])

`limit` is a number or the name of a setting (`"fcm_rate_limit"`), read when the job
runs. Starts are spread evenly (one every `per_ms / limit` ms; `burst` lets that many
go at once after a quiet spell), shared by every process and host through the state
store (`middleware.rate_limit`). A job whose turn is later waits for exactly that long,
without spending an attempt, and then runs on the turn it reserved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RateLimit:
    #: The limit's name: jobs of every actor that declares it share it.
    name: str
    #: Starts allowed per `per_ms`: a number, or the name of the setting that says it.
    limit: int | str
    per_ms: int
    #: A function of the payload naming the key the limit applies to (one limit per
    #: key: per chat, per number...), or None for one limit in all.
    key: Callable[..., Any] | None = None
    #: How many may start at once after a quiet spell (1: evenly spaced, always).
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_ms < 1 or self.burst < 1:
            raise ValueError("per_ms and burst must be positive")
        if isinstance(self.limit, int) and self.limit < 1:
            raise ValueError("limit must be positive")
