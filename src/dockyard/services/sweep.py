"""Sweeping storage for what no database row knows: objects and unfinished uploads a crash left.

Garbage collection deletes the objects the database recorded. A crash can leave storage that the
database never recorded or has already forgotten:

- an upload begun in storage (`UploadService.start` calls `begin_upload` before it inserts the
  `uploads` row) whose row was never written;
- an upload's parts, tails, segments or staging object whose row was dropped (cancelled, abandoned,
  purged) but whose abort failed;
- a blob object that `complete_upload` made but whose `record_blob` never committed.

What each driver stores for upload `<id>`, and so what a sweep looks at in every location:

    uploads/<id>                      local: the upload file
    uploads/<id>/data                 s3: the multipart upload (`pending_uploads`), completed in place
    uploads/<id>/tail-<n>-<random>    s3: a request's remainder smaller than a part
    uploads/<id>/part-<n>-<random>    gcs: one component per request (and compose-… intermediates)
    uploads/<id>.assembled            a staging completion, when the bytes must be read back
    blobs/upload/<id>                 azure: the block blob from `begin_upload` on, completed in place;
                                      swift: the completed manifest
    .segments/uploads/<id>/…          swift: segments (`pending_uploads`; `keys` never lists them)
    blobs/<algorithm>/<xx>/<hex>      a blob at its derived key (local and gcs uploads, replication)

Something found is an orphan when the database does not know it (`db.sweep_store`: no `uploads`
row for its upload id, no placement naming its key in that location, no key-less placement of its
digest there). It is deleted only when an earlier sweep already found it an orphan at least
`grace_seconds` before (sightings are recorded in `storage_orphans`), and only after a re-check
under the lock its writers hold: a blob key's digest lock, exclusive (uploads and replication hold
it while they write and record the object, as for garbage collection's deletions), or the upload's
lock (every request of a session holds it while it writes, completes or records). A lock that is
busy skips the item until the next sweep. A sighting is forgotten once the thing is known again or
gone, so a key reused later starts a new grace period.

Keys of any other shape are never touched. The one window the locks do not cover is the start of
an upload, between `begin_upload` and the insertion of its row: the grace period covers it.

A sweep lists every object under `uploads/` and `blobs/` of every location: run it far less often
than a collection pass (`due`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, fields

from dockyard.db.clock import now_ms
from dockyard.db.locks import UploadLocks
from dockyard.db.sweep_store import OBJECT, UPLOAD, Found, SweepStore
from dockyard.domain.digest import Digest
from dockyard.domain.errors import DigestInvalid
from dockyard.services.blobs import Locations
from dockyard.storage import BlobStore, StorageError, blob_key

log = logging.getLogger("dockyard.sweep")

#: Things looked up in the database at once.
BATCH = 500
#: Where uploads and blobs live in every location.
PREFIXES = ("uploads/", "blobs/")


@dataclass(slots=True)
class SweepCounts:
    """What one sweep removed (dry: would remove), and what it left for later."""

    objects: int = 0
    bytes: int = 0
    uploads: int = 0
    """Unfinished native uploads aborted."""
    waiting: int = 0
    """Orphans seen whose grace period has not passed yet."""
    busy: int = 0
    """Orphans skipped because a writer held their lock (retried by the next sweep)."""
    failed: int = 0
    """Deletions, aborts or listings the store refused (retried by the next sweep)."""

    def add(self, other: SweepCounts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


class StorageSweeper:
    def __init__(self, store: SweepStore, locations: Locations, locks: UploadLocks, *, grace_seconds: int) -> None:
        self.store = store
        self.locations = locations
        self.locks = locks
        self.grace_ms = grace_seconds * 1000

    async def due(self, interval_seconds: int) -> bool:
        """Whether no sweep (of any instance) ended in the last `interval_seconds`."""
        last = await self.store.last_sweep()
        return last is None or now_ms() - last >= interval_seconds * 1000

    async def sweep(self, *, dry: bool = False) -> SweepCounts:
        """Sweep every location of this instance once.

        Dry: record nothing, delete nothing; count what a sweep would delete now.
        """
        counts = SweepCounts()
        for store in self.locations.stores.values():
            await self._sweep_kind(store, OBJECT, _objects(store), counts, dry=dry)
            await self._sweep_kind(store, UPLOAD, _pending(store), counts, dry=dry)
        if not dry:
            await self.store.record_sweep(
                now_ms(),
                {"swept_objects": counts.objects, "swept_bytes": counts.bytes, "swept_uploads": counts.uploads},
            )
            if counts.objects or counts.uploads:
                log.info("storage sweep: %s", counts.as_dict())
        return counts

    async def _sweep_kind(
        self, store: BlobStore, kind: str, found: AsyncGenerator[tuple[Found, float]], counts: SweepCounts, *, dry: bool
    ) -> None:
        started = now_ms()
        batch: list[tuple[Found, float]] = []
        try:
            async with contextlib.aclosing(found) as listing:
                async for item in listing:
                    batch.append(item)
                    if len(batch) >= BATCH:
                        await self._settle(store, kind, batch, counts, dry=dry)
                        batch = []
            if batch:
                await self._settle(store, kind, batch, counts, dry=dry)
        except StorageError as exc:
            counts.failed += 1
            log.warning("storage sweep of %s (%ss) stopped, retried next time: %s", store.name, kind, exc)
            return
        if not dry:
            # A complete listing: what it did not find unknown is known again or gone.
            await self.store.forget_unseen(store.name, kind, started)

    async def _settle(
        self, store: BlobStore, kind: str, batch: list[tuple[Found, float]], counts: SweepCounts, *, dry: bool
    ) -> None:
        """Note the unknown things of one batch; remove those already unknown a grace period ago."""
        items = [item for item, _ in batch]
        known = await self.store.known(store.name, items)
        before = await self.store.sightings(store.name, kind, [item.key for item in items])
        orphans = [(item, started) for item, started in batch if item.key not in known]
        now = now_ms()
        if not dry:
            await self.store.record(
                store.name,
                kind,
                seen=[item.key for item, _ in orphans],
                forget=[key for key in before if key in known],
                now=now,
            )
        cutoff = now - self.grace_ms
        for item, started in orphans:
            first = before.get(item.key)
            if first is None or first > cutoff or started * 1000 > cutoff:
                counts.waiting += 1
            elif dry:
                await self._would_remove(store, item, counts)
            else:
                await self._remove(store, item, counts)

    async def _remove(self, store: BlobStore, item: Found, counts: SweepCounts) -> None:
        """Re-check and delete one orphan under its writers' lock (skipped when that is busy)."""
        if item.digest is not None:
            held = await self.locks.acquire_digest(item.digest, shared=False)
        else:
            assert item.upload_id is not None
            held = await self.locks.acquire(item.upload_id)
        if not held:
            counts.busy += 1
            return
        try:
            if await self.store.known(store.name, [item]):
                await self.store.forget(store.name, item.kind, [item.key])
                return
            if item.kind == OBJECT:
                size = await store.size(item.key)
                if size is not None:
                    await store.delete(item.key)
                    counts.objects += 1
                    counts.bytes += size
                    log.info("storage sweep: deleted %s from %s (%d bytes)", item.key, store.name, size)
            else:
                assert item.upload_id is not None
                assert item.handle is not None
                await store.abort_pending(item.upload_id, item.handle)
                counts.uploads += 1
                log.info("storage sweep: aborted upload %s in %s", item.upload_id, store.name)
            await self.store.forget(store.name, item.kind, [item.key])
        except StorageError as exc:
            counts.failed += 1
            log.warning("storage sweep: removing %s from %s failed (retried later): %s", item.key, store.name, exc)
        finally:
            if item.digest is not None:
                await self.locks.release_digest(item.digest)
            else:
                assert item.upload_id is not None
                await self.locks.release(item.upload_id)

    async def _would_remove(self, store: BlobStore, item: Found, counts: SweepCounts) -> None:
        if item.kind == UPLOAD:
            counts.uploads += 1
            return
        try:
            size = await store.size(item.key)
        except StorageError:
            size = 0
        if size is not None:
            counts.objects += 1
            counts.bytes += size


