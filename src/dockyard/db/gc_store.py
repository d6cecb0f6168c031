"""Garbage collection's queries: what nothing can reach any more, removed in short batches.

Reachability, from the roots down:

- a tag history row is kept while it is live or restorable: its end (or past expiry) lies within
  its namespace's time-machine window;
- a manifest is kept while a kept tag row points at it, a parent index lists it, its subject is
  still recorded in the repository (a signature, SBOM or other referrer lives and dies with its
  subject), or it was created or referenced within the grace period;
- a blob link (a blob readable in a repository) is kept while a manifest of that repository
  references the blob, or within the grace period after the upload or mount that made it;
- a blob is kept while any link or manifest references it, or within the grace period;
- a namespace usage item is kept while the namespace references its digest.

Writers that make a new reference update the referenced row itself (its touch time, or the
link's time). A collector's DELETE names the same time condition, so on PostgreSQL a concurrent
writer either commits first, and the row's new version fails the condition, or finds the row gone
and reports the object missing; SQLite serialises writers anyway.

Deleting a blob row records one storage deletion per placement in the same transaction. The
objects go only after that commit, under the digest's exclusive lock, and only when a re-check
shows that no placement names the object again (an upload of the same digest may have reused it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.engine import Database
from dockyard.db.jobs_store import enqueue
from dockyard.db.tables import (
    accounts,
    blobs,
    gc_stats,
    jobs,
    manifest_blobs,
    manifest_children,
    manifests,
    namespace_usage,
    namespace_usage_items,
    namespaces,
    placements,
    repositories,
    repository_blobs,
    storage_deletions,
    tags,
    teams,
    uploads,
)
from dockyard.db.tags_store import DEFAULT_TIME_MACHINE_SECONDS
from dockyard.db.usage import add_usage
from dockyard.domain.audit import Actor, system_actor
from dockyard.domain.errors import NotFound

#: Job kinds.
GC_JOB = "gc"
PURGE_REPOSITORY = "purge-repository"
PURGE_NAMESPACE = "purge-namespace"

_DELETED = "~deleted~"
_WINDOW = 8
_SQLITE_WRITE_BATCH = 100
_SQLITE_PAUSE = 0.03
"""A scan step looks at up to batch * _WINDOW rows and deletes up to that many."""


@dataclass(slots=True)
class GcCounts:
    """What one pass removed (or, dry, would remove)."""

    tags: int = 0
    manifests: int = 0
    links: int = 0
    usage_items: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    storage_objects: int = 0
    storage_bytes: int = 0
    uploads: int = 0
    repositories: int = 0
    swept_objects: int = 0
    swept_bytes: int = 0

    def add(self, other: GcCounts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True, slots=True)
class StorageDeletion:
    id: int
    digest: str
    location: str
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class StaleUpload:
    id: str
    location: str
    handle: str
    parts: str
    updated_at: int


@dataclass(slots=True)
class Collected:
    """Detail of a dry pass: what would go."""

    counts: GcCounts = field(default_factory=GcCounts)
    blobs: list[tuple[str, int]] = field(default_factory=list)
    manifests: list[tuple[str, str]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)


class _Rollback(Exception):
    """Ends a dry pass's transaction without committing it."""


def _blob_key(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"blobs/{algorithm}/{hex_part[:2]}/{hex_part}"


def _unreachable_manifest(cutoff: int) -> Any:
    subject = manifests.alias("subject")
    return and_(
        manifests.c.created_at < cutoff,
        manifests.c.touched_at < cutoff,
        ~exists().where(tags.c.manifest_id == manifests.c.id),
        ~exists().where(manifest_children.c.child_id == manifests.c.id),
        or_(
            manifests.c.subject_digest.is_(None),
            ~exists().where(
                subject.c.repository_id == manifests.c.repository_id, subject.c.digest == manifests.c.subject_digest
            ),
        ),
    )


def _stale_link(cutoff: int) -> Any:
    return and_(
        repository_blobs.c.created_at < cutoff,
        ~exists()
        .select_from(manifest_blobs.join(manifests, manifests.c.id == manifest_blobs.c.manifest_id))
        .where(
            manifest_blobs.c.blob_id == repository_blobs.c.blob_id,
            manifests.c.repository_id == repository_blobs.c.repository_id,
        ),
    )


def _unreferenced_blob(cutoff: int) -> Any:
    return and_(
        blobs.c.created_at < cutoff,
        blobs.c.touched_at < cutoff,
        ~exists().where(repository_blobs.c.blob_id == blobs.c.id),
        ~exists().where(manifest_blobs.c.blob_id == blobs.c.id),
    )


def _unused_item(cutoff: int) -> Any:
    linked = (
        exists()
        .select_from(
            repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id).join(
                repositories, repositories.c.id == repository_blobs.c.repository_id
            )
        )
        .where(
            repositories.c.namespace_id == namespace_usage_items.c.namespace_id,
            blobs.c.digest == namespace_usage_items.c.digest,
        )
    )
    manifested = (
        exists()
        .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
        .where(
            repositories.c.namespace_id == namespace_usage_items.c.namespace_id,
            manifests.c.digest == namespace_usage_items.c.digest,
        )
    )
    return and_(namespace_usage_items.c.touched_at < cutoff, ~linked, ~manifested)


