"""Discord REST API v10: interaction replies, roles, members and DMs for the Discord jobs.

One `Discord` per process is shared by the worker threads. It keeps Discord's rules for
staying welcome (shared/reference/external-apis.md, section 3):

- buckets: every answer names its route's bucket and what is left of it; a call to a
  bucket known to be empty raises `RateLimited` without being sent;
- 429: the wait Discord names is raised as `RateLimited` (the job system waits; the
  client never sleeps); a global 429 holds every call except the interaction ones,
  which Discord exempts from the global limit;
- invalid requests (401, 403, and 429 other than scope `shared`): Cloudflare bans the
  IP after 10,000 in 10 minutes, so after a 401 the bot token is given up on, a 403 is
  not repeated for `FORBIDDEN_COOLDOWN` seconds, and once `invalid_request_budget`
  invalid answers fall within 10 minutes nothing more is sent until the oldest ages out.

The buckets (Discord's per-route windows and its global limit) are shared by every
process and host through the state store when the client has one (`SharedBuckets`): a
call to an exhausted bucket waits for its reset wherever the last answer was seen.
The invalid-request guard stays per process (Cloudflare counts per IP, so processes
x budget must stay under 10,000).
Interaction calls (the callback, follow-ups, editing the original) are authenticated by
the interaction token in their path and carry no bot token.

An error keeps Discord's JSON `code` and the status with a fixed phrase for the code
(`CODES`), never Discord's `message`, and of a 50035's form errors only the fields and
their error codes: Discord's texts can repeat the values it was sent.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx2 as httpx

from integrations.error_text import phrase, safe_code
from integrations.http import Http, HttpConfig, body_json, classify
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)

logger = logging.getLogger(__name__)

PROVIDER = "Discord"
#: Discord's API root.
DEFAULT_BASE_URL = "https://discord.com/api/v10"
#: Discord asks bots to identify as `DiscordBot (url, version)`.
USER_AGENT = "DiscordBot (https://github.com/switchyard/switchyard, 0.1.0)"
#: Seconds a 403 for one method and path is remembered and not sent again.
FORBIDDEN_COOLDOWN = 60.0
#: Seconds over which Cloudflare counts invalid requests.
INVALID_WINDOW = 600.0
#: Rate-limit windows tracked before the expired ones are dropped.
PRUNE_AT = 1_000
#: Codes that mean the interaction token is gone (late or reused): final.
TOKEN_GONE = frozenset({10062, 50027})
#: "Interaction has already been acknowledged": a retried defer already happened.
ALREADY_ACKNOWLEDGED = 40060
#: Message flag: only the user who ran the command sees it.
EPHEMERAL = 1 << 6
#: Content comes from job payloads: it must never ping @everyone, roles or users.
NO_MENTIONS: dict[str, list[str]] = {"parse": []}
#: Interaction callback type: "thinking...", the answer follows later.
DEFERRED_CHANNEL_MESSAGE = 5
#: Path parameters that split a bucket into separate limits, in Discord's order.
MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "interaction_id", "token")
#: Our phrase for each JSON error code the client meets (the reference, section 3).
CODES: dict[int, str] = {
    10003: "unknown channel", 10004: "unknown guild", 10007: "unknown member",
    10011: "unknown role", 10013: "unknown user", 10015: "unknown webhook",
    10062: "unknown interaction (its token is gone)",
    40060: "interaction already acknowledged", 50001: "missing access",
    50006: "cannot send an empty message", 50007: "cannot send messages to this user",
    50013: "missing permissions", 50027: "invalid webhook token",
    50035: "invalid form body",
}
#: Form errors named in a 50035's message, at most.
MAX_FORM_ERRORS = 5

Clock = Callable[[], float]


@dataclass(frozen=True)
class Route:
    """One call: `template` names the route, its major parameters split the bucket."""

    method: str
    template: str
    params: Mapping[str, str]
    interaction: bool = False  # no bot auth, exempt from the global limit

    @property
    def key(self) -> str:
        """What Discord's bucket hash is learnt under: method and path template."""
        return f"{self.method} {self.template}"

    @property
    def path(self) -> str:
        return self.template.format(**{k: quote(v, safe="") for k, v in self.params.items()})

    @property
    def major(self) -> str:
        return ":".join(self.params[name] for name in MAJOR_PARAMETERS if name in self.params)


