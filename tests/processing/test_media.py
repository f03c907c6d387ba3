"""Media transforms with real Pillow and the wheel's real ffmpeg, on media made here."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from integrations.storage import LocalStorage, S3Storage
from processing import media, media_jobs
from processing.media import BadMedia, Limits
from processing.media_jobs import MediaJob, TempFiles
from store.db import Database
from store.migrate import upgrade
from store.models import MediaObject, Message
from switchyard.base.errors import PermanentError, RetryableError
from tests.fakes.s3 import S3Refusing
from tests.support import media_files

LIMITS = Limits()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- Images -----------------------------------------------------------------------


def test_a_rotated_exif_jpeg_comes_out_upright_within_2048(tmp_path: Path) -> None:
    # given a 3000x2000 photo stored sideways (EXIF orientation 6: turn 90 degrees right)
    source = write(tmp_path / "in", media_files.jpeg(3000, 2000, orientation=6))
    # when it is processed
    result = media.process_image(source, tmp_path, "photo.jpg", LIMITS)
    # then it is portrait, its long side 2048, red (the stored left half) now on top
    processed, thumb = result.outputs
    with Image.open(processed.path) as image:
        assert image.size == (1365, 2048) and image.format == "JPEG"
        assert image.info.get("progressive") == 1
        red, blue = image.getpixel((680, 100)), image.getpixel((680, 1900))
        assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]  # type: ignore[index]
        assert not image.getexif().get(media_files.ORIENTATION)
    with Image.open(thumb.path) as image:
        assert image.size == (200, 200)
    assert result.metadata["originalWidth"] == 3000 and result.metadata["width"] == 1365


def test_a_large_jpeg_is_decoded_in_draft_mode_within_the_limit(tmp_path: Path) -> None:
    source = write(tmp_path / "in", media_files.jpeg(6000, 4000))
    result = media.process_image(source, tmp_path, "big.jpg", LIMITS)
    # 1/2 scale (3000 wide) is over 3/4 of 2048, so decoding stops there, then resizes
    assert (result.metadata["width"], result.metadata["height"]) == (2048, 1365)


def test_a_small_image_is_not_upscaled(tmp_path: Path) -> None:
    source = write(tmp_path / "in", media_files.jpeg(120, 80))
    result = media.process_image(source, tmp_path, None, LIMITS)
    assert (result.metadata["width"], result.metadata["height"]) == (120, 80)


def test_png_alpha_survives(tmp_path: Path) -> None:
    source = write(tmp_path / "in", media_files.png_with_alpha())
    processed, thumb = media.process_image(source, tmp_path, "sticker.png", LIMITS).outputs
    assert processed.content_type == "image/png" and processed.name == "processed.png"
    with Image.open(processed.path) as image:
        assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0  # type: ignore[index]
        assert image.getpixel((63, 0))[3] == 255  # type: ignore[index]


@pytest.mark.parametrize(("fmt", "name", "expected"), [
    ("HEIF", "IMG_0001.HEIC", "heic"), ("WEBP", "a.webp", "webp"), ("GIF", "a.gif", "gif"),
])
def test_heic_webp_and_gif_are_read(tmp_path: Path, fmt: str, name: str, expected: str) -> None:
    source = write(tmp_path / "in", media_files.encoded(fmt))
    result = media.process_image(source, tmp_path, name, LIMITS)
    assert result.metadata["originalFormat"] == expected and result.metadata["format"] == "jpeg"
    assert (result.metadata["width"], result.metadata["height"]) == (64, 48)


@pytest.mark.parametrize(("data", "name", "code"), [
    (b"", "empty.jpg", "empty"),
    (b"<html>not a picture</html>" * 10, "photo.jpg", "unsupported"),
    (media_files.encoded("PNG"), "photo.jpg", "mismatch"),
    (media_files.jpeg(400, 300)[:600], "cut.jpg", "corrupt"),
    # over twice the cap: Pillow's own check; between 1x and 2x: ours
    (media_files.png_header_only(20_000, 20_000), "bomb.png", "too_many_pixels"),
    (media_files.png_header_only(8_000, 7_000), "bomb.png", "too_many_pixels"),
], ids=["empty", "text-named-jpg", "png-named-jpg", "truncated", "bomb", "bomb-under-2x"])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_images_are_refused_with_a_reason(tmp_path: Path, data: bytes, name: str,
                                                  code: str) -> None:
    source = write(tmp_path / "in", data)
    with pytest.raises(BadMedia) as refused:
        media.process_image(source, tmp_path, name, LIMITS)
    assert refused.value.code == code and isinstance(refused.value, PermanentError)
    assert name not in str(refused.value)


def test_a_file_over_the_size_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    source = write(tmp_path / "in", media_files.jpeg(300, 200))
    with pytest.raises(BadMedia, match="larger than 1024 bytes"):
        media.process_image(source, tmp_path, None, Limits(max_bytes=1024))


# --- Video and audio ----------------------------------------------------------------


def test_a_video_is_transcoded_to_h264_aac_with_moov_first(tmp_path: Path) -> None:
    source = media_files.video(tmp_path / "in.avi", h264=False)
    result = media.process_video(source, tmp_path, LIMITS)
    video, thumb = result.outputs
    report = media_files.report(video.path)
    assert "Video: h264" in report and "Audio: aac" in report
    atoms = media_files.top_level_atoms(video.path.read_bytes())
    assert atoms.index("moov") < atoms.index("mdat")
    assert result.metadata["copied"] is False
    assert (result.metadata["width"], result.metadata["height"]) == (320, 240)
    assert 1900 <= result.metadata["durationMs"] <= 2100
    with Image.open(thumb.path) as image:
        assert image.size == (200, 200)


def test_a_compliant_mp4_is_copied_not_reencoded(tmp_path: Path) -> None:
    source = media_files.video(tmp_path / "in.mp4", h264=True)
    assert media_files.top_level_atoms(source.read_bytes())[-1] == "moov"
    result = media.process_video(source, tmp_path, LIMITS)
    data = result.outputs[0].path.read_bytes()
    atoms = media_files.top_level_atoms(data)
    assert result.metadata["copied"] is True and atoms.index("moov") < atoms.index("mdat")
    # the same coded frames: only the boxes moved
    assert abs(len(data) - source.stat().st_size) < 2048


def test_an_audio_file_becomes_a_128k_mp3_with_a_loud_waveform(tmp_path: Path) -> None:
    source = media_files.audio(tmp_path / "voice.ogg", loud=True)
    result = media.process_audio(source, tmp_path, LIMITS)
    assert media_files.bitrate_kbps(result.outputs[0].path) == 128
    waveform = result.metadata["waveform"]
    assert len(waveform) == 100 and all(80 <= v <= 100 for v in waveform)


def test_silence_has_a_flat_waveform_near_zero(tmp_path: Path) -> None:
    source = media_files.audio(tmp_path / "voice.ogg", loud=False)
    waveform = media.process_audio(source, tmp_path, LIMITS).metadata["waveform"]
    assert len(waveform) == 100 and max(waveform) <= 5


def test_audio_over_the_duration_cap_is_refused(tmp_path: Path) -> None:
    source = media_files.audio(tmp_path / "long.ogg", loud=True, seconds=3)
    with pytest.raises(BadMedia, match="longer than 2000 ms"):
        media.process_audio(source, tmp_path, Limits(max_duration_ms=2000))


@pytest.mark.parametrize("process", [media.process_video, media.process_audio])
def test_a_non_media_file_is_refused(tmp_path: Path, process: object) -> None:
    source = write(tmp_path / "in", b"\x00garbage" * 500)
    with pytest.raises(BadMedia, match="not a readable audio or video file"):
        process(source, tmp_path, LIMITS)  # type: ignore[operator]


def test_an_audio_file_sent_as_video_is_refused(tmp_path: Path) -> None:
    source = media_files.audio(tmp_path / "voice.ogg", loud=True)
    with pytest.raises(BadMedia, match="no video stream"):
        media.process_video(source, tmp_path, LIMITS)


def test_an_ffmpeg_that_does_not_finish_is_killed(tmp_path: Path) -> None:
    # given an endless source: ffmpeg would run forever
    started = time.monotonic()
    with pytest.raises(BadMedia, match="did not finish within 300 ms"):
        media.run_ffmpeg(["-f", "lavfi", "-i", "sine", "-f", "null", "-"],
                         Limits(ffmpeg_timeout_ms=300))
    assert time.monotonic() - started < 5
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_child_ffmpeg(p)]


def _is_child_ffmpeg(proc: Path) -> bool:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    return "ffmpeg" in stat and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()


# --- The job around the transforms ---------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path}/switchyard.db"
    upgrade(url)
    return Database(url)


def test_a_job_run_twice_writes_the_same_keys_and_records_once(tmp_path: Path,
                                                               db: Database) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put("uploads/u1/photo.jpg", media_files.jpeg(300, 200))
    job = MediaJob("image", "uploads/u1/photo.jpg", "u1", "m-1", "photo.jpg")
    temp = TempFiles(tmp_path / "tmp", 60_000)
    first = media_jobs.run(db, storage, job, LIMITS, temp)
    second = media_jobs.run(db, storage, job, LIMITS, temp)
    assert first == second
    assert first["metadata"]["processedKey"] == "media/m-1/processed.jpg"
    with db.session() as session:
        keys = sorted(o.key for o in session.query(MediaObject).filter_by(message_id="m-1"))
        message = session.get(Message, "m-1")
        assert message is not None and message.media_status == "done"
    assert keys == ["media/m-1/processed.jpg", "media/m-1/thumb.jpg"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_storage_5xx_is_retryable_and_leaves_no_temp_files(tmp_path: Path,
                                                           db: Database) -> None:
    server = S3Refusing(503, "ServiceUnavailable", "try later")
    try:
        storage = S3Storage("bucket", endpoint_url=server.url, access_key_id="a",
                            secret_access_key="b", max_attempts=1)
        job = MediaJob("image", "uploads/u1/photo.jpg", "u1", "m-2", "photo.jpg")
        with pytest.raises(RetryableError):
            media_jobs.run(db, storage, job, LIMITS, TempFiles(tmp_path / "tmp", 60_000))
    finally:
        server.stop()
    with db.session() as session:
        message = session.get(Message, "m-2")
        assert message is not None and message.media_status == "processing"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_permanent_failure_is_recorded_on_the_message(tmp_path: Path, db: Database) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put("uploads/u1/notes.jpg", b"plain text, not a photo")
    job = MediaJob("image", "uploads/u1/notes.jpg", "u1", "m-3", "notes.jpg")
    with pytest.raises(BadMedia):
        media_jobs.run(db, storage, job, LIMITS, TempFiles(tmp_path / "tmp", 60_000))
    with db.session() as session:
        message = session.get(Message, "m-3")
        assert message is not None and message.media_status == "failed"
        assert "not an image" in (message.media_error or "")


def test_leftovers_of_a_killed_worker_are_swept(tmp_path: Path) -> None:
    temp = TempFiles(tmp_path, 60_000)
    old, fresh = tmp_path / "job-old", tmp_path / "job-new"
    old.mkdir()
    fresh.mkdir()
    (old / "original").write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert media_jobs.sweep(temp) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["job-new"]


class CountingS3(S3Storage):
    """The real S3 client, counting downloads."""

    downloads = 0

    def download(self, key: str, path: Path) -> None:
        self.downloads += 1
        super().download(key, path)


def test_an_s3_original_over_the_size_cap_is_refused_before_download(
        tmp_path: Path, db: Database, moto_s3: Any) -> None:
    from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY

    bucket = moto_s3.new_bucket()
    storage = CountingS3(bucket, endpoint_url=moto_s3.url, access_key_id=ACCESS_KEY,
                         secret_access_key=SECRET_KEY, max_attempts=1)
    try:
        storage.put("uploads/u1/big.jpg", b"x" * 4096)
        storage.put("uploads/u1/big.jpg.bak", b"x")  # a longer key that shares the prefix
        job = MediaJob("image", "uploads/u1/big.jpg", "u1", "m-4", "big.jpg")
        with pytest.raises(BadMedia, match="larger than 1024 bytes"):
            media_jobs.run(db, storage, job, Limits(max_bytes=1024),
                           TempFiles(tmp_path / "tmp", 60_000))
        assert storage.downloads == 0
    finally:
        moto_s3.drop_bucket(bucket)
