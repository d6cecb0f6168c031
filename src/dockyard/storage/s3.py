"""Amazon S3 and S3-compatible stores (Ceph RGW, MinIO, SeaweedFS) through boto3.

boto3 is synchronous: every call runs on the driver's own thread pool, so the event loop never
blocks and the default executor (shared with the local driver) is not starved. The client is
thread-safe and holds no event-loop state, so one store serves any number of loops.

Objects are never buffered whole: `write` and uploads send S3 multipart parts of `part_size`,
holding at most one part in memory; `read` streams one ranged GET in 1 MiB reads.

An upload is one S3 multipart upload at `<prefix>uploads/<id>/data`. S3 wants every part but the
last to be at least 5 MiB, and a registry client may PATCH any amount, so a request's remainder
smaller than `part_size` is stored as a small object `uploads/<id>/tail-<n>-<random>` and
recorded as a Part whose token is `tail:<name>`; the next request reads it back and sends it in
front of its own bytes, so every S3 part is exactly `part_size`. A tail is never overwritten or
deleted while the caller may still hold it as its record: each tail has a fresh name, and tails
other than the recorded one (and the one just written) are removed after the next request and at
completion or abort.

A multipart upload is not an object: `keys` never lists it, and the store keeps its parts until it
is completed or aborted. `pending_uploads` lists the unfinished ones at `uploads/<id>/data`
(ListMultipartUploads) for the storage sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from dockyard.config.settings import S3Storage
from dockyard.storage.protocol import AccessRefused, ObjectMissing, Part, PendingUpload, StorageError, upload_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_CHUNK = 1024 * 1024
MAX_PARTS = 10_000
#: CopyObject copies at most 5 GiB; larger objects are copied part by part (UploadPartCopy).
COPY_LIMIT = 5 * 1024**3
COPY_PART = 1024**3
THREADS = 32
READ_RETRIES = 2
TAIL = "tail:"

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_REFUSED = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
        "403",
    }
)


class S3Store:
    """One bucket (and key prefix) of an S3-compatible store."""

    derived_keys = False

    def __init__(self, name: str, options: S3Storage) -> None:
        self.name = name
        self.bucket = options.bucket
        self.part_size = options.part_size
        prefix = options.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.copy_limit = COPY_LIMIT
        self.copy_part = COPY_PART
        config = Config(
            region_name=options.region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if options.path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=THREADS,
            # The newer default checksums (CRC trailers) break many S3-compatible stores.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=options.access_key,
            aws_secret_access_key=options.secret_key,
            region_name=options.region,
        )
        self._client: S3Client = session.client("s3", endpoint_url=options.endpoint_url, config=config)
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"s3-{name}")

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))
        except Exception as exc:
            raise _translate(exc) from exc

    # -- objects -------------------------------------------------------------------------------

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length is not None and length <= 0:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        end = None if length is None else offset + length - 1
        position, etag, retries = offset, None, READ_RETRIES
        while end is None or position <= end:
            request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
            if position or end is not None:
                request["Range"] = f"bytes={position}-{'' if end is None else end}"
            if etag is not None:
                request["IfMatch"] = etag  # a resumed read must see the same object
            try:
                response = await self._call(self._client.get_object, **request)
            except StorageError as exc:
                if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) == "InvalidRange":
                    if await self.size(key) is None:
                        raise ObjectMissing(key) from None
                    if length is None:
                        return  # offset at or past the end: nothing to read
                    raise StorageError(f"{key} is shorter than expected") from None
                raise
            etag = response.get("ETag")
            body = response["Body"]
            try:
                while True:
                    want = READ_CHUNK if end is None else min(READ_CHUNK, end - position + 1)
                    if want <= 0:
                        return
                    chunk = await self._call(body.read, want)
                    if not chunk:
                        break
                    position += len(chunk)
                    retries = READ_RETRIES
                    yield chunk
            except StorageError:
                # The connection broke mid-object: continue from here with a new ranged GET.
                if retries == 0:
                    raise
                retries -= 1
                log.warning("s3 read of %s broke at byte %d; resuming", key, position)
                continue
            finally:
                body.close()
            if end is None:
                return
            raise StorageError(f"{key} is shorter than expected")

    async def size(self, key: str) -> int | None:
        try:
            response = await self._call(self._client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ObjectMissing:
            return None
        return response["ContentLength"]

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing):
            await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def put(self, key: str, data: bytes) -> None:
        await self._call(self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """One PutObject when the stream fits in a part, otherwise a multipart upload."""
        target = self._key(key)
        upload_id: str | None = None
        completed: list[CompletedPartTypeDef] = []
        buffer = _PartBuffer(self.part_size)
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                for part in buffer.add(chunk):
                    if upload_id is None:
                        created = await self._call(self._client.create_multipart_upload, Bucket=self.bucket, Key=target)
                        upload_id = created["UploadId"]
                    completed.append(await self._upload_part(target, upload_id, len(completed) + 1, part))
                    del part
            if upload_id is None:
                await self._call(self._client.put_object, Bucket=self.bucket, Key=target, Body=_body(buffer.data))
                return size
            if buffer.data:
                completed.append(await self._upload_part(target, upload_id, len(completed) + 1, buffer.data))
            await self._call(
                self._client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
            )
        except BaseException:
            if upload_id is not None:
                await self._abort_quietly(target, upload_id)
            raise
        return size

    async def copy(self, source: str, target: str) -> None:
        size = await self.size(source)
        if size is None:
            raise ObjectMissing(source)
        copy_source = {"Bucket": self.bucket, "Key": self._key(source)}
        if size <= self.copy_limit:
            await self._call(
                self._client.copy_object, Bucket=self.bucket, Key=self._key(target), CopySource=copy_source
            )
            return
        created = await self._call(self._client.create_multipart_upload, Bucket=self.bucket, Key=self._key(target))
        upload_id = created["UploadId"]
        completed: list[CompletedPartTypeDef] = []
        try:
            for number, start in enumerate(range(0, size, self.copy_part), start=1):
                end = min(start + self.copy_part, size) - 1
                result = await self._call(
                    self._client.upload_part_copy,
                    Bucket=self.bucket,
                    Key=self._key(target),
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                completed.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
            await self._call(
                self._client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=self._key(target),
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
            )
        except BaseException:
            await self._abort_quietly(self._key(target), upload_id)
            raise

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
        while True:
            page = await self._call(self._client.list_objects_v2, **request)
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        # Signing is local, but resolving chain credentials may call a metadata service.
        return await self._call(
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires_in,
        )

    def local_path(self, key: str) -> Path | None:
        return None

    # -- uploads -------------------------------------------------------------------------------

    def _upload_object(self, upload_id: str, name: str) -> str:
        return self._key(f"{upload_key(upload_id)}/{name}")

    async def begin_upload(self, upload_id: str) -> str:
        created = await self._call(
            self._client.create_multipart_upload, Bucket=self.bucket, Key=self._upload_object(upload_id, "data")
        )
        return json.dumps({"upload_id": created["UploadId"]})

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        multipart = _multipart_id(handle)
        data_key = self._upload_object(upload_id, "data")
        full, tail = _split(parts)
        number = full[-1].number + 1 if full else 1
        written: list[Part] = list(full)
        buffer = _PartBuffer(self.part_size)
        started = False
        async for chunk in chunks:
            if not chunk:
                continue
            if not started:
                started = True
                if tail is not None:
                    # The previous request's remainder goes in front of this request's bytes.
                    async for piece in self.read(f"{upload_key(upload_id)}/{_tail_name(tail)}", 0, tail.size):
                        buffer.data += piece
            for part in buffer.add(chunk):
                if number > MAX_PARTS:
                    raise StorageError(f"upload {upload_id} exceeds {MAX_PARTS} parts")
                uploaded = await self._upload_part(data_key, multipart, number, part)
                written.append(Part(number, len(part), uploaded["ETag"]))
                number += 1
                del part
        if not started:
            return list(parts)
        # The tail this request consumed stays until the caller has recorded the new list.
        keep = {_tail_name(tail)} if tail is not None else set()
        if buffer.data:
            name = f"tail-{number:05d}-{secrets.token_hex(8)}"
            await self._call(
                self._client.put_object,
                Bucket=self.bucket,
                Key=self._upload_object(upload_id, name),
                Body=_body(buffer.data),
            )
            written.append(Part(number, len(buffer.data), TAIL + name))
            keep.add(name)
        try:
            await self._delete_tails(upload_id, keep=keep)
        except StorageError as exc:
            log.warning("s3 upload %s: stale tails not removed (%s)", upload_id, exc)
        return written

    def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes] | None:
        return None  # S3 cannot read back the parts of an unfinished multipart upload

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        """Finish the multipart upload in place: the object is `uploads/<id>/data`, whatever `key`."""
        data = f"{upload_key(upload_id)}/data"
        expected = sum(part.size for part in parts)
        try:
            await self._complete(upload_id, _multipart_id(handle), parts)
        except StorageError:
            # A repeated completion (the first one's answer was lost) finds no upload any more;
            # only this upload ever writes its data key.
            if await self.size(data) != expected:
                raise
        size = await self.size(data)
        if size != expected:
            raise StorageError(f"upload {upload_id} completed with {size} bytes, {expected} were recorded")
        try:
            await self._delete_tails(upload_id, keep=set())
        except StorageError as exc:
            log.warning("s3 upload %s: tails not removed (%s)", upload_id, exc)
        return data

    async def _complete(self, upload_id: str, multipart: str, parts: Sequence[Part]) -> None:
        data_key = self._upload_object(upload_id, "data")
        full, tail = _split(parts)
        tail_source = (
            None if tail is None else {"Bucket": self.bucket, "Key": self._upload_object(upload_id, _tail_name(tail))}
        )
        if not full:
            # Nothing filled a part: the object is the tail (or empty); no multipart needed.
            if tail_source is None:
                await self._call(self._client.put_object, Bucket=self.bucket, Key=data_key, Body=b"")
            else:
                await self._call(self._client.copy_object, Bucket=self.bucket, Key=data_key, CopySource=tail_source)
            await self._abort_quietly(data_key, multipart)
            return
        completed: list[CompletedPartTypeDef] = [{"PartNumber": p.number, "ETag": p.token} for p in full]
        if tail is not None and tail_source is not None:
            # The last part may be small; the store copies it from the tail object.
            result = await self._call(
                self._client.upload_part_copy,
                Bucket=self.bucket,
                Key=data_key,
                UploadId=multipart,
                PartNumber=tail.number,
                CopySource=tail_source,
            )
            completed.append({"PartNumber": tail.number, "ETag": result["CopyPartResult"]["ETag"]})
        await self._call(
            self._client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=data_key,
            UploadId=multipart,
            MultipartUpload={"Parts": completed},
        )

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        await self._abort_quietly(self._upload_object(upload_id, "data"), _multipart_id(handle), quiet=False)
        names = [key async for key in self.keys(f"{upload_key(upload_id)}/")]
        await self._delete_many(names)

    async def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Unfinished multipart uploads at `uploads/<id>/data` (ListMultipartUploads, page by page).

        Multipart uploads at other keys (a `write` or `copy` of a large object that crashed) have
        no upload id and are not listed; a bucket lifecycle rule (AbortIncompleteMultipartUpload)
        covers those.
        """
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(upload_key(""))}
        while True:
            page = await self._call(self._client.list_multipart_uploads, **request)
            for item in page.get("Uploads", []):
                upload_id = _data_upload_id(item["Key"][len(self.prefix) :])
                if upload_id is not None:
                    handle = json.dumps({"upload_id": item["UploadId"]})
                    yield PendingUpload(upload_id, handle, item["Initiated"].timestamp())
            # AWS gives both markers; SeaweedFS orders by upload id and gives only that one.
            markers = {"KeyMarker": page.get("NextKeyMarker"), "UploadIdMarker": page.get("NextUploadIdMarker")}
            following = {name: value for name, value in markers.items() if value}
            if not page.get("IsTruncated") or not following or all(request.get(k) == v for k, v in following.items()):
                return
            request.update(following)

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        """Abort the multipart upload only: its tails are objects, which `keys` lists."""
        await self._abort_quietly(self._upload_object(upload_id, "data"), _multipart_id(handle), quiet=False)

    # -- helpers -------------------------------------------------------------------------------

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytearray) -> CompletedPartTypeDef:
        result = await self._call(
            self._client.upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=_body(data),
        )
        return {"PartNumber": number, "ETag": result["ETag"]}

    async def _abort_quietly(self, key: str, upload_id: str, *, quiet: bool = True) -> None:
        try:
            await self._call(self._client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) == "NoSuchUpload":
                return
            if not quiet:
                raise
            log.warning("s3: multipart upload %s of %s not aborted (%s)", upload_id, key, exc)

    async def _delete_tails(self, upload_id: str, *, keep: set[str]) -> None:
        base = f"{upload_key(upload_id)}/"
        stale = [key async for key in self.keys(f"{base}tail-") if key[len(base) :] not in keep]
        await self._delete_many(stale)

    async def _delete_many(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            result = await self._call(
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._key(key)} for key in batch], "Quiet": True},
            )
            errors = result.get("Errors", [])
            if errors:
                raise StorageError(f"cannot delete {errors[0].get('Key')}: {errors[0].get('Message')}")


