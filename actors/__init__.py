"""Switchyard's job families, one module per family, and the one list that registers them.

Importing this package declares nothing on any broker: `switchyard.app.boot()` declares
every job of every module in `FAMILIES` (the entry module `switchyard.entry`, the CLI
and the web process boot with it). A new family is a module here plus one line below.
"""

from actors import bot, channels, cleanup, discord, email, media, notifications, ping

#: Every job family, in the order they are declared.
FAMILIES = (ping, channels, bot, email, notifications, media, cleanup, discord)
