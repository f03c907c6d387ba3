"""Object storage: one interface, an S3 backend and a local-disk backend.

`S3Storage` works with AWS and any S3-compatible server (`S3_ENDPOINT_URL`, path-style
addressing), with botocore's standard retry mode; what is left after its retries leaves
as `errors.py`'s classes. `LocalStorage` keeps objects under `var/storage` for
development. Both validate every key the same way: no `..` or `.` segments, no absolute
paths, no empty segments, no NUL or other control characters, at most 1024 bytes.

An S3 error keeps S3's code and status with a fixed phrase for the code (`S3_CODES`):
S3-compatible servers can repeat the bucket, the key or the request in their message,
and keys can hold personal data, so neither S3's message, botocore's text (which quotes
it, or the parameters it refused) nor the key is put on an error or chained to it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from integrations.error_text import phrase, safe_code
from switchyard.base.errors import JobError, NotConfigured, PermanentError, RetryableError

#: S3's own limit on a key's length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Most keys one DeleteObjects call takes.
MAX_DELETE_KEYS = 1000


class InvalidKey(PermanentError):
    """A storage key that could escape its root or that S3 would refuse."""


class ObjectNotFound(PermanentError):
    """No object under that key."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime.datetime  # timezone-aware (UTC)


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise `InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("storage key is empty", code="invalid_key", provider="storage")
    problem = _key_problem(key)
    if problem:  # the key itself is left out: keys can hold personal data
        raise InvalidKey(f"storage key is invalid: {problem}", code="invalid_key",
                         provider="storage")
    return key


def _key_problem(key: str) -> str | None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if "\x00" in key:
        return "it contains NUL"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "it contains a control character"
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":"):
        return "it is an absolute path"
    if "\\" in key:
        return "it contains a backslash"
    segments = key.split("/")
    if any(s in ("..", ".") for s in segments):
        return "it contains a '.' or '..' segment"
    if any(s == "" for s in segments):
        return "it contains an empty segment"
    return None


class Storage(Protocol):
    """What the workers need of object storage."""

    name: str

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...
    def delete(self, key: str) -> None: ...  # a missing key is not an error
    def delete_many(self, keys: Sequence[str]) -> int: ...  # S3: DeleteObjects, 1,000 a call
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[StoredObject]: ...
    def url(self, key: str, *, expires_in_ms: int | None = None) -> str: ...
    def download(self, key: str, path: Path) -> None: ...
    def upload(self, path: Path, key: str, *, content_type: str | None = None) -> None: ...


class LocalStorage:
    """Objects as files under `root` (development); writes are atomic renames."""

    name = "local"

    def __init__(self, root: Path, *, signer: UrlSigner | None = None) -> None:
        self.root = Path(root).resolve()
        #: Makes `url()` a signed, expiring URL served by the web process (web/media.py).
        self.signer = signer

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if self.root not in path.parents:  # a symlink pointing out of the root
            raise InvalidKey("storage key leaves the storage root", code="invalid_key",
                             provider="storage")
        return path

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise _not_found("local") from None
        except OSError as error:
            raise _disk(error) from error

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        path = self._path(key)
        self._atomic(path, lambda file: file.write(data))

    def upload(self, path: Path, key: str, *, content_type: str | None = None) -> None:
        target = self._path(key)
        with open(path, "rb") as source:
            self._atomic(target, lambda file: shutil.copyfileobj(source, file))

    def _atomic(self, path: Path, write: Any) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as file:
                    write(file)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (FileExistsError, NotADirectoryError) as error:
            raise InvalidKey(f"storage key clashes with an existing object: {error.strerror}",
                             code="invalid_key", provider="storage") from error
        except OSError as error:
            raise _disk(error) from error

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        try:
            shutil.copyfile(source, path)
        except (FileNotFoundError, IsADirectoryError) as error:
            if not source.is_file():
                raise _not_found("local") from None
            raise _disk(error) from error
        except OSError as error:
            raise _disk(error) from error

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as error:
            raise _disk(error) from error

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete these objects (missing ones too); how many keys were asked for."""
        for key in keys:
            self.delete(key)
        return len(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.startswith(".tmp-"):
                    continue
                path = Path(dirpath, filename)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    yield StoredObject(key, stat.st_size, datetime.datetime.fromtimestamp(
                        stat.st_mtime, datetime.UTC))

    def url(self, key: str, *, expires_in_ms: int | None = None) -> str:
        """With a signer, the web process's signed URL valid for `expires_in_ms` (default
        STORAGE_URL_TTL_MS); without one (tools, tests), a `file://` URL."""
        path = self._path(key)
        if not path.is_file():
            raise _not_found("local")
        if self.signer is not None:
            return self.signer.url(key, expires_in_ms)
        return path.as_uri()

    def open_signed(self, key: str, expires: str, signature: str) -> Path:
        """The file a signed URL names, if its signature is valid and not expired."""
        if self.signer is None or not self.signer.valid(key, expires, signature):
            raise InvalidKey("the URL's signature is invalid or has expired",
                             code="bad_signature", provider="local")
        path = self._path(key)
        if not path.is_file():
            raise _not_found("local")
        return path


