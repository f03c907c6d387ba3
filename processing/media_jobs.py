"""A media job from end to end (seed 003): download, transform, upload, record.

The transforms are `processing.media`'s; this module adds what is around them: the
original from storage into a temporary directory of the job's own (removed on every
path; a worker's start sweeps what a killed one left), the outputs to keys derived
from the message id (`media/<messageId>/processed.jpg`, `.../thumb.jpg`), a
`media_objects` row per object, and the message record. A retried or duplicated job
writes the same keys and rows; a message already done is answered from its record.

Between its steps (download, transform, upload) a job calls its `step` with how far it
has come and the step it starts; the actor reports that as the job's progress and
stops there, raising `Cancelled`, when the job was cancelled meanwhile. A job stopped
so records the message's media as failed ("cancelled"), its work directory removed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrations.storage import Storage
from processing import media
from processing.media import Limits, Processed
from store import media as records
from store.db import Database
from switchyard.base.errors import Cancelled, PermanentError

#: Told how far a job has come (0 to 1) and the step it starts; raises to stop it there.
Step = Callable[[float, str], None]


def no_step(fraction: float, note: str) -> None:
    """The `step` of a job nobody watches."""


#: The transform of each media type, given the original's path and a work directory.
Transform = Callable[[Path, Path, "MediaJob", Limits], Processed]
TRANSFORMS: dict[str, Transform] = {
    "image": lambda path, work, job, limits: media.process_image(
        path, work, job.original_name, limits),
    "video": lambda path, work, job, limits: media.process_video(path, work, limits),
    "audio": lambda path, work, job, limits: media.process_audio(path, work, limits),
}


@dataclass(frozen=True)
class MediaJob:
    """Seed 003's media payload, as plain values."""

    type: str  # image, video, audio
    s3_key: str
    user_id: str
    message_id: str
    original_name: str | None = None

    @property
    def prefix(self) -> str:
        return f"media/{self.message_id}"


@dataclass(frozen=True)
class TempFiles:
    """Where jobs keep their work directories, and how old a leftover may get."""

    root: Path
    max_age_ms: int


def run(db: Database, storage: Storage, job: MediaJob, limits: Limits,
        temp: TempFiles, step: Step = no_step) -> dict[str, Any]:
    """Process the job's original once; a duplicate gets the recorded outcome."""
    with db.session() as session:
        done = records.finished(session, job.message_id, job.s3_key)
        if done is not None:
            return _result(job, done.media_url, done.thumbnail_url, done.media_metadata or {})
        records.start(session, job.message_id, user_id=job.user_id, media_type=job.type,
                      media_key=job.s3_key, original_name=safe_name(job.original_name))
    try:
        keys, metadata = _work(storage, job, limits, temp, db, step)
    except (PermanentError, Cancelled) as error:
        with db.session() as session:
            records.fail(session, job.message_id, str(error))
        raise
    with db.session() as session:
        message = records.finish(session, job.message_id, key=keys["processed"],
                                 thumbnail_key=keys.get("thumbnail"), metadata=metadata)
        return _result(job, message.media_url, message.thumbnail_url,
                       message.media_metadata or {})


def _work(storage: Storage, job: MediaJob, limits: Limits, temp: TempFiles,
          db: Database, step: Step) -> tuple[dict[str, str], dict[str, Any]]:
    """Download, transform and upload inside a work directory removed on every path."""
    temp.root.mkdir(parents=True, exist_ok=True)
    sweep(temp)
    with tempfile.TemporaryDirectory(dir=temp.root, prefix="job-") as workdir:
        work = Path(workdir)
        original = work / "original"
        step(0.0, "download")
        _check_remote_size(storage, job.s3_key, limits)
        storage.download(job.s3_key, original)
        step(0.2, "transform")
        processed = TRANSFORMS[job.type](original, work, job, limits)
        step(0.8, "upload")
        return _upload(storage, db, job, processed), processed.metadata


def _check_remote_size(storage: Storage, key: str, limits: Limits) -> None:
    """Refuse an S3 original over the size cap before downloading it onto this disk
    (a local original is on this disk already; `check_size` sees it after the copy)."""
    if storage.name != "s3":
        return
    for found in storage.list(prefix=key):
        if found.key == key and found.size > limits.max_bytes:
            raise media.BadMedia(f"the file is larger than {limits.max_bytes} bytes",
                                 code="too_large")
        break  # the key itself sorts first among the keys it is a prefix of


def _upload(storage: Storage, db: Database, job: MediaJob,
            processed: Processed) -> dict[str, str]:
    """Upload every output under the message's prefix, with its `media_objects` row;
    the keys by kind (clients get signed URLs for them: web/media.py)."""
    keys: dict[str, str] = {}
    for output in processed.outputs:
        key = f"{job.prefix}/{output.name}"
        storage.upload(output.path, key, content_type=output.content_type)
        with db.session() as session:
            records.record_object(session, key, size=output.path.stat().st_size,
                                  content_type=output.content_type, owner_user_id=job.user_id,
                                  message_id=job.message_id, kind=output.kind)
        keys[output.kind] = key
        processed.metadata[f"{output.kind}Key"] = key
    return keys


def _result(job: MediaJob, key: str | None, thumbnail_key: str | None,
            metadata: dict[str, Any]) -> dict[str, Any]:
    """Keys, not URLs: a URL is signed when a client asks (`GET /api/media/<id>`)."""
    return {"messageId": job.message_id, "type": job.type, "key": key,
            "thumbnailKey": thumbnail_key, "metadata": metadata}


#: The longest file name kept from a payload's `originalName`.
MAX_NAME_CHARS = 255


def safe_name(name: str | None) -> str | None:
    """`originalName` as recorded: its last path segment, with anything but letters,
    digits, spaces, `.`, `-`, `_` and `(` `)` replaced, and no leading dots. Keys
    and paths never use it: they come from the message id."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c if c.isalnum() or c in " .-_()" else "_" for c in base)
    cleaned = cleaned.strip().lstrip(".")[:MAX_NAME_CHARS]
    return cleaned or None


def sweep(temp: TempFiles, now: float | None = None) -> int:
    """Remove work directories older than `max_age_ms` (left by a killed worker)."""
    if not temp.root.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - temp.max_age_ms / 1000
    removed = 0
    for entry in temp.root.iterdir():
        try:
            if entry.lstat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() \
                    else entry.unlink()
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            continue
    return removed