@dataclass
class _Window:
    remaining: int
    reset_at: float  # on the client's clock


# Spend one call of a bucket's window (or say how long to wait). KEYS: the window, the
# global hold. ARGV: 1 for an interaction call (exempt from the global limit).
_TAKE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == '0' then
  local until_ms = tonumber(redis.call('get', KEYS[2]) or '0')
  if until_ms > now then return {1, until_ms - now} end
end
local w = redis.call('hmget', KEYS[1], 'remaining', 'reset_at')
if w[2] and tonumber(w[2]) > now then
  if tonumber(w[1]) <= 0 then return {2, tonumber(w[2]) - now} end
  redis.call('hincrby', KEYS[1], 'remaining', -1)
end
return {0, 0}
"""

# What an answer said of its bucket: ARGV: remaining, ms until reset. The lower count
# wins while the window lasts (answers overtake each other).
_LEARN = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local remaining = tonumber(ARGV[1])
local w = redis.call('hmget', KEYS[1], 'remaining', 'reset_at')
if w[2] and tonumber(w[2]) > now and tonumber(w[1]) < remaining then remaining = tonumber(w[1]) end
redis.call('hset', KEYS[1], 'remaining', remaining, 'reset_at', now + tonumber(ARGV[2]))
redis.call('pexpire', KEYS[1], tonumber(ARGV[2]) + 1000)
return 1
"""

