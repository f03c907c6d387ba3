"""Media on queue `media` (seed 003): images, video and audio, run by the `media` process.

At most 2 run at once across every worker (the seed's limit; the work is CPU-bound).
Each job downloads the original from storage, transforms it (`processing.media`),
uploads the results under `media/<messageId>/...` and updates the message record
(`processing.media_jobs`), saying its progress between those steps and stopping there
when cancelled. A hostile or broken file is a permanent dead letter with its reason;
storage timeouts and 5xx are retried (backoff 5 s, 10 s, 20 s).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from processing import media_jobs
from processing.media import Limits
from processing.media_jobs import MediaJob, TempFiles
from switchyard.base.errors import Cancelled
from switchyard.base.settings import Settings
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "media"
#: A 30-minute video may take a while to transcode; ffmpeg has its own timeout inside.
#: A run that still passes the time limit is dead-lettered, not retried: the same input
#: would take as long again (and hold one of the 2 slots for another hour).
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "concurrency": 2, "concurrency_key": QUEUE,
                           "time_limit": 60 * 60_000, "on_time_limit": "dead"}
#: The message id names the output keys: one safe path segment.
MESSAGE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class MediaPayload(Payload):
    s3_key: str = Field(min_length=1, max_length=1024)
    user_id: str = Field(min_length=1, max_length=64)
    message_id: str = Field(pattern=MESSAGE_ID)
    original_name: str | None = Field(None, max_length=255)


class ProcessImage(MediaPayload):
    type: Literal["image"] = "image"


class ProcessVideo(MediaPayload):
    type: Literal["video"] = "video"


class ProcessAudio(MediaPayload):
    type: Literal["audio"] = "audio"


def _key(**payload: Any) -> str:
    """One key per message and original: a duplicate is skipped, not processed twice."""
    message_id = payload.get("messageId") or payload.get("message_id")
    return f"{message_id}:{payload.get('s3Key') or payload.get('s3_key')}"


def limits(settings: Settings) -> Limits:
    return Limits(max_bytes=settings.media_max_bytes, max_pixels=settings.media_max_pixels,
                  max_duration_ms=settings.media_max_duration_ms,
                  ffmpeg_timeout_ms=settings.media_ffmpeg_timeout_ms,
                  max_side=settings.media_image_max_side,
                  thumbnail_side=settings.media_thumbnail_side,
                  quality=settings.media_image_quality)


def _run(ctx: Context, payload: MediaPayload, kind: str) -> dict[str, Any]:
    request = MediaJob(kind, payload.s3_key, payload.user_id, payload.message_id,
                       payload.original_name)
    temp = TempFiles(ctx.settings.var_dir / "tmp" / "media", ctx.settings.media_temp_max_age_ms)
    return media_jobs.run(ctx.database, ctx.providers.storage(), request,
                          limits(ctx.settings), temp, step=_step(ctx))


def _step(ctx: Context) -> media_jobs.Step:
    """Between steps: stop if the job was cancelled, else say where it is."""

    def step(fraction: float, note: str) -> None:
        if ctx.cancelled:
            raise Cancelled(f"stopped before its {note} step")
        ctx.progress(fraction, note)

    return step


@job(ProcessImage, actor_name="process_image", idempotency_key=_key, **OPTIONS)
def process_image(ctx: Context, payload: ProcessImage) -> dict[str, Any]:
    return _run(ctx, payload, "image")


@job(ProcessVideo, actor_name="process_video", idempotency_key=_key, **OPTIONS)
def process_video(ctx: Context, payload: ProcessVideo) -> dict[str, Any]:
    return _run(ctx, payload, "video")


@job(ProcessAudio, actor_name="process_audio", idempotency_key=_key, **OPTIONS)
def process_audio(ctx: Context, payload: ProcessAudio) -> dict[str, Any]:
    return _run(ctx, payload, "audio")
