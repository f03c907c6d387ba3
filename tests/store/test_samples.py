"""Development samples: a channel, a subscriber linked to Telegram, their subscription
and its listing, made once however often `seed` runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from actors.bot import InviteUser, RemoveUser
from actors.channels import JoinChannel
from store import samples
from store.db import Database
from store.models import Listing, SourceChannel, Subscription, User


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


def counts(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
                for model in (SourceChannel, User, Subscription, Listing)}


def test_seed_makes_linked_sample_records(database):
    ids = samples.seed(database)

    with database.session() as session:
        channel = session.get(SourceChannel, ids["source_channel_id"])
        user = session.get(User, ids["user_id"])
        subscription = session.get(Subscription, ids["subscription_id"])
        listing = session.get(Listing, ids["listing_id"])
    assert channel is not None and channel.username == ids["username"]
    assert user is not None and user.telegram_user_id is not None
    assert subscription is not None and subscription.user_id == user.id
    assert listing is not None and subscription.listing_id == listing.id
    assert subscription.channel_id == listing.channel_id == ids["telegram_channel_id"]
    assert counts(database) == {"SourceChannel": 1, "User": 1, "Subscription": 1, "Listing": 1}


def test_seeding_again_creates_nothing_new(database):
    first = samples.seed(database)

    again = samples.seed(database)

    assert again == first
    assert counts(database) == {"SourceChannel": 1, "User": 1, "Subscription": 1, "Listing": 1}


def test_the_tour_commands_are_valid_payloads_for_the_samples(database):
    ids = samples.seed(database)

    commands = samples.send_commands(ids)

    words = [shlex.split(command) for command in commands]
    assert [w[:4] for w in words] == [["uv", "run", "switchyard", "send"]] * 3
    assert [w[4] for w in words] == ["join_channel", "invite_user", "remove_user"]
    payloads = [json.loads(w[5]) for w in words]
    join = JoinChannel.model_validate(payloads[0])
    invite = InviteUser.model_validate(payloads[1])
    remove = RemoveUser.model_validate(payloads[2])
    assert join.channel_id == ids["source_channel_id"]
    assert invite.user_id == remove.user_id == ids["user_id"]
    assert invite.subscription_id == remove.subscription_id == ids["subscription_id"]
    assert invite.channel_id == remove.channel_id == ids["telegram_channel_id"]
