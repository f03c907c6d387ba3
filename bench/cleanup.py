"""The expired-stories cleanup at scale: rows per second and peak RSS, against a naive
one-row-at-a-time loop, on PostgreSQL and moto's S3 server.

Why: a cleanup job must keep up with a backlog (a clock down for a day, a first run on
an old database) without holding long locks or growing with the backlog. Switchyard's
job (`processing.cleanup.expired_stories`) works in batches: one SELECT, one UPDATE, one
statistics write and one commit per batch, then one DeleteObjects call for the batch's
keys. The naive loop does what a first version would: per story a SELECT, an UPDATE, a
statistics upsert, a commit and a DeleteObject call.

Each size N seeds N expired stories, each with a media object in S3 and its
`media_objects` record, in a database of its own; the job runs in a child process
(its peak RSS, VmHWM, is the child's own). The naive loop runs on its own NAIVE
stories (a sample: it is slow), and the ratio compares rows per second.

Usage: uv run python bench/cleanup.py [--sizes 10000,100000] [--naive 2000]
         [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
Last line: `cleanup_vs_naive=<ratio>` (largest size vs the naive loop).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import status_kb  # noqa: E402

ACCESS = {"access_key_id": "bench", "secret_access_key": "bench"}
TTL_MS = 86_400_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server in a process of its own (its memory is not the job's)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("moto did not start") from None
            time.sleep(0.1)


def storage(s3_url: str, bucket: str) -> Any:
    from integrations.storage import S3Storage

    return S3Storage(bucket, endpoint_url=s3_url, **ACCESS)  # type: ignore[arg-type]


def seed(db_url: str, s3_url: str, bucket: str, count: int, tag: str) -> None:
    """`count` stories past the TTL, each with one object in S3 and its record."""
    from sqlalchemy import insert

    from store.db import Database
    from store.models import MediaObject, Story, User

    s3 = storage(s3_url, bucket)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    users = [f"{tag}-u{i}" for i in range(max(1, count // 50))]
    keys = [f"stories/{tag}/{i:07d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.client.put_object(Bucket=bucket, Key=key, Body=b"j" * 64),
                      keys))
    db = Database(db_url)
    with db.session() as session:
        session.execute(insert(User), [{"id": u, "created_at": old, "updated_at": old}
                                       for u in users])
    for start in range(0, count, 5_000):
        part = keys[start:start + 5_000]
        with db.session() as session:
            session.execute(insert(Story), [
                {"id": uuid.uuid4().hex, "user_id": users[i % len(users)], "media_key": key,
                 "created_at": old - datetime.timedelta(seconds=i)}
                for i, key in enumerate(part, start)])
            session.execute(insert(MediaObject), [
                {"key": key, "size": 64, "kind": "original", "created_at": old} for key in part])
    db.dispose()


def naive(db_url: str, s3_url: str, bucket: str) -> int:
    """One story at a time: select, update, statistics, commit, delete the object."""
    from sqlalchemy import delete, select

    from store.db import Database
    from store.models import MediaObject, Story, UserStats, utcnow

    db, s3, done = Database(db_url), storage(s3_url, bucket), 0
    before = utcnow() - datetime.timedelta(milliseconds=TTL_MS)
    while True:
        with db.session() as session:
            story = session.scalars(select(Story).where(
                Story.deleted_at.is_(None), Story.created_at < before).limit(1)).first()
            if story is None:
                return done
            key, story.media_key, story.deleted_at = story.media_key, None, utcnow()
            stats = session.get(UserStats, story.user_id) or UserStats(
                user_id=story.user_id, stories_expired=0)
            stats.stories_expired += 1
            session.add(stats)
        if key:
            s3.delete(key)
            with db.session() as session:
                session.execute(delete(MediaObject).where(MediaObject.key == key))
        done += 1


def child(args: argparse.Namespace) -> None:
    """Run one variant and print its rows and seconds as JSON."""
    from processing import cleanup
    from store.db import Database

    db, s3 = Database(args.db), storage(args.s3, args.bucket)
    with db.session():  # connected, like a worker that has run a job before
        pass
    baseline = peak_rss_mb()
    started = time.perf_counter()
    if args.child == "switchyard":
        result = cleanup.expired_stories(db, s3, ttl_ms=TTL_MS, batch=args.batch,
                                         budget_ms=3_600_000)
        rows = int(result["rows"])
    else:
        rows = naive(args.db, args.s3, args.bucket)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started,
                      "baseline_mb": baseline, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that across
    fork and exec, so a child would report the seeding parent's size."""
    return status_kb("VmHWM") / 1024


def measure(variant: str, db_url: str, s3_url: str, bucket: str,
            batch: int) -> dict[str, Any]:
    """Run a variant in a child process; its figures, with its peak RSS (MB)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", variant, "--db", db_url, "--s3", s3_url,
         "--bucket", bucket, "--batch", str(batch)], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{variant} failed ({proc.returncode})")
    figures = json.loads(out)
    figures["rows_per_s"] = figures["rows"] / figures["seconds"]
    return dict(figures)


def one_size(postgres_url: str, s3_url: str, variant: str, count: int,
             batch: int) -> dict[str, Any]:
    """A database and a bucket of their own, seeded with `count` stories, then the run."""
    import boto3

    os.environ.setdefault("TEST_POSTGRES_URL", postgres_url)
    from store.migrate import upgrade
    from tests.support.services import new_postgres_database

    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(
        Bucket=bucket)
    with new_postgres_database("bench") as db_url:
        upgrade(db_url)
        seeding = time.perf_counter()
        seed(db_url, s3_url, bucket, count, variant)
        print(f"  seeded {count} stories in {time.perf_counter() - seeding:.1f}s", flush=True)
        return measure(variant, db_url, s3_url, bucket, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--naive", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--postgres-url", default=os.environ.get(
        "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--child", choices=["switchyard", "naive"])
    parser.add_argument("--db")
    parser.add_argument("--s3")
    parser.add_argument("--bucket")
    args = parser.parse_args()
    if args.child:
        return child(args)
    moto, s3_url = start_moto()
    try:
        report(args, s3_url)
    finally:
        moto.terminate()
        moto.wait(10)


def report(args: argparse.Namespace, s3_url: str) -> None:
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        print(f"switchyard, {size} stories (batch {args.batch}):", flush=True)
        results[size] = one_size(args.postgres_url, s3_url, "switchyard", size, args.batch)
        r = results[size]
        print(f"  {r['rows']} rows in {r['seconds']:.2f}s: {r['rows_per_s']:.0f} rows/s, "
              f"peak RSS {r['rss_mb']:.0f} MB ({r['baseline_mb']:.0f} MB before the run), "
              f"{r['seconds'] / size * 1e6:.1f} us/row", flush=True)
    print(f"naive, {args.naive} stories:", flush=True)
    slow = one_size(args.postgres_url, s3_url, "naive", args.naive, args.batch)
    print(f"  {slow['rows']} rows in {slow['seconds']:.2f}s: {slow['rows_per_s']:.0f} rows/s, "
          f"peak RSS {slow['rss_mb']:.0f} MB", flush=True)
    largest = results[max(results)]
    print(f"cleanup_vs_naive={largest['rows_per_s'] / slow['rows_per_s']:.1f}")


if __name__ == "__main__":
    main()