class _PartBuffer:
    """Bytes collected for the next part. A full part is handed over and a fresh buffer started,
    so at most one part (plus the chunk being added) is in memory while it is sent."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.data = bytearray()

    def add(self, chunk: bytes) -> Iterator[bytearray]:
        view = memoryview(chunk)
        while view:
            room = self.part_size - len(self.data)
            self.data += view[:room]
            view = view[room:]
            if len(self.data) == self.part_size:
                full, self.data = self.data, bytearray()
                yield full


def _body(data: bytearray) -> bytes:
    """botocore sends a bytearray as it is; no copy of the part is made."""
    return cast(bytes, data)


def _split(parts: Sequence[Part]) -> tuple[list[Part], Part | None]:
    """The recorded S3 parts and the trailing tail object, if any."""
    full = list(parts)
    tail = full.pop() if full and full[-1].token.startswith(TAIL) else None
    if any(part.token.startswith(TAIL) or not part.token for part in full):
        raise StorageError("upload parts are corrupt: a tail object is not the last part")
    return full, tail


def _tail_name(part: Part) -> str:
    return part.token[len(TAIL) :]


def _multipart_id(handle: str) -> str:
    try:
        value = json.loads(handle)["upload_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"not an S3 upload handle: {handle!r}") from exc
    if not isinstance(value, str):
        raise StorageError(f"not an S3 upload handle: {handle!r}")
    return value


def _data_upload_id(key: str) -> str | None:
    """The upload id of `uploads/<id>/data`, None for any other key."""
    base = upload_key("")
    if not key.startswith(base) or not key.endswith("/data"):
        return None
    upload_id = key[len(base) : -len("/data")]
    return upload_id if upload_id and "/" not in upload_id else None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception) -> StorageError:
    """A botocore failure as the storage error the caller understands."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        code = _code(exc)
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        what = f"s3 {exc.operation_name} {error.get('Key', '')}".rstrip()
        message = error.get("Message", "")
        if code in _MISSING:
            return ObjectMissing(f"{what}: no such object")
        if code in _REFUSED or status == 403:
            return AccessRefused(f"{what}: the store refused the credentials ({code}: {message})")
        return StorageError(f"{what}: {code or status} {message}".rstrip())
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessRefused(f"s3: {exc}")
    if isinstance(exc, BotoCoreError | OSError):
        return StorageError(f"s3: {exc}")
    return StorageError(f"s3: {type(exc).__name__}: {exc}")
