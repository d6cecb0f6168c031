"""The storage sweeper's queries: what the database knows of what a sweep found in storage, and
when a sweep first saw each thing it does not know.

What a location holds is known (and never swept) when:

- it belongs to an upload session that still has its `uploads` row: an object found with an
  `upload_id` (`uploads/<id>…`, `blobs/upload/<id>`); for an unfinished native upload, the row must
  also hold the same handle (a second multipart upload begun for one id by a retried request is
  scrap: the session only ever uses the handle it recorded);
- a placement in that location names the object's key;
- the object is at the derived key of `digest` and a placement of that digest in that location has
  no key (NULL) — the same rule as `GcStore.object_referenced`.

Sightings (`storage_orphans`) record when a sweep first and last saw something unknown; one seen
again as known, or not seen at all by a complete sweep, is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.engine import Database
from dockyard.db.tables import blobs, gc_stats, placements, storage_orphans, uploads

#: Kinds of sightings.
OBJECT = "object"
UPLOAD = "upload"

#: gc_stats rows the sweeper keeps.
LAST_SWEEP = "last_sweep_at"


@dataclass(frozen=True, slots=True)
class Found:
    """An object (`kind` OBJECT, `key` its key) or an unfinished native upload (`kind` UPLOAD,
    `key` a name unique to its id and handle) found in one location."""

    kind: str
    key: str
    upload_id: str | None = None
    digest: str | None = None
    """Set when `key` is the digest's derived key, `blob_key(digest)`."""
    handle: str | None = None


class SweepStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def known(self, location: str, found: Sequence[Found]) -> set[str]:
        """The keys of `found` the database knows (see the module docstring)."""
        ids = sorted({item.upload_id for item in found if item.upload_id is not None})
        keys = sorted({item.key for item in found if item.kind == OBJECT})
        digests = sorted({item.digest for item in found if item.kind == OBJECT and item.digest is not None})
        async with self.db.read() as conn:
            sessions: dict[str, str] = {}
            if ids:
                rows = await conn.execute(select(uploads.c.id, uploads.c.handle).where(uploads.c.id.in_(ids)))
                sessions = {row.id: row.handle for row in rows}
            placed: set[str] = set()
            if keys:
                placed = set(
                    (
                        await conn.scalars(
                            select(placements.c.key).where(
                                placements.c.location == location, placements.c.key.in_(keys)
                            )
                        )
                    ).all()
                )
            derived: set[str] = set()
            if digests:
                derived = set(
                    (
                        await conn.scalars(
                            select(blobs.c.digest)
                            .join(placements, placements.c.blob_id == blobs.c.id)
                            .where(
                                placements.c.location == location,
                                placements.c.key.is_(None),
                                blobs.c.digest.in_(digests),
                            )
                        )
                    ).all()
                )
        result: set[str] = set()
        for item in found:
            if item.kind == UPLOAD:
                if item.upload_id in sessions and sessions[item.upload_id] == item.handle:
                    result.add(item.key)
            elif item.upload_id in sessions or item.key in placed or item.digest in derived:
                result.add(item.key)
        return result

    # -- sightings -----------------------------------------------------------------------------

    async def sightings(self, location: str, kind: str, keys: Sequence[str]) -> dict[str, int]:
        """When each of `keys` was first seen unknown, for those seen before."""
        if not keys:
            return {}
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(storage_orphans.c.key, storage_orphans.c.first_seen).where(
                    storage_orphans.c.location == location,
                    storage_orphans.c.kind == kind,
                    storage_orphans.c.key.in_(sorted(set(keys))),
                )
            )
            return {row.key: int(row.first_seen) for row in rows}

    async def record(self, location: str, kind: str, *, seen: Sequence[str], forget: Sequence[str], now: int) -> None:
        """Note `seen` as unknown now (first seen now unless seen before); forget `forget`."""
        if not seen and not forget:
            return
        async with self.db.write() as conn:
            if seen:
                insert_ = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
                statement = insert_(storage_orphans).values(
                    [
                        {"location": location, "kind": kind, "key": key, "first_seen": now, "last_seen": now}
                        for key in sorted(set(seen))
                    ]
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["location", "kind", "key"], set_={"last_seen": statement.excluded.last_seen}
                    )
                )
            if forget:
                await self._forget(conn, location, kind, forget)

    async def forget(self, location: str, kind: str, keys: Sequence[str]) -> None:
        if keys:
            async with self.db.write() as conn:
                await self._forget(conn, location, kind, keys)

    @staticmethod
    async def _forget(conn: AsyncConnection, location: str, kind: str, keys: Sequence[str]) -> None:
        await conn.execute(
            delete(storage_orphans).where(
                storage_orphans.c.location == location,
                storage_orphans.c.kind == kind,
                storage_orphans.c.key.in_(sorted(set(keys))),
            )
        )

    async def forget_unseen(self, location: str, kind: str, since: int) -> int:
        """After a complete sweep that began at `since`: forget what it did not see unknown."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(storage_orphans).where(
                    and_(
                        storage_orphans.c.location == location,
                        storage_orphans.c.kind == kind,
                        storage_orphans.c.last_seen < since,
                    )
                )
            )
            return int(result.rowcount)

    async def waiting(self) -> int:
        """How many unknown objects and uploads are recorded, waiting for their grace to pass."""
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(storage_orphans)) or 0)

    # -- schedule and totals -------------------------------------------------------------------

    async def last_sweep(self) -> int | None:
        async with self.db.read() as conn:
            value = await conn.scalar(select(gc_stats.c.value).where(gc_stats.c.name == LAST_SWEEP))
        return None if value is None else int(value)

    async def record_sweep(self, now: int, totals: dict[str, int]) -> None:
        """Note the end of a sweep, adding `totals` to the running totals in gc_stats."""
        insert_ = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        async with self.db.write() as conn:
            await conn.execute(
                insert_(gc_stats)
                .values(name=LAST_SWEEP, value=now)
                .on_conflict_do_update(index_elements=["name"], set_={"value": now})
            )
            for name, value in totals.items():
                if value:
                    await conn.execute(
                        insert_(gc_stats)
                        .values(name=name, value=value)
                        .on_conflict_do_update(index_elements=["name"], set_={"value": gc_stats.c.value + value})
                    )
