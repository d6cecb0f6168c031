"""Geo-replication: every blob reaches every required location, verified, in the background.

A push writes to the instance's first preferred location; recording the manifest enqueues one
job per blob (same transaction). The job copies the blob from a location that holds it to each
required location that does not, re-reads the copy to verify its digest, then records the
placement. A location that is down fails the job, which is retried with backoff until it
succeeds: nothing is lost, and reads are served meanwhile from wherever the blob is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from dockyard.db.jobs_store import JobsStore
from dockyard.db.locks import UploadLocks, digest_held
from dockyard.db.registry_store import REPLICATE, RegistryStore
from dockyard.domain.digest import Digest
from dockyard.services.blobs import Locations
from dockyard.storage import BlobStore, blob_key


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    backlog: int
    oldest_pending_ms: int | None
    failed: int
    blobs: int
    held: dict[str, int]


class ReplicationService:
    kind = REPLICATE

    def __init__(
        self,
        store: RegistryStore,
        jobs: JobsStore,
        locations: Locations,
        *,
        replicate_to: list[str] | None,
        namespace_locations: dict[str, list[str]],
        locks: UploadLocks,
    ) -> None:
        self.locks = locks
        self.store = store
        self.jobs = jobs
        self.locations = locations
        self.base = set(replicate_to if replicate_to is not None else locations.stores)
        self.per_namespace = {ns: set(names) for ns, names in namespace_locations.items()}

    @property
    def enabled(self) -> bool:
        """Whether pushes need replication jobs at all (more than one location to reach)."""
        return len(self.locations.stores) > 1

    def required(self, namespace: str) -> set[str]:
        return self.base | self.per_namespace.get(namespace, set())

    async def handle(self, payload: dict[str, Any]) -> None:
        """Copy one blob to every required location lacking it. Idempotent.

        The digest's lock is held shared throughout: garbage collection (exclusive) cannot
        delete the source or the copy between the copy and its record.
        """
        digest = Digest.parse(str(payload["digest"]))
        required = self.required(str(payload.get("namespace", "")))
        async with digest_held(self.locks, str(digest), shared=True, wait=600.0):
            held = await self.store.placements_of(str(digest))
            missing = sorted(name for name in required if name not in held and name in self.locations.stores)
            size = await self.store.blob_size(str(digest))
            if not missing or size is None:
                return  # complete, or collected since the job was queued
            source, source_key = self.locations.choose(str(digest), held)
            for name in missing:
                target = self.locations.stores[name]
                await self._copy(digest, size, source, source_key, target)
                if not await self.store.add_placement(str(digest), name, None):
                    await target.delete(blob_key(digest))
                    return

    @staticmethod
    async def _copy(digest: Digest, size: int, source: BlobStore, key: str, target: BlobStore) -> None:
        destination = blob_key(digest)
        written = await target.write(destination, source.read(key))
        hasher = hashlib.new(digest.algorithm)
        read = 0
        async for chunk in target.read(destination):
            hasher.update(chunk)
            read += len(chunk)
        if written != size or read != size or hasher.hexdigest() != digest.hex:
            await target.delete(destination)
            raise RuntimeError(f"copy of {digest} to {target.name} does not verify")

    async def status(self) -> ReplicationStatus:
        backlog, oldest, failed = await self.jobs.backlog(REPLICATE)
        blobs, held = await self.store.placement_counts()
        return ReplicationStatus(
            backlog, oldest, failed, blobs, {name: held.get(name, 0) for name in self.locations.stores}
        )
