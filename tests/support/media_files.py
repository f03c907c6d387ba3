"""Media made on the spot for the media tests: Pillow images, ffmpeg `lavfi` clips.

Small on purpose (a few KB to a few hundred KB, clips of 2 s) so the tests stay fast.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import zlib
from pathlib import Path

from PIL import Image

from processing.media import ffmpeg_exe

#: EXIF's Orientation tag; 6 means "rotate 90 degrees clockwise to display".
ORIENTATION = 0x0112


def jpeg(width: int, height: int, *, orientation: int | None = None) -> bytes:
    """A JPEG whose left half is red and right half blue (as stored)."""
    image = Image.new("RGB", (width, height), "red")
    image.paste("blue", (width // 2, 0, width, height))
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def png_with_alpha(width: int = 64, height: int = 48) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, width // 2, height))  # left half transparent
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def encoded(fmt: str, width: int = 64, height: int = 48, **options: object) -> bytes:
    """An image in `fmt` (any format Pillow writes: WEBP, GIF, HEIF with pillow-heif)."""
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, fmt, **options)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=60)


def video(path: Path, *, h264: bool, seconds: float = 2, size: str = "320x240") -> Path:
    """A clip with a test pattern and a tone: H.264/AAC MP4 (index last, no faststart),
    or MPEG-4 Part 2 and MP2 audio in AVI, which must be transcoded."""
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"] \
        if h264 else ["-c:v", "mpeg4", "-c:a", "mp2"]
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *codecs, "-shortest",
           str(path))
    return path


def audio(path: Path, *, loud: bool, seconds: float = 2) -> Path:
    """A voice-note-like file: a near full-scale 440 Hz tone, or digital silence."""
    source = "aevalsrc=0.9*sin(440*2*PI*t):s=16000" if loud else "anullsrc=r=16000:cl=mono"
    ffmpeg("-f", "lavfi", "-i", source, "-t", str(seconds), "-c:a", "libvorbis", str(path))
    return path


def report(path: Path) -> str:
    """What `ffmpeg -i` says of a file (streams, codecs, bitrates)."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stderr


def top_level_atoms(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order (`moov` before `mdat` = faststart)."""
    atoms, at = [], 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        atoms.append(kind)
        if size < 8:
            break
        at += size
    return atoms


def bitrate_kbps(path: Path) -> int | None:
    found = re.search(r"Audio: mp3.*?(\d+) kb/s", report(path))
    return int(found.group(1)) if found else None