#: Garbage collection as the performer of what it removes.
GC_ACTOR = system_actor("gc")


def _original_name(marked: str) -> str:
    """The name a repository or namespace had before it was marked for deletion."""
    return marked.split(_DELETED, 2)[-1]


def _by_repository(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(repository, item) pairs grouped by repository (its name before any deletion mark)."""
    grouped: dict[str, list[str]] = {}
    for repository, item in items:
        grouped.setdefault(_original_name(repository), []).append(item)
    return dict(sorted(grouped.items()))


class GcStore:
    def __init__(self, db: Database, *, batch: int = 500, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.batch = batch
        self.audit = audit or AuditWriter()
        # SQLite has one writer at a time, and a writer waiting for the lock sleeps in growing
        # steps: smaller write transactions, and a pause after each, let pushes in between.
        self.write_batch = batch if db.dialect != "sqlite" else min(batch, _SQLITE_WRITE_BATCH)
        self.pause = _SQLITE_PAUSE if db.dialect == "sqlite" else 0.0

    # -- transactions --------------------------------------------------------------------------

    @asynccontextmanager
    async def _session(self, dry: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """A write transaction per batch; in a dry pass, the one transaction that will roll back."""
        if dry is not None:
            yield dry
            return
        async with self.db.write() as conn:
            yield conn
        if self.pause:
            await asyncio.sleep(self.pause)

    @asynccontextmanager
    async def dry_transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction whose changes are all discarded at the end (for `gc --dry-run`)."""
        try:
            async with self.db.write() as conn:
                yield conn
                raise _Rollback  # noqa: TRY301 - leaving the block this way discards the transaction
        except _Rollback:
            pass

    async def _record_removal(
        self, conn: AsyncConnection, kind: str, repository: str | None, metadata: dict[str, Any]
    ) -> None:
        """Record what garbage collection removed, and by which rule, in the removal's transaction."""
        name = None if repository is None else _original_name(repository)
        namespace = None if name is None else name.split("/", 1)[0]
        await self.audit(conn, kind, GC_ACTOR, namespace=namespace, repository=name, metadata=metadata)

    async def _bump(self, conn: AsyncConnection, values: dict[str, int]) -> None:
        for name, value in values.items():
            if not value:
                continue
            insert_ = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
            await conn.execute(
                insert_(gc_stats)
                .values(name=name, value=value)
                .on_conflict_do_update(index_elements=["name"], set_={"value": gc_stats.c.value + value})
            )

    @asynccontextmanager
    async def _reader(self, dry: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """A read transaction (no lock a writer waits on); in a dry pass, its one transaction."""
        if dry is not None:
            yield dry
            return
        async with self.db.read() as conn:
            yield conn

    # -- phases --------------------------------------------------------------------------------
    # Each call looks at a bounded slice of one table in a read transaction, then deletes what it
    # found in a short write transaction that repeats the condition. A scan is a sequence of calls,
    # each returning where the next one starts (None: done).

    async def purge_tag_history(self, now: int, dry: AsyncConnection | None = None) -> list[tuple[str, str]]:
        """Drop up to one batch of tag rows that ended (or expired) before their namespace's
        window, so they can no longer be restored."""
        window_ms = func.coalesce(namespaces.c.time_machine_seconds, DEFAULT_TIME_MACHINE_SECONDS) * 1000
        condition = or_(
            and_(tags.c.end_at < now, tags.c.end_at + window_ms < now),
            and_(tags.c.end_at.is_(None), tags.c.expires_at < now, tags.c.expires_at + window_ms < now),
        )
        query = (
            select(tags.c.id, repositories.c.name.label("repository"), tags.c.name, window_ms.label("window_ms"))
            .join(repositories, repositories.c.id == tags.c.repository_id)
            .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
            .where(condition)
            .limit(self.batch)
        )
        async with self._reader(dry) as conn:
            rows = (await conn.execute(query)).all()
        if rows:
            async with self._session(dry) as conn:
                # The rows cannot come back (an ended row never restarts; a restore adds a row).
                await conn.execute(delete(tags).where(tags.c.id.in_([row.id for row in rows])))
                await self._bump(conn, {"tags": len(rows)})
                windows = {row.repository: int(row.window_ms) // 1000 for row in rows}
                for repository, names in _by_repository((row.repository, row.name) for row in rows).items():
                    await self._record_removal(
                        conn,
                        "gc.tags",
                        repository,
                        {
                            "rule": "time-machine",
                            "window_seconds": windows[repository],
                            "tags": sorted(set(names)),
                            "rows": len(names),
                        },
                    )
        return [(row.repository, row.name) for row in rows]

    async def _lock(self, conn: AsyncConnection, query: Any) -> list[Any]:
        """The rows of `query` this transaction could lock at once; rows a writer holds are
        skipped (PostgreSQL), so the collector never waits on a push and never deadlocks with one."""
        if self.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list((await conn.execute(query)).all())

    def _chunks(self, rows: Any) -> list[list[Any]]:
        """Rows in groups of at most one batch: one write transaction each."""
        items = list(rows)
        size = self.write_batch
        return [items[i : i + size] for i in range(0, len(items), size)]

    async def _id_window(self, conn: AsyncConnection, column: Any, after: int) -> int | None:
        top = await conn.scalar(select(func.max(column)))
        if top is None or after >= int(top):
            return None
        return after + self.batch * _WINDOW

    async def collect_manifests(
        self, cutoff: int, after: int, dry: AsyncConnection | None = None
    ) -> tuple[list[tuple[str, str]], int | None]:
        """Delete the unreachable manifests among the next window of ids above `after`.

        Return what went (repository, digest) and where the next window starts.
        """
        condition = _unreachable_manifest(cutoff)
        async with self._reader(dry) as conn:
            upper = await self._id_window(conn, manifests.c.id, after)
            if upper is None:
                return [], None
            rows = (
                await conn.execute(
                    select(manifests.c.id, manifests.c.digest, repositories.c.name.label("repository"))
                    .join(repositories, repositories.c.id == manifests.c.repository_id)
                    .where(manifests.c.id > after, manifests.c.id <= upper, condition)
                )
            ).all()
        gone: set[int] = set()
        for chunk in self._chunks(rows):
            async with self._session(dry) as conn:
                mine = await self._lock(
                    conn, select(manifests.c.id).where(manifests.c.id.in_([row.id for row in chunk]), condition)
                )
                # The condition again, in the DELETE itself: a concurrent reference wins.
                removed = (
                    await conn.scalars(
                        delete(manifests)
                        .where(manifests.c.id.in_([row.id for row in mine]), condition)
                        .returning(manifests.c.id)
                    )
                ).all()
                gone.update(removed)
                await self._bump(conn, {"manifests": len(removed)})
                deleted = set(removed)
                found = _by_repository((row.repository, row.digest) for row in chunk if row.id in deleted)
                for repository, digests in found.items():
                    metadata = {"rule": "unreachable", "cutoff": cutoff, "digests": sorted(digests)}
                    await self._record_removal(conn, "gc.manifests", repository, metadata)
        return [(row.repository, row.digest) for row in rows if row.id in gone], upper

    async def collect_links(
        self, cutoff: int, after: tuple[int, int], dry: AsyncConnection | None = None
    ) -> tuple[int, tuple[int, int] | None]:
        """Drop the stale blob links among the next page of links after `after`."""
        condition = _stale_link(cutoff)
        position = tuple_(repository_blobs.c.repository_id, repository_blobs.c.blob_id)
        start = tuple_(literal(after[0]), literal(after[1]))
        async with self._reader(dry) as conn:
            page = (
                await conn.execute(
                    select(repository_blobs.c.repository_id, repository_blobs.c.blob_id)
                    .where(position > start)
                    .order_by(repository_blobs.c.repository_id, repository_blobs.c.blob_id)
                    .limit(self.batch * _WINDOW)
                )
            ).all()
            if not page:
                return 0, None
            end = (int(page[-1].repository_id), int(page[-1].blob_id))
            rows = (
                await conn.execute(
                    select(repository_blobs.c.repository_id, repository_blobs.c.blob_id).where(
                        position > start, position <= tuple_(literal(end[0]), literal(end[1])), condition
                    )
                )
            ).all()
        removed = 0
        for chunk in self._chunks(rows):
            async with self._session(dry) as conn:
                mine = await self._lock(
                    conn,
                    select(repository_blobs.c.repository_id, repository_blobs.c.blob_id).where(
                        position.in_([(row.repository_id, row.blob_id) for row in chunk]), condition
                    ),
                )
                result = await conn.execute(
                    delete(repository_blobs).where(
                        position.in_([(row.repository_id, row.blob_id) for row in mine]), condition
                    )
                )
                removed += result.rowcount
                await self._bump(conn, {"links": result.rowcount})
        return removed, end

    async def collect_usage_items(
        self, cutoff: int, after: tuple[int, str], dry: AsyncConnection | None = None
    ) -> tuple[int, tuple[int, str] | None]:
        """Stop counting the digests, among the next page, that their namespace no longer
        references (and lower its usage by their sizes)."""
        condition = _unused_item(cutoff)
        position = tuple_(namespace_usage_items.c.namespace_id, namespace_usage_items.c.digest)
        start = tuple_(literal(after[0]), literal(after[1]))
        async with self._reader(dry) as conn:
            page = (
                await conn.execute(
                    select(namespace_usage_items.c.namespace_id, namespace_usage_items.c.digest)
                    .where(position > start)
                    .order_by(namespace_usage_items.c.namespace_id, namespace_usage_items.c.digest)
                    .limit(self.batch * _WINDOW)
                )
            ).all()
            if not page:
                return 0, None
            end = (int(page[-1].namespace_id), str(page[-1].digest))
            rows = (
                await conn.execute(
                    select(namespace_usage_items.c.namespace_id, namespace_usage_items.c.digest).where(
                        position > start, position <= tuple_(literal(end[0]), literal(end[1])), condition
                    )
                )
            ).all()
        removed = 0
        for chunk in self._chunks(rows):
            async with self._session(dry) as conn:
                mine = await self._lock(
                    conn,
                    select(namespace_usage_items.c.namespace_id, namespace_usage_items.c.digest).where(
                        position.in_([(row.namespace_id, row.digest) for row in chunk]), condition
                    ),
                )
                deleted = (
                    await conn.execute(
                        delete(namespace_usage_items)
                        .where(position.in_([(row.namespace_id, row.digest) for row in mine]), condition)
                        .returning(namespace_usage_items.c.namespace_id, namespace_usage_items.c.size)
                    )
                ).all()
                freed: dict[int, int] = {}
                for namespace_id, size in deleted:
                    freed[int(namespace_id)] = freed.get(int(namespace_id), 0) + int(size)
                for namespace_id, size in sorted(freed.items()):
                    await add_usage(conn, self.db.dialect, namespace_id, -size)
                removed += len(deleted)
                await self._bump(conn, {"usage_items": len(deleted)})
        return removed, end

    async def collect_blobs(
        self, cutoff: int, after: int, now: int, dry: AsyncConnection | None = None
    ) -> tuple[list[tuple[str, int]], int | None]:
        """Delete the unreferenced blob rows among the next window of ids, recording their
        objects for deletion in the same transaction."""
        condition = _unreferenced_blob(cutoff)
        async with self._reader(dry) as conn:
            upper = await self._id_window(conn, blobs.c.id, after)
            if upper is None:
                return [], None
            rows = (
                await conn.execute(
                    select(blobs.c.id, blobs.c.digest, blobs.c.size).where(
                        blobs.c.id > after, blobs.c.id <= upper, condition
                    )
                )
            ).all()
        removed: list[tuple[str, int]] = []
        for chunk in self._chunks(rows):
            removed.extend(await self._delete_blobs(chunk, condition, now, cutoff, dry))
        return removed, upper

    async def _delete_blobs(
        self, rows: list[Any], condition: Any, now: int, cutoff: int, dry: AsyncConnection | None
    ) -> list[tuple[str, int]]:
        async with self._session(dry) as conn:
            candidates = select(blobs.c.id).where(blobs.c.id.in_([r.id for r in rows]), condition)
            ids = [row.id for row in await self._lock(conn, candidates)]
            held = (
                await conn.execute(
                    select(placements.c.blob_id, placements.c.location, placements.c.key).where(
                        placements.c.blob_id.in_(ids)
                    )
                )
            ).all()
            gone = set(
                (await conn.scalars(delete(blobs).where(blobs.c.id.in_(ids), condition).returning(blobs.c.id))).all()
            )
            by_id = {row.id: row for row in rows}
            records = [
                {
                    "digest": by_id[p.blob_id].digest,
                    "location": p.location,
                    "key": p.key or _blob_key(by_id[p.blob_id].digest),
                    "size": int(by_id[p.blob_id].size),
                    "created_at": now,
                }
                for p in held
                if p.blob_id in gone
            ]
            if records:
                await conn.execute(insert(storage_deletions), records)
            removed = [(by_id[i].digest, int(by_id[i].size)) for i in sorted(gone)]
            await self._bump(conn, {"blobs": len(removed), "blob_bytes": sum(size for _, size in removed)})
            if removed:
                await self.audit(
                    conn,
                    "gc.blobs",
                    GC_ACTOR,
                    metadata={
                        "rule": "unreferenced",
                        "cutoff": cutoff,
                        "digests": sorted(digest for digest, _ in removed),
                        "bytes": sum(size for _, size in removed),
                    },
                )
        return removed

    # -- storage deletions ---------------------------------------------------------------------

    async def pending_deletions(self, after: int, limit: int) -> list[StorageDeletion]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(storage_deletions)
                .where(storage_deletions.c.id > after)
                .order_by(storage_deletions.c.id)
                .limit(limit)
            )
            return [StorageDeletion(int(r.id), r.digest, r.location, r.key, int(r.size)) for r in rows]

    async def object_referenced(self, deletion: StorageDeletion) -> bool:
        """Whether a placement names the object again (an upload reused it since)."""
        derived = deletion.key == _blob_key(deletion.digest)
        query = (
            select(placements.c.blob_id)
            .join(blobs, blobs.c.id == placements.c.blob_id)
            .where(
                placements.c.location == deletion.location,
                or_(
                    placements.c.key == deletion.key,
                    and_(placements.c.key.is_(None), blobs.c.digest == deletion.digest, literal(derived)),
                ),
            )
            .limit(1)
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def finish_deletion(self, deletion: StorageDeletion, *, deleted: bool) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(delete(storage_deletions).where(storage_deletions.c.id == deletion.id))
            if deleted and result.rowcount:
                await self._bump(conn, {"storage_objects": 1, "storage_bytes": deletion.size})

    # -- uploads -------------------------------------------------------------------------------

    async def stale_uploads(self, before: int, limit: int) -> list[StaleUpload]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(uploads.c.id, uploads.c.location, uploads.c.handle, uploads.c.parts, uploads.c.updated_at)
                .where(uploads.c.updated_at < before)
                .order_by(uploads.c.updated_at)
                .limit(limit)
            )
            return [StaleUpload(r.id, r.location, r.handle, r.parts, int(r.updated_at)) for r in rows]

    async def drop_upload(self, upload: StaleUpload) -> bool:
        """Remove a session that is still idle since it was found; False when it moved meanwhile."""
        async with self.db.write() as conn:
            repository = await conn.scalar(
                select(repositories.c.name)
                .join(uploads, uploads.c.repository_id == repositories.c.id)
                .where(uploads.c.id == upload.id)
            )
            result = await conn.execute(
                delete(uploads).where(uploads.c.id == upload.id, uploads.c.updated_at == upload.updated_at)
            )
            if result.rowcount:
                await self._bump(conn, {"uploads": 1})
                metadata = {"rule": "idle", "upload": upload.id, "idle_since": upload.updated_at}
                await self._record_removal(conn, "gc.upload", repository, metadata)
            return bool(result.rowcount)

    async def known_upload_ids(self, ids: list[str]) -> set[str]:
        async with self.db.read() as conn:
            return set((await conn.scalars(select(uploads.c.id).where(uploads.c.id.in_(ids)))).all())

    # -- repository and namespace deletion -----------------------------------------------------

    async def mark_repository(self, name: str, *, actor: Actor) -> None:
        """Hide a repository at once (renamed out of the way, so the name is free again) and
        queue its purge, in one transaction."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(repositories.c.id).where(repositories.c.name == name, repositories.c.state == "normal")
                )
            ).first()
            if row is None:
                raise NotFound(f"no repository {name}")
            await self._mark(conn, int(row.id), name)
            await self.audit(conn, "repository.delete", actor, namespace=name.split("/", 1)[0], repository=name)

    async def _mark(self, conn: AsyncConnection, repo_id: int, name: str) -> None:
        await conn.execute(
            update(repositories)
            .where(repositories.c.id == repo_id)
            .values(state="deleting", name=f"{_DELETED}{repo_id}{_DELETED}{name}"[:255])
        )
        await enqueue(conn, self.db.dialect, PURGE_REPOSITORY, {"repository_id": repo_id})

    async def mark_namespace(self, name: str, *, actor: Actor) -> int:
        """Hide a namespace and all its repositories at once, drop its accounts and teams, and
        queue the purge. Return how many repositories it held."""
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(namespaces.c.id).where(namespaces.c.name == name, namespaces.c.state == "normal")
                )
            ).first()
            if row is None:
                raise NotFound(f"no namespace {name}")
            namespace_id = int(row.id)
            repos = (
                await conn.execute(
                    select(repositories.c.id, repositories.c.name).where(
                        repositories.c.namespace_id == namespace_id, repositories.c.state == "normal"
                    )
                )
            ).all()
            for repo in repos:
                await self._mark(conn, int(repo.id), repo.name)
            await conn.execute(delete(teams).where(teams.c.namespace_id == namespace_id))
            await conn.execute(delete(accounts).where(accounts.c.namespace_id == namespace_id))
            await conn.execute(
                update(namespaces)
                .where(namespaces.c.id == namespace_id)
                .values(state="deleting", name=f"{_DELETED}{namespace_id}{_DELETED}{name}"[:255])
            )
            await enqueue(conn, self.db.dialect, PURGE_NAMESPACE, {"namespace_id": namespace_id})
            await self.audit(
                conn,
                "namespace.delete",
                actor,
                namespace=name,
                metadata={"repositories": sorted(repo.name for repo in repos)},
            )
            return len(repos)

    async def purge_repository_batch(self, repo_id: int) -> tuple[int, list[StaleUpload]]:
        """Remove one batch of a marked repository's rows; return (rows removed, its uploads).

        The repository row goes last (with its uploads, whose storage the caller releases).
        Blobs are left to the collector, which finds them unreferenced.
        """
        async with self.db.write() as conn:
            marked = (
                await conn.execute(
                    select(repositories.c.state, repositories.c.name).where(repositories.c.id == repo_id)
                )
            ).first()
            if marked is None or marked.state != "deleting":
                return 0, []
            tag_ids = list(
                (await conn.scalars(select(tags.c.id).where(tags.c.repository_id == repo_id).limit(self.batch))).all()
            )
            if tag_ids:
                await conn.execute(delete(tags).where(tags.c.id.in_(tag_ids)))
                return len(tag_ids), []
            manifest_ids = list(
                (
                    await conn.scalars(
                        select(manifests.c.id).where(manifests.c.repository_id == repo_id).limit(self.batch)
                    )
                ).all()
            )
            if manifest_ids:
                await conn.execute(delete(manifests).where(manifests.c.id.in_(manifest_ids)))
                await self._bump(conn, {"manifests": len(manifest_ids)})
                return len(manifest_ids), []
            links = (
                await conn.execute(
                    select(repository_blobs.c.blob_id)
                    .where(repository_blobs.c.repository_id == repo_id)
                    .limit(self.batch)
                )
            ).all()
            if links:
                await conn.execute(
                    delete(repository_blobs).where(
                        repository_blobs.c.repository_id == repo_id,
                        repository_blobs.c.blob_id.in_([row.blob_id for row in links]),
                    )
                )
                return len(links), []
            pending = [
                StaleUpload(r.id, r.location, r.handle, r.parts, int(r.updated_at))
                for r in await conn.execute(
                    select(
                        uploads.c.id, uploads.c.location, uploads.c.handle, uploads.c.parts, uploads.c.updated_at
                    ).where(uploads.c.repository_id == repo_id)
                )
            ]
            await conn.execute(delete(uploads).where(uploads.c.repository_id == repo_id))
            await conn.execute(delete(repositories).where(repositories.c.id == repo_id))
            await self._bump(conn, {"repositories": 1})
            name = _original_name(marked.name)
            await self.audit(
                conn,
                "repository.purge",
                GC_ACTOR,
                namespace=name.split("/", 1)[0],
                repository=name,
                metadata={"reason": "repository deleted", "repository_id": repo_id},
            )
            return 0, pending

    async def purge_namespace(self, namespace_id: int) -> bool:
        """Remove a marked namespace once its repositories are gone; False while some remain."""
        async with self.db.write() as conn:
            marked = (
                await conn.execute(select(namespaces.c.state, namespaces.c.name).where(namespaces.c.id == namespace_id))
            ).first()
            if marked is None or marked.state != "deleting":
                return True
            remaining = await conn.scalar(
                select(func.count()).select_from(repositories).where(repositories.c.namespace_id == namespace_id)
            )
            if remaining:
                return False
            await conn.execute(delete(namespace_usage).where(namespace_usage.c.namespace_id == namespace_id))
            await conn.execute(
                delete(namespace_usage_items).where(namespace_usage_items.c.namespace_id == namespace_id)
            )
            await conn.execute(delete(namespaces).where(namespaces.c.id == namespace_id))
            await self.audit(
                conn,
                "namespace.purge",
                GC_ACTOR,
                namespace=_original_name(marked.name),
                metadata={"reason": "namespace deleted", "namespace_id": namespace_id},
            )
            return True

    async def marked(self) -> tuple[list[int], list[int]]:
        """Ids of the repositories and namespaces marked for deletion."""
        async with self.db.read() as conn:
            repos = (await conn.scalars(select(repositories.c.id).where(repositories.c.state == "deleting"))).all()
            spaces = (await conn.scalars(select(namespaces.c.id).where(namespaces.c.state == "deleting"))).all()
        return [int(i) for i in repos], [int(i) for i in spaces]

    # -- schedule and statistics ---------------------------------------------------------------

    async def schedule(self, delay_ms: int, now: int, *, unless_running: bool) -> None:
        """Queue the next collection pass, due after `delay_ms`, unless one is queued already
        (or, with `unless_running`, running)."""
        states = ("pending", "running") if unless_running else ("pending",)
        async with self.db.write() as conn:
            queued = await conn.scalar(
                select(func.count()).select_from(jobs).where(jobs.c.kind == GC_JOB, jobs.c.state.in_(states))
            )
            if not queued:
                await enqueue(conn, self.db.dialect, GC_JOB, {}, run_after=now + delay_ms)

    async def stats(self) -> dict[str, int]:
        async with self.db.read() as conn:
            totals = {row.name: int(row.value) for row in await conn.execute(select(gc_stats))}
            pending = (
                await conn.execute(select(func.count(), func.coalesce(func.sum(storage_deletions.c.size), 0)))
            ).first()
            marked = await conn.scalar(
                select(func.count()).select_from(repositories).where(repositories.c.state == "deleting")
            )
        assert pending is not None
        totals["pending_storage_deletions"] = int(pending[0])
        totals["pending_storage_bytes"] = int(pending[1])
        totals["repositories_marked"] = int(marked or 0)
        return totals

    async def record_pass(self, counts: GcCounts, now: int) -> None:
        async with self.db.write() as conn:
            await self._bump(conn, {"passes": 1})
            insert_ = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
            await conn.execute(
                insert_(gc_stats)
                .values(name="last_pass_at", value=now)
                .on_conflict_do_update(index_elements=["name"], set_={"value": now})
            )
            if any(counts.as_dict().values()):
                await self.audit(conn, "gc.pass", GC_ACTOR, metadata=counts.as_dict(), now=now)