# A hold of ARGV[1] ms: KEYS[1] a window (emptied) or the global hold.
_HOLD = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
if ARGV[2] == 'global' then
  if tonumber(redis.call('get', KEYS[1]) or '0') < until_ms then
    redis.call('set', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
  end
else
  redis.call('hset', KEYS[1], 'remaining', 0, 'reset_at', until_ms)
  redis.call('pexpire', KEYS[1], tonumber(ARGV[1]) + 1000)
end
return 1
"""


class SharedBuckets:
    """Discord's buckets in the state store, seen by every process: which bucket a route
    is in, each bucket's window (per major parameter, hashed: a webhook token is one),
    and the global hold. Keys expire with their windows."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:discord"
        self._take = client.register_script(_TAKE)
        self._learn = client.register_script(_LEARN)
        self._hold = client.register_script(_HOLD)

    def window_key(self, bucket: str, major: str) -> str:
        digest = hashlib.sha256(major.encode()).hexdigest()[:16]
        return f"{self.prefix}:window:{bucket}:{digest}"

    def bucket_of(self, route: Route) -> str:
        found = self.client.hget(f"{self.prefix}:buckets", route.key)
        return found.decode() if isinstance(found, bytes) else (found or route.key)

    def take(self, route: Route) -> None:
        """Spend a call of the route's bucket, or raise `RateLimited` with the wait."""
        window = self.window_key(self.bucket_of(route), route.major)
        why, wait_ms = (int(n) for n in self._take(
            keys=[window, f"{self.prefix}:global"], args=["1" if route.interaction else "0"]))
        if why == 1:
            raise RateLimited("global rate limit in force; not sent", retry_after=wait_ms / 1000,
                              code="global_rate_limit", provider=PROVIDER)
        if why == 2:
            raise RateLimited("rate-limit bucket exhausted; not sent",
                              retry_after=wait_ms / 1000, code="bucket_exhausted",
                              provider=PROVIDER)

    def learn(self, route: Route, bucket: str | None, remaining: float | None,
              reset_after: float | None) -> None:
        if bucket:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(f"{self.prefix}:buckets", route.key, bucket)
            pipe.pexpire(f"{self.prefix}:buckets", 86_400_000)
            pipe.execute()
        if remaining is not None and reset_after is not None:
            self._learn(keys=[self.window_key(bucket or self.bucket_of(route), route.major)],
                        args=[int(remaining), max(1, int(reset_after * 1000))])

    def hold(self, route: Route, seconds: float, *, everything: bool) -> None:
        key = f"{self.prefix}:global" if everything else \
            self.window_key(self.bucket_of(route), route.major)
        self._hold(keys=[key], args=[max(1, int(seconds * 1000)),
                                     "global" if everything else "bucket"])


class Limits:
    """Discord's rate limits and the invalid-request guard, as one process has seen them
    (the buckets: as every process has seen them, with `shared`)."""

    def __init__(self, invalid_request_budget: int, clock: Clock,
                 shared: SharedBuckets | None = None) -> None:
        self.budget = invalid_request_budget
        self.shared = shared
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, str] = {}  # route key -> Discord's bucket hash
        self._windows: dict[tuple[str, str], _Window] = {}  # (bucket, major) -> window
        self._global_until = 0.0
        self._bad_token: JobError | None = None
        self._forbidden: dict[str, tuple[float, JobError]] = {}  # "METHOD path" -> until
        self._invalid: deque[float] = deque()

    def admit(self, route: Route) -> None:
        """Raise instead of sending when Discord would refuse the call (or count it)."""
        with self._lock:
            now = self._clock()
            self._refuse_known_failures(route, now)
            self._refuse_over_budget(now)
            if self.shared is None:
                if not route.interaction and self._global_until > now:
                    raise RateLimited("global rate limit in force; not sent",
                                      retry_after=self._global_until - now,
                                      code="global_rate_limit", provider=PROVIDER)
                self._take(route, now)
        if self.shared is not None:
            self.shared.take(route)

    def observe(self, route: Route, response: httpx.Response, error: JobError | None) -> None:
        """Learn from an answer: its bucket, a 429's wait, an invalid request."""
        status = response.status_code
        if self.shared is not None:
            self._learn_shared(route, response, error)
        with self._lock:
            now = self._clock()
            if self.shared is None:
                self._learn_bucket(route, response.headers, now)
            if status == 429:
                self._rate_limited(route, response, error, now)
            elif status == 401 and error is not None:
                self._count_invalid(now)
                if not route.interaction:
                    self._bad_token = error
                    logger.error("Discord refused the bot token (401): no more bot calls "
                                 "from this process until it restarts")
            elif status == 403 and error is not None:
                self._count_invalid(now)
                self._forbidden[f"{route.method} {route.path}"] = (
                    now + FORBIDDEN_COOLDOWN, error)

    def _learn_shared(self, route: Route, response: httpx.Response,
                      error: JobError | None) -> None:
        assert self.shared is not None
        headers = response.headers
        self.shared.learn(route, headers.get("X-RateLimit-Bucket"),
                          _number(headers.get("X-RateLimit-Remaining")), _reset_after(headers))
        if response.status_code == 429 and isinstance(error, RateLimited):
            self.shared.hold(route, error.retry_after, everything=_is_global(response))

    def _refuse_known_failures(self, route: Route, now: float) -> None:
        if self._bad_token is not None and not route.interaction:
            raise PermanentError(f"{self._bad_token.message} (the bot token was refused "
                                 "earlier; not sent)", code=self._bad_token.code,
                                 provider=PROVIDER, status=401)
        forbidden = f"{route.method} {route.path}"
        until, error = self._forbidden.get(forbidden, (0.0, None))
        if error is not None and until > now:
            raise PermanentError(f"{error.message} (forbidden within the last "
                                 f"{FORBIDDEN_COOLDOWN:.0f} s; not sent)", code=error.code,
                                 provider=PROVIDER, status=403)
        self._forbidden.pop(forbidden, None)

    def _refuse_over_budget(self, now: float) -> None:
        while self._invalid and self._invalid[0] <= now - INVALID_WINDOW:
            self._invalid.popleft()
        if len(self._invalid) >= self.budget:
            raise RateLimited("invalid-request budget spent (401/403/429 in the last "
                              "10 minutes); not sent",
                              retry_after=self._invalid[0] + INVALID_WINDOW - now,
                              code="invalid_request_budget", provider=PROVIDER)

    def _count_invalid(self, now: float) -> None:
        self._invalid.append(now)
        if len(self._invalid) == self.budget:
            logger.warning("Discord invalid-request budget (%d in 10 minutes) reached: "
                           "calls are held back", self.budget)

    def _key(self, route: Route) -> tuple[str, str]:
        return self._buckets.get(route.key, route.key), route.major

    def _take(self, route: Route, now: float) -> None:
        """Spend one of the bucket's remaining calls, or raise when none is left."""
        key = self._key(route)
        window = self._windows.get(key)
        if window is None:
            return
        if window.reset_at <= now:
            del self._windows[key]
            return
        if window.remaining <= 0:
            raise RateLimited("rate-limit bucket exhausted; not sent",
                              retry_after=window.reset_at - now, code="bucket_exhausted",
                              provider=PROVIDER)
        window.remaining -= 1  # reserved: other threads must not spend it too

    def _learn_bucket(self, route: Route, headers: httpx.Headers, now: float) -> None:
        bucket = headers.get("X-RateLimit-Bucket")
        if bucket:
            self._buckets[route.key] = bucket
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        reset_after = _reset_after(headers)
        if remaining is None or reset_after is None:
            return
        key = self._key(route)
        old = self._windows.get(key)
        if old is not None and old.reset_at > now:
            # Answers overtake each other; the lower count includes calls still in flight.
            remaining = min(remaining, old.remaining)
        self._windows[key] = _Window(int(remaining), now + reset_after)
        self._prune(now)

    def _rate_limited(self, route: Route, response: httpx.Response, error: JobError | None,
                      now: float) -> None:
        """Hold the bucket (or everything, when global) for the wait a 429 names."""
        scope = response.headers.get("X-RateLimit-Scope", "").lower()
        if scope != "shared":  # Discord does not count shared-resource 429s as invalid
            self._count_invalid(now)
        if not isinstance(error, RateLimited) or self.shared is not None:
            return
        if _is_global(response):
            self._global_until = max(self._global_until, now + error.retry_after)
        else:
            self._windows[self._key(route)] = _Window(0, now + error.retry_after)

    def _prune(self, now: float) -> None:
        if len(self._windows) > PRUNE_AT:
            for key in [k for k, w in self._windows.items() if w.reset_at <= now]:
                del self._windows[key]
        if len(self._forbidden) > PRUNE_AT:
            for path in [p for p, (until, _) in self._forbidden.items() if until <= now]:
                del self._forbidden[path]


