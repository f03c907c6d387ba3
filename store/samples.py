"""Sample records for development, so the tour can run `join_channel`, `invite_user`
and `remove_user` on a fresh `make dev`: those jobs need a SourceChannel, a user linked
to a Telegram account, a subscription and its listing, which only other services make.

`seed` makes them once (fixed ids and a fixed username: a second run finds them and
creates nothing), and `send_commands` prints the jobs' commands with those ids. On the
development defaults every Telegram call goes to `var/outbox/telegram`.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import channels
from store.db import Database
from store.models import Listing, Subscription, User

#: The sample public channel's username (the SourceChannel's id is made at first seed).
USERNAME = "switchyard_sample"
#: The sample channel's Telegram chat id, as the bot operations address it.
TELEGRAM_CHANNEL_ID = -1001000000001
USER_ID, TELEGRAM_USER_ID = "sample-user", 100000001
LISTING_ID, SUBSCRIPTION_ID, ORDER_ID = "sample-listing", "sample-subscription", "sample-order"


def _ensure(session: Session, row: User | Listing | Subscription) -> None:
    """Add `row` unless a row with its primary key exists (made elsewhere just now too)."""
    if session.get(type(row), row.id) is not None:
        return
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        pass  # another seed made it first


def seed(database: Database) -> dict[str, Any]:
    """Make the sample records where missing; their ids (the same on every run)."""
    with database.session() as session:
        channel, _ = channels.find_or_create(session, USERNAME)
        _ensure(session, User(id=USER_ID, telegram_user_id=TELEGRAM_USER_ID,
                              name="Sam Sample", email="sam@example.com"))
        _ensure(session, Listing(id=LISTING_ID, channel_id=TELEGRAM_CHANNEL_ID,
                                 title="Sample paid channel"))
        _ensure(session, Subscription(id=SUBSCRIPTION_ID, user_id=USER_ID, listing_id=LISTING_ID,
                                      channel_id=TELEGRAM_CHANNEL_ID, order_id=ORDER_ID,
                                      status="active"))
        channel_id = channel.id
    return {"source_channel_id": channel_id, "username": USERNAME, "user_id": USER_ID,
            "telegram_user_id": TELEGRAM_USER_ID, "listing_id": LISTING_ID,
            "subscription_id": SUBSCRIPTION_ID, "order_id": ORDER_ID,
            "telegram_channel_id": TELEGRAM_CHANNEL_ID}


def _command(actor: str, payload: dict[str, Any]) -> str:
    return f"uv run switchyard send {actor} '{json.dumps(payload)}' --wait"


def send_commands(ids: dict[str, Any]) -> list[str]:
    """Ready-to-paste `switchyard send` commands for the channel and bot jobs on `ids`."""
    member = {"userId": ids["user_id"], "channelId": ids["telegram_channel_id"],
              "subscriptionId": ids["subscription_id"]}
    return [
        _command("join_channel", {"channelId": ids["source_channel_id"],
                                  "username": ids["username"]}),
        _command("invite_user", {**member, "orderId": ids["order_id"]}),
        _command("remove_user", {**member, "reason": "expiry"}),
    ]
