"""The collector against a writer holding a new reference open, on PostgreSQL.

Each test ages a row so that the collector would take it, opens a writer's transaction that makes
a new reference the way the registry does (an update of the row's touch time plus the reference),
runs the collector while that transaction is open — it must skip the row the writer holds rather
than wait for it (no stall, no deadlock) — commits the writer, and checks that the row survives the
collector run then and a second run after the commit (which sees the new reference and touch).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, insert, select, update

from dockyard.db import migrate
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.gc_store import GcStore
from dockyard.db.registry_store import RegistryStore
from dockyard.db.tables import blobs, manifest_blobs, manifests, repositories, repository_blobs, tags
from dockyard.domain.audit import DOCKYARD

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Stores = tuple[Database, RegistryStore, GcStore]


@pytest.fixture
def migrated(postgres_url: str) -> str:
    migrate.upgrade(postgres_url)
    return postgres_url


def _run(url: str, scenario: Callable[[Stores], Awaitable[None]]) -> None:
    async def main() -> None:
        database = Database(create_serving_engine(url, pool_size=4))
        try:
            await scenario((database, RegistryStore(database), GcStore(database)))
        finally:
            await database.dispose()

    asyncio.run(main())


async def _image(store: RegistryStore, repository: str, layer: bytes) -> tuple[str, str]:
    """Record a blob and an untagged manifest using it; return (blob digest, manifest digest)."""
    blob = _digest(layer)
    await store.record_blob(repository, blob, len(layer), "local", key=None, upload_id=None, creator=None)
    content = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [{"digest": blob}]}).encode()
    await store.put_manifest(
        repository,
        _digest(content),
        OCI_MANIFEST,
        content,
        artifact_type=None,
        subject=None,
        blob_digests=[blob],
        child_digests=[],
        tag=None,
        creator=None,
        actor=DOCKYARD,
    )
    return blob, _digest(content)


async def _age_everything(database: Database) -> None:
    async with database.write() as conn:
        await conn.execute(update(manifests).values(created_at=0, touched_at=0))
        await conn.execute(update(blobs).values(created_at=0, touched_at=0))
        await conn.execute(update(repository_blobs).values(created_at=0))


async def _while_held(collector: Awaitable[object], release: Awaitable[None]) -> object:
    """Run the collector while the writer holds its row lock: it must neither wait nor take the row."""
    try:
        return await asyncio.wait_for(collector, 10)
    finally:
        await release


def test_a_tag_added_during_collection_keeps_the_manifest(migrated: str) -> None:
    async def scenario(stores: Stores) -> None:
        database, store, gc = stores
        _, manifest = await _image(store, "ns/race", b"layer one")
        await _age_everything(database)
        cutoff = now_ms() - 1000
        async with database.engine.connect() as writer:
            transaction = await writer.begin()
            row = (await writer.execute(select(manifests.c.id, manifests.c.repository_id))).one()
            await writer.execute(update(manifests).where(manifests.c.id == row.id).values(touched_at=now_ms()))
            await writer.execute(
                insert(tags).values(repository_id=row.repository_id, name="late", manifest_id=row.id, start_at=now_ms())
            )
            removed, _ = await _while_held(gc.collect_manifests(cutoff, 0), transaction.commit())  # type: ignore[misc]
        assert removed == []
        async with database.read() as conn:
            assert (
                await conn.scalar(select(func.count()).select_from(manifests).where(manifests.c.digest == manifest))
                == 1
            )

    _run(migrated, scenario)


def test_a_manifest_pushed_during_collection_keeps_its_blob_link(migrated: str) -> None:
    async def scenario(stores: Stores) -> None:
        database, store, gc = stores
        blob = _digest(b"layer two")
        await store.record_blob("ns/link", blob, 9, "local", key=None, upload_id=None, creator=None)
        await _age_everything(database)
        cutoff = now_ms() - 1000
        async with database.engine.connect() as writer:
            transaction = await writer.begin()
            repo_id = await writer.scalar(select(repositories.c.id).where(repositories.c.name == "ns/link"))
            blob_id = await writer.scalar(select(blobs.c.id).where(blobs.c.digest == blob))
            # What put_manifest does: renew the link, then reference the blob from the manifest.
            await writer.execute(
                update(repository_blobs)
                .where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id == blob_id)
                .values(created_at=now_ms())
            )
            manifest_id = await writer.scalar(
                insert(manifests)
                .values(
                    repository_id=repo_id,
                    digest=_digest(b"m"),
                    media_type=OCI_MANIFEST,
                    size=1,
                    content=b"m",
                    created_at=now_ms(),
                    touched_at=now_ms(),
                )
                .returning(manifests.c.id)
            )
            await writer.execute(insert(manifest_blobs).values(manifest_id=manifest_id, blob_id=blob_id))
            removed, _ = await _while_held(gc.collect_links(cutoff, (0, 0)), transaction.commit())  # type: ignore[misc]
        assert removed == 0
        again, _ = await gc.collect_links(cutoff, (0, 0))
        assert again == 0
        async with database.read() as conn:
            assert await conn.scalar(select(func.count()).select_from(repository_blobs)) == 1

    _run(migrated, scenario)


def test_a_mount_during_collection_keeps_the_blob(migrated: str) -> None:
    async def scenario(stores: Stores) -> None:
        database, store, gc = stores
        blob = _digest(b"layer three")
        await store.record_blob("ns/source", blob, 11, "local", key=None, upload_id=None, creator=None)
        async with database.write() as conn:
            await conn.execute(repository_blobs.delete())  # the blob is unreferenced: collectable
        await _age_everything(database)
        cutoff = now_ms() - 1000
        async with database.engine.connect() as writer:
            transaction = await writer.begin()
            blob_id = await writer.scalar(select(blobs.c.id).where(blobs.c.digest == blob))
            repo_id = await writer.scalar(select(repositories.c.id).where(repositories.c.name == "ns/source"))
            # What mount_blob does: touch the blob row, then link it.
            await writer.execute(update(blobs).where(blobs.c.id == blob_id).values(touched_at=now_ms()))
            await writer.execute(
                insert(repository_blobs).values(repository_id=repo_id, blob_id=blob_id, created_at=now_ms())
            )
            removed, _ = await _while_held(gc.collect_blobs(cutoff, 0, now_ms()), transaction.commit())  # type: ignore[misc]
        assert removed == []
        again, _ = await gc.collect_blobs(cutoff, 0, now_ms())
        assert again == []
        async with database.read() as conn:
            assert await conn.scalar(select(func.count()).select_from(blobs).where(blobs.c.digest == blob)) == 1

    _run(migrated, scenario)


def test_a_push_after_collection_finds_the_blob_gone(migrated: str) -> None:
    async def scenario(stores: Stores) -> None:
        database, store, gc = stores
        blob = _digest(b"layer four")
        await store.record_blob("ns/late", blob, 10, "local", key=None, upload_id=None, creator=None)
        await _age_everything(database)
        cutoff = now_ms() - 1000
        removed, _ = await gc.collect_links(cutoff, (0, 0))
        assert removed == 1
        assert not await store.mount_blob("ns/other", blob, "ns/late", None)
        collected, _ = await gc.collect_blobs(cutoff, 0, now_ms())
        assert collected == [(blob, 10)]
        assert not await store.mount_blob("ns/other", blob, None, None)
        assert len(await gc.pending_deletions(0, 10)) == 1

    _run(migrated, scenario)
