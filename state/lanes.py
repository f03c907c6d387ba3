"""Lanes in the state store: jobs that may not run yet wait here, in order, for nothing.

A job with gates (an ordered group, a concurrency limit) is *admitted* before it reaches
its broker queue: through each gate in turn, a lane with a capacity. A lane has holders
(the admitted jobs, a sorted set scored by when the hold lapses) and a waiting list.
A job passes a gate when the lane has room and nobody waits there; else it waits at
the tail of the lane's list, its encoded body kept here (`jobs`), and costs nothing
until a holder lets go. A release takes the holder out and admits the heads of the
list while there is room: each admitted head passes its next gates or waits at the
next one, and those through all of them are published: by the script itself when
the broker's queues are in this Redis (`BrokerQueues`, atomically with the admission),
else returned to the caller to publish (they sit in `moving` until the publisher
confirms, so one that dies mid-way loses nothing: a `sweep` hands them out again).

Kinds of gate (what a release means is the caller's: see `middleware.admission`):
- `group` (capacity 1): held from admission until the job ends (done, dead, skipped),
  across its retries, so a group's jobs run one at a time in the order they were sent;
- `limit` (capacity N): held while the job is admitted or runs, released when a run
  ends (a retry is admitted again when it is due).

A hold lapses after `hold_ms` (refreshed at each claim and retry) only if its message
was lost outside Switchyard (deleted from the broker by hand): `sweep` then admits the
lane's next jobs. Every script here touches one hash, one sorted set of moving jobs,
one index of lanes, and the lists and sets of the lanes it names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from state.buffer import WriteBuffer
from switchyard.base.priority import PRIORITY, priority_of
from switchyard.base.redis_client import execute_loading, queue_script

#: A gate: (lane name, capacity, kind).
Gate = tuple[str, int, str]
#: A job to admit: (message id, queue, body, gates, hold ms, its message's options).
LaneJob = tuple[str, str, bytes, Sequence[Gate], int | None, Mapping[str, Any] | None]
GROUP, LIMIT = "group", "limit"

_COMMON = """
local P = ARGV[1]
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[2])
local jobs = P .. ':lanes:jobs'
local moving = P .. ':lanes:moving'
local expiring = P .. ':lanes:expiring'
local caps = P .. ':lanes:caps'
local function held_key(lane) return P .. ':lanes:' .. lane .. ':held' end
local function wait_key(lane) return P .. ':lanes:' .. lane .. ':wait' end
local function hold_in(lane, id, until_ms)
  redis.call('zadd', held_key(lane), until_ms, id)
  redis.call('zadd', expiring, 'LT', until_ms, lane)
end
local function has_room(lane, cap)
  local held = held_key(lane)
  redis.call('zremrangebyscore', held, '-inf', now)
  return redis.call('zcard', held) < cap
end
-- Through the gates of `rec` from the `from`-th on: 1 when through all, else 0 (it
-- waits at the tail of the first lane without room, its record kept).
local function pass(id, rec, from)
  local gates = rec['g']
  for j = from, #gates do
    local lane, cap = gates[j][1], tonumber(gates[j][2])
    redis.call('hset', caps, lane, cap)
    if not redis.call('zscore', held_key(lane), id) then
      if redis.call('llen', wait_key(lane)) > 0 or not has_room(lane, cap) then
        rec['i'] = j
        redis.call('hset', jobs, id, cjson.encode(rec))
        redis.call('rpush', wait_key(lane), id)
        return 0
      end
    end
    hold_in(lane, id, now + hold)
  end
  return 1
end
-- A lane nobody holds and nobody waits in leaves nothing behind.
local function tidy(lane)
  if redis.call('zcard', held_key(lane)) == 0 and redis.call('llen', wait_key(lane)) == 0 then
    redis.call('zrem', expiring, lane)
    redis.call('hdel', caps, lane)
  end
