"""Continuous garbage collection: passes over the database in short batches, then storage.

A pass removes, in order: tag history past the time-machine window; manifests nothing reaches;
blob links no manifest needs after the grace period; namespace usage nothing references; blob rows
nothing references (recording their objects for deletion); then deletes those objects from
storage, each under its digest's exclusive lock and after a re-check; then abandons idle upload
sessions. Every step is a transaction of at most `batch` rows, so a pass never holds a lock a push
would wait on for long, whatever the size of a repository.

The background workers run a pass every `interval_seconds` (a job that queues its successor);
`dockyard gc run` runs one now and `dockyard gc --dry-run` reports what a pass would remove.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from dockyard.db.clock import now_ms
from dockyard.db.gc_store import (
    GC_JOB,
    PURGE_NAMESPACE,
    PURGE_REPOSITORY,
    Collected,
    GcCounts,
    GcStore,
    StaleUpload,
    StorageDeletion,
)
from dockyard.db.locks import UploadLocks
from dockyard.domain.audit import Actor
from dockyard.services.blobs import Locations
from dockyard.services.sweep import StorageSweeper, SweepCounts
from dockyard.storage import Part, StorageError

log = logging.getLogger("dockyard.gc")

Progress = Callable[[str, int], None]
"""Called with a phase name and how many items it just handled."""

_MANIFEST_ROUNDS = 16


def _quiet(_phase: str, _count: int) -> None:
    return None


class GcService:
    kind = GC_JOB

    def __init__(
        self,
        store: GcStore,
        locations: Locations,
        locks: UploadLocks,
        *,
        enabled: bool,
        interval_seconds: int,
        grace_seconds: int,
        upload_grace_seconds: int,
        before_pass: Callable[[], Awaitable[object]] | None = None,
        sweeper: StorageSweeper | None = None,
        sweep_interval_seconds: int = 21600,
    ) -> None:
        self.sweeper = sweeper
        self.sweep_interval_seconds = sweep_interval_seconds
        self.store = store
        self.locations = locations
        self.locks = locks
        self.enabled = enabled
        self.interval_ms = interval_seconds * 1000
        self.grace_ms = grace_seconds * 1000
        self.upload_grace_ms = upload_grace_seconds * 1000
        self.before_pass = before_pass

    # -- jobs ----------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {GC_JOB: self.handle, PURGE_REPOSITORY: self.purge_repository, PURGE_NAMESPACE: self.purge_namespace}

    async def ensure_scheduled(self) -> None:
        """Queue the first background pass if none is queued or running (at worker start)."""
        if self.enabled:
            await self.store.schedule(0, now_ms(), unless_running=True)

    async def handle(self, payload: dict[str, Any]) -> None:
        try:
            if self.before_pass is not None:
                await self.before_pass()
            await self.run_pass()
        finally:
            if self.enabled:
                await self.store.schedule(self.interval_ms, now_ms(), unless_running=False)

    # -- a pass --------------------------------------------------------------------------------

    async def run_pass(self, progress: Progress = _quiet, *, sweep: bool | None = None) -> GcCounts:
        """One pass. `sweep`: also sweep orphaned storage (None: when the sweep interval is due)."""
        now = now_ms()
        cutoff = now - self.grace_ms
        counts = GcCounts()
        await self._database_phases(counts, now, cutoff, progress, dry=None)
        await self._storage_phase(counts, progress)
        await self._upload_phase(counts, now, progress)
        if self.sweeper is not None:
            if sweep is None:
                sweep = await self.sweeper.due(self.sweep_interval_seconds)
            if sweep:
                swept = await self.sweeper.sweep()
                counts.swept_objects += swept.objects + swept.uploads
                counts.swept_bytes += swept.bytes
                progress("sweep", swept.objects + swept.uploads)
        await self.store.record_pass(counts, now_ms())
        if counts.blobs or counts.manifests or counts.storage_objects:
            log.info("gc pass: %s", counts.as_dict())
        return counts

    async def dry_sweep(self) -> SweepCounts | None:
        """What a sweep of orphaned storage would delete now (None: no sweeper configured)."""
        return None if self.sweeper is None else await self.sweeper.sweep(dry=True)

    async def dry_run(self, progress: Progress = _quiet) -> Collected:
        """What a pass would remove now, computed by running it in a transaction rolled back."""
        now = now_ms()
        result = Collected()
        async with self.store.dry_transaction() as conn:
            await self._database_phases(result.counts, now, now - self.grace_ms, progress, dry=conn, detail=result)
        pending = await self.store.pending_deletions(0, 1_000_000)
        result.counts.storage_objects = len(pending) + result.counts.storage_objects
        result.counts.storage_bytes += sum(item.size for item in pending)
        stale = await self.store.stale_uploads(now - self.upload_grace_ms, 1_000_000)
        result.counts.uploads = len(stale)
        return result

    async def _database_phases(
        self,
        counts: GcCounts,
        now: int,
        cutoff: int,
        progress: Progress,
        *,
        dry: Any,
        detail: Collected | None = None,
    ) -> None:
        while True:
            gone = await self.store.purge_tag_history(now, dry)
            counts.tags += len(gone)
            if detail is not None:
                detail.tags.extend(gone)
            progress("tags", len(gone))
            if len(gone) < self.store.batch:
                break
        # Removing an index frees its children, removing a subject its referrers: repeat the
        # scan until it removes nothing (deeper chains finish on the next pass).
        for _ in range(_MANIFEST_ROUNDS):
            removed_this_round = 0
            after: int | None = 0
            while after is not None:
                removed, after = await self.store.collect_manifests(cutoff, after, dry)
                removed_this_round += len(removed)
                if detail is not None:
                    detail.manifests.extend(removed)
                progress("manifests", len(removed))
            counts.manifests += removed_this_round
            if not removed_this_round:
                break
        link_after: tuple[int, int] | None = (0, 0)
        while link_after is not None:
            removed_links, link_after = await self.store.collect_links(cutoff, link_after, dry)
            counts.links += removed_links
            progress("links", removed_links)
        item_after: tuple[int, str] | None = (0, "")
        while item_after is not None:
            removed_items, item_after = await self.store.collect_usage_items(cutoff, item_after, dry)
            counts.usage_items += removed_items
            progress("usage", removed_items)
        blob_after: int | None = 0
        while blob_after is not None:
            removed_blobs, blob_after = await self.store.collect_blobs(cutoff, blob_after, now, dry)
            counts.blobs += len(removed_blobs)
            counts.blob_bytes += sum(size for _, size in removed_blobs)
            if detail is not None:
                detail.blobs.extend(removed_blobs)
            progress("blobs", len(removed_blobs))

    async def _storage_phase(self, counts: GcCounts, progress: Progress) -> None:
        after = 0
        while True:
            pending = await self.store.pending_deletions(after, self.store.batch)
            if not pending:
                return
            for deletion in pending:
                if await self._delete_object(deletion):
                    counts.storage_objects += 1
                    counts.storage_bytes += deletion.size
                progress("storage", 1)
            after = pending[-1].id

    async def _delete_object(self, deletion: StorageDeletion) -> bool:
        location = self.locations.stores.get(deletion.location)
        if location is None:
            return False  # another instance's location: that instance deletes it
        if not await self.locks.acquire_digest(deletion.digest, shared=False):
            return False  # being written or replicated now: the next pass retries
        try:
            if await self.store.object_referenced(deletion):
                await self.store.finish_deletion(deletion, deleted=False)
                return False
            try:
                await location.delete(deletion.key)
            except StorageError as exc:
                log.warning("gc: deleting %s from %s failed (retried later): %s", deletion.key, location.name, exc)
                return False
            await self.store.finish_deletion(deletion, deleted=True)
            return True
        finally:
            await self.locks.release_digest(deletion.digest)

    async def _upload_phase(self, counts: GcCounts, now: int, progress: Progress) -> None:
        stale = await self.store.stale_uploads(now - self.upload_grace_ms, self.store.batch)
        for upload in stale:
            if await self._abandon(upload):
                counts.uploads += 1
            progress("uploads", 1)

    async def _abandon(self, upload: StaleUpload) -> bool:
        if not await self.locks.acquire(upload.id):
            return False  # a request is writing it right now
        try:
            if not await self.store.drop_upload(upload):
                return False
            await self._release_upload_storage(upload)
            return True
        finally:
            await self.locks.release(upload.id)

    async def _release_upload_storage(self, upload: StaleUpload) -> None:
        location = self.locations.stores.get(upload.location)
        if location is None:
            return
        parts = [Part(int(n), int(size), str(token)) for n, size, token in json.loads(upload.parts)]
        try:
            await location.abort_upload(upload.id, upload.handle, parts)
        except StorageError as exc:
            log.warning("gc: releasing upload %s in %s failed: %s", upload.id, location.name, exc)

    # -- deletion of repositories and namespaces -----------------------------------------------

    async def delete_repository(self, name: str, *, actor: Actor) -> None:
        await self.store.mark_repository(name, actor=actor)

    async def delete_namespace(self, name: str, *, actor: Actor) -> int:
        return await self.store.mark_namespace(name, actor=actor)

    async def purge_repository(self, payload: dict[str, Any]) -> None:
        repo_id = int(payload["repository_id"])
        while True:
            removed, pending = await self.store.purge_repository_batch(repo_id)
            for upload in pending:
                await self._release_upload_storage(upload)
            if not removed:
                return

    async def purge_namespace(self, payload: dict[str, Any]) -> None:
        if not await self.store.purge_namespace(int(payload["namespace_id"])):
            raise RuntimeError("repositories of the namespace are still being purged")

    async def purge_marked(self) -> int:
        """Purge every marked repository and namespace now; return how many repositories went."""
        repos, spaces = await self.store.marked()
        for repo_id in repos:
            await self.purge_repository({"repository_id": repo_id})
        for namespace_id in spaces:
            await self.purge_namespace({"namespace_id": namespace_id})
        return len(repos)

    async def stats(self) -> dict[str, int]:
        return await self.store.stats()
