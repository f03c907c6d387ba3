"""Users, listings and subscriptions, as far as the bot operations need them (seed 001)."""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy.orm import Session

from store.models import Listing, Subscription, User, utcnow

#: A subscription's states.
ACTIVE, EXPIRED, REFUNDED = "active", "expired", "refunded"
#: Why a user is removed from a channel, and the state it leaves the subscription in.
REMOVAL_STATUS = {"expiry": EXPIRED, "refund": REFUNDED}


def user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def subscription(session: Session, subscription_id: str) -> Subscription | None:
    return session.get(Subscription, subscription_id)


def listing(session: Session, listing_id: str) -> Listing | None:
    return session.get(Listing, listing_id)


def ensure_subscription(session: Session, subscription_id: str, *, user_id: str,
                        channel_id: int, order_id: str | None = None) -> Subscription:
    """The subscription, created active if this is the first the workers hear of it."""
    sub = session.get(Subscription, subscription_id)
    if sub is None:
        sub = Subscription(id=subscription_id, user_id=user_id, channel_id=channel_id,
                           order_id=order_id, status=ACTIVE)
        session.add(sub)
        session.flush()
    return sub


def ensure_listing(session: Session, listing_id: str, *, channel_id: int) -> Listing:
    """The listing, created if the check runs before the listing exists (seed 001)."""
    item = session.get(Listing, listing_id)
    if item is None:
        item = Listing(id=listing_id, channel_id=channel_id)
        session.add(item)
        session.flush()
    return item


def record_invite(sub: Subscription, *, link: str,
                  expires_at: datetime.datetime, order_id: str | None) -> None:
    sub.invite_link = link
    sub.invite_expires_at = expires_at
    sub.invited_at = utcnow()
    sub.status = ACTIVE
    if order_id:
        sub.order_id = order_id


def record_removal(sub: Subscription, reason: str) -> None:
    sub.removed_at = utcnow()
    sub.removal_reason = reason
    sub.status = REMOVAL_STATUS[reason]


def record_verification(item: Listing, *, verified: bool,
                        permissions: dict[str, Any], error: str | None) -> None:
    item.bot_verified = verified
    item.bot_permissions = permissions
    item.verification_error = error
    item.verified_at = utcnow()