end
-- Where the broker's queues live in this Redis (ARGV[3], see `Lanes.publish_to`), a job
-- through its gates goes onto its queue here, as the broker's enqueue puts it (its body
-- under its Redis id, the id on its queue's list or its priority's, the doorbell rung):
-- true. Else (another server, or a body without a Redis id) false: the caller publishes.
local direct = nil
if ARGV[3] ~= '' then direct = cjson.decode(ARGV[3]) end
local function publish_here(id, rec)
  if not direct then return false end
  -- its Redis id and priority, kept in the record at admission (`Lanes._record`); a
  -- record without them (an older release's) has them in the body's options
  local rid, priority = rec['r'], rec['p']
  if rid == nil then
    local options = cjson.decode(rec['b'])['options']
    if type(options) ~= 'table' then return false end
    rid, priority = options['redis_message_id'], options[direct['pk']]
  end
  if type(rid) ~= 'string' then return false end
  local base = direct['ns'] .. ':' .. rec['q']
  local list = base
  if type(priority) == 'number' and priority >= 1 and priority == math.floor(priority) then
    list = base .. '.p' .. math.min(priority, direct['top'])
  end
  if redis.call('hsetnx', base .. '.msgs', rid, rec['b']) == 1 then
    redis.call('rpush', list, rid)
  end
  local bell = direct['ns'] .. ':__doorbell__.' .. rec['q']
  redis.call('lpush', bell, 1)
  redis.call('ltrim', bell, 0, direct['cap'] - 1)
  redis.call('pexpire', bell, direct['ttl'])
  redis.call('zrem', moving, id)
  redis.call('hdel', jobs, id)
  return true
end
-- A waiting job through every gate: published here, or appended to `out` (id, queue,
-- body) and kept in `moving` until the caller confirms it published it.
local function hand_out(id, rec, out)
  if publish_here(id, rec) then return end
  redis.call('zadd', moving, now, id)
  table.insert(out, id)
  table.insert(out, rec['q'])
  table.insert(out, rec['b'])
end
-- Admit the heads of `lane` while it has room; those through every gate are handed out.
local function promote(lane, cap, out)
  while has_room(lane, cap) do
    local id = redis.call('lpop', wait_key(lane))
    if not id then return end
    local raw = redis.call('hget', jobs, id)
    if raw then
      local rec = cjson.decode(raw)
      hold_in(lane, id, now + hold)
      if pass(id, rec, rec['i'] + 1) == 1 then hand_out(id, rec, out) end
    end
  end
end
"""

# ARGV: prefix, hold, direct, id, record (JSON: q queue, b body, g gates). Returns
# {0 waiting, 1 through, 2 through and published here; then id, queue, body, ...}: the
# job itself, and heads a lapsed hold freed.
_ADMIT = _COMMON + """
local id = ARGV[4]
if redis.call('zscore', moving, id) then
  -- admitted by a release whose publish is not confirmed (its publisher may have died),
  -- and a copy of it is enqueued now (published, deferred, come due): this copy is the
  -- job, through the gates it holds; the sweep must not hand out another
  redis.call('zrem', moving, id)
  redis.call('hdel', jobs, id)
elseif redis.call('hexists', jobs, id) == 1 then
  return {0}  -- already waiting in a lane: a resend stays one job
end
local rec = cjson.decode(ARGV[5])
local out = {0}
for _, gate in ipairs(rec['g']) do
  local lane = gate[1]
  if redis.call('llen', wait_key(lane)) > 0 then promote(lane, tonumber(gate[2]), out) end
end
out[1] = pass(id, rec, 1)
if out[1] == 1 and publish_here(id, rec) then out[1] = 2 end
return out
"""

# ARGV: prefix, hold, direct, id, then lane, capacity pairs to release. Returns the admitted
# heads: id, queue, body, ...
_RELEASE = _COMMON + """
local id = ARGV[4]
local out = {}
for k = 5, #ARGV, 2 do
  redis.call('zrem', held_key(ARGV[k]), id)
  promote(ARGV[k], tonumber(ARGV[k + 1]), out)
  tidy(ARGV[k])
end
return out
"""

# A job about to run claims its gates again: kept (its hold refreshed), or taken again
# if its hold lapsed and there is room. ARGV: prefix, hold, direct, id, then lane, capacity
# pairs. Returns 1, or 0 (and changes nothing) when a lane it lost is full.
_CLAIM = _COMMON + """
local id = ARGV[4]
for k = 5, #ARGV, 2 do
  local lane = ARGV[k]
  if not redis.call('zscore', held_key(lane), id) and not has_room(lane, tonumber(ARGV[k + 1])) then
    return 0
  end
end
for k = 5, #ARGV, 2 do hold_in(ARGV[k], id, now + hold) end
return 1
"""

# A job whose claim failed goes back to the head of the first full lane it lost (with
# its record), keeping the gates before it; or, if there is room by now, takes it and
# may run after all (1). ARGV: prefix, hold, direct, id, record.
_HOLD_BACK = _COMMON + """
local id = ARGV[4]
local rec = cjson.decode(ARGV[5])
for j, gate in ipairs(rec['g']) do
  local lane, cap = gate[1], tonumber(gate[2])
  if not redis.call('zscore', held_key(lane), id) and not has_room(lane, cap) then
    rec['i'] = j
    redis.call('hset', jobs, id, cjson.encode(rec))
    redis.call('lpush', wait_key(lane), id)
    return 0
  end
  hold_in(lane, id, now + hold)
end
return 1
"""

# Holds kept for longer (a retry's wait): ARGV: prefix, hold, direct, id, lanes...
_EXTEND = _COMMON + """
for k = 5, #ARGV do
  if redis.call('zscore', held_key(ARGV[k]), ARGV[4]) then hold_in(ARGV[k], ARGV[4], now + hold) end
end
return 1
"""

# Lanes whose holds lapsed admit their next jobs; admitted jobs not confirmed published
# within ARGV[4] ms are handed out again. ARGV: prefix, hold, direct, stale, limit.
# The admitted jobs are on their queues: forget those still moving (one that a copy's
# admission took out of `moving` meanwhile may be waiting in a lane again, its record
# under the same id: kept). KEYS: moving, jobs; ARGV: ids.
_PUBLISHED = """
for _, id in ipairs(ARGV) do
  if redis.call('zrem', KEYS[1], id) == 1 then redis.call('hdel', KEYS[2], id) end
end
"""

_SWEEP = _COMMON + """
local out = {}
local lanes = redis.call('zrangebyscore', expiring, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, lane in ipairs(lanes) do
  local cap = tonumber(redis.call('hget', caps, lane) or '1')
  promote(lane, cap, out)
  local first = redis.call('zrange', held_key(lane), 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('zadd', expiring, first[2], lane)
  else
    redis.call('zrem', expiring, lane)
    if redis.call('llen', wait_key(lane)) == 0 then redis.call('hdel', caps, lane) end
  end
end
local stale = redis.call('zrangebyscore', moving, '-inf', now - tonumber(ARGV[4]),
                         'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(stale) do
  local raw = redis.call('hget', jobs, id)
  if raw then
    hand_out(id, cjson.decode(raw), out)
  else
    redis.call('zrem', moving, id)
  end
end
return out
"""

#: Most lanes (and stale moving jobs) one sweep looks at.
SWEEP_LIMIT = 100
#: An admitted job not confirmed published after this long is handed out again (ms).
DEFAULT_STALE_MS = 30_000
#: What `admit` says of the job: it waits in a lane; it is through (publish it); it is
#: through and already on its queue (`Lanes.publish_to`).
WAITING, THROUGH, PUBLISHED = 0, 1, 2


@dataclass(frozen=True)
class BrokerQueues:
    """The Redis broker's queues, when they live in the lanes' own Redis (same server,
    same database): the lanes' scripts then publish what they admit themselves, in the
    round trip that admits it, as the broker's enqueue would (`switchyard.brokers.
    redis_broker`: a body under its Redis id, the id on its queue's list or on its
    priority's, the queue's doorbell rung, trimmed to `doorbell_cap` tokens and kept
    `doorbell_ttl` ms)."""

    namespace: str
    doorbell_cap: int
    doorbell_ttl: int
    #: The highest priority (a priority's own list above 0).
    top_priority: int

    def spec(self) -> str:
        return json.dumps({"ns": self.namespace, "cap": self.doorbell_cap,
                           "ttl": self.doorbell_ttl, "top": self.top_priority,
                           "pk": PRIORITY})


@dataclass(frozen=True)
class Admitted:
    """A job a lane let through: publish `body` on `queue`, then confirm (`published`)."""

    message_id: str
    queue: str
    body: bytes


def _admitted(flat: Sequence[Any]) -> list[Admitted]:
    return [Admitted(_text(flat[i]), _text(flat[i + 1]), _bytes(flat[i + 2]))
            for i in range(0, len(flat) - 2, 3)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class Lanes:
    """Admit, claim, release and sweep jobs through their gates (see the module doc)."""

    def __init__(self, client: redis.Redis, *, prefix: str, hold_ms: int,
                 stale_ms: int = DEFAULT_STALE_MS, buffer: WriteBuffer | None = None) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        #: Where `published` confirmations go, written with the next flush (None: at once).
        self.buffer = buffer
        self.prefix = prefix
        self.hold_ms = hold_ms
        self.stale_ms = stale_ms
        #: The broker's queues the scripts publish to themselves ('' : none; the caller
        #: publishes what they return, then confirms with `published`).
        self.direct = ""
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)
        self._claim = client.register_script(_CLAIM)
        self._hold_back = client.register_script(_HOLD_BACK)
        self._extend = client.register_script(_EXTEND)
        self._sweep = client.register_script(_SWEEP)
        self._published = client.register_script(_PUBLISHED)

    def publish_to(self, queues: BrokerQueues | None) -> None:
        """Publish admitted jobs onto `queues` from the scripts themselves (the broker's
        queues are in this Redis), or not (None)."""
        self.direct = queues.spec() if queues is not None else ""

    def _args(self, hold_ms: int | None, *rest: Any) -> list[Any]:
        return [self.prefix, hold_ms or self.hold_ms, self.direct, *rest]

    def _record(self, queue: str, body: bytes, gates: Sequence[Gate],
                options: Mapping[str, Any] | None) -> str:
        """A waiting job's record: its queue, body and gates, and, from its `options`,
        the broker's id for it and its priority, which a script publishing it here
        reads without decoding the body."""
        record: dict[str, Any] = {"q": queue, "b": body.decode(),
                                  "g": [list(g) for g in gates], "i": 0}
        if options is not None:
            redis_id = options.get("redis_message_id")
            if isinstance(redis_id, str):
                record["r"], record["p"] = redis_id, priority_of(options)
        return json.dumps(record)

    def admit(self, message_id: str, queue: str, body: bytes, gates: Sequence[Gate], *,
              hold_ms: int | None = None, options: Mapping[str, Any] | None = None
              ) -> tuple[int, list[Admitted]]:
        """Pass the job through its gates: (WAITING, THROUGH or PUBLISHED, other jobs
        this admitted that the caller publishes); `options`: its message's."""
        reply = self._admit(args=self._args(hold_ms, message_id,
                                            self._record(queue, body, gates, options)))
        return int(reply[0]), _admitted(reply[1:])

    def admit_many(self, jobs: Sequence[LaneJob]) -> list[tuple[int, list[Admitted]]]:
        """`admit` for each (message id, queue, body, gates, hold ms, options), in order,
        in one round trip."""
        if not jobs:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for message_id, queue, body, gates, hold_ms, options in jobs:
                queue_script(pipe, self._admit, [], self._args(
                    hold_ms, message_id, self._record(queue, body, gates, options)))
            replies = execute_loading(pipe)
        return [(int(reply[0]), _admitted(reply[1:])) for reply in replies]

    def claim(self, message_id: str, gates: Sequence[Gate], *,
              hold_ms: int | None = None) -> bool:
        """A job about to run keeps its gates (False: a lane it lost is full; see
        `hold_back`)."""
        args = self._args(hold_ms, message_id)
        for lane, capacity, _ in gates:
            args += [lane, capacity]
        return bool(int(self._claim(args=args)))

    def hold_back(self, message_id: str, queue: str, body: bytes, gates: Sequence[Gate], *,
                  hold_ms: int | None = None, options: Mapping[str, Any] | None = None) -> bool:
        """A job that failed its claim waits at the head of the lane it lost; True if
        there was room by now after all (it holds its gates and may run)."""
        return bool(int(self._hold_back(args=self._args(
            hold_ms, message_id, self._record(queue, body, gates, options)))))

    def release(self, message_id: str, gates: Sequence[Gate]) -> list[Admitted]:
        """Let go of `gates`; the jobs that admitted and the caller publishes (then
        `published`)."""
        if not gates:
            return []
        return _admitted(self._release(args=self._release_args(message_id, gates)))

    def queue_release(self, pipe: Any, message_id: str, gates: Sequence[Gate]) -> None:
        """`release` queued on `pipe` (run with `execute_loading`); its reply, given to
        `admitted`, says what to publish."""
        queue_script(pipe, self._release, [], self._release_args(message_id, gates))

    def _release_args(self, message_id: str, gates: Sequence[Gate]) -> list[Any]:
        args = self._args(None, message_id)
        for lane, capacity, _ in gates:
            args += [lane, capacity]
        return args

    @staticmethod
    def admitted(reply: Sequence[Any]) -> list[Admitted]:
        return _admitted(reply)

    def extend(self, message_id: str, lanes: Sequence[str], hold_ms: int) -> None:
        """Keep the holds on `lanes` for `hold_ms` from now (a retry waiting its turn)."""
        if lanes:
            self._extend(args=self._args(hold_ms, message_id, *lanes))

    def published(self, message_ids: Sequence[str]) -> None:
        """The admitted jobs are on their broker queues: forget their bodies, with the
        buffer's next flush (until then, well within `stale_ms`, the sweep leaves them)."""
        if not message_ids:
            return
        keys = [f"{self.prefix}:lanes:moving", f"{self.prefix}:lanes:jobs"]
        ids = list(message_ids)

        def write(pipe: Any) -> None:
            queue_script(pipe, self._published, keys, ids)

        if self.buffer is not None:
            self.buffer.add(write)
            return
        pipe = self.client.pipeline(transaction=False)
        write(pipe)
        execute_loading(pipe)

    def sweep(self) -> list[Admitted]:
        """Admit what lapsed holds freed, and hand out again admitted jobs whose
        publisher did not confirm in time; cost: the lanes due, not the jobs waiting."""
        return _admitted(self._sweep(args=self._args(None, self.stale_ms, SWEEP_LIMIT)))

    # Reading, for people: the API, the CLI, the UI.

    def waiting(self, lane: str, start: int = 0, stop: int = -1) -> list[str]:
        """The ids waiting in `lane`, first to be admitted first."""
        return [_text(i) for i in self.client.lrange(self._key(lane, "wait"), start, stop)]

    def holders(self, lane: str) -> list[str]:
        return [_text(i) for i in self.client.zrange(self._key(lane, "held"), 0, -1)]

    def depth(self, lane: str) -> int:
        return int(self.client.llen(self._key(lane, "wait")))

    def _key(self, lane: str, part: str) -> str:
        return f"{self.prefix}:lanes:{lane}:{part}"
