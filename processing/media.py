"""Media transforms (seed 003): images with Pillow, video and audio with ffmpeg.

Pure functions: a file path in, files in a work directory and metadata out; no broker,
no storage, no settings lookup (the caller passes `Limits`). Everything a hostile or
broken file can do ends as a `BadMedia` (a `PermanentError`) with a reason that names
neither the file nor its key: too many pixels, truncated, not what its name says, empty,
too large, too long, or an ffmpeg that did not finish in time (it is killed).

ffmpeg is the binary bundled in the `imageio-ffmpeg` wheel, so nothing is installed
beside Python. That wheel ships no `ffprobe`: streams and durations are read from
`ffmpeg -i`'s own report, and pydub is only given raw PCM that ffmpeg decoded (it never
has to guess a format, which is what it would call ffprobe for).
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from switchyard.base.errors import PermanentError

#: Image formats accepted, as Pillow names them (HEIF is HEIC, through pillow-heif).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF")
#: What a file name's extension promises, for the formats we know.
EXTENSIONS = {
    "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "webp": "WEBP",
    "gif": "GIF", "heic": "HEIF", "heif": "HEIF",
}
#: A JPEG is decoded at 1/2, 1/4 or 1/8 scale (draft mode) when that still leaves its
#: long side at least this fraction of the largest side allowed: far faster, far less
#: memory, and the seed only asks for "at most 2048x2048".
DRAFT_MIN_FRACTION = 0.75
#: Waveform: values in 0..100 map RMS loudness from this many dB below full scale.
WAVEFORM_RANGE_DB = 60.0
WAVEFORM_POINTS = 100
#: Sample rate of the PCM the waveform is computed from (mono, 16 bit).
WAVEFORM_RATE = 8_000
#: What Pillow and its plugins raise on bad data (a hostile EXIF block can raise
#: `struct.error` or `IndexError` while its orientation is read; libheif's errors,
#: its own size limits included, come out of pillow-heif as `RuntimeError`).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
                 KeyError, TypeError, RuntimeError)


class BadMedia(PermanentError):
    """A file that cannot or must not be processed; running again cannot help."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, provider="media")


@dataclass(frozen=True)
class Limits:
    """The thresholds a job runs under (from the MEDIA_* settings)."""

    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_duration_ms: int = 30 * 60_000
    ffmpeg_timeout_ms: int = 10 * 60_000
    max_side: int = 2_048
    thumbnail_side: int = 200
    quality: int = 82


@dataclass(frozen=True)
class Output:
    """A file written to the work directory, to upload as `<prefix>/<name>`."""

    kind: str  # processed, thumbnail
    name: str
    path: Path
    content_type: str


@dataclass
class Processed:
    outputs: list[Output]
    metadata: dict[str, Any] = field(default_factory=dict)


def check_size(path: Path, limits: Limits) -> int:
    """The file's size, refused when empty or over the cap (before anything decodes it)."""
    size = path.stat().st_size
    if size == 0:
        raise BadMedia("the file is empty", code="empty")
    if size > limits.max_bytes:
        raise BadMedia(f"the file is larger than {limits.max_bytes} bytes", code="too_large")
    return size


# --- Images -----------------------------------------------------------------------


@cache
def _register_heif() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()


def open_image(path: Path, original_name: str | None, limits: Limits) -> Image.Image:
    """Open (headers only) an image of an accepted format, within the pixel cap."""
    _register_heif()
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's own bomb check, at 2x this
    try:
        image = Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(limits) from None
    except UnidentifiedImageError:
        raise BadMedia("the file is not an image of an accepted format "
                       "(JPEG, PNG, WebP, GIF, HEIC)", code="unsupported") from None
    except DECODE_ERRORS as error:
        raise _corrupt(error) from None
    _check_name(image.format or "", original_name)
    if image.width * image.height > limits.max_pixels:
        image.close()
        raise _too_many_pixels(limits)
    return image


