"""Azure Blob Storage driver (block blobs), azure-storage-blob's sync client on worker threads.

The client is thread-safe and holds no event-loop state, so one store serves any number of loops;
every call runs on the driver's own thread pool (the default executor is never starved).

Objects are block blobs named `<prefix><key>` in one container. Bodies are never held whole:
`write` and `write_part` stage blocks of at most BLOCK_SIZE bytes and then commit a block list
(an object is whole or absent); a read is one GET (signed with a read-only SAS) streamed in
READ_PIECE reads, resumed If-Match its ETag if the connection drops.

An upload is one block blob, `blobs/upload/<upload id>` (its handle), built in place:
`write_part` stages the request body as new blocks (ids unique per request) and commits the
recorded blocks plus the new ones, so the blob always starts with the recorded bytes and
`read_upload` can stream them back; `complete_upload` commits exactly the recorded blocks — which
drops anything an unrecorded request added — and returns the handle as the object's key: no copy.
The blob is under `blobs/`, not `uploads/`, because a finished upload *is* the stored blob: a
sweep of stale `uploads/` must never find it.

Failures come out as `ObjectMissing` (404 on a blob), `AccessRefused` (403: the key or SAS was
refused) or `StorageError` (anything else), never as an azure or requests exception. Transient
failures are retried three times about a second apart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import functools
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient, BlobSasPermissions, ContainerClient, LinearRetry, generate_blob_sas
from requests import RequestException, Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout

from dockyard.config.settings import AzureStorage
from dockyard.storage.protocol import (
    AccessRefused,
    ObjectMissing,
    Part,
    PendingUpload,
    StorageError,
    no_pending_uploads,
)

T = TypeVar("T")

MiB = 1024 * 1024
BLOCK_SIZE = 4 * MiB
"""Largest block staged at once: the memory one write holds (a blob may have 50,000 blocks)."""
READ_PIECE = MiB
"""A read streams its one GET in pieces of this size: the memory one read holds."""
READ_RESUMES = 2
RETRIES = 3
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
THREADS = 32
_COPY_POLL = 0.2
_COPY_POLL_MAX = 5.0


class AzureStore:
    """One container (and optional key prefix) of an Azure storage account."""

    derived_keys = False

    def __init__(self, name: str, options: AzureStorage) -> None:
        self.name = name
        self.options = options
        try:
            base64.b64decode(options.account_key, validate=True)
        except binascii.Error:
            raise ValueError(f"storage.locations.{name}.account_key: not base64") from None
        account_url = options.endpoint_url or f"https://{options.account_name}.blob.core.windows.net"
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        # Worker threads share one session: keep a pooled connection for each of them. Retries
        # are the client's (below), not urllib3's.
        session = Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=THREADS, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session
        self._container = ContainerClient(
            account_url.rstrip("/"),
            options.container,
            credential={"account_name": options.account_name, "account_key": options.account_key},
            transport=RequestsTransport(
                session=session,
                session_owner=False,
                connection_timeout=10,
                read_timeout=60,
                connection_data_block_size=256 * 1024,
            ),
            max_single_put_size=BLOCK_SIZE,
            max_block_size=BLOCK_SIZE,
            # Three retries about 1 s apart (the default backs off 15 s, 18 s, 42 s): a transient
            # fault is retried, an outage fails the request in seconds.
            retry_policy=LinearRetry(backoff=1, retry_total=RETRIES, random_jitter_range=1),
        )
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=f"azure-{name}")

    def _blob(self, key: str) -> BlobClient:
        return self._container.get_blob_client(self._prefix + key)

    async def close(self) -> None:
        """Release the worker threads and pooled connections (the store is unusable afterwards)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    async def _call(self, key: str, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one blocking client call on a worker thread, translating its failures."""
        loop = asyncio.get_running_loop()
        with _errors(key):
            return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))

    # -- objects -------------------------------------------------------------------------------

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """One GET of the whole range (with a read-only SAS), streamed in READ_PIECE reads.

        A connection lost midway resumes where it stopped, If-Match the first response's ETag:
        an object replaced meanwhile fails the read instead of mixing two objects. (The SDK's
        downloader is not used: it joins each response through a list pre-sized to the byte
        count, about nine times the bytes it reads.)
        """
        if length is not None and length <= 0:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        end = None if length is None else offset + length
        position, etag, resumes = offset, None, 0
        while end is None or position < end:
            url = await self.signed_url(key, expires_in=3600)
            assert url is not None
            try:
                response = await self._call(key, _get, self._session, key, url, position, end, etag)
            except _RangeNotSatisfiable:
                # The range starts at or past the end: nothing (more) to read, if the object exists.
                if etag is None and await self.size(key) is None:
                    raise ObjectMissing(key) from None
                break
            etag = response.headers.get("ETag") or etag
            try:
                pieces = response.iter_content(READ_PIECE)
                while (piece := await self._call(key, next, pieces, None)) is not None:
                    position += len(piece)
                    yield piece
                    del piece
                break
            except StorageError:
                resumes += 1
                if resumes > READ_RESUMES:
                    raise
            finally:
                response.close()
        if end is not None and position < end:
            raise StorageError(f"{key} is shorter than expected")

    async def size(self, key: str) -> int | None:
        try:
            properties = await self._call(key, self._blob(key).get_blob_properties)
        except ObjectMissing:
            return None
        return int(properties.size)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing):
            await self._call(key, self._blob(key).delete_blob)

    async def put(self, key: str, data: bytes) -> None:
        if len(data) > BLOCK_SIZE:
            await self.write(key, _once(data))
            return
        await self._call(key, self._blob(key).upload_blob, data, overwrite=True, length=len(data))

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Stage blocks, then commit them: the object appears whole at the commit or not at all.

        Blocks staged by a write that fails never become visible; Azure drops uncommitted blocks
        at the blob's next commit or after a week.
        """
        blob = self._blob(key)
        nonce = secrets.token_hex(4)
        ids: list[str] = []
        size = 0
        async with contextlib.aclosing(_blocks(chunks)) as blocks:
            async for block, last in blocks:
                size += len(block)
                if last and not ids:
                    # The whole object is this one block: one Put Blob.
                    await self._call(key, blob.upload_blob, block, overwrite=True, length=len(block))
                    return size
                if block:
                    ids.append(await self._stage(blob, key, _block_id(0, nonce, len(ids)), block))
                del block  # not held while the next one fills
        await self._call(key, blob.commit_block_list, ids)
        return size

    async def copy(self, source: str, target: str) -> None:
        """Server-side copy (Copy Blob), waiting until the service reports it finished."""
        source_url = await self.signed_url(source, expires_in=3600)
        assert source_url is not None
        blob = self._blob(target)
        started = await self._call(source, blob.start_copy_from_url, source_url)
        status = started.get("copy_status")
        delay = _COPY_POLL
        while status == "pending":
            await asyncio.sleep(delay)
            delay = min(delay * 2, _COPY_POLL_MAX)
            properties = await self._call(target, blob.get_blob_properties)
            status = properties.copy.status
        if status != "success":
            raise StorageError(f"copy {source} -> {target} ended {status!r}")

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        strip = len(self._prefix)
        pages = self._container.list_blob_names(name_starts_with=self._prefix + prefix).by_page()
        while (page := await self._call(prefix, _next_page, pages)) is not None:
            for name in page:
                yield name[strip:]

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        """A read-only SAS URL of the blob, valid for `expires_in` seconds."""
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
        try:
            sas = generate_blob_sas(
                self.options.account_name,
                self.options.container,
                self._prefix + key,
                account_key=self.options.account_key,
                permission=BlobSasPermissions(read=True),
                expiry=expiry,
            )
        except (ValueError, TypeError) as exc:
            raise StorageError(f"cannot sign a URL for {key}: {exc}") from exc
        return f"{self._blob(key).url}?{sas}"

    def local_path(self, key: str) -> Path | None:
        return None

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> str:
        handle = f"blobs/upload/{upload_id}"
        await self._call(handle, self._blob(handle).commit_block_list, [])  # an empty block blob
        return handle

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        blob = self._blob(handle)
        number = parts[-1].number + 1 if parts else 1
        # A fresh nonce per request: an unrecorded request never shares a block id with a later
        # one, so a block of it that lands late cannot replace a recorded block.
        nonce = secrets.token_hex(4)
        ids: list[str] = []
        size = 0
        async with contextlib.aclosing(_blocks(chunks)) as blocks:
            async for block, _ in blocks:
                if block:
                    ids.append(await self._stage(blob, handle, _block_id(number, nonce, len(ids)), block))
                    size += len(block)
                del block  # not held while the next one fills
        if ids:
            # Recorded + new blocks: the blob starts with the recorded bytes (what read_upload
            # streams back), and blocks of unrecorded requests are dropped.
            await self._call(handle, blob.commit_block_list, [*_part_blocks(parts), *ids])
        return [*parts, Part(number, size, ",".join(ids))]

    def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes] | None:
        total = sum(part.size for part in parts)
        return self.read(handle, 0, total) if total else _nothing()

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        """Commit exactly the recorded blocks, in order; the object stays where it was built (`handle`)."""
        await self._call(handle, self._blob(handle).commit_block_list, _part_blocks(parts))
        return handle

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        # Deleting the blob drops its uncommitted blocks too. Blocks a racing request stages after
        # the delete sit on an uncommitted blob that Azure expires by itself after a week.
        if handle:
            await self.delete(handle)

    def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Nothing. An upload is the committed (at first empty) blob `blobs/upload/<id>`, which
        `keys` lists; deleting it drops its uncommitted blocks. Uncommitted blocks belong to a blob
        name, not to a listable upload, and Azure discards them by itself after seven days
        (including those staged on a name whose blob was never committed)."""
        return no_pending_uploads()

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------------

    async def _stage(self, blob: BlobClient, key: str, block_id: str, block: bytes) -> str:
        # The worker thread takes the block out of `holder`, so it lets go of it as soon as the
        # call returns (a finished work item lingers in its thread until the GIL comes back).
        await self._call(key, _stage_block, blob, block_id, [block])
        return block_id


class _RangeNotSatisfiable(StorageError):
    """A ranged GET started at or past the end of the object (HTTP 416)."""


@contextlib.contextmanager
def _errors(key: str) -> Iterator[None]:
    """Translate client exceptions: no azure or requests exception leaves the driver."""
    try:
        yield
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            _raise(StorageError(f"the container does not exist ({key})"), exc)
        _raise(ObjectMissing(key), exc)
    except ClientAuthenticationError as exc:
        _raise(AccessRefused(f"Azure refused the credentials: {_message(exc)}"), exc)
    except HttpResponseError as exc:
        if exc.status_code == 403:
            _raise(AccessRefused(f"Azure refused the request: {_message(exc)}"), exc)
        if exc.status_code == 416:
            _raise(_RangeNotSatisfiable(key), exc)
        _raise(StorageError(f"Azure failed on {key}: {_message(exc)}"), exc)
    except (AzureError, RequestException, OSError) as exc:
        _raise(StorageError(f"Azure is unreachable ({key}): {_message(exc)}"), exc)


def _raise(error: Exception, cause: BaseException) -> NoReturn:
    raise error from cause


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    first = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {first}"


def _block_id(number: int, nonce: str, index: int) -> str:
    """`<part number:8>-<nonce:8>-<index:6>` (part 0: a plain write); the client base64-encodes it.

    Every id this driver makes has that one length: Azure requires all block ids of a blob to.
    """
    return f"{number:08d}-{nonce}-{index:06d}"


def _part_blocks(parts: Sequence[Part]) -> list[str]:
    return [block for part in parts for block in part.token.split(",") if block]


def _stage_block(blob: BlobClient, block_id: str, holder: list[bytes]) -> None:
    block = holder.pop()
    blob.stage_block(block_id, block, length=len(block))


def _get(session: Session, key: str, url: str, start: int, end: int | None, etag: str | None) -> Response:
    """Open a streamed GET of `key`'s bytes [start, end) (to the end when None), If-Match `etag`.

    Connection failures, timeouts, 408, 429 and 5xx are retried like the client's own calls;
    an error answer is raised as the driver's exception (`_RangeNotSatisfiable` for 416).
    """
    headers: dict[str, str] = {}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
    if etag is not None:
        headers["If-Match"] = etag
    for attempt in range(RETRIES + 1):
        last = attempt == RETRIES
        try:
            response = session.get(url, headers=headers, stream=True, timeout=(10, 60))
        except (RequestsConnectionError, Timeout):
            if last:
                raise
            time.sleep(random.uniform(0, 2))  # noqa: S311  (jitter, not cryptography)
            continue
        if response.status_code in (200, 206):
            return response
        if response.status_code in _TRANSIENT and not last:
            response.close()
            time.sleep(random.uniform(0, 2))  # noqa: S311
            continue
        break
    code = response.headers.get("x-ms-error-code", "")
    status = response.status_code
    response.close()
    if status == 404 and code != "ContainerNotFound":
        raise ObjectMissing(key)
    if status == 403:
        raise AccessRefused(f"Azure refused the request: {status} {code}")
    if status == 416:
        raise _RangeNotSatisfiable(key)
    raise StorageError(f"Azure failed on {key}: {status} {code}")


def _next_page(pages: Iterator[Iterable[str]]) -> list[str] | None:
    page = next(pages, None)
    return None if page is None else list(page)


async def _blocks(chunks: AsyncIterator[bytes]) -> AsyncGenerator[tuple[bytes, bool]]:
    """Regroup a byte stream into blocks of BLOCK_SIZE bytes, each with "is the last one".

    A block goes out once more bytes are known to follow it, so the last one (short, or even
    empty for an empty stream) is always flagged. Holds about two blocks at most: the pieces of
    the next block and the block being joined from them (pieces are views, never re-copied; the
    frame keeps no reference to a block it handed out).
    """
    pieces: deque[memoryview] = deque()
    held = 0
    async for chunk in chunks:
        if chunk:
            pieces.append(memoryview(chunk))
            held += len(chunk)
        while held > BLOCK_SIZE:
            held -= BLOCK_SIZE
            yield _take_block(pieces), False
    yield b"".join(pieces), True


def _take_block(pieces: deque[memoryview]) -> bytes:
    """Join the first BLOCK_SIZE bytes of `pieces` into one block, removing them."""
    take: list[memoryview] = []
    need = BLOCK_SIZE
    while need:
        piece = pieces[0]
        if len(piece) <= need:
            take.append(pieces.popleft())
            need -= len(piece)
        else:
            take.append(piece[:need])
            pieces[0] = piece[need:]
            need = 0
    return b"".join(take)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield
