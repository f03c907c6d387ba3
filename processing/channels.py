"""Channel join and leave (seed 000): the user account joins, the SourceChannel follows.

A join marks the SourceChannel active with what Telegram says of the channel (id,
title, username, participants); a join that fails for good marks it failed with the
reason. A FLOOD_WAIT (`RateLimited`) leaves it pending: the job runs again after the
wait. A leave deactivates it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from integrations.telegram_gateway import ChannelInfo, JoinPending, TelegramGateway
from store import channels
from store.db import Database
from store.models import SourceChannel
from switchyard.base.errors import JobError, PermanentError, RateLimited

#: A public username: 4-32 letters, digits and underscores, starting with a letter.
USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{3,31}$")
#: Private invite links: t.me/+HASH or t.me/joinchat/HASH.
INVITE = re.compile(r"^(?:https?://)?(?:t|telegram)\.me/(?:\+|joinchat/)([A-Za-z0-9_-]+)/?$")
PUBLIC_LINK = re.compile(r"^(?:https?://)?(?:t|telegram)\.me/([A-Za-z0-9_]+)/?$")


def normalize(username: str) -> str:
    """`@name`, `t.me/name` and `name` all become `name`; invite links stay as they are."""
    text = username.strip()
    if INVITE.match(text):
        return text
    link = PUBLIC_LINK.match(text)
    name = link.group(1) if link else text.removeprefix("@")
    if not USERNAME.match(name):
        raise PermanentError(f"{username[:64]!r} is not a Telegram username or invite link",
                             code="invalid_username")
    return name


def find_or_create(db: Database, username: str,
                   enqueue: Callable[[str, str], str]) -> SourceChannel:
    """The SourceChannel for `username`, created pending with its join enqueued if new.

    `enqueue(channel_id, username)` sends the join and gives its message id. The channel
    is committed first (a worker may take the job at once), and if the send fails the
    channel is marked failed with that reason, so the next call enqueues it again.
    """
    name = normalize(username)
    with db.session() as session:
        channel, created = channels.find_or_create(session, name)
        if not (created or channel.status in (channels.FAILED, channels.LEFT)):
            return channel
        channel.status, channel.last_error = channels.PENDING, None
    try:
        job_id = enqueue(channel.id, name)
    except Exception as error:
        with db.session() as session:
            found = channels.get(session, channel.id)
            if found is not None:
                channels.mark_failed(found, f"could not enqueue the join: {error}")
        raise
    with db.session() as session:
        found = channels.get(session, channel.id)
        assert found is not None
        found.join_job_id = job_id
        return found


def join(db: Database, gateway: TelegramGateway, channel_id: str, username: str) -> dict[str, Any]:
    """Join the channel of SourceChannel `channel_id`; the job's result is its ChannelInfo."""
    with db.session() as session:
        if channels.get(session, channel_id) is None:
            raise PermanentError(f"no SourceChannel {channel_id}", code="unknown_channel")
    try:
        joined = _join(gateway, normalize(username))
    except RateLimited:
        raise  # FLOOD_WAIT: still pending, the job runs again after the wait
    except JobError as error:
        _failed(db, channel_id, str(error))
        raise
    if isinstance(joined, JoinPending):
        return joined.as_dict()
    with db.session() as session:
        channel = channels.get(session, channel_id)
        assert channel is not None
        channels.mark_joined(channel, joined.as_dict())
    return joined.as_dict()


def _join(gateway: TelegramGateway, target: str) -> ChannelInfo | JoinPending:
    invite = INVITE.match(target)
    if invite:
        return gateway.join_invite(invite.group(1))
    return gateway.join_public(target)


def _failed(db: Database, channel_id: str, reason: str) -> None:
    with db.session() as session:
        channel = channels.get(session, channel_id)
        if channel is not None:
            channels.mark_failed(channel, reason)


def leave(db: Database, gateway: TelegramGateway, telegram_id: int) -> dict[str, Any]:
    """Leave the channel; its SourceChannel (if any) becomes inactive."""
    gateway.leave(telegram_id)
    with db.session() as session:
        channel = channels.by_telegram_id(session, telegram_id)
        if channel is not None:
            channels.mark_left(channel)
    return {"telegram_id": telegram_id, "left": True,
            "channel_id": channel.id if channel is not None else None}
