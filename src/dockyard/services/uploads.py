"""Blob uploads: monolithic, chunked and streamed; resumable on any instance; mounts.

The database holds each session's offset and the storage parts written so far; storage holds the
bytes. One request at a time writes a session (an upload lock that dies with its holder). The
running hash lives in a per-process cache only as an optimisation: when a session moves between
instances, or after a restart, the digest is computed again from the stored bytes. Nothing
becomes visible until the digest is verified and the bytes are committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from dockyard.db.locks import UploadLocks, digest_held
from dockyard.db.registry_store import RegistryStore
from dockyard.domain.audit import Actor
from dockyard.domain.digest import Digest
from dockyard.domain.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    Busy,
    DigestInvalid,
    QuotaExceeded,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from dockyard.domain.models import BlobInfo, UploadState
from dockyard.services.blobs import Locations
from dockyard.storage import Part, StorageError, blob_key, upload_key

_CACHED_HASHERS = 1024
T = TypeVar("T")


def _parts(state: UploadState) -> list[Part]:
    return [Part(int(n), int(size), str(token)) for n, size, token in json.loads(state.parts)]


def _parts_json(parts: list[Part]) -> str:
    return json.dumps([[p.number, p.size, p.token] for p in parts], separators=(",", ":"))


class UploadService:
    def __init__(self, store: RegistryStore, locations: Locations, locks: UploadLocks) -> None:
        self.store = store
        self.locations = locations
        self.locks = locks
        self._hashers: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()

    async def start(self, repository: str, *, creator: int | None, actor: Actor) -> UploadState:
        """Open an upload session (creating the repository on a first push, audited as `actor`'s)."""
        upload_id = str(uuid.uuid4())
        location = self.locations.primary
        handle = await _storage(location.begin_upload(upload_id))
        try:
            return await self.store.create_upload(repository, upload_id, location.name, handle, creator, actor=actor)
        except BaseException:
            await location.abort_upload(upload_id, handle, [])
            raise

    async def status(self, repository: str, upload_id: str) -> UploadState:
        state = await self.store.upload(repository, upload_id) if _valid_id(upload_id) else None
        if state is None:
            raise BlobUploadUnknown(f"upload {upload_id} is not in progress", detail={"uuid": upload_id})
        return state

    async def append(
        self,
        repository: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> UploadState:
        """Write `body` at the session's offset. `start` (from Content-Range) must equal it."""
        async with self._hold(repository, upload_id) as state:
            return await self._write(state, body, start=start, length=length, algorithm="sha256")

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest_text: str,
        body: AsyncIterator[bytes],
        *,
        length: int | None,
        creator: int | None,
        actor: Actor,
    ) -> BlobInfo:
        """Append the last bytes, verify the digest, then make the blob visible in the repository."""
        try:
            digest = Digest.parse(digest_text)
        except DigestInvalid:
            await self.status(repository, upload_id)
            raise
        async with self._hold(repository, upload_id) as held:
            state = await self._write(held, body, start=None, length=length, algorithm=digest.algorithm)
            # The digest's lock, exclusive, keeps garbage collection from deleting the object
            # between the check for an existing copy and the record of this one.
            async with self._digest_lock(str(digest)):
                key, reused = await _storage(self._commit(state, digest))
                try:
                    await self.store.record_blob(
                        repository,
                        str(digest),
                        state.offset,
                        state.location,
                        key=None if key == blob_key(digest) else key,
                        upload_id=upload_id,
                        creator=creator,
                        actor=actor,
                    )
                except QuotaExceeded:
                    if not reused:
                        await _storage(self.locations.stores[state.location].delete(key))
                    self._hashers.pop(upload_id, None)
                    await self.store.delete_upload(upload_id)
                    raise
        self._hashers.pop(upload_id, None)
        return BlobInfo(digest=str(digest), size=state.offset, key=blob_key(digest))

    async def monolithic(
        self,
        repository: str,
        digest_text: str,
        body: AsyncIterator[bytes],
        *,
        length: int | None,
        creator: int | None,
        actor: Actor,
    ) -> BlobInfo:
        digest = Digest.parse(digest_text)
        state = await self.start(repository, creator=creator, actor=actor)
        try:
            return await self.finish(
                repository, state.id, str(digest), body, length=length, creator=creator, actor=actor
            )
        except BaseException:
            await self._discard(state)
            raise

    async def cancel(self, repository: str, upload_id: str) -> None:
        async with self._hold(repository, upload_id) as state:
            await self._discard(state)

    async def open_sessions(self) -> int:
        return await self.store.count_uploads()

    async def holders(self, digest_text: str, limit: int = 20) -> list[str]:
        """Repositories the blob is readable in (at most `limit`), for a mount without `from`."""
        Digest.parse(digest_text)
        return await self.store.repositories_holding(digest_text, limit)

    async def mount(
        self, repository: str, digest_text: str, source: str | None, *, creator: int | None, actor: Actor
    ) -> bool:
        Digest.parse(digest_text)
        return await self.store.mount_blob(repository, digest_text, source, creator, actor=actor)

    # -- writing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _hold(self, repository: str, upload_id: str) -> AsyncIterator[UploadState]:
        """Hold the session's lock, with its state read under that hold.

        Two requests racing for one session never both write: the second gets 416. Bytes below
        the recorded offset are never rewritten, so a cached running hash stays valid.
        """
        state = await self.status(repository, upload_id)
        if not await self.locks.acquire(upload_id):
            raise RangeNotSatisfiable("another request is writing this upload", size=state.offset)
        try:
            yield await self.status(repository, upload_id)
        finally:
            await self.locks.release(upload_id)

    async def _write(
        self, state: UploadState, body: AsyncIterator[bytes], *, start: int | None, length: int | None, algorithm: str
    ) -> UploadState:
        if start is not None and start != state.offset:
            raise RangeNotSatisfiable(f"chunk starts at {start}, the upload is at {state.offset}", size=state.offset)
        hasher = self._take_hasher(state.id, state.offset, algorithm)
        received = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal received
            async for chunk in body:
                received += len(chunk)
                if length is not None and received > length:
                    raise BlobUploadInvalid(f"body is longer than the declared {length} bytes")
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk

        store = self.locations.stores[state.location]
        parts = await _storage(store.write_part(state.id, state.handle, _parts(state), counted()))
        if length is not None and received != length:
            raise BlobUploadInvalid(f"body has {received} bytes, {length} were declared")
        offset = state.offset + received
        if sum(p.size for p in parts) != offset:
            raise StorageUnavailable("storage recorded a different amount of data than was sent")
        if received and not await self.store.advance_upload(state.id, state.offset, offset, _parts_json(parts)):
            raise RangeNotSatisfiable("the upload was advanced by a concurrent request", size=state.offset)
        if hasher is not None:
            self._keep_hasher(state.id, offset, algorithm, hasher)
        if not received:
            return state
        return UploadState(
            state.id, state.repository, offset, state.location, state.created_at, state.handle, _parts_json(parts)
        )

    @contextlib.asynccontextmanager
    async def _digest_lock(self, digest: str) -> AsyncIterator[None]:
        try:
            async with digest_held(self.locks, digest, shared=False, wait=120.0):
                yield
        except TimeoutError as exc:
            raise Busy(str(exc)) from exc

    async def _commit(self, state: UploadState, digest: Digest) -> tuple[str, bool]:
        """Verify the bytes against `digest`, then make them the blob's object.

        Return its key, and whether that is an object the location held already (content
        addressed: this copy is then dropped).
        """
        store = self.locations.stores[state.location]
        parts = _parts(state)
        key = blob_key(digest)
        cached = self._hashers.get(state.id)
        staging: str | None = None
        if cached is not None and cached[0] == state.offset and cached[1] == digest.algorithm:
            actual = str(cached[2].hexdigest())
        else:
            # The session moved between instances or the server restarted: hash the stored bytes.
            stream = store.read_upload(state.id, state.handle, parts)
            if stream is None:
                staging = await store.complete_upload(
                    state.id, state.handle, parts, f"{upload_key(state.id)}.assembled"
                )
                stream = store.read(staging)
            actual = await _hash(stream, digest.algorithm)
        if actual != digest.hex:
            if staging is not None:
                await store.delete(staging)
            await self._discard(state)
            raise DigestInvalid(
                f"content has digest {digest.algorithm}:{actual}, not {digest}", detail={"digest": str(digest)}
            )
        placements = await self.store.placements_of(str(digest))
        existing = placements.get(store.name) or key
        if store.name in placements and await store.size(existing) == state.offset:
            if staging is not None:
                await store.delete(staging)
            else:
                await store.abort_upload(state.id, state.handle, parts)
            return existing, True
        if staging is None:
            return await store.complete_upload(state.id, state.handle, parts, key), False
        if store.derived_keys:
            await store.copy(staging, key)
            await store.delete(staging)
            return key, False
        return staging, False

    # -- hashing -------------------------------------------------------------------------------

    def _take_hasher(self, upload_id: str, offset: int, algorithm: str) -> Any:
        cached = self._hashers.pop(upload_id, None)
        if cached is not None and cached[0] == offset and cached[1] == algorithm:
            return cached[2]
        if offset == 0:
            return hashlib.new(algorithm)
        return None  # the digest will be computed from storage at the end

    def _keep_hasher(self, upload_id: str, offset: int, algorithm: str, hasher: Any) -> None:
        self._hashers[upload_id] = (offset, algorithm, hasher)
        while len(self._hashers) > _CACHED_HASHERS:
            self._hashers.popitem(last=False)

    async def _discard(self, state: UploadState) -> None:
        self._hashers.pop(state.id, None)
        await self.store.delete_upload(state.id)
        store = self.locations.stores[state.location]
        await _storage(store.abort_upload(state.id, state.handle, _parts(state)))


async def _hash(stream: AsyncIterator[bytes], algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    async for chunk in stream:
        hasher.update(chunk)
    return hasher.hexdigest()


async def _storage(operation: Awaitable[T]) -> T:
    """Await a storage operation, turning driver failures into a retriable StorageUnavailable."""
    try:
        return await operation
    except StorageError as exc:
        raise StorageUnavailable(f"storage failed: {exc}") from exc


def _valid_id(upload_id: str) -> bool:
    try:
        return str(uuid.UUID(upload_id)) == upload_id
    except ValueError:
        return False
