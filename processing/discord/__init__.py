"""Discord interactions and guild events (seed 004), with no broker in sight.

`interactions.handle` defers an interaction inside Discord's 3-second window (counted
from its snowflake), routes it by command name through `commands.REGISTRY` and
answers by editing the original response through the interaction webhook.
`events.handle` runs a guild event once per event id. Both take a `Services`: the
Discord client, the Redis state (`state.discord.StateManager`), the database and the
few numbers the settings give.
"""
