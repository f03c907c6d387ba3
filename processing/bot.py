"""Bot operations (seed 001): invite a subscriber, remove one, verify the bot's rights.

- invite: a single-use invite link (member_limit 1, expiring), kept on the
  subscription and sent to the user in a private message. A retry reuses a link that
  is still valid instead of making another one. Checked when it runs, not when it was
  sent: an invite the subscription no longer entitles (refunded, or expired and not
  renewed by a newer order: `store.subscriptions.not_entitled`) makes no link and sends
  nothing, and ends with the reason in its result (`{"skipped": "subscription
  refunded"}`).
- remove: ban then unban with `only_if_banned`, so the user is out but may come back
  through a new link later; the subscription records why (expiry or refund) and when
  the removal was sent, and forgets its link.
- verify: the bot must be an administrator with `can_invite_users` and
  `can_restrict_members`; the answer, yes or no with what is missing, is stored on the
  listing. A chat the bot cannot see is a "no", not a failed job.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from integrations.telegram_bot import BotApi
from store import subscriptions
from store.db import Database
from store.models import Subscription, utcnow
from switchyard.base.errors import PermanentError

logger = logging.getLogger("switchyard.bot")

#: A stored invite link is reused only if it stays valid at least this long.
REUSE_MARGIN = datetime.timedelta(minutes=5)
#: The rights the bot needs in a listing's channel.
REQUIRED_RIGHTS = ("can_invite_users", "can_restrict_members")


def _telegram_user(db: Database, user_id: str) -> int:
    with db.session() as session:
        user = subscriptions.user(session, user_id)
        if user is None or user.telegram_user_id is None:
            raise PermanentError(f"user {user_id} has no linked Telegram account",
                                 code="user_not_found")
        return user.telegram_user_id


def invite_user(db: Database, bot: BotApi, *, user_id: str, channel_id: int,
                subscription_id: str, order_id: str | None, sent_at: datetime.datetime,
                link_ttl: datetime.timedelta) -> dict[str, Any]:
    """`sent_at`: when the invite was sent (its job's first enqueue, kept across retries
    and delays), which orders it against the subscription's removal."""
    telegram_user = _telegram_user(db, user_id)
    ensure = functools.partial(subscriptions.ensure_subscription, subscription_id=subscription_id,
                               user_id=user_id, channel_id=channel_id, order_id=order_id)
    with db.session() as session:
        sub = ensure(session)
        why = subscriptions.not_entitled(sub, order_id=order_id, sent_at=sent_at)
        stored = None if why else subscriptions.reusable_link(sub, order_id,
                                                               valid_for=REUSE_MARGIN)
    if stored is None and why is None:
        expires = utcnow() + link_ttl
        created = bot.create_invite_link(channel_id, expire_date=int(expires.timestamp()),
                                         member_limit=1, name=f"sub {subscription_id}"[:32])
        stored = (str(created["invite_link"]), expires)
        why = _keep_link(db, ensure, stored, order_id=order_id, sent_at=sent_at)
    if why is not None or stored is None:
        return _skipped(subscription_id, why or "no link")
    link, expires = stored
    notified = _send_link(bot, telegram_user, link, expires)
    # The link itself stays out of the result: it is a pass into a paid channel.
    return {"subscriptionId": subscription_id, "inviteCreated": True,
            "expiresAt": expires.isoformat(), "notified": notified}


def _keep_link(db: Database, ensure: Callable[[Session], Subscription],
               link: tuple[str, datetime.datetime], *, order_id: str | None,
               sent_at: datetime.datetime) -> str | None:
    """Keep a new link on the subscription, checked again first: a refund may have landed
    while it was made (then the link is never sent, and expires unused)."""
    with db.session() as session:
        sub = ensure(session)
        why = subscriptions.not_entitled(sub, order_id=order_id, sent_at=sent_at)
        if why is None:
            subscriptions.record_invite(sub, link=link[0], expires_at=link[1],
                                        order_id=order_id)
    return why


def _skipped(subscription_id: str, why: str) -> dict[str, Any]:
    logger.info("Invite for subscription %s not sent: %s.", subscription_id, why)
    return {"subscriptionId": subscription_id, "skipped": why, "inviteCreated": False,
            "notified": False}


def _send_link(bot: BotApi, telegram_user: int, link: str, expires: datetime.datetime) -> bool:
    """Message the user their link; a user who never started the bot cannot be told."""
    text = (f"Your subscription is active. Join the channel with this link "
            f"(single use, valid until {expires:%Y-%m-%d %H:%M} UTC):\n{link}")
    try:
        bot.send_message(telegram_user, text)
    except PermanentError as error:
        if error.status in (400, 403):  # blocked the bot, never started it, no such chat
            return False
        raise
    return True


def remove_user(db: Database, bot: BotApi, *, user_id: str, channel_id: int,
                subscription_id: str, reason: str,
                sent_at: datetime.datetime) -> dict[str, Any]:
    """`sent_at`: when the removal was sent; an invite sent before it is superseded."""
    telegram_user = _telegram_user(db, user_id)
    bot.remove_member(channel_id, telegram_user)
    with db.session() as session:  # recorded even before any invite ran: one may follow
        sub = subscriptions.ensure_subscription(session, subscription_id, user_id=user_id,
                                                channel_id=channel_id)
        subscriptions.record_removal(sub, reason, sent_at=sent_at)
    return {"subscriptionId": subscription_id, "removed": True, "reason": reason}


def verify_permissions(db: Database, bot: BotApi, *, channel_id: int,
                       listing_id: str | None) -> dict[str, Any]:
    answer = check_rights(bot, channel_id)
    if listing_id is not None:
        with db.session() as session:
            item = subscriptions.ensure_listing(session, listing_id, channel_id=channel_id)
            subscriptions.record_verification(
                item, verified=answer["verified"],
                permissions={k: answer[k] for k in ("status", *REQUIRED_RIGHTS)},
                error=answer["error"])
    return {"channelId": channel_id, "listingId": listing_id, **answer}


def check_rights(bot: BotApi, channel_id: int) -> dict[str, Any]:
    """Whether the bot can invite and remove members in the channel, and what it lacks."""
    try:
        member = bot.get_chat_member(channel_id, bot.bot_id)
    except PermanentError as error:
        if error.status not in (400, 403):  # 401: our token is wrong, not the channel
            raise
        return {"verified": False, "status": None, "can_invite_users": False,
                "can_restrict_members": False, "missing": ["membership", *REQUIRED_RIGHTS],
                "error": error.message}
    status = member.get("status")
    owner = status == "creator"
    rights = {name: owner or bool(member.get(name)) for name in REQUIRED_RIGHTS}
    missing = [] if status in ("administrator", "creator") else ["administrator"]
    missing += [name for name, granted in rights.items() if not granted]
    return {"verified": not missing, "status": status, **rights, "missing": missing,
            "error": None if not missing else f"the bot lacks: {', '.join(missing)}"}