def _too_many_pixels(limits: Limits) -> BadMedia:
    return BadMedia(f"the image has more than {limits.max_pixels} pixels", code="too_many_pixels")


def _check_name(actual: str, original_name: str | None) -> None:
    """A name that promises a format the content is not: refused, it is a disguise."""
    promised = EXTENSIONS.get(Path(original_name or "").suffix.lower().lstrip("."))
    if promised and promised != actual:
        raise BadMedia(f"the content is {actual or 'unknown'}, not what its name says "
                       f"({promised})", code="mismatch")


def process_image(path: Path, workdir: Path, original_name: str | None,
                  limits: Limits) -> Processed:
    """Upright, at most `max_side` square, compressed, plus a centre-cropped thumbnail."""
    size = check_size(path, limits)
    with open_image(path, original_name, limits) as source:
        source_format, original = source.format or "", source.size
        image = _decode(source, limits)
    alpha = _has_alpha(image)
    mode = "RGBA" if alpha else "RGB"
    image = image if image.mode == mode else image.convert(mode)
    image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS,
                    reducing_gap=3.0)  # shrinks only: a small image is never upscaled
    thumb = square(image, limits.thumbnail_side)
    ext = ("webp" if source_format == "WEBP" else "png") if alpha else "jpg"
    outputs = [_save(image, workdir, "processed", ext, limits),
               _save(thumb, workdir, "thumbnail", ext, limits)]
    metadata = {"width": image.width, "height": image.height,
                "size": outputs[0].path.stat().st_size, "format": ext.replace("jpg", "jpeg"),
                "originalWidth": original[0], "originalHeight": original[1],
                "originalSize": size, "originalFormat": _format_name(source_format),
                "thumbnailWidth": thumb.width, "thumbnailHeight": thumb.height}
    return Processed(outputs, metadata)


def _decode(image: Image.Image, limits: Limits) -> Image.Image:
    """Decode the first frame (reduced in draft mode if large), EXIF orientation applied."""
    floor = int(limits.max_side * DRAFT_MIN_FRACTION)
    if image.format == "JPEG" and max(image.size) > limits.max_side:
        scale = floor / max(image.size)
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    except Image.DecompressionBombError:
        raise _too_many_pixels(limits) from None
    except DECODE_ERRORS as error:
        raise _corrupt(error) from None  # truncated data is an OSError
    return image


def _corrupt(error: Exception) -> BadMedia:
    """Only the exception's class: Pillow's and pillow-heif's texts may quote the file."""
    return BadMedia(f"the image is truncated or corrupt ({type(error).__name__})",
                    code="corrupt")


def square(image: Image.Image, side: int) -> Image.Image:
    """The centred square crop, resized to `side` (reducing first: 4x faster than fit)."""
    crop = min(image.size)
    left, top = (image.width - crop) // 2, (image.height - crop) // 2
    return image.resize((side, side), Image.Resampling.LANCZOS,
                        box=(left, top, left + crop, top + crop), reducing_gap=2.0)


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA"):
        low, _high = cast(tuple[int, int], image.getchannel("A").getextrema())
        return low < 255  # an all-opaque alpha channel is no alpha
    return image.mode == "P" and "transparency" in image.info


