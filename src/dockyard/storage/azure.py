"""Azure Blob Storage driver (block blobs), on azure-storage-blob's asyncio client (aiohttp).

Objects are block blobs named `<prefix><key>` in one container. Bodies are never held whole:
`write` and `write_part` stage blocks of at most BLOCK_SIZE bytes and commit a block list; reads
are ranged downloads in chunks of at most READ_CHUNK bytes.

An upload is one block blob, `blobs/upload/<upload id>` (its handle), built in place:
`write_part` stages the request body as new blocks and commits the recorded blocks plus the new
ones, so the blob always holds the recorded bytes first (and `read_upload` can stream them back);
`complete_upload` commits exactly the recorded blocks, which drops any scrap from an unrecorded
request, and returns the handle as the blob's key — no copy. The blob lives under `blobs/`
rather than `uploads/` because a finished upload *is* the stored blob: a sweep of stale
`uploads/` must never find it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import io
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobSasPermissions, generate_blob_sas
from azure.storage.blob.aio import BlobClient, ContainerClient, ExponentialRetry

from dockyard.config.settings import AzureStorage
from dockyard.storage.protocol import AccessRefused, ObjectMissing, Part, StorageError

BLOCK_SIZE = 4 * 1024 * 1024
"""Largest block staged at once: the memory one write holds (Azure allows 50,000 blocks a blob)."""
READ_CHUNK = 4 * 1024 * 1024
"""Largest ranged GET of a download: the memory one read holds."""
SINGLE_PUT = 1024 * 1024
"""Objects up to this size go up in one Put Blob (larger bodies are staged from a stream)."""
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
        self._account_url = (options.endpoint_url or f"https://{options.account_name}.blob.core.windows.net").rstrip(
            "/"
        )
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        # aiohttp sessions belong to one event loop: one client per loop, made on first use.
        self._clients: dict[asyncio.AbstractEventLoop, ContainerClient] = {}

    # -- client --------------------------------------------------------------------------------

    def _container(self) -> ContainerClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for stale in [other for other in self._clients if other.is_closed()]:
                del self._clients[stale]
            client = ContainerClient(
                self._account_url,
                self.options.container,
                credential={"account_name": self.options.account_name, "account_key": self.options.account_key},
                max_single_get_size=READ_CHUNK,
                max_chunk_get_size=READ_CHUNK,
                max_single_put_size=BLOCK_SIZE,
                max_block_size=BLOCK_SIZE,
                # Waits about 1 s, 3 s, 5 s: a transient fault is retried, an outage fails in ~10 s.
                retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1),
                connection_timeout=10,
                read_timeout=60,
            )
            self._clients[loop] = client
        return client

    def _blob(self, key: str) -> BlobClient:
        return self._container().get_blob_client(self._prefix + key)

    async def close(self) -> None:
        """Close the HTTP sessions opened on the running event loop (call before the loop ends)."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            with contextlib.suppress(AzureError, aiohttp.ClientError, OSError):
                await client.close()

    # -- objects -------------------------------------------------------------------------------

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        blob = self._blob(key)
        expected = length
        received = 0
        try:
            with _errors(key):
                downloader = await blob.download_blob(offset=offset, length=length, max_concurrency=1)
                # chunks() fetches ranges one after another (If-Match the first one's ETag), so
                # a concurrent overwrite fails the read instead of mixing two objects.
                async for chunk in downloader.chunks():
                    received += len(chunk)
                    yield chunk
        except _RangeNotSatisfiable:
            # The range starts at or past the end: nothing to read, if the object exists.
            size = await self.size(key)
            if size is None:
                raise ObjectMissing(key) from None
            if expected is not None and expected > 0:
                raise StorageError(f"{key} is shorter than expected") from None
            return
        if expected is not None and received < expected:
            raise StorageError(f"{key} is shorter than expected")

    async def size(self, key: str) -> int | None:
        try:
            with _errors(key):
                properties = await self._blob(key).get_blob_properties()
        except ObjectMissing:
            return None
        return int(properties.size)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing), _errors(key):
            await self._blob(key).delete_blob()

    async def put(self, key: str, data: bytes) -> None:
        if len(data) > SINGLE_PUT:
            await self.write(key, _once(data))
            return
        with _errors(key):
            await self._blob(key).upload_blob(data, overwrite=True, length=len(data))

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Stage blocks, then commit them: the object appears whole at the commit or not at all.

        Blocks staged by a write that fails never become visible; Azure discards uncommitted
        blocks after a week (or at the blob's next commit).
        """
        blob = self._blob(key)
        nonce = secrets.token_hex(4)
        ids: list[str] = []
        size = 0
        first: bytes | None = None  # held back: an object that is one small block goes up in one request
        async with contextlib.aclosing(_blocks(chunks)) as blocks:
            async for block in blocks:
                size += len(block)
                if first is None and not ids:
                    first = block
                    continue
                if first is not None:
                    ids.append(await self._stage(blob, key, _block_id(0, nonce, 0), first))
                    first = None
                ids.append(await self._stage(blob, key, _block_id(0, nonce, len(ids)), block))
        if not ids and len(first or b"") <= SINGLE_PUT:
            data = first or b""
            with _errors(key):
                await blob.upload_blob(data, overwrite=True, length=len(data))
            return size
        if first is not None:
            ids.append(await self._stage(blob, key, _block_id(0, nonce, 0), first))
        with _errors(key):
            await blob.commit_block_list(ids)
        return size

    async def copy(self, source: str, target: str) -> None:
        """Server-side copy (Copy Blob), waiting until the service reports it finished."""
        source_url = await self.signed_url(source, expires_in=3600)
        assert source_url is not None
        target_blob = self._blob(target)
        with _errors(source):
            started = await target_blob.start_copy_from_url(source_url)
        status = started.get("copy_status")
        delay = _COPY_POLL
        while status == "pending":
            await asyncio.sleep(delay)
            delay = min(delay * 2, _COPY_POLL_MAX)
            with _errors(target):
                properties = await target_blob.get_blob_properties()
            status = properties.copy.status
        if status != "success":
            raise StorageError(f"copy {source} -> {target} ended {status!r}")

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        strip = len(self._prefix)
        with _errors(prefix):
            async for name in self._container().list_blob_names(name_starts_with=self._prefix + prefix):
                yield name[strip:]

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
        blob = self._blob(key)
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
        return f"{blob.url}?{sas}"

    def local_path(self, key: str) -> Path | None:
        return None

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> str:
        handle = f"blobs/upload/{upload_id}"
        with _errors(handle):
            await self._blob(handle).commit_block_list([])  # an empty block blob
        return handle

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        blob = self._blob(handle)
        number = parts[-1].number + 1 if parts else 1
        # A fresh nonce per request: a request the caller did not record never shares a block id
        # with a later one, even if its last block lands late.
        nonce = secrets.token_hex(4)
        ids: list[str] = []
        size = 0
        async with contextlib.aclosing(_blocks(chunks)) as blocks:
            async for block in blocks:
                ids.append(await self._stage(blob, handle, _block_id(number, nonce, len(ids)), block))
                size += len(block)
        if ids:
            # Commit recorded + new blocks: the blob then holds the recorded bytes first (what
            # read_upload streams back), and blocks of unrecorded requests are dropped.
            with _errors(handle):
                await blob.commit_block_list([*_part_blocks(parts), *ids])
        return [*parts, Part(number, size, ",".join(ids))]

    def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes] | None:
        total = sum(part.size for part in parts)
        if total == 0:
            return _nothing()
        return self.read(handle, 0, total)

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        """Commit exactly the recorded blocks, in order; the blob stays where it was built (`handle`)."""
        with _errors(handle):
            await self._blob(handle).commit_block_list(_part_blocks(parts))
        return handle

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        # Deleting the blob drops its uncommitted blocks too. Blocks staged on a blob that no longer
        # exists (a request racing the abort) expire by themselves after a week.
        if handle:
            await self.delete(handle)

    # -- helpers -------------------------------------------------------------------------------

    async def _stage(self, blob: BlobClient, key: str, block_id: str, block: bytes) -> str:
        with _errors(key):
            # A file-like body: aiohttp sends it in pieces instead of one large write.
            await blob.stage_block(block_id, io.BytesIO(block), length=len(block))
        return block_id


class _RangeNotSatisfiable(Exception):
    """A ranged GET started at or past the end of the object (HTTP 416)."""


@contextlib.contextmanager
def _errors(key: str) -> Iterator[None]:
    """Translate client exceptions: no azure or aiohttp exception leaves the driver."""
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
            _raise(_RangeNotSatisfiable(), exc)
        _raise(StorageError(f"Azure failed on {key}: {_message(exc)}"), exc)
    except (AzureError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        _raise(StorageError(f"Azure is unreachable ({key}): {exc.__class__.__name__}: {_message(exc)}"), exc)


def _raise(error: Exception, cause: BaseException) -> NoReturn:
    raise error from cause


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.splitlines()[0] if text else exc.__class__.__name__


def _block_id(number: int, nonce: str, index: int) -> str:
    """`<part number:8>-<nonce:8>-<index:6>` (part 0: a plain write); the client base64-encodes it.

    Every id this driver makes has that one length: Azure requires all block ids of a blob to.
    """
    return f"{number:08d}-{nonce}-{index:06d}"


def _part_blocks(parts: Sequence[Part]) -> list[str]:
    return [block for part in parts for block in part.token.split(",") if block]


async def _blocks(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Regroup a byte stream into blocks of exactly BLOCK_SIZE bytes (the last one shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= BLOCK_SIZE:
            block = bytes(buffer[:BLOCK_SIZE])
            del buffer[:BLOCK_SIZE]
            yield block
    if buffer:
        yield bytes(buffer)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield
