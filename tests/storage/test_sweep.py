"""The storage sweeper against every driver's real server (local disk, SeaweedFS, Azurite,
fake-gcs-server, Swift) and a throwaway SQLite database migrated to head.

Orphans are made the way crashes make them — an upload begun in storage whose row was never
written, a staging object, an upload completed but never recorded — next to what must stay: a
recorded blob, an upload in progress with its row, an upload begun after the first sweep. Each
test sweeps a location of its own (a fresh prefix or directory) on the session's server.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dockyard.db import migrate
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.locks import FileLocks
from dockyard.db.registry_store import RegistryStore
from dockyard.db.sweep_store import SweepStore
from dockyard.db.tables import storage_orphans
from dockyard.domain.digest import Digest
from dockyard.services.blobs import Locations
from dockyard.services.sweep import StorageSweeper, SweepCounts, classify
from dockyard.storage import BlobStore, Part, blob_key

from .conftest import Location
from .test_conformance import chunks, collect, payload, sha

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
GRACE = 1
REPOSITORY = "acme/app"


@dataclass
class World:
    store: BlobStore
    registry: RegistryStore
    sweeps: SweepStore
    locks: FileLocks
    sweeper: StorageSweeper
    database: Database

    async def sweep(self, *, dry: bool = False) -> SweepCounts:
        return await self.sweeper.sweep(dry=dry)

    async def keys(self) -> set[str]:
        return {key for prefix in ("uploads/", "blobs/") async for key in self.store.keys(prefix)}

    async def pending(self) -> set[tuple[str, str]]:
        return {(p.upload_id, p.handle) async for p in self.store.pending_uploads()}

    async def sightings(self) -> set[str]:
        async with self.database.read() as conn:
            return set((await conn.scalars(select(storage_orphans.c.key))).all())

    async def begin(self, data: bytes) -> tuple[str, str, list[Part]]:
        """An upload begun and written in storage, with no row (yet)."""
        upload_id = str(uuid.uuid4())
        handle = await self.store.begin_upload(upload_id)
        parts = await self.store.write_part(upload_id, handle, [], chunks(data, MiB))
        return upload_id, handle, parts

    async def completed(self, data: bytes) -> tuple[str, str]:
        """An upload completed into a blob that nothing recorded: (upload id, object key)."""
        upload_id, handle, parts = await self.begin(data)
        return upload_id, await self.store.complete_upload(upload_id, handle, parts, blob_key(Digest.of(data)))

    async def recorded(self, data: bytes) -> str:
        """A blob uploaded and recorded as `UploadService.finish` does; its object key."""
        _, key = await self.completed(data)
        digest = Digest.of(data)
        await self.registry.record_blob(
            REPOSITORY,
            str(digest),
            len(data),
            self.store.name,
            key=None if key == blob_key(digest) else key,
            upload_id=None,
            creator=None,
        )
        return key


def _isolated(location: Location, tmp_path: Path) -> dict[str, Any]:
    """Options of a location of the test's own on the session's server."""
    if location.driver == "local":
        root = tmp_path / "storage"
        root.mkdir()
        return {"root": str(root)}
    return {"prefix": f"sweep-{secrets.token_hex(6)}"}


def _run(location: Location, tmp_path: Path, scenario: Callable[[World], Awaitable[None]]) -> None:
    url = f"sqlite:///{tmp_path / 'dockyard.db'}"
    migrate.upgrade(url)

    async def body(store: BlobStore) -> None:
        database = Database(create_serving_engine(url, pool_size=2))
        locks = FileLocks(tmp_path / "upload.locks")
        sweeps = SweepStore(database)
        sweeper = StorageSweeper(sweeps, Locations({store.name: store}, [store.name]), locks, grace_seconds=GRACE)
        try:
            await scenario(World(store, RegistryStore(database), sweeps, locks, sweeper, database))
        finally:
            await locks.close()
            await database.dispose()

    location.run(body, **_isolated(location, tmp_path))


def _upload_of(key: str) -> str | None:
    found = classify(key)
    return None if found is None else found.upload_id


async def _past_grace() -> None:
    await asyncio.sleep(GRACE + 0.2)


def test_sweep_deletes_only_orphans_seen_twice_a_grace_apart(location: Location, tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        store = world.store
        # Orphans: begun without a row; a staging object; completed but never recorded.
        begun, begun_handle, _ = await world.begin(payload(MiB + 7))
        staging = str(uuid.uuid4())
        await store.put(f"uploads/{staging}.assembled", b"staged bytes")
        lost, lost_key = await world.completed(payload(MiB + 11))
        # Legitimate: a recorded blob, an upload in progress with its row.
        kept_data = payload(MiB + 13)
        kept_key = await world.recorded(kept_data)
        active, active_handle, _ = await world.begin(payload(MiB + 17))
        await world.registry.create_upload(REPOSITORY, active, store.name, active_handle, None)

        orphan_ids = {begun, staging, lost}
        before = await world.keys()
        doomed = {key for key in before if _upload_of(key) in orphan_ids or key == lost_key}
        assert lost_key in doomed
        assert kept_key in before
        assert f"uploads/{staging}.assembled" in doomed
        pending_before = await world.pending()
        native = bool(pending_before)
        assert native == (location.driver in ("s3", "swift", "swift_keystone"))

        first = await world.sweep()
        assert (first.objects, first.uploads, first.busy, first.failed) == (0, 0, 0, 0)
        assert first.waiting == len(doomed) + (1 if native else 0)
        assert await world.keys() == before
        assert await world.pending() == pending_before

        # Begun after the first sweep, its row not written yet: in flight.
        late, late_handle, _ = await world.begin(payload(100))
        late_keys = {key for key in await world.keys() if _upload_of(key) == late}

        await _past_grace()
        dry = await world.sweep(dry=True)
        assert (dry.objects, dry.uploads) == (len(doomed), 1 if native else 0)
        assert await world.keys() == before | late_keys

        second = await world.sweep()
        assert (second.objects, second.uploads, second.busy, second.failed) == (
            len(doomed),
            1 if native else 0,
            0,
            0,
        )
        assert second.bytes >= MiB + 11  # at least the completed blob's
        assert second.waiting == len(late_keys) + (1 if native else 0)
        assert await world.keys() == (before - doomed) | late_keys
        assert sha(await collect(store.read(kept_key))) == sha(kept_data)
        if native:
            assert (begun, begun_handle) not in await world.pending()
            assert {(active, active_handle), (late, late_handle)} <= await world.pending()
        # Only the late upload is still remembered as an orphan.
        assert {_upload_of(key) or key.partition("#")[0] for key in await world.sightings()} == {late}

        # Still within the late upload's grace, however slow the steps above were.
        world.sweeper.grace_ms = 3_600_000
        third = await world.sweep()
        assert (third.objects, third.uploads) == (0, 0)
        assert await world.keys() == (before - doomed) | late_keys

    _run(location, tmp_path, scenario)


def test_an_orphan_known_again_starts_a_new_grace(location: Location, tmp_path: Path) -> None:
    """A sighting is forgotten when the row appears; when the row goes again (a session abandoned
    whose abort failed), the grace period starts over."""

    async def scenario(world: World) -> None:
        upload_id, handle, _ = await world.begin(payload(1000))
        keys = {key for key in await world.keys() if _upload_of(key) == upload_id}
        native = (upload_id, handle) in await world.pending()
        assert keys or native
        await world.sweep()
        assert await world.sightings()
        await world.registry.create_upload(REPOSITORY, upload_id, world.store.name, handle, None)
        await world.sweep()
        assert await world.sightings() == set()

        await _past_grace()
        await world.registry.delete_upload(upload_id)
        counts = await world.sweep()
        assert (counts.objects, counts.uploads) == (0, 0)
        assert keys <= await world.keys()
        await _past_grace()
        counts = await world.sweep()
        assert (counts.objects, counts.uploads) == (len(keys), 1 if native else 0)
        assert not keys & await world.keys()
        assert (upload_id, handle) not in await world.pending()

    _run(location, tmp_path, scenario)


def test_sweep_skips_what_a_writer_holds(location: Location, tmp_path: Path) -> None:
    """An orphan whose digest or upload lock a writer holds (an upload completing and recording
    it, a replication writing it) is left for the next sweep."""

    async def scenario(world: World) -> None:
        _, key = await world.completed(payload(MiB + 3))
        found = classify(key)
        assert found is not None
        await world.sweep()
        await _past_grace()
        # Held shared, as uploads and replication hold a digest while they write and record it.
        if found.digest is not None:
            assert await world.locks.acquire_digest(found.digest, shared=True)
        else:
            assert found.upload_id is not None
            assert await world.locks.acquire(found.upload_id)
        counts = await world.sweep()
        assert (counts.busy, counts.objects) == (1, 0)
        assert key in await world.keys()
        if found.digest is not None:
            await world.locks.release_digest(found.digest)
        elif found.upload_id is not None:
            await world.locks.release(found.upload_id)
        counts = await world.sweep()
        assert (counts.busy, counts.objects) == (0, 1)
        assert key not in await world.keys()

    _run(location, tmp_path, scenario)


@pytest.mark.parametrize("location", ["s3"], indirect=True)
def test_a_second_multipart_upload_of_one_session_is_scrap(location: Location, tmp_path: Path) -> None:
    """A retried CreateMultipartUpload leaves a second upload for the same id: the session only uses
    the handle it recorded, so the other one is aborted; the recorded one stays."""

    async def scenario(world: World) -> None:
        store: Any = world.store
        upload_id = str(uuid.uuid4())
        handle = await store.begin_upload(upload_id)
        duplicate = await store.begin_upload(upload_id)
        await world.registry.create_upload(REPOSITORY, upload_id, store.name, handle, None)
        await world.sweep()
        await _past_grace()
        counts = await world.sweep()
        assert counts.uploads == 1
        assert await world.pending() == {(upload_id, handle)}
        assert duplicate != handle

    _run(location, tmp_path, scenario)
