"""Cleanup on queue `cleanup` (seed 003): six periodic jobs, one at a time across every
worker, and a seventh for Switchyard's own records (`cleanup_records`: notification
deliveries and the cleanup log, past their retention). The clock (`switchyard/clock.py`,
table in `schedules.py`) enqueues them; the bridge routes the seed's `cleanup.<type>`
here by the body's `type`.

Each job reads its thresholds from the settings and hands them to `processing.cleanup`,
which works in bounded, committed batches and stops at CLEANUP_RUN_BUDGET_MS with
`more` in its result (the next run goes on from there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypedDict

from processing import cleanup
from switchyard.base.errors import Cancelled
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "cleanup"
#: One at a time across every worker (seed 003); the time limit is a backstop, since a
#: run stops itself after CLEANUP_RUN_BUDGET_MS. A run that passes it anyway is
#: dead-lettered, not retried: its batches are committed, and the next scheduled run
#: goes on from there instead of a retry holding the queue's one slot.
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "concurrency": 1, "concurrency_key": QUEUE,
                           "max_retries": 3, "time_limit": 60 * 60_000,
                           "on_time_limit": "dead"}


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


class CleanupRecords(Payload):
    type: Literal["records"] | None = None


class Limits(TypedDict):
    batch: int
    budget_ms: int


def _watched(ctx: Context, run: Callable[..., dict[str, Any]], *args: Any,
             **kwargs: Any) -> dict[str, Any]:
    """`run(*args, **kwargs)`, saying its progress between batches (the share of its time
    budget spent, rows and objects so far) and stopping there if the job was cancelled:
    it then ends `cancelled`, what it committed kept, the rest left to the next run."""

    def between(batch: cleanup.Run) -> bool:
        ctx.progress(min(0.99, batch.elapsed_ms / batch.budget_ms),
                     f"{batch.rows} rows, {batch.objects} objects so far")
        return ctx.cancelled

    token = cleanup.BETWEEN_BATCHES.set(between)
    try:
        result = run(*args, **kwargs)
    finally:
        cleanup.BETWEEN_BATCHES.reset(token)
    if result.get("cancelled"):
        raise Cancelled(f"stopped between batches after {result['rows']} rows")
    return result


def _limits(ctx: Context) -> Limits:
    return {"batch": ctx.settings.cleanup_batch_size,
            "budget_ms": ctx.settings.cleanup_run_budget_ms}


@job(CleanupStories, actor_name="cleanup_stories", **OPTIONS)
def cleanup_stories(ctx: Context, payload: CleanupStories) -> dict[str, Any]:
    return _watched(ctx, cleanup.expired_stories, ctx.database, ctx.providers.storage(),
                    ttl_ms=ctx.settings.cleanup_story_ttl_ms, **_limits(ctx))


@job(CleanupSessions, actor_name="cleanup_sessions", **OPTIONS)
def cleanup_sessions(ctx: Context, payload: CleanupSessions) -> dict[str, Any]:
    return _watched(ctx, cleanup.idle_sessions, ctx.database,
                    idle_ms=ctx.settings.cleanup_session_idle_ms, **_limits(ctx))


@job(CleanupMessages, actor_name="cleanup_messages", **OPTIONS)
def cleanup_messages(ctx: Context, payload: CleanupMessages) -> dict[str, Any]:
    return _watched(ctx, cleanup.old_message_media, ctx.database, ctx.providers.storage(),
                    ttl_ms=ctx.settings.cleanup_message_media_ttl_ms, **_limits(ctx))


@job(CleanupTempFiles, actor_name="cleanup_temp_files", **OPTIONS)
def cleanup_temp_files(ctx: Context, payload: CleanupTempFiles) -> dict[str, Any]:
    return _watched(ctx, cleanup.old_temp_files, ctx.database, ctx.providers.storage(),
                    ttl_ms=ctx.settings.cleanup_temp_file_ttl_ms, **_limits(ctx))


@job(CleanupPrekeys, actor_name="cleanup_prekeys", **OPTIONS)
def cleanup_prekeys(ctx: Context, payload: CleanupPrekeys) -> dict[str, Any]:
    return _watched(ctx, cleanup.rotate_prekeys, ctx.database,
                    used_ttl_ms=ctx.settings.cleanup_used_prekey_ttl_ms,
                    minimum=ctx.settings.cleanup_prekey_minimum, **_limits(ctx))


@job(CleanupOrphanedMedia, actor_name="cleanup_orphaned_media", **OPTIONS)
def cleanup_orphaned_media(ctx: Context, payload: CleanupOrphanedMedia) -> dict[str, Any]:
    return _watched(ctx, cleanup.orphaned_media, ctx.database, ctx.providers.storage(),
                    grace_ms=ctx.settings.cleanup_orphan_grace_ms,
                    prefix=ctx.settings.cleanup_orphan_prefix, **_limits(ctx))


@job(CleanupRecords, actor_name="cleanup_records", **OPTIONS)
def cleanup_records(ctx: Context, payload: CleanupRecords) -> dict[str, Any]:
    retention = {"notification_deliveries": ctx.settings.notification_delivery_retention_ms,
                 "cleanup_runs": ctx.settings.cleanup_run_retention_ms}
    return _watched(ctx, cleanup.old_records, ctx.database, retention_ms=retention, **_limits(ctx))
