"""Users, listings and subscriptions, as far as the bot operations need them (seed 001).

What entitles a subscriber to an invite (`not_entitled`): an active subscription; an
expired one only for a newer order (a renewal: another `orderId`, or, where either
order is unknown, an invite sent after the removal that closed it). A refund is final:
no invite reaches a refunded subscription, and nothing turns it active again (a new
purchase is a new subscription).
"""

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


def not_entitled(sub: Subscription | None, *, order_id: str | None,
                 sent_at: datetime.datetime) -> str | None:
    """Why an invite for `order_id`, sent at `sent_at`, must not go out (see the module
    doc); None when the subscription entitles the user to it."""
    if sub is None or sub.status == ACTIVE:
        return None
    if sub.status == EXPIRED and _renews(sub, order_id, sent_at):
        return None
    return f"subscription {sub.status}"


def _renews(sub: Subscription, order_id: str | None, sent_at: datetime.datetime) -> bool:
    """Whether the invite is for a newer order than the one that expired."""
    if order_id and sub.order_id:
        return order_id != sub.order_id
    return sub.removed_at is not None and sent_at > sub.removed_at


def reusable_link(sub: Subscription, order_id: str | None, *,
                  valid_for: datetime.timedelta) -> tuple[str, datetime.datetime] | None:
    """The stored link and its expiry, if it was made for this order and stays valid
    `valid_for` longer; a renewal gets a new one (the old one may be used up)."""
    same_order = not order_id or not sub.order_id or order_id == sub.order_id
    if (sub.invite_link is None or sub.invite_expires_at is None or not same_order
            or sub.invite_expires_at <= utcnow() + valid_for):
        return None
    return sub.invite_link, sub.invite_expires_at


def record_invite(sub: Subscription, *, link: str,
                  expires_at: datetime.datetime, order_id: str | None) -> None:
    """Keep the link on the subscription, active again after an expiry (a renewal), never
    after a refund (the caller checked `not_entitled` first)."""
    sub.invite_link = link
    sub.invite_expires_at = expires_at
    sub.invited_at = utcnow()
    if sub.status != REFUNDED:
        sub.status = ACTIVE
    if order_id:
        sub.order_id = order_id


def record_removal(sub: Subscription, reason: str, *, sent_at: datetime.datetime) -> None:
    """Close the subscription: `removed_at` is when the removal was sent (the operations'
    order, which an invite is compared with) and its link is forgotten; a refund stays
    as it was recorded, whatever removal comes after it."""
    sub.invite_link = sub.invite_expires_at = None
    if sub.status != REFUNDED:
        sub.status = REMOVAL_STATUS[reason]
    if sub.removal_reason != "refund":
        sub.removed_at, sub.removal_reason = sent_at, reason


def record_verification(item: Listing, *, verified: bool,
                        permissions: dict[str, Any], error: str | None) -> None:
    item.bot_verified = verified
    item.bot_permissions = permissions
    item.verification_error = error
    item.verified_at = utcnow()
