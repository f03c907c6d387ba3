"""One storage contract, run against every backend: S3 (moto's server) and local disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from integrations.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    validate_key,
)
from switchyard.base import settings
from switchyard.base.errors import NotConfigured, PermanentError, RetryableError
from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY, S3Refusing
from tests.integrations.leaks import EMAIL, OTP, PAYLOAD, PHONE, leaked
from tests.support.services import free_port


def s3_storage(url: str, bucket: str, **kwargs: object) -> S3Storage:
    return S3Storage(bucket, endpoint_url=url, access_key_id=ACCESS_KEY,
                     secret_access_key=SECRET_KEY, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["s3", "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage")
        return
    moto = request.getfixturevalue("moto_s3")
    bucket = moto.new_bucket()
    yield s3_storage(moto.url, bucket)
    moto.drop_bucket(bucket)


def test_put_then_get_returns_the_bytes(storage):
    storage.put("uploads/u1/photo.jpg", b"\xff\xd8jpeg", content_type="image/jpeg")
    assert storage.get("uploads/u1/photo.jpg") == b"\xff\xd8jpeg"
    assert storage.exists("uploads/u1/photo.jpg")


def test_put_replaces_an_existing_object(storage):
    storage.put("a/b.txt", b"one")
    storage.put("a/b.txt", b"two")
    assert storage.get("a/b.txt") == b"two"


def test_a_missing_key_is_not_found_and_permanent(storage):
    with pytest.raises(ObjectNotFound) as caught:
        storage.get("nothing/here.txt")
    assert isinstance(caught.value, PermanentError)
    assert not storage.exists("nothing/here.txt")


def test_delete_is_idempotent(storage):
    storage.put("tmp/x.bin", b"x")
    storage.delete("tmp/x.bin")
    storage.delete("tmp/x.bin")  # again: no error
    assert not storage.exists("tmp/x.bin")


def test_list_gives_keys_under_a_prefix_with_size_and_time(storage):
    storage.put("media/1.jpg", b"12345")
    storage.put("media/sub/2.jpg", b"12")
    storage.put("other/3.jpg", b"1")
    listed = {o.key: o for o in storage.list("media/")}
    assert sorted(listed) == ["media/1.jpg", "media/sub/2.jpg"]
    assert listed["media/1.jpg"].size == 5
    assert listed["media/1.jpg"].modified.tzinfo is not None
    assert sorted(o.key for o in storage.list()) == ["media/1.jpg", "media/sub/2.jpg",
                                                     "other/3.jpg"]


def test_upload_and_download_files(storage, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"v" * 100_000)
    storage.upload(source, "videos/v.mp4", content_type="video/mp4")
    target = tmp_path / "out.bin"
    storage.download("videos/v.mp4", target)
    assert target.read_bytes() == source.read_bytes()


def test_download_of_a_missing_key_is_not_found(storage, tmp_path):
    with pytest.raises(ObjectNotFound):
        storage.download("missing.bin", tmp_path / "out.bin")


def test_url_gives_the_object(storage):
    storage.put("share/doc.txt", b"hello")
    url = storage.url("share/doc.txt", expires_in_ms=60_000)
    if url.startswith("file://"):
        assert Path(url.removeprefix("file://")).read_bytes() == b"hello"
    else:
        assert "X-Amz-Expires=60" in url
        assert httpx.get(url).content == b"hello"


@pytest.mark.parametrize("key", [
    "../etc/passwd", "a/../../b", "/abs/path", "\\windows\\path", "C:/x", "a//b", "a/./b",
    "trailing/", "nul\x00byte", "tab\there", "", "k" * 1025,
])
def test_unsafe_keys_are_refused_by_every_operation(storage, key, tmp_path):
    for call in (lambda: storage.get(key), lambda: storage.put(key, b"x"),
                 lambda: storage.delete(key), lambda: storage.exists(key),
                 lambda: storage.url(key), lambda: storage.download(key, tmp_path / "o")):
        with pytest.raises(InvalidKey):
            call()


def test_a_local_symlink_cannot_lead_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        LocalStorage(root).get("link/secret.txt")


def test_ordinary_keys_are_valid():
    for key in ("a", "uploads/user-1/photo.jpg", "thumbs/ünïcode file (1).png", "a..b/c"):
        assert validate_key(key) == key


def test_a_missing_bucket_is_permanent(moto_s3):
    storage = s3_storage(moto_s3.url, "no-such-bucket-here")
    with pytest.raises(PermanentError) as caught:
        storage.put("a.txt", b"x")
    assert caught.value.code == "NoSuchBucket"


def test_an_echoed_request_reaches_no_error():
    # given an S3-compatible server that refuses the upload and repeats the request
    server = S3Refusing(400, "InvalidArgument")
    server.echo = True
    storage = s3_storage(server.url, "uploads", max_attempts=1)
    # when an object whose key and body hold a token, a code, a phone number and an
    # address is put
    try:
        with pytest.raises(PermanentError) as caught:
            storage.put(f"users/{PHONE}/{EMAIL}/{OTP}.txt", PAYLOAD.encode())
    finally:
        server.stop()
    # then the error keeps S3's class, code and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, "InvalidArgument", 400)
    assert leaked(error) == []
    assert error.message == "invalid argument"


def test_a_missing_object_is_not_named_in_the_error(storage):
    # given a key holding a phone number, an address and a code / when it is read
    with pytest.raises(ObjectNotFound) as caught:
        storage.get(f"users/{PHONE}/{EMAIL}/{OTP}.txt")
    # then the error says what is missing, not its key
    assert caught.value.message == "no such object"
    assert leaked(caught.value) == []


def test_an_unreachable_s3_is_retryable():
    storage = s3_storage(f"http://127.0.0.1:{free_port()}", "bucket", max_attempts=1,
                         connect_timeout_s=0.5)
    with pytest.raises(RetryableError) as caught:
        storage.get("a.txt")
    assert caught.value.code == "connection"


def test_s3_selected_without_a_bucket_names_the_setting():
    with pytest.raises(NotConfigured) as caught:
        S3Storage.from_settings(settings.load(_env_file=None, storage_backend="s3"))
    assert "S3_BUCKET" in str(caught.value)


def test_the_secret_key_is_not_in_the_repr(moto_s3):
    storage = s3_storage(moto_s3.url, "bucket")
    # the repr names the bucket (what a log or a traceback needs), and not the secret key
    assert repr(storage) == "S3Storage('bucket')"
    assert SECRET_KEY not in repr(storage)
