"""Switchyard's actors, one module per job family.

Importing this package boots the process (settings, broker, middleware) and then
declares every actor on that broker: it is what `dramatiq actors` and the clock load.
"""

from broker import boot

boot()

from actors import bot, channels, email, notifications, ping  # noqa: E402

__all__ = ["bot", "channels", "email", "notifications", "ping"]
