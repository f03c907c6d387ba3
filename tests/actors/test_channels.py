"""Channel join and leave (seed 000), end to end on both databases."""

from __future__ import annotations

import time

import pytest
from dramatiq.results import ResultFailure
from sqlalchemy import func, select

from actors import channels
from actors.channels import find_or_create_channel
from processing import channels as processing
from store import channels as store
from store.models import SourceChannel
from switchyard.base.errors import PermanentError
from tests.actors.conftest import World, unique


def channel_id_of(number: int) -> int:
    """The marked id (-100...) Telegram's Bot API and our ChannelInfo use."""
    return -1_000_000_000_000 - number


def pending_channel(world: World, username: str) -> str:
    with world.db.session() as session:
        channel, created = store.find_or_create(session, username)
        assert created
        return channel.id


def new_public_channel(world: World, participants: int = 1500) -> tuple[int, str]:
    number = int(time.time_ns() % 10**9)
    username = unique("news")
    world.telethon.add_channel(number, f"Channel {username}", username=username,
                               participants=participants)
    return number, username


def test_join_stores_the_channel_info_and_activates_the_channel(world):
    # given a pending SourceChannel for a public channel
    number, username = new_public_channel(world)
    channel_id = pending_channel(world, username)
    # when the join job runs
    message = world.send("join_channel", {"operation": "join", "channelId": channel_id,
                                          "username": f"@{username}"})
    job = world.finished(message.message_id)
    # then its result is the ChannelInfo, in the history and the results backend
    info = {"telegram_id": channel_id_of(number), "title": f"Channel {username}",
            "username": username, "participants": 1500}
    assert job["status"] == "done" and job["result"] == info
    assert world.result(message) == info
    # and the SourceChannel is active with those fields
    with world.db.session() as session:
        channel = store.get(session, channel_id)
        assert channel is not None and channel.is_active and channel.status == "active"
        assert (channel.telegram_id, channel.title, channel.participants) == (
            channel_id_of(number), f"Channel {username}", 1500)


def test_a_failed_join_is_final_at_once_with_its_reason_readable(world):
    # given a channel Telegram says is private
    number, username = new_public_channel(world)
    channel_id = pending_channel(world, username)
    world.telethon.fail("JoinChannelRequest", "ChannelPrivateError")
    # when the join runs
    message = world.send("join_channel", {"channelId": channel_id, "username": username})
    job = world.finished(message.message_id)
    # then it failed after one attempt, no retry, and says why everywhere
    assert job["status"] == "failed" and job["runs"] == 1 and job["retries"] == 0
    assert job["error"]["code"] == "CHANNEL_PRIVATE"
    with pytest.raises(ResultFailure) as caught:
        world.result(message)
    assert "CHANNEL_PRIVATE" in caught.value.orig_exc_msg
    assert world.sy.state.dead_letters.show(message.message_id) is not None
    with world.db.session() as session:
        channel = store.get(session, channel_id)
        assert channel is not None and channel.status == "failed" and not channel.is_active
        assert "CHANNEL_PRIVATE" in (channel.last_error or "")


def test_a_flood_wait_defers_the_join_by_the_servers_wait(world):
    # given Telegram asks the account to wait 2 seconds before joining
    number, username = new_public_channel(world)
    channel_id = pending_channel(world, username)
    world.telethon.fail("JoinChannelRequest", "FloodWaitError", seconds=2)
    # when the join runs
    started = time.monotonic()
    job = world.run("join_channel", {"channelId": channel_id, "username": username})
    # then it ran again after the wait, without spending its only attempt, and joined
    assert job["status"] == "done", job
    assert time.monotonic() - started >= 2
    assert job["retries"] == 0 and job["deferred_ms"] == 2000
    assert job["result"]["telegram_id"] == channel_id_of(number)


def test_a_join_of_an_unknown_username_fails_with_the_reason(world):
    channel_id = pending_channel(world, unique("gone"))
    job = world.run("join_channel", {"channelId": channel_id, "username": unique("gone")})
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["error"] == "PermanentError"


def test_leave_deactivates_the_channel(world):
    # given a joined channel
    number, username = new_public_channel(world)
    channel_id = pending_channel(world, username)
    assert world.run("join_channel", {"channelId": channel_id,
                                      "username": username})["status"] == "done"
    # when the account leaves it
    job = world.run("leave_channel", {"operation": "leave",
                                      "telegramId": channel_id_of(number)})
    # then the channel is inactive, and was left on Telegram
    assert job["status"] == "done" and job["result"]["channel_id"] == channel_id
    with world.db.session() as session:
        channel = store.get(session, channel_id)
        assert channel is not None and channel.status == "left" and not channel.is_active
    assert "LeaveChannelRequest" in world.telethon.calls()


def test_find_or_create_makes_a_pending_channel_and_enqueues_its_join_once(world):
    # given a username nobody asked for yet
    number, username = new_public_channel(world)
    sent: list[str] = []

    def enqueue(channel_id: str, name: str) -> str:
        message = world.send("join_channel", {"operation": "join", "channelId": channel_id,
                                              "username": name})
        sent.append(message.message_id)
        return message.message_id

    # when the API asks for it twice
    channel = processing.find_or_create(world.db, f"https://t.me/{username}", enqueue)
    again = processing.find_or_create(world.db, f"@{username}", enqueue)
    # then one channel came back at once (pending, unless the worker was quicker), one
    # join was enqueued, and it joins
    assert channel.id == again.id and channel.status in ("pending", "active")
    assert len(sent) == 1
    assert world.finished(sent[0])["status"] == "done"
    with world.db.session() as session:
        found = store.get(session, channel.id)
        assert found is not None and found.is_active and found.join_job_id == sent[0]


@pytest.mark.parametrize("bad", ["", "ab", "has space", "x" * 40, "https://example.com/x"])
def test_a_malformed_username_is_refused_before_anything_is_created(world, bad):
    # given the channels there are
    before = channel_rows(world)
    enqueued: list[str] = []

    def enqueue(channel_id: str, username: str) -> str:
        enqueued.append(username)
        return "never"

    # when the API asks for a username that cannot be one
    with pytest.raises(PermanentError, match="is not a Telegram username") as caught:
        processing.find_or_create(world.db, bad, enqueue)
    # then it is refused as a permanent error, with no channel created and no join sent
    assert caught.value.code == "invalid_username"
    assert channel_rows(world) == before and enqueued == []


def channel_rows(world: World) -> int:
    with world.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(SourceChannel)) or 0)


def test_find_or_create_channel_enqueues_the_join_through_the_one_way_in(world):
    # given a public channel nobody asked for yet
    number, username = new_public_channel(world)
    if "join_channel" not in world.sy.jobs:  # the producer's side declares the family
        world.sy.declare([channels])
    # when the API side's producer is asked for it, twice
    channel = find_or_create_channel(world.sy, f"@{username}")
    again = find_or_create_channel(world.sy, f"t.me/{username}")
    # then one channel, one join job on channel-ops, and that job joins it
    assert again.id == channel.id and channel.join_job_id is not None
    assert again.join_job_id == channel.join_job_id
    job = world.finished(channel.join_job_id)
    assert (job["actor"], job["queue"], job["status"]) == ("join_channel", "channel-ops", "done")
    assert job["result"]["telegram_id"] == channel_id_of(number)
    with world.db.session() as session:
        found = store.get(session, channel.id)
        assert found is not None and found.is_active and found.username == username
