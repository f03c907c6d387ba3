"""The command registry: one module per command, each exporting `COMMAND`.

A command name nobody registered is answered by `UNKNOWN`, privately.
"""

from __future__ import annotations

from processing.discord.commands import profile, roles, verify
from processing.discord.commands.base import Command
from processing.discord.services import Interaction, Reply, Services

#: Every command module, in the order their names are registered.
MODULES = (verify, profile, roles)


def _unknown(services: Services, interaction: Interaction) -> Reply:
    return Reply(f"I do not know the command /{interaction.command[:32]}.", "unknown_command")


UNKNOWN = Command(("",), _unknown, ephemeral=True, limited=False)
REGISTRY: dict[str, Command] = {name: module.COMMAND for module in MODULES
                                for name in module.COMMAND.names}


def find(name: str) -> Command:
    return REGISTRY.get(name, UNKNOWN)
