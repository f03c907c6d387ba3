"""Media jobs (seed 003), end to end: a real worker process running the `media` queue,
moto's S3 server (with PostgreSQL) or local storage (with SQLite), real Pillow and ffmpeg.

The media world is one of its own (not the shared `world`): its worker runs with a
storage backend per parameter and small size and duration caps, so hostile files stay
small.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from PIL import Image
from sqlalchemy import select

from integrations.providers import build_storage
from integrations.storage import Storage
from store.db import Database
from store.models import MediaObject, Message
from switchyard import boot as runtime
from switchyard.base import settings
from tests.actors.conftest import unique
from tests.support import media_files
from tests.support.processes import WorkerProcesses
from tests.support.waiting import wait_for

MAX_BYTES, MAX_DURATION_MS = 2_000_000, 5_000


@dataclass
class MediaWorld:
    sy: runtime.App
    db: Database
    storage: Storage
    var_dir: Path

    def send(self, actor: str, payload: dict[str, Any]) -> dramatiq.Message[Any]:
        self.sy.broker.declare_queue("media")
        return self.sy.broker.enqueue(dramatiq.Message(
            queue_name="media", actor_name=actor, args=(), kwargs=payload, options={}))

    def finished(self, message_id: str, timeout: float = 30) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            self.sy.state.buffer.flush()
            job = self.sy.state.history.get(message_id)
            return job if job and job["status"] in ("done", "skipped", "failed") else None
        return wait_for(final, timeout=timeout, what=f"job {message_id} to finish")

    def upload(self, kind: str, data: bytes, name: str) -> dict[str, Any]:
        """Put an original in storage; the seed's payload for it."""
        message_id, user_id = unique("m-"), unique("u-")
        key = f"uploads/{user_id}/{name}"
        self.storage.put(key, data)
        return {"type": kind, "s3Key": key, "userId": user_id, "messageId": message_id,
                "originalName": name}

    def run(self, kind: str, data: bytes, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        payload = self.upload(kind, data, name)
        message = self.send(f"process_{kind}", payload)
        return payload, self.finished(message.message_id)

    def message(self, message_id: str) -> Message:
        with self.db.session() as session:
            found = session.get(Message, message_id)
            assert found is not None
            session.expunge(found)
            return found


@pytest.fixture(scope="module", params=["local-sqlite", "s3-postgresql"])
def media_world(request: pytest.FixtureRequest, redis_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaWorld]:
    var_dir = tmp_path_factory.mktemp("media")
    prefix = unique("mw")
    env = {"REDIS_URL": redis_url, "KEY_PREFIX": prefix, "BROKER_NAMESPACE": f"{prefix}-broker",
           "FLUSH_INTERVAL_MS": "20", "DEFER_MS": "100", "WORKER_HEARTBEAT_MS": "500",
           "SWITCHYARD_ENV": "test", "VAR_DIR": str(var_dir), "MIN_BACKOFF_MS": "100",
           "MAX_BACKOFF_MS": "400", "MEDIA_MAX_BYTES": str(MAX_BYTES),
           "MEDIA_MAX_DURATION_MS": str(MAX_DURATION_MS),
           **_storage_env(request, var_dir)}
    workers = WorkerProcesses(env, module="tests.support.product_worker")
    try:
        workers.start(THREADS="4")
        sy = runtime.build(settings.load(_env_file=None, **{k.lower(): v for k, v in env.items()}))
    except BaseException:
        workers.stop_all()
        raise
    yield MediaWorld(sy, Database(env["DATABASE_URL"]), build_storage(sy.settings),
                     var_dir)
    workers.stop_all()
    sy.close()
    state = redis.Redis.from_url(redis_url)
    for key in state.scan_iter(f"{prefix}*", count=1000):
        state.delete(key)
    state.close()


def _storage_env(request: pytest.FixtureRequest, var_dir: Path) -> dict[str, str]:
    if request.param == "local-sqlite":
        from store.migrate import upgrade

        url = f"sqlite:///{var_dir}/switchyard.db"
        upgrade(url)
        return {"DATABASE_URL": url, "STORAGE_BACKEND": "local"}
    s3 = request.getfixturevalue("moto_s3")
    from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY

    return {"DATABASE_URL": request.getfixturevalue("postgres_database"),
            "STORAGE_BACKEND": "s3", "S3_BUCKET": s3.new_bucket(), "S3_ENDPOINT_URL": s3.url,
            "S3_ACCESS_KEY_ID": ACCESS_KEY, "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "S3_MAX_ATTEMPTS": "2"}


def objects(world: MediaWorld, message_id: str) -> dict[str, MediaObject]:
    with world.db.session() as session:
        rows = session.scalars(select(MediaObject).filter_by(message_id=message_id)).all()
        for row in rows:
            session.expunge(row)
        return {row.key: row for row in rows}


def test_a_rotated_photo_is_stored_upright_with_its_thumbnail_and_record(media_world):
    # given a sideways 3000x2000 photo uploaded for a message
    data = media_files.jpeg(3000, 2000, orientation=6)
    payload, job = media_world.run("image", data, "vacation.jpg")
    assert job["status"] == "done", job
    # then the processed image is upright, within 2048, and so is the record
    message_id = payload["messageId"]
    processed = media_world.storage.get(f"media/{message_id}/processed.jpg")
    with Image.open(io.BytesIO(processed)) as image:
        assert image.size == (1365, 2048)
    thumb = media_world.storage.get(f"media/{message_id}/thumb.jpg")
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.size == (200, 200)
    record = media_world.message(message_id)
    assert record.media_status == "done" and record.media_url and record.thumbnail_url
    assert record.media_metadata and record.media_metadata["width"] == 1365
    assert record.user_id == payload["userId"] and record.media_key == payload["s3Key"]
    rows = objects(media_world, message_id)
    assert {r.kind for r in rows.values()} == {"processed", "thumbnail"}
    assert rows[f"media/{message_id}/processed.jpg"].size == len(processed)
    assert job["result"]["key"] == record.media_url == f"media/{message_id}/processed.jpg"


def test_a_duplicated_job_updates_the_record_once(media_world):
    payload = media_world.upload("image", media_files.png_with_alpha(), "sticker.png")
    first = media_world.finished(media_world.send("process_image", payload).message_id)
    done_at = media_world.message(payload["messageId"]).media_processed_at
    second = media_world.finished(media_world.send("process_image", payload).message_id)
    assert (first["status"], second["status"]) == ("done", "skipped")
    assert media_world.message(payload["messageId"]).media_processed_at == done_at
    assert list(objects(media_world, payload["messageId"])) == [
        f"media/{payload['messageId']}/processed.png", f"media/{payload['messageId']}/thumb.png"]


def test_a_video_becomes_a_faststart_h264_aac_mp4(media_world, tmp_path):
    source = media_files.video(tmp_path / "clip.avi", h264=False)
    payload, job = media_world.run("video", source.read_bytes(), "clip.avi")
    assert job["status"] == "done", job
    output = tmp_path / "out.mp4"
    output.write_bytes(media_world.storage.get(f"media/{payload['messageId']}/processed.mp4"))
    report = media_files.report(output)
    assert "Video: h264" in report and "Audio: aac" in report
    atoms = media_files.top_level_atoms(output.read_bytes())
    assert atoms.index("moov") < atoms.index("mdat")
    metadata = media_world.message(payload["messageId"]).media_metadata or {}
    assert metadata["copied"] is False and metadata["width"] == 320
    assert media_world.message(payload["messageId"]).thumbnail_url


def test_a_voice_note_becomes_a_128k_mp3_with_its_waveform(media_world, tmp_path):
    source = media_files.audio(tmp_path / "voice.ogg", loud=True)
    payload, job = media_world.run("audio", source.read_bytes(), "voice-message.ogg")
    assert job["status"] == "done", job
    output = tmp_path / "out.mp3"
    output.write_bytes(media_world.storage.get(f"media/{payload['messageId']}/processed.mp3"))
    assert media_files.bitrate_kbps(output) == 128
    waveform = (media_world.message(payload["messageId"]).media_metadata or {})["waveform"]
    assert len(waveform) == 100 and min(waveform) >= 80


def hostile_cases(tmp_path: Path) -> list[tuple[str, bytes, str, str]]:
    """(job type, content, original name, the reason it must be refused with)."""
    long_audio = media_files.audio(tmp_path / "long.ogg", loud=True, seconds=6)
    return [
        ("image", b"", "empty.jpg", "the file is empty"),
        ("image", b"<svg onload=alert(1)>" * 20, "photo.jpg", "not an image"),
        ("image", media_files.encoded("PNG"), "photo.jpg", "not what its name says"),
        ("image", media_files.jpeg(400, 300)[:700], "cut.jpg", "truncated or corrupt"),
        ("image", media_files.png_header_only(20_000, 20_000), "bomb.png",
         "more than 50000000 pixels"),
        ("image", os.urandom(MAX_BYTES + 1), "huge.jpg", f"larger than {MAX_BYTES} bytes"),
        ("video", b"\x00garbage" * 100, "clip.mp4", "not a readable audio or video file"),
        ("audio", long_audio.read_bytes(), "voice.ogg", f"longer than {MAX_DURATION_MS} ms"),
    ]


def test_a_media_job_says_its_progress_and_stops_between_steps_when_cancelled(
        media_world, tmp_path):
    # given a video that takes a while to transcode, processing
    source = media_files.video(tmp_path / "long.avi", h264=False, seconds=4.5,
                               size="1280x720")
    payload = media_world.upload("video", source.read_bytes(), "long.avi")
    message = media_world.send("process_video", payload)
    history = media_world.sy.state.history

    def step() -> str | None:
        return (history.get(message.message_id) or {}).get("progress_note")

    wait_for(lambda: step() == "transform", timeout=30, what="the transform step")

    # when it is cancelled while it transcodes
    answer, status = media_world.sy.state.cancels.cancel(message.message_id, by="ops:ann",
                                                         reason="sent by mistake")

    # then it stops before its upload: cancelled, at the transform's progress, nothing
    # uploaded, and the message's media recorded as failed, cancelled
    assert (answer, status) == ("stopping", "running")
    job = wait_for(lambda: (history.get(message.message_id) or {}).get("status") in (
        "cancelled", "done", "failed") and history.get(message.message_id), timeout=60,
        what="the job to end")
    assert job["status"] == "cancelled" and job["progress"] == 0.2, job
    assert "upload" in job["error"]["message"]
    assert not list(media_world.storage.list(prefix=f"media/{payload['messageId']}"))
    record = media_world.message(payload["messageId"])
    assert record.media_status == "failed" and "cancelled" in (record.media_error or "")


def test_hostile_files_are_dead_letters_with_reasons_and_the_worker_goes_on(media_world,
                                                                           tmp_path):
    sent = []
    for kind, data, name, reason in hostile_cases(tmp_path):
        payload = media_world.upload(kind, data, name)
        sent.append((media_world.send(f"process_{kind}", payload), payload, reason))
    for message, payload, reason in sent:
        job = media_world.finished(message.message_id)
        assert job["status"] == "failed" and job["runs"] == 1, (reason, job)
        assert reason in job["error"]["message"] and job["error"]["error"] == "BadMedia"
        assert payload["s3Key"] not in str(job["error"])
        assert media_world.sy.state.dead_letters.show(message.message_id) is not None
        record = media_world.message(payload["messageId"])
        assert record.media_status == "failed" and reason in (record.media_error or "")
    # and the worker is alive: the next good photo goes through
    _, job = media_world.run("image", media_files.jpeg(64, 64), "ok.jpg")
    assert job["status"] == "done", job
    assert not list((media_world.var_dir / "tmp" / "media").iterdir())


def test_a_missing_original_is_a_permanent_dead_letter(media_world):
    payload = {"type": "image", "s3Key": f"uploads/{unique()}/gone.jpg", "userId": "u",
               "messageId": unique("m-"), "originalName": "gone.jpg"}
    job = media_world.finished(media_world.send("process_image", payload).message_id)
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["error"] == "ObjectNotFound"