def _is_global(response: httpx.Response) -> bool:
    """A 429 that holds every bot call, not only its route's bucket."""
    data = body_json(response)
    return (response.headers.get("X-RateLimit-Scope", "").lower() == "global"
            or response.headers.get("X-RateLimit-Global", "").lower() == "true"
            or (isinstance(data, dict) and data.get("global") is True))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reset_after(headers: httpx.Headers) -> float | None:
    """Seconds until the bucket refills: `Reset-After`, else `Reset` (epoch) - now."""
    after = _number(headers.get("X-RateLimit-Reset-After"))
    if after is not None:
        return max(0.0, after)
    reset = _number(headers.get("X-RateLimit-Reset"))
    return None if reset is None else max(0.0, reset - time.time())


def _form_errors(errors: Any, where: str = "") -> list[str]:
    """A 50035's nested `errors` as `field: CODE`; Discord's texts can repeat values."""
    if not isinstance(errors, dict):
        return []
    found: list[str] = []
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            found += [f"{where or 'body'}: {safe_code(item.get('code')) or 'invalid'}"
                      for item in value if isinstance(item, dict)]
        elif safe_code(key) is not None:  # a field name or an index, never a value
            found += _form_errors(value, f"{where}.{key}" if where else str(key))
    return found


def _words(code: int | None, data: Any, status: int) -> str:
    """Our phrase for the code, with a 50035's fields and their error codes."""
    words = phrase(CODES, code, status)
    details = _form_errors(data.get("errors")) if isinstance(data, dict) else []
    if code == 50035 and details:
        words += f" ({'; '.join(details[:MAX_FORM_ERRORS])})"
    return words


