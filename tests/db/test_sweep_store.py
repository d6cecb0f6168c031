"""The storage sweeper's queries on SQLite and PostgreSQL: what the database knows of what a sweep
found, and the sightings of what it does not know."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from dockyard.db import migrate
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.registry_store import RegistryStore
from dockyard.db.sweep_store import OBJECT, UPLOAD, Found, SweepStore
from dockyard.db.tables import gc_stats

pytestmark = pytest.mark.integration


def _digest(data: bytes) -> tuple[str, str]:
    """(digest, its derived key)."""
    hex_ = hashlib.sha256(data).hexdigest()
    return f"sha256:{hex_}", f"blobs/sha256/{hex_[:2]}/{hex_}"


def _run(url: str, scenario: Callable[[Database, RegistryStore, SweepStore], Awaitable[None]]) -> None:
    migrate.upgrade(url)

    async def main() -> None:
        database = Database(create_serving_engine(url, pool_size=2))
        try:
            await scenario(database, RegistryStore(database), SweepStore(database))
        finally:
            await database.dispose()

    asyncio.run(main())


def test_known(database_url: str) -> None:
    async def scenario(_: Database, registry: RegistryStore, sweeps: SweepStore) -> None:
        derived, derived_key = _digest(b"derived")
        keyed, keyed_blob_key = _digest(b"keyed")
        _, stray_key = _digest(b"stray")
        await registry.record_blob("ns/r", derived, 7, "east", key=None, upload_id=None, creator=None)
        await registry.record_blob("ns/r", keyed, 5, "east", key="uploads/done/data", upload_id=None, creator=None)
        await registry.create_upload("ns/r", "open", "east", "handle-1", None)
        found = [
            Found(OBJECT, derived_key, digest=derived),
            Found(OBJECT, "uploads/done/data", upload_id="done"),
            Found(OBJECT, keyed_blob_key, digest=keyed),  # its placement names another key
            Found(OBJECT, stray_key, digest=_digest(b"stray")[0]),
            Found(OBJECT, "uploads/open/tail-1", upload_id="open"),
            Found(OBJECT, "uploads/gone", upload_id="gone"),
            Found(UPLOAD, "open#1", upload_id="open", handle="handle-1"),
            Found(UPLOAD, "open#2", upload_id="open", handle="handle-2"),
            Found(UPLOAD, "gone#1", upload_id="gone", handle=""),
        ]
        assert await sweeps.known("east", found) == {derived_key, "uploads/done/data", "uploads/open/tail-1", "open#1"}
        # Placements are per location; an upload session is known wherever its pieces are.
        assert await sweeps.known("west", found) == {"uploads/open/tail-1", "open#1"}
        assert await sweeps.known("east", []) == set()

    _run(database_url, scenario)


def test_sightings(database_url: str) -> None:
    async def scenario(database: Database, _: RegistryStore, sweeps: SweepStore) -> None:
        await sweeps.record("east", OBJECT, seen=["a", "b"], forget=[], now=1000)
        await sweeps.record("east", UPLOAD, seen=["a"], forget=[], now=1000)
        await sweeps.record("west", OBJECT, seen=["a"], forget=[], now=1500)
        assert await sweeps.sightings("east", OBJECT, ["a", "b", "c"]) == {"a": 1000, "b": 1000}
        # Seen again: the first sighting stays; forgotten: gone.
        await sweeps.record("east", OBJECT, seen=["a", "c"], forget=["b"], now=2000)
        assert await sweeps.sightings("east", OBJECT, ["a", "b", "c"]) == {"a": 1000, "c": 2000}
        assert await sweeps.waiting() == 4
        # A complete sweep that began at 1800 saw a and c, not the rest.
        assert await sweeps.forget_unseen("east", OBJECT, 1800) == 0
        await sweeps.record("east", OBJECT, seen=["c"], forget=[], now=3000)
        assert await sweeps.forget_unseen("east", OBJECT, 2500) == 1
        assert await sweeps.sightings("east", OBJECT, ["a", "c"]) == {"c": 2000}
        assert await sweeps.sightings("east", UPLOAD, ["a"]) == {"a": 1000}
        assert await sweeps.sightings("west", OBJECT, ["a"]) == {"a": 1500}
        await sweeps.forget("east", UPLOAD, ["a"])
        assert await sweeps.sightings("east", UPLOAD, ["a"]) == {}

        assert await sweeps.last_sweep() is None
        await sweeps.record_sweep(5000, {"swept_objects": 2, "swept_uploads": 0})
        await sweeps.record_sweep(6000, {"swept_objects": 3, "swept_uploads": 0})
        assert await sweeps.last_sweep() == 6000
        async with database.read() as conn:
            totals = {row.name: int(row.value) for row in await conn.execute(select(gc_stats))}
        assert totals == {"last_sweep_at": 6000, "swept_objects": 5}

    _run(database_url, scenario)