def classify(key: str) -> Found | None:
    """What an object key found under `uploads/` or `blobs/` belongs to; None for any other shape."""
    parts = key.split("/")
    if parts[0] == "uploads" and len(parts) >= 2:
        upload_id = parts[1].split(".", 1)[0]  # uploads/<id>, uploads/<id>/…, uploads/<id>.assembled
        return Found(OBJECT, key, upload_id=upload_id) if upload_id else None
    if parts[0] != "blobs":
        return None
    if len(parts) == 3 and parts[1] == "upload" and parts[2]:
        return Found(OBJECT, key, upload_id=parts[2])
    if len(parts) == 4:
        try:
            digest = Digest.parse(f"{parts[1]}:{parts[3]}")
        except DigestInvalid:
            return None
        if blob_key(digest) == key:
            return Found(OBJECT, key, digest=str(digest))
    return None


async def _objects(store: BlobStore) -> AsyncGenerator[tuple[Found, float]]:
    for prefix in PREFIXES:
        async for key in store.keys(prefix):
            found = classify(key)
            if found is not None:
                yield found, 0.0


async def _pending(store: BlobStore) -> AsyncGenerator[tuple[Found, float]]:
    async for pending in store.pending_uploads():
        name = f"{pending.upload_id}#{hashlib.sha256(pending.handle.encode()).hexdigest()[:16]}"
        yield Found(UPLOAD, name, upload_id=pending.upload_id, handle=pending.handle), pending.started_at
