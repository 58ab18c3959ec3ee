"""S3 backend (boto3), for any endpoint: AWS, MinIO, Ceph, R2, B2, moto.

Handles the field's known traps: Content-MD5 on every write (some stores demand it,
and boto3 >= 1.36 no longer sends it), every listing paged, DeleteObjects with a
fallback to single deletes, multipart uploads aborted on failure and listed as
leftovers, deletes verified, cold storage classes never used for metadata. Each
request's failure is translated to one line in `_call`; throttling, 5xx, dropped
connections and short bodies are marked transient, and `RetryingStorage`
(storage/retry.py) retries the operation (one request: a small put, a get, a stat;
a stream cut part-way resumes with a ranged GET for the rest).
An operation made of several requests (multipart upload, paged listing, delete and
its verification, version removal) retries each request with the same policy
(`_request`), so a late failure does not start it over.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import botocore.config
import botocore.exceptions
import botocore.session

from agents.backup.errors import NotFound, StorageError
from agents.backup.storage.base import STREAM_BLOCK, ObjectInfo, ObjectKind, S3Endpoint
from agents.backup.storage.retry import retry_call, transient

if TYPE_CHECKING:  # imported when used: an early unlock opens keys before the config models
    from agents.config import S3Config

T = TypeVar("T")

COLD_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
        "BadDigest",
        "IncompleteBody",
    }
)
_DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken"}
)


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ClientLimits:
    """How a client waits and how many connections it keeps (S3Config's fields)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_concurrency: int = 4

    @classmethod
    def of(cls, config: S3Config) -> ClientLimits:
        return cls(
            config.connect_timeout.total_seconds(),
            config.read_timeout.total_seconds(),
            config.max_concurrency,
        )


def client_for(endpoint: S3Endpoint, limits: ClientLimits) -> Any:
    """One S3 client per endpoint, credentials and settings, for the process's life.

    A client loads botocore's service model (megabytes of JSON); the daemon opens the
    repository for every job, and a client per open made the agent's memory grow with
    each backup. An early unlock makes the client a command's repository then uses.
    Clients are thread-safe; creating them is not, hence the lock. The secret is part
    of the key only as a digest. Made by botocore, as boto3 makes them (same
    credential chain), without importing boto3 and s3transfer, which add about 70 ms
    of start-up to every S3 command for upload helpers it never calls."""
    key = (*endpoint.identity(), limits)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=endpoint.endpoint_url,
                region_name=endpoint.region,
                aws_access_key_id=endpoint.access_key_id,
                aws_secret_access_key=endpoint.secret_access_key,
                config=botocore.config.Config(
                    # every retry is ours (storage/retry.py), so attempts do not multiply
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=limits.connect_timeout,
                    read_timeout=limits.read_timeout,
                    # a backup reads index files and snapshots at once, GET_MANY each
                    max_pool_connections=max(20, limits.max_concurrency * 2),
                    s3={"addressing_style": "path" if endpoint.path_style else "auto"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
            _CLIENTS[key] = client
        return client


class S3Storage:
    """A bucket and key prefix as a repository's storage; open it with `open_storage`,
    which adds the retries."""

    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        self._place(bucket, prefix, S3Endpoint.of(config), ClientLimits.of(config))
        self.config = config
        self.attempts = config.max_attempts

    @classmethod
    def reader(cls, bucket: str, prefix: str, endpoint: S3Endpoint, attempts: int) -> S3Storage:
        """A storage that only lists and reads, made without the config models (which an
        early unlock runs before): default client limits, no write settings."""
        storage = cls.__new__(cls)
        storage._place(bucket, prefix, endpoint, ClientLimits())
        storage.attempts = attempts
        return storage

    def _place(self, bucket: str, prefix: str, endpoint: S3Endpoint, limits: ClientLimits) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.endpoint = endpoint.endpoint_url or f"AWS S3 ({endpoint.region})"
        self.client = client_for(endpoint, limits)

    # --- interface ---------------------------------------------------------------------

    def put(self, key: str, data: bytes, kind: ObjectKind = ObjectKind.META) -> None:
        args = self._put_args(kind)
        if len(data) > self.config.multipart_threshold:
            self._multipart(key, data, args)
            return
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        self._call(
            f"write {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentMD5=md5, **args
            ),
        )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            args["Range"] = f"bytes={start}-{end}"

        def read() -> bytes:
            response = self.client.get_object(**args)
            body = response["Body"].read()
            if length is not None and len(body) != length:
                raise _ShortRead(f"got {len(body)} of {length} bytes")
            if "Range" not in args:
                # a whole object: its ETag is its MD5 when uploaded in one part without
                # KMS, so a body cut short by a lying proxy is caught here, and retried
                etag = str(response.get("ETag", "")).strip('"')
                kms = response.get("ServerSideEncryption") == "aws:kms"
                plain_md5 = len(etag) == 32 and "-" not in etag and not kms
                if plain_md5 and hashlib.md5(body).hexdigest() != etag:
                    raise _ShortRead(f"got {len(body)} bytes that do not match the ETag")
            return body

        return self._call(f"read {key}", read)

    def stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        if length is not None and length <= 0:
            return
        end = "" if length is None else str(start + length - 1)
        args = {"Bucket": self.bucket, "Key": self.prefix + key, "Range": f"bytes={start}-{end}"}
        what = f"read {key}"

        def begin() -> Any:
            response = self.client.get_object(**args)
            if not _whole_reply(response, start, length):
                response["Body"].close()
                raise _ShortRead(f"the reply to bytes={start}-{end} is not that range")
            return response["Body"]

        body = self._call(what, begin)
        try:
            while True:
                block = self._call(what, lambda: _read_some(body, STREAM_BLOCK))
                if not block:
                    return
                yield block
        finally:
            body.close()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Paged by hand: each page's request is retried on its own (`_request`), so a
        # retry resumes at its page, never truncates the listing.
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        while True:
            page = self._request(f"list {prefix}", lambda: self.client.list_objects_v2(**args))
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    item["Key"][len(self.prefix) :], int(item["Size"]), item.get("LastModified")
                )
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, keys: list[str], verify: bool = True) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            objects = {"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True}
            try:
                response = self._request(
                    f"delete {len(batch)} objects",
                    lambda o=objects: self.client.delete_objects(Bucket=self.bucket, Delete=o),
                    raw=True,
                )
                # a key the batch refused is retried alone: some S3-compatible stores
                # (moto with IAM on, seen) refuse in DeleteObjects what DeleteObject allows;
                # a key that is really denied fails there with a one-line error
                for error in response.get("Errors", []):
                    full = error["Key"]
                    self._request(
                        f"delete {full.removeprefix(self.prefix)}",
                        lambda k=full: self.client.delete_object(Bucket=self.bucket, Key=k),
                    )
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in _DENIED | {"NoSuchBucket"}:
                    raise self._error(f"delete {batch[0]}", exc) from None
                for key in batch:  # the store refuses DeleteObjects: one at a time
                    self._request(
                        f"delete {key}",
                        lambda k=key: self.client.delete_object(
                            Bucket=self.bucket, Key=self.prefix + k
                        ),
                    )
        for key in keys if verify else ():
            if self._exists(key):
                raise StorageError(f"{self.url}: {key} still exists after delete")

    def stat(self, key: str) -> ObjectInfo:
        head = self._call(
            f"stat {key}",
            lambda: self.client.head_object(Bucket=self.bucket, Key=self.prefix + key),
        )
        return ObjectInfo(key, int(head["ContentLength"]))

    def retention(self, key: str) -> datetime | None:
        """The Object Lock retain-until date of an object, if any (read from HEAD)."""
        head = self._call(
            f"stat {key}",
            lambda: self.client.head_object(Bucket=self.bucket, Key=self.prefix + key),
        )
        until = head.get("ObjectLockRetainUntilDate")
        return until if isinstance(until, datetime) else None

    def delete_versions(self, keys: list[str]) -> None:
        """Remove every stored version of the keys (versioned buckets keep them otherwise)."""
        for key in keys:
            full = self.prefix + key
            args = {"Bucket": self.bucket, "Prefix": full}
            listing = self._request(
                f"list versions of {key}", lambda a=args: self.client.list_object_versions(**a)
            )
            for version in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
                if version["Key"] != full:
                    continue
                self._request(
                    f"delete a version of {key}",
                    lambda v=version["VersionId"], k=full: self.client.delete_object(
                        Bucket=self.bucket, Key=k, VersionId=v
                    ),
                )

    def leftovers(self) -> list[str]:
        return [f"{key[len(self.prefix) :]} (upload {upload})" for key, upload in self._uploads()]

    def abort_leftovers(self) -> int:
        """Abort every incomplete multipart upload under the prefix."""
        count = 0
        for key, upload in list(self._uploads()):
            self._request(
                f"abort upload of {key}",
                lambda k=key, u=upload: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=k, UploadId=u
                ),
            )
            count += 1
        return count

    def _uploads(self) -> Iterator[tuple[str, str]]:
        """Incomplete multipart uploads (key, upload ID), every page."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self._request(
                "list incomplete uploads", lambda: self.client.list_multipart_uploads(**args)
            )
            for upload in page.get("Uploads", []):
                yield upload["Key"], upload["UploadId"]
            if not page.get("IsTruncated"):
                return
            args["KeyMarker"] = page.get("NextKeyMarker", "")
            args["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    # --- helpers -----------------------------------------------------------------------

    def _put_args(self, kind: ObjectKind) -> dict[str, Any]:
        cfg = self.config
        args: dict[str, Any] = {}
        if cfg.storage_class:
            if kind is ObjectKind.META and cfg.storage_class in COLD_CLASSES:
                pass  # index, snapshots and keys must stay readable at once: default class
            else:
                args["StorageClass"] = cfg.storage_class
        if cfg.sse:
            args["ServerSideEncryption"] = cfg.sse
            if cfg.sse == "aws:kms" and cfg.kms_key_id:
                args["SSEKMSKeyId"] = cfg.kms_key_id
        if cfg.tags:
            args["Tagging"] = urllib.parse.urlencode(cfg.tags)
        if cfg.object_lock:
            args["ObjectLockMode"] = cfg.object_lock.mode
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=cfg.object_lock.days
            )
        return args

    def _multipart(self, key: str, data: bytes, args: dict[str, Any]) -> None:
        full_key = self.prefix + key
        upload = self._request(
            f"start upload of {key}",
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key, **args),
        )
        upload_id = upload["UploadId"]
        size = max(5 * 2**20, self.config.multipart_chunk_size)
        offsets = list(range(0, len(data), size))

        def part(index: int) -> dict[str, Any]:
            body = data[offsets[index] : offsets[index] + size]
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            response = self._request(
                f"upload part {index + 1} of {key}",
                lambda: self.client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=index + 1,
                    Body=body,
                    ContentMD5=md5,
                ),
            )
            return {"PartNumber": index + 1, "ETag": response["ETag"]}

        try:
            with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
                parts = list(pool.map(part, range(len(offsets))))
            self._request(
                f"complete upload of {key}",
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except BaseException:
            with contextlib.suppress(StorageError):  # else `backup check` lists it as leftover
                self._request(
                    f"abort upload of {key}",
                    lambda: self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=full_key, UploadId=upload_id
                    ),
                )
            raise

    def _exists(self, key: str) -> bool:
        try:
            self._request(
                f"stat {key}",
                lambda: self.client.head_object(Bucket=self.bucket, Key=self.prefix + key),
            )
        except NotFound:
            return False
        return True

    def _call(self, what: str, fn: Callable[[], T], raw: bool = False) -> T:
        """Run one request and translate its failure to one line: a missing object is
        NotFound, throttling, 5xx and dropped connections are marked transient (for
        RetryingStorage), the rest fail as they are. With `raw`, a ClientError is raised
        as it is, marked if transient (for callers that fall back on an error code)."""
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{self.url}: {what.split(' ', 1)[-1]} does not exist") from None
            if raw:
                if code in _RETRYABLE_CODES:
                    transient(exc)
                raise
            if code in _RETRYABLE_CODES:
                raise transient(self._error(what, exc)) from None
            raise self._error(what, exc) from None
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.IncompleteReadError,
            _ShortRead,
            ConnectionError,
        ) as exc:
            raise transient(self._error(what, exc)) from None

    def _request(self, what: str, fn: Callable[[], T], raw: bool = False) -> T:
        """One request of an operation made of several (pages, parts, batches), retried
        here with RetryingStorage's policy: a failure late in a long operation does not
        start it over. A failure that used up its attempts is final, never retried again."""
        return retry_call(lambda: self._call(what, fn, raw), self.attempts)

    def _error(self, what: str, exc: Exception) -> StorageError:
        where = f"bucket {self.bucket} at {self.endpoint}"
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                return StorageError(f"{where}: bucket does not exist")
            if code in _DENIED:
                return StorageError(f"{where}: access denied ({code}) to {what}")
            message = exc.response.get("Error", {}).get("Message", "")
            return StorageError(f"{where}: cannot {what}: {code} {message}".strip())
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return StorageError(f"{where}: endpoint unreachable")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StorageError(f"{where}: cannot {what}: {type(exc).__name__}")
        return StorageError(f"{where}: cannot {what}: {type(exc).__name__}: {exc}")


class _ShortRead(Exception):
    pass


def _read_some(body: Any, size: int) -> bytes:
    """Up to `size` bytes of a streamed reply, b"" at its end; a reply that ends before
    its Content-Length raises (botocore checks it), a transient failure: the stream
    resumes where it stopped."""
    return bytes(body.read(size))


def _whole_reply(response: dict[str, Any], start: int, length: int | None) -> bool:
    """Whether a ranged GET's reply holds the whole range asked: its Content-Range says
    so (to the object's end when `length` is None) and its Content-Length agrees. A
    proxy that cuts a body short behind a matching Content-Length fails this."""
    size = int(response.get("ContentLength", -1))
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", str(response.get("ContentRange", "")))
    if match is None:  # a store that ignores ranges sends the whole object
        return start == 0 and (length is None or size == length)
    first, last, total = (int(g) for g in match.groups())
    if first != start or size != last - first + 1:
        return False
    return size == length if length is not None else last + 1 == total


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
