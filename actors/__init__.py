"""Switchyard's job families, one module per family, and the list that registers them.

Importing this package imports no family and declares nothing on any broker:
`switchyard.entry.boot()` declares every job of every module in `FAMILIES` (what a
worker, the clock and the web process do). A producer that sends one job (`switchyard
send`) imports only the family that declares it, found in `ACTORS`: a family's module
loads its logic, the database models and its providers' clients, which a send of
another family's job does not need.

A new family is a module here, its name in `FAMILIES`, and its actors in `ACTORS`
(`tests/actors/test_registration.py` says what is missing).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

#: Every job family, in the order they are declared.
FAMILIES = ("ping", "channels", "bot", "email", "notifications", "media", "cleanup", "discord")

#: Which family declares each actor.
ACTORS = {
    "ping": "ping",
    "join_channel": "channels", "leave_channel": "channels",
    "invite_user": "bot", "remove_user": "bot", "verify_permissions": "bot",
    "send_otp": "email", "send_welcome_email": "email", "send_verification_link": "email",
    "send_push": "notifications", "send_email_notification": "notifications",
    "send_sms": "notifications", "send_batch_notifications": "notifications",
    "send_batch_push": "notifications", "record_batch_notifications": "notifications",
    "process_image": "media", "process_video": "media", "process_audio": "media",
    "cleanup_stories": "cleanup", "cleanup_sessions": "cleanup", "cleanup_messages": "cleanup",
    "cleanup_temp_files": "cleanup", "cleanup_prekeys": "cleanup",
    "cleanup_orphaned_media": "cleanup", "cleanup_records": "cleanup",
    "discord_interaction": "discord", "discord_guild_event": "discord",
}


def families(names: Iterable[str] = FAMILIES) -> list[ModuleType]:
    """The family modules of `names` (all of them by default), imported."""
    return [importlib.import_module(f"actors.{name}") for name in names]


def families_of(actor_names: Iterable[str]) -> list[ModuleType]:
    """The family modules that declare `actor_names` (names no family has are left out)."""
    wanted = {ACTORS[name] for name in actor_names if name in ACTORS}
    return families(name for name in FAMILIES if name in wanted)
