"""Blob uploads: monolithic, chunked and streamed; resumable on any instance; mounts.

The database holds each session's offset; storage holds its bytes. The running hash lives in a
per-process cache only as an optimisation: when a request lands on another instance, or after a
restart, the digest is computed again from the stored bytes. Nothing becomes visible until the
digest is verified and the bytes are committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from dockyard.db.registry_store import RegistryStore
from dockyard.domain.digest import Digest
from dockyard.domain.errors import BlobUploadInvalid, BlobUploadUnknown, DigestInvalid, RangeNotSatisfiable
from dockyard.domain.models import BlobInfo, UploadState
from dockyard.services.blobs import Locations
from dockyard.storage import BlobStore, UploadBusy, UploadWriter, blob_key, upload_key

_CACHED_HASHERS = 1024


class UploadService:
    def __init__(self, store: RegistryStore, locations: Locations) -> None:
        self.store = store
        self.locations = locations
        self._hashers: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()

    async def start(self, repository: str, *, creator: int | None) -> UploadState:
        upload_id = str(uuid.uuid4())
        return await self.store.create_upload(repository, upload_id, self.locations.primary.name, creator)

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
        async with self._hold(repository, upload_id) as (state, writer):
            return await self._write(state, writer, body, start=start, length=length, algorithm="sha256")

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest_text: str,
        body: AsyncIterator[bytes],
        *,
        length: int | None,
        creator: int | None,
    ) -> BlobInfo:
        """Append the last bytes, verify the digest, then make the blob visible in the repository."""
        try:
            digest = Digest.parse(digest_text)
        except DigestInvalid:
            await self.status(repository, upload_id)
            raise
        async with self._hold(repository, upload_id) as (held, writer):
            state = await self._write(held, writer, body, start=None, length=length, algorithm=digest.algorithm)
            store = self.locations.stores[state.key]
            actual = await self._digest_of(upload_id, state.offset, digest.algorithm, store)
            if actual != digest.hex:
                await self._discard(upload_id, state.key)
                raise DigestInvalid(
                    f"content has digest {digest.algorithm}:{actual}, not {digest}", detail={"digest": str(digest)}
                )
            key = blob_key(digest)
            if await store.size(key) == state.offset:
                await store.delete(upload_key(upload_id))
            else:
                await store.commit(upload_key(upload_id), key)
        await self.store.record_blob(repository, str(digest), state.offset, state.key, upload_id, creator)
        self._hashers.pop(upload_id, None)
        return BlobInfo(digest=str(digest), size=state.offset, key=key)

    @contextlib.asynccontextmanager
    async def _hold(self, repository: str, upload_id: str) -> AsyncIterator[tuple[UploadState, UploadWriter]]:
        """Hold the session's bytes exclusively, with its offset read under that hold.

        Two requests racing for one session can never both write: the second gets 416. Bytes
        below the database offset are never rewritten, so a cached running hash stays valid.
        """
        state = await self.status(repository, upload_id)
        store = self.locations.stores[state.key]
        try:
            writer = await store.open_upload(upload_key(upload_id))
        except UploadBusy:
            raise RangeNotSatisfiable("another request is writing this upload", size=state.offset) from None
        try:
            state = await self.status(repository, upload_id)
            await writer.start(state.offset)
            yield state, writer
        finally:
            await writer.close()

    async def _write(
        self,
        state: UploadState,
        writer: UploadWriter,
        body: AsyncIterator[bytes],
        *,
        start: int | None,
        length: int | None,
        algorithm: str,
    ) -> UploadState:
        if start is not None and start != state.offset:
            raise RangeNotSatisfiable(f"chunk starts at {start}, the upload is at {state.offset}", size=state.offset)
        hasher = self._take_hasher(state.id, state.offset, algorithm)
        written = 0
        async for chunk in body:
            written += len(chunk)
            if length is not None and written > length:
                raise BlobUploadInvalid(f"body is longer than the declared {length} bytes")
            if hasher is not None:
                hasher.update(chunk)
            await writer.write(chunk)
        if length is not None and written != length:
            raise BlobUploadInvalid(f"body has {written} bytes, {length} were declared")
        offset = state.offset + written
        if written and not await self.store.advance_upload(state.id, state.offset, offset):
            raise RangeNotSatisfiable("the upload was advanced by a concurrent request", size=state.offset)
        if hasher is not None:
            self._keep_hasher(state.id, offset, algorithm, hasher)
        return UploadState(state.id, state.repository, offset, state.key, state.created_at)

    async def monolithic(
        self, repository: str, digest_text: str, body: AsyncIterator[bytes], *, length: int | None, creator: int | None
    ) -> BlobInfo:
        digest = Digest.parse(digest_text)
        state = await self.start(repository, creator=creator)
        try:
            return await self.finish(repository, state.id, str(digest), body, length=length, creator=creator)
        except BaseException:
            await self._discard(state.id, state.key)
            raise

    async def cancel(self, repository: str, upload_id: str) -> None:
        state = await self.status(repository, upload_id)
        await self._discard(upload_id, state.key)

    async def open_sessions(self) -> int:
        return await self.store.count_uploads()

    async def mount(self, repository: str, digest_text: str, source: str | None, *, creator: int | None) -> bool:
        Digest.parse(digest_text)
        return await self.store.mount_blob(repository, digest_text, source, creator)

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

    async def _digest_of(self, upload_id: str, size: int, algorithm: str, store: BlobStore) -> str:
        cached = self._hashers.get(upload_id)
        if cached is not None and cached[0] == size and cached[1] == algorithm:
            return str(cached[2].hexdigest())
        # Re-hash what storage holds: the session moved between instances or the server restarted.
        hasher = hashlib.new(algorithm)
        stored = await store.size(upload_key(upload_id))
        if stored is None or stored < size:
            raise BlobUploadInvalid("the upload's bytes are missing from storage")
        async for chunk in store.read(upload_key(upload_id), 0, size):
            hasher.update(chunk)
        return hasher.hexdigest()

    async def _discard(self, upload_id: str, location: str) -> None:
        self._hashers.pop(upload_id, None)
        await self.store.delete_upload(upload_id)
        await self.locations.stores[location].delete(upload_key(upload_id))


def _valid_id(upload_id: str) -> bool:
    try:
        return str(uuid.UUID(upload_id)) == upload_id
    except ValueError:
        return False