def error_from(response: httpx.Response) -> JobError:
    """Classify a failed answer; Discord's JSON `code` is kept, token-gone codes are final."""
    data = body_json(response)
    code: int | None = None
    retry_after: float | None = None
    if isinstance(data, dict):
        code = data["code"] if isinstance(data.get("code"), int) else None
        if isinstance(data.get("retry_after"), int | float):
            retry_after = max(0.0, float(data["retry_after"]))
    message = _words(code, data, response.status_code)
    if code in TOKEN_GONE:
        return PermanentError(message, code=safe_code(code), provider=PROVIDER,
                              status=response.status_code)
    return classify(response, provider=PROVIDER, code=code, message=message,
                    retry_after=retry_after)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RetryableError("Discord answered without a JSON object", code="bad_answer",
                             provider=PROVIDER)
    return value


class Discord:
    """A thread-safe Discord REST v10 client for one bot, shared by a process's workers."""

    def __init__(
        self, token: str, *, base_url: str = DEFAULT_BASE_URL, config: HttpConfig | None = None,
        invalid_request_budget: int = 1_000, clock: Clock = time.monotonic,
        shared: SharedBuckets | None = None,
    ) -> None:
        if invalid_request_budget < 1:
            raise ValueError("invalid_request_budget must be at least 1")
        self.base_url = base_url.rstrip("/")
        agent = {"User-Agent": USER_AGENT}
        self._bot = Http(PROVIDER, self.base_url, config=config,
                         headers={**agent, "Authorization": f"Bot {token}"})
        self._interactions = Http(PROVIDER, self.base_url, config=config, headers=agent)
        self.limits = Limits(invalid_request_budget, clock, shared)

    @classmethod
    def from_settings(cls, settings: Any, redis_client: Any = None) -> Discord:
        """The process's client from settings, its buckets shared through `redis_client`;
        without a bot token, `NotConfigured`."""
        token = settings.discord_bot_token
        if token is None or not token.get_secret_value():
            raise NotConfigured(PROVIDER, "DISCORD_BOT_TOKEN")
        return cls(token.get_secret_value(), base_url=settings.discord_api_url,
                   config=HttpConfig.from_settings(settings),
                   invalid_request_budget=settings.discord_invalid_request_budget,
                   shared=None if redis_client is None else SharedBuckets(
                       redis_client, prefix=settings.key_prefix))

    def __repr__(self) -> str:  # the bot token stays inside the Http headers
        return f"Discord({self.base_url!r})"

    def close(self) -> None:
        self._bot.close()
        self._interactions.close()

    def defer_interaction(self, interaction_id: str | int, token: str, *,
                          ephemeral: bool = False) -> None:
        """Acknowledge an interaction now, answer later (Discord allows 3 s for this).

        A second acknowledgement (40060) counts as done, so a retried job is harmless.
        """
        body: dict[str, Any] = {"type": DEFERRED_CHANNEL_MESSAGE}
        if ephemeral:
            body["data"] = {"flags": EPHEMERAL}
        route = Route("POST", "/interactions/{interaction_id}/{token}/callback",
                      {"interaction_id": str(interaction_id), "token": token}, interaction=True)
        try:
            self._send(route, json=body)
        except PermanentError as error:
            if error.code != ALREADY_ACKNOWLEDGED:
                raise

    def follow_up(self, application_id: str | int, token: str, content: str, *,
                  ephemeral: bool = False) -> dict[str, Any]:
        """Send a follow-up message to an interaction; returns Discord's Message."""
        body: dict[str, Any] = {"content": content, "allowed_mentions": NO_MENTIONS}
        if ephemeral:
            body["flags"] = EPHEMERAL
        route = Route("POST", "/webhooks/{webhook_id}/{token}",
                      {"webhook_id": str(application_id), "token": token}, interaction=True)
        return _object(self._send(route, json=body))

    def edit_original(self, application_id: str | int, token: str,
                      content: str) -> dict[str, Any]:
        """Replace the deferred "thinking..." reply with `content`; returns the Message."""
        route = Route("PATCH", "/webhooks/{webhook_id}/{token}/messages/@original",
                      {"webhook_id": str(application_id), "token": token}, interaction=True)
        return _object(self._send(route, json={"content": content,
                                               "allowed_mentions": NO_MENTIONS}))

    def add_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                 reason: str | None = None) -> None:
        """Give a member a role (idempotent: Discord answers 204 if they have it)."""
        self._send(_member_role("PUT", guild_id, user_id, role_id), headers=_audit(reason))

    def remove_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                    reason: str | None = None) -> None:
        """Take a role from a member (idempotent, like `add_role`)."""
        self._send(_member_role("DELETE", guild_id, user_id, role_id), headers=_audit(reason))

    def get_member(self, guild_id: str | int, user_id: str | int) -> dict[str, Any]:
        """A guild member: `{user{id,username}, nick, roles, joined_at, ...}`."""
        route = Route("GET", "/guilds/{guild_id}/members/{user_id}",
                      {"guild_id": str(guild_id), "user_id": str(user_id)})
        return _object(self._send(route))

    def open_dm(self, user_id: str | int) -> dict[str, Any]:
        """The DM channel with a user, `{id, type: 1, ...}` (an existing one is returned)."""
        route = Route("POST", "/users/@me/channels", {})
        return _object(self._send(route, json={"recipient_id": str(user_id)}))

    def send_message(self, channel_id: str | int, content: str) -> dict[str, Any]:
        """Post `content` in a channel; returns Discord's Message."""
        route = Route("POST", "/channels/{channel_id}/messages", {"channel_id": str(channel_id)})
        return _object(self._send(route, json={"content": content,
                                               "allowed_mentions": NO_MENTIONS}))

    def send_dm(self, user_id: str | int, content: str) -> dict[str, Any]:
        """Open (or reuse) the DM channel with a user and post `content` in it."""
        channel = self.open_dm(user_id)
        return self.send_message(channel["id"], content)

    def _send(self, route: Route, *, json: Any = None,
              headers: dict[str, str] | None = None) -> Any:
        """One call through the limits: refused before sending, or sent and learnt from."""
        self.limits.admit(route)
        http = self._interactions if route.interaction else self._bot
        response = http.request(route.method, route.path, json=json, headers=headers)
        error = None if response.is_success else error_from(response)
        self.limits.observe(route, response, error)
        if error is not None:
            raise error
        return None if response.status_code == 204 else body_json(response)


class DiscordApi(Protocol):
    """What the Discord jobs call: `Discord`, or `DiscordOutbox` for development."""

    def defer_interaction(self, interaction_id: str | int, token: str, *,
                          ephemeral: bool = False) -> None: ...

    def follow_up(self, application_id: str | int, token: str, content: str, *,
                  ephemeral: bool = False) -> dict[str, Any]: ...

    def edit_original(self, application_id: str | int, token: str,
                      content: str) -> dict[str, Any]: ...

    def add_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                 reason: str | None = None) -> None: ...

    def remove_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                    reason: str | None = None) -> None: ...

    def get_member(self, guild_id: str | int, user_id: str | int) -> dict[str, Any]: ...

    def send_dm(self, user_id: str | int, content: str) -> dict[str, Any]: ...


def _member_role(method: str, guild_id: str | int, user_id: str | int,
                 role_id: str | int) -> Route:
    return Route(method, "/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
                 {"guild_id": str(guild_id), "user_id": str(user_id), "role_id": str(role_id)})


def _audit(reason: str | None) -> dict[str, str] | None:
    """The audit-log reason header; Discord wants it URL-encoded (headers are ASCII)."""
    return None if reason is None else {"X-Audit-Log-Reason": quote(reason, safe=" /")}
