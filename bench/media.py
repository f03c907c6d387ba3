"""Media jobs' transforms: images per second and peak memory, video and audio speed.

Why: the `media` process has 2 threads on a shared machine. The image step must beat a
naive Pillow version (full decode, `resize`) by decoding large JPEGs at reduced scale
(draft mode), keep each job's memory small, and keep up with pyvips where it installs.
Video must run well faster than real time; a voice note must be done in well under 1 s.

Image: a generated 12-megapixel JPEG (4000x3000, noisy so it compresses like a photo)
made into a <= 2048 image plus a 200x200 centre-cropped thumbnail, both saved as
progressive optimised JPEG at the same quality, by three implementations:
  switchyard   `processing.media.process_image` (draft decode, LANCZOS with reducing_gap)
  naive        Pillow: full decode, `resize` to fit 2048, `ImageOps.fit` thumbnail
  pyvips       `Image.thumbnail` (shrink-on-load) and `thumbnail_image`, if importable
Each runs in a fresh child process, on 1 and on 2 threads, reporting images/s, its
peak RSS, and how far that peak rose above its RSS between images (the jobs' own cost;
the peak is reset after the imports and a warm-up image).

Video: a generated 20 s 1280x720 clip, transcoded (MPEG-4 Part 2/MP2 AVI -> H.264/AAC)
and copied (H.264/AAC MP4 -> faststart MP4), as multiples of real time.
Audio: a 60 s mono voice-note-like Ogg Vorbis file, waveform plus MP3.

Usage: uv run python bench/media.py [--images 8] [--skip-video]
Last lines: `image_vs_naive=<ratio>` and `image_vs_pyvips=<ratio>` (1 thread, images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import status_kb  # noqa: E402
from processing import media  # noqa: E402
from processing.media import Limits  # noqa: E402

LIMITS = Limits()
METHODS = ("switchyard", "naive", "pyvips")


def make_photo(path: Path) -> None:
    """A 4000x3000 JPEG at quality 90, about 2.9 MB (a phone photo's size): gradients,
    a Mandelbrot set for edges and sensor-like noise, so it decodes like a photo."""
    from PIL import Image

    size = (4000, 3000)
    noise = Image.effect_noise(size, 24)
    edges = Image.effect_mandelbrot(size, (-2.2, -1.2, 1.0, 1.2), 60)
    red = Image.blend(Image.linear_gradient("L").resize(size), noise, 0.5)
    blue = Image.blend(Image.radial_gradient("L").resize(size), noise, 0.3)
    Image.merge("RGB", (red, edges, blue)).save(path, "JPEG", quality=90)


def naive(source: Path, work: Path) -> None:
    from PIL import Image, ImageOps

    with Image.open(source) as image:
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        scale = min(1.0, LIMITS.max_side / max(upright.size))
        resized = upright.resize((round(upright.width * scale), round(upright.height * scale)),
                                 Image.Resampling.LANCZOS)
        thumb = ImageOps.fit(resized, (200, 200), Image.Resampling.LANCZOS)
        options = {"quality": LIMITS.quality, "progressive": True, "optimize": True}
        resized.save(work / "processed.jpg", "JPEG", **options)
        thumb.save(work / "thumb.jpg", "JPEG", **options)


def vips(source: Path, work: Path) -> None:
    import pyvips

    image = pyvips.Image.thumbnail(str(source), LIMITS.max_side, height=LIMITS.max_side,
                                   size="down").copy_memory()  # read once, used twice
    thumb = image.thumbnail_image(200, height=200, crop="centre")
    options = {"Q": LIMITS.quality, "interlace": True, "optimize_coding": True}
    image.jpegsave(str(work / "processed.jpg"), **options)
    thumb.jpegsave(str(work / "thumb.jpg"), **options)


def ours(source: Path, work: Path) -> None:
    media.process_image(source, work, "photo.jpg", LIMITS)


def prepare(method: str) -> None:
    """Load what `method` needs, so the baseline RSS holds its libraries."""
    from PIL import Image

    Image.init()
    if method == "switchyard":
        media._register_heif()
    elif method == "pyvips":
        import pyvips  # noqa: F401


def reset_peak() -> int:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS, and return that: the
    imports' own transient peak must not count as the jobs'."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return status_kb("VmRSS")


def child(method: str, source: Path, images: int, threads: int) -> dict[str, Any]:
    """Run in a fresh process: `images` images on `threads` threads, timed."""
    run = {"switchyard": ours, "naive": naive, "pyvips": vips}[method]
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        dirs = [Path(tmp, str(i)) for i in range(images + 1)]
        for d in dirs:
            d.mkdir()
        prepare(method)
        run(source, dirs[-1])  # warm up: plugin registration, codec tables
        before = reset_peak()  # the process with its libraries loaded, between images
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda d: run(source, d), dirs[:-1]))
        elapsed = time.perf_counter() - started
    peak = status_kb("VmHWM")
    return {"ips": images / elapsed, "peak_mb": peak / 1024,
            "per_job_mb": max(0, peak - before) / 1024}


def measure(method: str, source: Path, images: int, threads: int) -> dict[str, Any]:
    """`child` in a fresh interpreter, so no method inherits another's memory."""
    done = subprocess.run([sys.executable, __file__, "--child", method, "--source", str(source),
                           "--images", str(images), "--threads", str(threads)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_images(work: Path, images: int) -> dict[str, dict[int, dict[str, Any]]]:
    source = work / "photo.jpg"
    make_photo(source)
    print(f"image: {source.stat().st_size / 1e6:.1f} MB 4000x3000 JPEG -> <= 2048 + 200x200")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for method in METHODS:
        results[method] = {}
        for threads in (1, 2):
            found = measure(method, source, images, threads)
            results[method][threads] = found
            if "error" in found:
                print(f"  {method:<10} threads={threads}  unavailable: {found['error']}")
                break
            print(f"  {method:<10} threads={threads}  {found['ips']:6.2f} images/s   "
                  f"peak RSS {found['peak_mb']:6.1f} MB (+{found['per_job_mb']:.1f} MB "
                  "over the process between images)")
    return results


def timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def bench_video(work: Path) -> None:
    from tests.support import media_files

    for h264, name in ((False, "transcode"), (True, "copy")):
        clip = media_files.video(work / f"clip-{name}.{'mp4' if h264 else 'avi'}",
                                 h264=h264, seconds=20, size="1280x720")
        out = work / f"out-{name}"
        out.mkdir()
        seconds = timed(media.process_video, clip, out, LIMITS)
        print(f"video {name:<9}: 20 s 720p in {seconds:.2f} s = {20 / seconds:.1f}x real time")


def bench_audio(work: Path) -> None:
    from tests.support import media_files

    note = work / "voice.ogg"
    media_files.ffmpeg("-f", "lavfi", "-i", "anoisesrc=a=0.3:r=16000,lowpass=f=3000",
                       "-t", "60", "-ac", "1", "-c:a", "libvorbis", str(note))
    out = work / "out-audio"
    out.mkdir()
    seconds = timed(media.process_audio, note, out, LIMITS)
    print(f"audio: 60 s voice note, waveform + 128k MP3 in {seconds:.2f} s")


def ratio(results: dict[str, dict[int, dict[str, Any]]], other: str) -> str:
    ours_ips = results["switchyard"][1].get("ips")
    theirs = results[other].get(1, {})
    if not ours_ips or "ips" not in theirs:
        return f"unavailable ({theirs.get('error', 'not measured')})"
    return f"{ours_ips / theirs['ips']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.source, args.images, args.threads)))
        return
    print(f"cpus: {os.cpu_count()}  ffmpeg: {media.ffmpeg_exe()}")
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        results = bench_images(Path(tmp), args.images)
        if not args.skip_video:
            bench_video(Path(tmp))
        bench_audio(Path(tmp))
    print(f"image_vs_naive={ratio(results, 'naive')}")
    print(f"image_vs_pyvips={ratio(results, 'pyvips')}")


if __name__ == "__main__":
    main()
