"""Cleanup on queue `cleanup` (seed 003): six periodic jobs, one at a time across every
worker. The clock (`switchyard/clock.py`, table in `schedules.py`) enqueues them; the
bridge routes `cleanup.<type>` here by the body's `type`.

Each job reads its thresholds from the settings and hands them to `processing.cleanup`,
which works in bounded, committed batches and stops at CLEANUP_RUN_BUDGET_MS with
`more` in its result (the next run goes on from there).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from processing import cleanup
from switchyard.jobs import Context, Payload, job

QUEUE = "cleanup"
#: One at a time across every worker (seed 003); the time limit is a backstop, since a
#: run stops itself after CLEANUP_RUN_BUDGET_MS.
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "concurrency": 1, "concurrency_key": QUEUE,
                           "max_retries": 3, "time_limit": 60 * 60_000}


class CleanupStories(Payload):
    type: Literal["stories"] | None = None


class CleanupSessions(Payload):
    type: Literal["sessions"] | None = None


class CleanupMessages(Payload):
    type: Literal["messages"] | None = None


class CleanupTempFiles(Payload):
    type: Literal["temp_files"] | None = None


class CleanupPrekeys(Payload):
    type: Literal["prekeys"] | None = None


class CleanupOrphanedMedia(Payload):
    type: Literal["orphaned_media"] | None = None


class Limits(TypedDict):
    batch: int
    budget_ms: int


def _limits(ctx: Context) -> Limits:
    return {"batch": ctx.settings.cleanup_batch_size,
            "budget_ms": ctx.settings.cleanup_run_budget_ms}


@job(CleanupStories, actor_name="cleanup_stories", **OPTIONS)
def cleanup_stories(ctx: Context, payload: CleanupStories) -> dict[str, Any]:
    return cleanup.expired_stories(ctx.database, ctx.providers.storage(),
                                   ttl_ms=ctx.settings.cleanup_story_ttl_ms, **_limits(ctx))


@job(CleanupSessions, actor_name="cleanup_sessions", **OPTIONS)
def cleanup_sessions(ctx: Context, payload: CleanupSessions) -> dict[str, Any]:
    return cleanup.idle_sessions(ctx.database, idle_ms=ctx.settings.cleanup_session_idle_ms,
                                 **_limits(ctx))


@job(CleanupMessages, actor_name="cleanup_messages", **OPTIONS)
def cleanup_messages(ctx: Context, payload: CleanupMessages) -> dict[str, Any]:
    return cleanup.old_message_media(ctx.database, ctx.providers.storage(),
                                     ttl_ms=ctx.settings.cleanup_message_media_ttl_ms,
                                     **_limits(ctx))


@job(CleanupTempFiles, actor_name="cleanup_temp_files", **OPTIONS)
def cleanup_temp_files(ctx: Context, payload: CleanupTempFiles) -> dict[str, Any]:
    return cleanup.old_temp_files(ctx.database, ctx.providers.storage(),
                                  ttl_ms=ctx.settings.cleanup_temp_file_ttl_ms, **_limits(ctx))


@job(CleanupPrekeys, actor_name="cleanup_prekeys", **OPTIONS)
def cleanup_prekeys(ctx: Context, payload: CleanupPrekeys) -> dict[str, Any]:
    return cleanup.rotate_prekeys(ctx.database,
                                  used_ttl_ms=ctx.settings.cleanup_used_prekey_ttl_ms,
                                  minimum=ctx.settings.cleanup_prekey_minimum, **_limits(ctx))


@job(CleanupOrphanedMedia, actor_name="cleanup_orphaned_media", **OPTIONS)
def cleanup_orphaned_media(ctx: Context, payload: CleanupOrphanedMedia) -> dict[str, Any]:
    return cleanup.orphaned_media(ctx.database, ctx.providers.storage(),
                                  grace_ms=ctx.settings.cleanup_orphan_grace_ms,
                                  prefix=ctx.settings.cleanup_orphan_prefix, **_limits(ctx))