#: Where the web process serves local-storage objects (web/media.py).
MEDIA_PATH = "/media/"


class UrlSigner:
    """Expiring HMAC-SHA256 signatures over `<key>\n<expires>` for local-storage URLs."""

    def __init__(self, secret: bytes, base_url: str, ttl_ms: int) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl_ms = ttl_ms

    def __repr__(self) -> str:
        return f"UrlSigner({self.base_url!r})"

    def signature(self, key: str, expires: str) -> str:
        mac = hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def url(self, key: str, expires_in_ms: int | None = None) -> str:
        expires = str(int(time.time()) + max(1, (expires_in_ms or self.ttl_ms) // 1000))
        query = urlencode({"expires": expires, "signature": self.signature(key, expires)})
        return f"{self.base_url}{MEDIA_PATH}{quote(validate_key(key))}?{query}"

    def valid(self, key: str, expires: str, signature: str) -> bool:
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature.encode(), self.signature(key, expires).encode())


class S3Storage:
    """Objects in an S3 bucket through boto3 (AWS, or any S3-compatible `endpoint_url`)."""

    name = "s3"

    def __init__(
        self, bucket: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
        access_key_id: str | None = None, secret_access_key: str | None = None,
        max_attempts: int = 5, connect_timeout_s: float = 5, read_timeout_s: float = 30,
        url_ttl_ms: int = 3_600_000,
    ) -> None:
        self.bucket = bucket
        self.url_ttl_ms = url_ttl_ms
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config,
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> S3Storage:
        if not settings.s3_bucket:
            raise NotConfigured("S3", "S3_BUCKET", why="STORAGE_BACKEND=s3")
        if settings.s3_access_key_id and settings.s3_secret_access_key is None:
            raise NotConfigured("S3", "S3_SECRET_ACCESS_KEY", why="S3_ACCESS_KEY_ID is set")
        secret = settings.s3_secret_access_key
        return cls(
            settings.s3_bucket, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region, access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            max_attempts=settings.s3_max_attempts,
            connect_timeout_s=settings.http_connect_timeout_ms / 1000,
            read_timeout_s=max(settings.http_timeout_ms / 1000, 30),
            url_ttl_ms=settings.storage_url_ttl_ms,
        )

    def get(self, key: str) -> bytes:
        with s3_errors():
            body = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))["Body"]
            return bytes(body.read())

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with s3_errors():
            self.client.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, **extra)

    def upload(self, path: Path, key: str, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        with s3_errors():
            self.client.upload_file(str(path), self.bucket, validate_key(key), ExtraArgs=extra)

    def download(self, key: str, path: Path) -> None:
        with s3_errors():
            self.client.download_file(self.bucket, validate_key(key), str(path))

    def delete(self, key: str) -> None:
        with s3_errors():  # S3 answers 204 for a missing key: deleting is idempotent
            self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete these objects with DeleteObjects, up to 1,000 keys a call.

        A missing key counts as deleted (S3 says so too); a key S3 could not delete
        fails the call with that key's error code, after the rest of its call was done.
        """
        wanted = [validate_key(key) for key in keys]
        for start in range(0, len(wanted), MAX_DELETE_KEYS):
            chunk = wanted[start:start + MAX_DELETE_KEYS]
            with s3_errors():
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": key} for key in chunk], "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                raise _delete_failed(errors)
        return len(wanted)

    def exists(self, key: str) -> bool:
        try:
            with s3_errors():
                self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        with s3_errors():
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"], int(item["Size"]), item["LastModified"])

    def url(self, key: str, *, expires_in_ms: int | None = None) -> str:
        """A presigned GET URL, valid for `expires_in_ms` (default STORAGE_URL_TTL_MS)."""
        seconds = max(1, (expires_in_ms or self.url_ttl_ms) // 1000)
        with s3_errors():
            return str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)},
                ExpiresIn=seconds))


#: S3 error codes (and bare HTTP statuses, as head requests give) by class.
S3_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
S3_RETRYABLE = frozenset({
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "500", "502", "503", "504", "429",
})
#: Our phrase for each S3 error code the workers meet.
S3_CODES: dict[str, str] = {
    "NoSuchBucket": "no such bucket", "AccessDenied": "access denied",
    "InvalidAccessKeyId": "the access key id is not known",
    "SignatureDoesNotMatch": "the request signature does not match (wrong secret key?)",
    "ExpiredToken": "the credentials have expired", "InvalidToken": "the token is invalid",
    "InvalidArgument": "invalid argument", "InvalidRequest": "invalid request",
    "InvalidBucketName": "invalid bucket name", "EntityTooLarge": "the object is too large",
    "KeyTooLongError": "the key is too long", "MethodNotAllowed": "method not allowed",
    "SlowDown": "slow down: request rate too high", "InternalError": "internal error",
    "ServiceUnavailable": "service unavailable", "RequestTimeout": "request timed out",
    "Throttling": "throttled", "ThrottlingException": "throttled",
    "RequestLimitExceeded": "request limit exceeded",
}


@contextmanager
def s3_errors() -> Iterator[None]:
    """Turn what boto3 raises (after its own retries) into `errors.py`'s classes.

    botocore's exceptions quote S3's message or the refused parameters, so none is
    chained onto the job error (`from None`).
    """
    try:
        yield
    except S3UploadFailedError as error:  # boto3 wraps the ClientError it caught
        cause = error.__context__
        if isinstance(cause, ClientError):
            raise _classify_s3(cause) from None
        raise RetryableError("S3 upload failed", provider="S3") from None
    except ClientError as error:
        raise _classify_s3(error) from None
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise PermanentError("S3 has no credentials: set S3_ACCESS_KEY_ID and "
                             "S3_SECRET_ACCESS_KEY (or give the process a role)",
                             code="NoCredentials", provider="S3") from error
    except ParamValidationError:
        raise PermanentError("S3 refused the request's parameters before sending",
                             code="ParamValidation", provider="S3") from None
    except (BotoConnectionError, HTTPClientError) as error:
        raise RetryableError(f"S3 could not be reached ({type(error).__name__})",
                             code="connection", provider="S3") from error


def _classify_s3(error: ClientError) -> JobError:
    info = error.response.get("Error", {})
    code = str(info.get("Code") or "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else None
    if code in S3_NOT_FOUND:
        return ObjectNotFound("no such object", code="NoSuchKey", provider="S3", status=status)
    text = phrase(S3_CODES, code, status)
    if code in S3_RETRYABLE or (status is not None and status >= 500):
        return RetryableError(text, code=safe_code(code), provider="S3", status=status)
    return PermanentError(text, code=safe_code(code), provider="S3", status=status)


def _delete_failed(errors: list[dict[str, Any]]) -> JobError:
    """DeleteObjects' per-key errors as one job error (codes only: keys can be personal)."""
    code = str(errors[0].get("Code") or "")
    text = f"S3 could not delete {len(errors)} object(s): {phrase(S3_CODES, code, None)}"
    if code in S3_RETRYABLE:
        return RetryableError(text, code=safe_code(code), provider="S3")
    return PermanentError(text, code=safe_code(code), provider="S3")


def _not_found(provider: str) -> ObjectNotFound:
    return ObjectNotFound("no such object", code="NoSuchKey", provider=provider)


def _disk(error: OSError) -> JobError:
    return RetryableError(f"local storage: {error.strerror or error}", code="disk",
                          provider="local")