def _save(image: Image.Image, workdir: Path, kind: str, ext: str, limits: Limits) -> Output:
    """Write `image` without its EXIF (which can hold the place a photo was taken)."""
    path = workdir / f"{kind}.{ext}"
    if ext == "jpg":
        image.save(path, "JPEG", quality=limits.quality, progressive=True, optimize=True)
    elif ext == "webp":
        image.save(path, "WEBP", quality=limits.quality, method=4)
    else:
        image.save(path, "PNG", compress_level=6)
    content_type = {"jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}[ext]
    name = f"{'processed' if kind == 'processed' else 'thumb'}.{ext}"
    return Output(kind, name, path, content_type)


def _format_name(pillow_format: str) -> str:
    return {"HEIF": "heic"}.get(pillow_format, pillow_format.lower())


ImageFile.LOAD_TRUNCATED_IMAGES = False  # the default, relied on: truncation must fail


# --- ffmpeg -------------------------------------------------------------------------


@cache
def ffmpeg_exe() -> str:
    """The ffmpeg binary from the imageio-ffmpeg wheel (or IMAGEIO_FFMPEG_EXE)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_ffmpeg(args: list[str], limits: Limits, *, output: bool = False) -> bytes:
    """Run ffmpeg; killed after `ffmpeg_timeout_ms` (Dramatiq's TimeLimit cannot
    interrupt a thread blocked in a system call). Returns stdout when `output`."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=limits.ffmpeg_timeout_ms / 1000, check=False)
    except subprocess.TimeoutExpired:  # run() has killed and reaped it
        raise BadMedia(f"ffmpeg did not finish within {limits.ffmpeg_timeout_ms} ms",
                       code="timeout") from None
    if done.returncode != 0:
        raise BadMedia(f"ffmpeg could not process the file (exit {done.returncode})",
                       code="ffmpeg")
    return done.stdout if output else b""


@dataclass(frozen=True)
class Probe:
    """What `ffmpeg -i` reports of a file: container, streams, duration."""

    container: str
    duration_ms: int | None
    video: str | None = None
    audio: str | None = None
    width: int = 0
    height: int = 0


_INPUT = re.compile(r"^Input #0, ([^ ]+), from", re.M)
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #0:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_AUDIO = re.compile(r"Stream #0:\d+.*?: Audio: (\w+)")


def probe(path: Path, limits: Limits) -> Probe:
    """Read the file's streams from `ffmpeg -i` (there is no ffprobe in the wheel)."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=limits.ffmpeg_timeout_ms / 1000, check=False)
    except subprocess.TimeoutExpired:
        raise BadMedia(f"ffmpeg did not finish within {limits.ffmpeg_timeout_ms} ms",
                       code="timeout") from None
    report = done.stderr.decode("utf-8", "replace")
    container = _INPUT.search(report)
    if container is None:
        raise BadMedia("the file is not a readable audio or video file", code="unsupported")
    return _parse_probe(container.group(1), report)


def _parse_probe(container: str, report: str) -> Probe:
    duration = _DURATION.search(report)
    duration_ms = None
    if duration:
        hours, minutes, seconds = duration.groups()
        duration_ms = round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)
    video, audio = _VIDEO.search(report), _AUDIO.search(report)
    return Probe(container, duration_ms, video.group(1) if video else None,
                 audio.group(1) if audio else None,
                 int(video.group(2)) if video else 0, int(video.group(3)) if video else 0)


def _check_duration(info: Probe, limits: Limits) -> int:
    if info.duration_ms is None:
        raise BadMedia("the file's duration cannot be read", code="corrupt")
    if info.duration_ms > limits.max_duration_ms:
        raise BadMedia(f"longer than {limits.max_duration_ms} ms", code="too_long")
    return info.duration_ms


# --- Video --------------------------------------------------------------------------


def process_video(path: Path, workdir: Path, limits: Limits) -> Processed:
    """H.264/AAC MP4 with its index first (faststart), copied when it already is one."""
    size = check_size(path, limits)
    info = probe(path, limits)
    if info.video is None:
        raise BadMedia("the file has no video stream", code="unsupported")
    if info.width * info.height > limits.max_pixels:
        raise BadMedia(f"the video has more than {limits.max_pixels} pixels a frame",
                       code="too_many_pixels")
    duration_ms = _check_duration(info, limits)
    copy = (info.container.startswith("mov,mp4") and info.video == "h264"
            and info.audio in (None, "aac"))
    video = workdir / "processed.mp4"
    run_ffmpeg(["-i", str(path), *_video_codecs(copy), "-t", str(limits.max_duration_ms / 1000),
                "-movflags", "+faststart", str(video)], limits)
    thumb = _video_thumbnail(video, workdir, duration_ms, limits)
    metadata = {"width": info.width, "height": info.height, "duration": duration_ms / 1000,
                "durationMs": duration_ms, "size": video.stat().st_size, "format": "mp4",
                "videoCodec": "h264", "audioCodec": "aac" if info.audio else None,
                "copied": copy, "originalSize": size, "originalFormat": info.container,
                "originalVideoCodec": info.video, "originalAudioCodec": info.audio}
    return Processed([Output("processed", "processed.mp4", video, "video/mp4"), thumb], metadata)


def _video_codecs(copy: bool) -> list[str]:
    maps = ["-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn"]
    if copy:
        return [*maps, "-c", "copy"]
    return [*maps, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
            "-pix_fmt", "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            "-c:a", "aac", "-b:a", "128k"]


def _video_thumbnail(video: Path, workdir: Path, duration_ms: int, limits: Limits) -> Output:
    """The frame at 1 s (the first frame of a shorter clip), centre-cropped square."""
    frame = workdir / "frame.png"
    at = "1" if duration_ms > 1_000 else "0"
    run_ffmpeg(["-ss", at, "-i", str(video), "-frames:v", "1", str(frame)], limits)
    if not frame.exists():  # seeking past the last frame writes nothing
        run_ffmpeg(["-i", str(video), "-frames:v", "1", str(frame)], limits)
    with Image.open(frame) as image:
        thumb = square(image.convert("RGB"), limits.thumbnail_side)
    return _save(thumb, workdir, "thumbnail", "jpg", limits)


# --- Audio --------------------------------------------------------------------------


def process_audio(path: Path, workdir: Path, limits: Limits) -> Processed:
    """MP3 at 128 kbit/s and a 100-point waveform, from one ffmpeg decode."""
    size = check_size(path, limits)
    info = probe(path, limits)
    if info.audio is None:
        raise BadMedia("the file has no audio stream", code="unsupported")
    duration_ms = _check_duration(info, limits)
    mp3 = workdir / "processed.mp3"
    pcm = run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "libmp3lame",
                      "-b:a", "128k", str(mp3), "-map", "0:a:0", "-ac", "1",
                      "-ar", str(WAVEFORM_RATE), "-f", "s16le", "pipe:1"], limits, output=True)
    metadata = {"duration": duration_ms / 1000, "durationMs": duration_ms,
                "size": mp3.stat().st_size, "format": "mp3", "bitrate": 128_000,
                "waveform": waveform(pcm), "originalSize": size,
                "originalFormat": info.container, "originalAudioCodec": info.audio}
    return Processed([Output("processed", "processed.mp3", mp3, "audio/mpeg")], metadata)


def waveform(pcm: bytes, points: int = WAVEFORM_POINTS) -> list[int]:
    """`points` loudness values 0..100 of mono 16-bit PCM: RMS dBFS over a 60 dB range."""
    audio = _pydub().AudioSegment(data=pcm[: len(pcm) // 2 * 2], sample_width=2,
                                  frame_rate=WAVEFORM_RATE, channels=1)
    frames = int(audio.frame_count())
    values = []
    for i in range(points):
        chunk = audio.get_sample_slice(frames * i // points, frames * (i + 1) // points)
        level = chunk.dBFS if len(chunk.raw_data) else -math.inf  # -inf: silence
        scaled = (level + WAVEFORM_RANGE_DB) / WAVEFORM_RANGE_DB * 100
        values.append(max(0, min(100, round(scaled))) if math.isfinite(scaled) else 0)
    return values


@cache
def _pydub() -> Any:
    """pydub, imported without its warning that no ffmpeg is on PATH (it is given PCM)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # audioop, Python 3.11-3.12
        import pydub

    pydub.AudioSegment.converter = ffmpeg_exe()
    return pydub
