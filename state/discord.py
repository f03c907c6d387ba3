"""Seed 004's StateManager on Redis: what the Discord jobs remember between deliveries.

Every worker process sees the same state, so a multi-step flow may be served by a
different worker at each step. Everything written here expires (the settings give each
lifetime) and sits under the key prefix:

- sessions (`sess:<type>:<guild>:<user>`): a multi-step flow's JSON, with a TTL;
- cooldowns (`cd:<command>:<user>`): one command per user per cooldown;
- rate limits (`rl:<user>`): a sliding window of a user's commands (a sorted set of at
  most DISCORD_RATE_LIMIT + 1 entries);
- events (`event:<id>`): "running" while a worker handles it, then "done" for 24 h;
- defers (`deferred:<interaction>`): the interaction was acknowledged, so a retry
  neither defers again nor applies the 3-second deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

#: How long a worker's claim on an event lasts if it dies while handling it (ms).
DEFAULT_EVENT_LEASE_MS = 5 * 60_000
#: How long the mark of a deferred interaction lasts: its token's whole life (ms).
DEFERRED_TTL_MS = 15 * 60_000
RUNNING, DONE = b"running", b"done"

# Drop the window's old entries, add this one, keep at most limit + 1 of them (enough
# to know the limit is passed), count, and keep the key no longer than the window: one
# round trip, atomic across workers.
_SLIDING_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 2))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""
# Release a claim only if it is still ours (not turned "done" by a late duplicate).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Limits:
    """The lifetimes and caps, from the settings."""

    session_ttl_ms: int
    cooldown_ms: int
    rate_limit: int
    rate_window_ms: int
    event_ttl_ms: int
    event_lease_ms: int = DEFAULT_EVENT_LEASE_MS

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.discord_session_ttl_ms, settings.discord_cooldown_ms,
                   settings.discord_rate_limit, settings.discord_rate_window_ms,
                   settings.discord_event_ttl_ms)


class StateManager:
    """Sessions, cooldowns, a sliding-window rate limit and event idempotency."""

    def __init__(self, client: redis.Redis, *, prefix: str, limits: Limits) -> None:
        self.client = client
        self.prefix = f"{prefix}:discord"
        self.limits = limits
        self._window = client.register_script(_SLIDING_WINDOW)
        self._release = client.register_script(_RELEASE)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # Sessions -------------------------------------------------------------------------

    def set_session(self, kind: str, guild_id: str, user_id: str, data: dict[str, Any]) -> None:
        """Start (or restart) a flow; it expires after the session TTL."""
        self.client.set(self._key("sess", kind, guild_id, user_id), json.dumps(data),
                        px=self.limits.session_ttl_ms)

    def update_session(self, kind: str, guild_id: str, user_id: str,
                       data: dict[str, Any]) -> bool:
        """Replace a live session's data, keeping its expiry; False if it has expired."""
        key = self._key("sess", kind, guild_id, user_id)
        return bool(self.client.set(key, json.dumps(data), xx=True, keepttl=True))

    def session(self, kind: str, guild_id: str, user_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self._key("sess", kind, guild_id, user_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None

    def end_session(self, kind: str, guild_id: str, user_id: str) -> None:
        self.client.delete(self._key("sess", kind, guild_id, user_id))

    def forget_member(self, guild_id: str, user_id: str, kinds: tuple[str, ...]) -> int:
        """Drop a member's sessions in a guild (they left); how many there were."""
        keys = [self._key("sess", kind, guild_id, user_id) for kind in kinds]
        return int(self.client.delete(*keys)) if keys else 0

    # Cooldowns and the rate limit -----------------------------------------------------

    def cooldown(self, command: str, user_id: str) -> int:
        """Start the command's cooldown for the user unless one runs: 0, or the ms left."""
        if self.limits.cooldown_ms == 0:
            return 0
        key = self._key("cd", command, user_id)
        if self.client.set(key, b"1", nx=True, px=self.limits.cooldown_ms):
            return 0
        return max(1, int(self.client.pttl(key)))

    def count_command(self, user_id: str) -> int:
        """Count a command in the user's sliding window; the count including this one."""
        now = int(time.time() * 1000)
        member = f"{now}-{uuid.uuid4().hex[:8]}"
        return int(self._window(keys=[self._key("rl", user_id)],
                                args=[now, self.limits.rate_window_ms, member,
                                      self.limits.rate_limit]))

    def over_rate_limit(self, user_id: str) -> bool:
        return self.count_command(user_id) > self.limits.rate_limit

    # Event idempotency ----------------------------------------------------------------

    def claim_event(self, event_id: str) -> bytes | None:
        """Claim an event for this worker: None if claimed, else b"running" or b"done"."""
        key = self._key("event", event_id)
        if self.client.set(key, RUNNING, nx=True, px=self.limits.event_lease_ms):
            return None
        found = self.client.get(key)
        return _bytes(found) if found is not None else self.claim_event(event_id)

    def event_done(self, event_id: str) -> None:
        self.client.set(self._key("event", event_id), DONE, px=self.limits.event_ttl_ms)

    def release_event(self, event_id: str) -> None:
        """Give the claim back after a failure, so the retry can take it."""
        self._release(keys=[self._key("event", event_id)], args=[RUNNING])

    # Defers ---------------------------------------------------------------------------

    def mark_deferred(self, interaction_id: str, verdict: str) -> None:
        """Remember the defer, with the gates' verdict ("ok" or the refusal)."""
        self.client.set(self._key("deferred", interaction_id), verdict.encode(),
                        px=DEFERRED_TTL_MS)

    def deferred(self, interaction_id: str) -> str | None:
        """The verdict kept with the defer, or None if it was not deferred yet."""
        found = self.client.get(self._key("deferred", interaction_id))
        return None if found is None else _bytes(found).decode()


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
