"""Media URLs: records hold keys; clients get presigned S3 URLs, or the web process's
HMAC-signed local URLs, which work until their TTL and never after it or altered."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from integrations.storage import S3Storage
from processing.media_jobs import safe_name
from store.migrate import upgrade
from store.models import Message
from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY, MotoS3
from tests.support.waiting import wait_for

KEY, THUMB = "media/m1/processed.jpg", "media/m1/thumb.jpg"


@pytest.fixture
def media_web(make_web):
    web = make_web(storage_url_ttl_ms=2_000)
    upgrade(web.sy.settings.db_url)
    storage = web.sy.providers.storage()
    storage.put(KEY, b"processed bytes")
    storage.put(THUMB, b"thumb bytes")
    with web.sy.database.session() as session:
        session.add(Message(id="m1", user_id="u1", media_url=KEY, thumbnail_url=THUMB,
                            media_status="done"))
    return web


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_client_gets_signed_urls_that_serve_the_objects_without_credentials(media_web):
    answer = media_web.client.get("/api/media/m1")
    assert answer.status_code == 200
    body = answer.json()
    assert body["url"].startswith("http://127.0.0.1:8000/media/media/m1/processed.jpg?expires=")
    assert body["expires_in_ms"] == 2_000
    got = media_web.anonymous.get(path_of(body["url"]))
    assert got.status_code == 200 and got.content == b"processed bytes"
    assert got.headers["content-type"] == "image/jpeg"
    assert media_web.anonymous.get(path_of(body["thumbnail_url"])).content == b"thumb bytes"


def test_a_changed_signature_key_or_expiry_is_refused(media_web):
    url = path_of(media_web.client.get("/api/media/m1").json()["url"])
    query = parse_qs(urlsplit(url).query)
    signature, expires = query["signature"][0], query["expires"][0]
    changed = [
        url.replace(f"signature={signature}", f"signature={signature[:-1]}A"
                    if not signature.endswith("A") else f"signature={signature[:-1]}B"),
        url.replace("processed.jpg", "thumb.jpg"),
        url.replace(f"expires={expires}", f"expires={int(expires) + 3600}"),
        url.split("?")[0], "/media/media/m1/processed.jpg?expires=&signature=",
    ]
    for bad in changed:
        answer = media_web.anonymous.get(bad)
        assert answer.status_code == 403, bad
        assert answer.json()["detail"] == "the URL's signature is invalid or has expired"


def test_a_signed_url_works_until_its_ttl_and_is_refused_after_it(media_web):
    url = path_of(media_web.client.get("/api/media/m1").json()["url"])
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert media_web.anonymous.get(url).status_code == 200
    wait_for(lambda: media_web.anonymous.get(url).status_code == 403 or None, timeout=10,
             what="the URL to expire")
    assert time.time() >= expires


def test_media_urls_need_credentials_and_a_processed_message(media_web):
    assert media_web.anonymous.get("/api/media/m1").status_code == 401
    assert media_web.client.get("/api/media/nope").status_code == 404


@pytest.mark.parametrize(("given", "kept"), [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\ann\\photo.jpg", "photo.jpg"),
    ("..hidden.png", "hidden.png"), ("a\x00b\nc.jpg", "a_b_c.jpg"),
    ("x/../../", None), ("", None), ("ok name (1).jpg", "ok name (1).jpg"),
])
def test_original_names_are_sanitised_before_they_are_recorded(given, kept):
    assert safe_name(given) == kept


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoS3()
    yield server
    server.stop()


def test_s3_urls_are_presigned_with_the_ttl_and_objects_are_private(moto, tmp_path):
    bucket = moto.new_bucket()
    try:
        storage = S3Storage(bucket, endpoint_url=moto.url, access_key_id=ACCESS_KEY,
                            secret_access_key=SECRET_KEY, url_ttl_ms=90_000)
        source = tmp_path / "p.jpg"
        source.write_bytes(b"jpeg")
        storage.upload(source, KEY, content_type="image/jpeg")
        query = parse_qs(urlsplit(storage.url(KEY)).query)
        assert query["X-Amz-Expires"] == ["90"] and query["X-Amz-Signature"][0]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        with urllib.request.urlopen(storage.url(KEY)) as answer:  # noqa: S310 (loopback)
            assert answer.read() == b"jpeg"
        grants = moto.client.get_object_acl(Bucket=bucket, Key=KEY)["Grants"]
        assert not [g for g in grants if "URI" in g["Grantee"]]  # no AllUsers, no public-read
    finally:
        moto.drop_bucket(bucket)


def test_without_a_signature_nothing_is_served_even_for_a_real_key(media_web):
    assert media_web.anonymous.get("/media/" + KEY).status_code == 403


def test_storage_left_unconfigured_is_a_503_naming_the_setting(make_web):
    web = make_web(storage_backend="s3", s3_bucket=None)
    upgrade(web.sy.settings.db_url)
    with web.sy.database.session() as session:
        session.add(Message(id="m2", user_id="u1", media_url=KEY, media_status="done"))
    answer = web.client.get("/api/media/m2")
    assert answer.status_code == 503 and "S3_BUCKET is not set" in answer.json()["detail"]
    served = web.anonymous.get(f"/media/{KEY}?expires=1&signature=x")
    assert served.status_code == 503
