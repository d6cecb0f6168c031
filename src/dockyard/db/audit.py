"""The audit log: who did what, when and from where, one row per event (docs/audit.md).

`AuditWriter` writes in the caller's transaction, so an event is logged exactly when the change
it describes commits (a disabled writer, `audit.enabled: false`, writes nothing). Pulls are the
exception: they are buffered by the service and written many at a time (`AuditStore.insert_many`).
`AuditStore` reads entries back (newest first for queries, oldest first for exports and
archives), counts them per day and kind, and keeps the table of days moved to archives.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.jobs_store import enqueue
from dockyard.db.tables import audit_archives, audit_log, jobs
from dockyard.domain.audit import DAY_MS, Actor, AuditEntry, AuditFilter

__all__ = ["ArchiveRecord", "AuditEntry", "AuditRow", "AuditStore", "AuditWriter", "PendingEntry", "record", "row_of"]


_COLUMNS = (
    "kind",
    "performer",
    "performer_kind",
    "performer_id",
    "via_app",
    "namespace",
    "repository",
    "ip",
    "user_agent",
    "created_at",
    "metadata",
)


@functools.lru_cache(maxsize=64)
def _multi_row_insert(rows: int, placeholder: str) -> str:
    """`INSERT INTO audit_log (…) VALUES (…), (…), …` for `rows` rows, in the driver's own SQL.

    Built by hand: SQLAlchemy takes ~75 ms to compile a 500-row VALUES list (on the event loop
    the pulls are served from); this is a string join, cached per row count.
    """
    row = "(" + ", ".join([placeholder] * len(_COLUMNS)) + ")"
    # Only constants and placeholders go into the text; every value is a bound parameter.
    return f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES " + ", ".join([row] * rows)  # noqa: S608


#: One entry's column values, in `_COLUMNS` order (what a buffer holds until its batch is written).
AuditRow = tuple[
    str, str | None, str | None, int | None, str | None, str | None, str | None, str | None, str | None, int, str
]


def row_of(
    kind: str, actor: Actor, namespace: str | None, repository: str | None, metadata_json: str, created_at: int
) -> AuditRow:
    """The row of an entry whose metadata is serialised already (the pull path: no dict, no dumps)."""
    return (
        kind,
        actor.performer[:300] if actor.performer else actor.performer,
        actor.performer_kind,
        actor.performer_id,
        actor.via_app,
        namespace,
        repository,
        actor.ip[:64] if actor.ip else actor.ip,
        actor.user_agent[:512] if actor.user_agent else actor.user_agent,
        created_at,
        metadata_json,
    )


def _json(metadata: dict[str, Any] | None) -> str:
    return json.dumps(metadata or {}, sort_keys=True, separators=(",", ":"), default=str)


def _values(
    kind: str,
    actor: Actor,
    namespace: str | None,
    repository: str | None,
    metadata: dict[str, Any] | None,
    now: int,
) -> dict[str, Any]:
    if actor.app_token_id is not None:
        metadata = {**(metadata or {}), "app_token_id": actor.app_token_id}
    return {
        "kind": kind,
        "performer": actor.performer[:300] if actor.performer else actor.performer,
        "performer_kind": actor.performer_kind,
        "performer_id": actor.performer_id,
        "via_app": actor.via_app,
        "namespace": namespace,
        "repository": repository,
        "ip": actor.ip[:64] if actor.ip else actor.ip,
        "user_agent": actor.user_agent[:512] if actor.user_agent else actor.user_agent,
        "created_at": now,
        "metadata": _json(metadata),
    }


async def record(
    conn: AsyncConnection,
    kind: str,
    *,
    performer: str | None = None,
    performer_kind: str | None = None,
    namespace: str | None = None,
    repository: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    metadata: dict[str, Any] | None = None,
    now: int | None = None,
) -> None:
    """Write one audit entry in `conn`'s transaction, unconditionally (tests and migrations)."""
    actor = Actor(performer, performer_kind or "", ip, user_agent)
    values = _values(kind, actor, namespace, repository, metadata, now_ms() if now is None else now)
    values["performer_kind"] = performer_kind
    await conn.execute(insert(audit_log).values(values))


class AuditWriter:
    """Records events in the transaction of the change they describe."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled

    async def __call__(
        self,
        conn: AsyncConnection,
        kind: str,
        actor: Actor,
        *,
        namespace: str | None = None,
        repository: str | None = None,
        metadata: dict[str, Any] | None = None,
        now: int | None = None,
    ) -> None:
        if self.enabled:
            values = _values(kind, actor, namespace, repository, metadata, now_ms() if now is None else now)
            await conn.execute(insert(audit_log).values(values))


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry waiting in a buffer (a pull) to be written with others."""

    kind: str
    actor: Actor
    namespace: str | None
    repository: str | None
    metadata: dict[str, Any]
    created_at: int


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One UTC day of the log moved to storage."""

    day: int
    """Start of the day, ms since the epoch."""
    location: str
    key: str
    entries: int
    max_id: int
    """Rows of the day with an id up to this one are in the archive."""
    bytes: int
    sha256: str
    """Of the uncompressed JSON Lines."""
    counts: dict[str, int]
    """Entries per kind."""
    created_at: int


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row.id),
        kind=row.kind,
        performer=row.performer,
        performer_kind=row.performer_kind,
        performer_id=None if row.performer_id is None else int(row.performer_id),
        via_app=row.via_app,
        namespace=row.namespace,
        repository=row.repository,
        ip=row.ip,
        user_agent=row.user_agent,
        created_at=int(row.created_at),
        metadata=json.loads(row.metadata),
    )


def _archive(row: Any) -> ArchiveRecord:
    return ArchiveRecord(
        day=int(row.day),
        location=row.location,
        key=row.key,
        entries=int(row.entries),
        max_id=int(row.max_id),
        bytes=int(row.bytes),
        sha256=row.sha256,
        counts={str(k): int(v) for k, v in json.loads(row.counts).items()},
        created_at=int(row.created_at),
    )


def _filtered(query: Select[Any], wanted: AuditFilter) -> Select[Any]:
    c = audit_log.c
    if wanted.namespace is not None:
        query = query.where(c.namespace == wanted.namespace)
    if wanted.repository is not None:
        query = query.where(c.repository == wanted.repository)
    if wanted.performer is not None:
        query = query.where(c.performer == wanted.performer)
    if wanted.kind is not None:
        if wanted.kind.endswith("*"):
            query = query.where(c.kind.startswith(wanted.kind[:-1], autoescape=True))
        else:
            query = query.where(or_(c.kind == wanted.kind, c.kind.startswith(wanted.kind + ".", autoescape=True)))
    if wanted.since is not None:
        query = query.where(c.created_at >= wanted.since)
    if wanted.until is not None:
        query = query.where(c.created_at < wanted.until)
    return query


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading -------------------------------------------------------------------------------

    async def newest_first(self, wanted: AuditFilter, before: tuple[int, int] | None, limit: int) -> list[AuditEntry]:
        """Up to `limit` entries matching `wanted`, newest first, older than `before` (created_at, id)."""
        c = audit_log.c
        query = _filtered(select(audit_log), wanted)
        if before is not None:
            query = query.where(or_(c.created_at < before[0], and_(c.created_at == before[0], c.id < before[1])))
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_entry(row) for row in await conn.execute(query)]

    async def oldest_first(self, wanted: AuditFilter, after: tuple[int, int] | None, limit: int) -> list[AuditEntry]:
        """Up to `limit` entries matching `wanted`, oldest first, newer than `after` (created_at, id)."""
        c = audit_log.c
        query = _filtered(select(audit_log), wanted)
        if after is not None:
            query = query.where(or_(c.created_at > after[0], and_(c.created_at == after[0], c.id > after[1])))
        query = query.order_by(c.created_at, c.id).limit(limit)
        async with self.db.read() as conn:
            return [_entry(row) for row in await conn.execute(query)]

    async def entries(
        self,
        *,
        namespace: str | None = None,
        repository: str | None = None,
        kind: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every filter given, newest first."""
        wanted = AuditFilter(namespace=namespace, repository=repository, kind=kind, since=since_ms)
        return await self.newest_first(wanted, None, limit)

    async def counts(self, wanted: AuditFilter) -> list[tuple[int, str, int]]:
        """(day start, kind, entries) for the rows matching `wanted`, by day then kind."""
        c = audit_log.c
        day = (c.created_at - c.created_at % DAY_MS).label("day")
        query = _filtered(select(day, c.kind, func.count()), wanted).group_by(day, c.kind).order_by(day, c.kind)
        async with self.db.read() as conn:
            return [(int(row[0]), row[1], int(row[2])) for row in await conn.execute(query)]

    async def oldest_time(self, before: int) -> int | None:
        """created_at of the oldest row older than `before`, None when there is none."""
        async with self.db.read() as conn:
            value = await conn.scalar(select(func.min(audit_log.c.created_at)).where(audit_log.c.created_at < before))
        return None if value is None else int(value)

    # -- writing -------------------------------------------------------------------------------

    async def insert_many(self, pending: Sequence[PendingEntry]) -> None:
        """Write entries with one multi-row INSERT in its own transaction."""
        rows = []
        for p in pending:
            values = _values(p.kind, p.actor, p.namespace, p.repository, p.metadata, p.created_at)
            rows.append(tuple(values[column] for column in _COLUMNS))
        await self.insert_rows(rows)

    async def insert_rows(self, rows: Sequence[AuditRow]) -> None:
        """Write buffered rows with one multi-row INSERT in its own transaction."""
        if not rows:
            return
        params = tuple(value for row in rows for value in row)
        placeholder = "?" if self.db.engine.dialect.paramstyle == "qmark" else "%s"
        async with self.db.write() as conn:
            await conn.exec_driver_sql(_multi_row_insert(len(rows), placeholder), params)

    # -- archives ------------------------------------------------------------------------------

    async def archives(self, since_day: int | None = None, until: int | None = None) -> list[ArchiveRecord]:
        """Archived days starting at or after `since_day` and before `until`, oldest first."""
        query = select(audit_archives)
        if since_day is not None:
            query = query.where(audit_archives.c.day >= since_day)
        if until is not None:
            query = query.where(audit_archives.c.day < until)
        async with self.db.read() as conn:
            return [_archive(row) for row in await conn.execute(query.order_by(audit_archives.c.day))]

    async def archive(self, day: int) -> ArchiveRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(audit_archives).where(audit_archives.c.day == day))).first()
        return None if row is None else _archive(row)

    async def save_archive(self, archived: ArchiveRecord) -> None:
        values = {
            "location": archived.location,
            "key": archived.key,
            "entries": archived.entries,
            "max_id": archived.max_id,
            "bytes": archived.bytes,
            "sha256": archived.sha256,
            "counts": _json(dict(archived.counts)),
            "created_at": archived.created_at,
        }
        async with self.db.write() as conn:
            changed = await conn.execute(
                update(audit_archives).where(audit_archives.c.day == archived.day).values(**values)
            )
            if not changed.rowcount:
                insert_ = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
                await conn.execute(
                    insert_(audit_archives)
                    .values(day=archived.day, **values)
                    .on_conflict_do_update(index_elements=["day"], set_=values)
                )

    async def delete_archived(self, archived: ArchiveRecord, batch: int) -> int:
        """Delete one batch of the day's rows the archive holds; return how many went."""
        c = audit_log.c
        async with self.db.write() as conn:
            ids = list(
                (
                    await conn.scalars(
                        select(c.id)
                        .where(
                            c.created_at >= archived.day,
                            c.created_at < archived.day + DAY_MS,
                            c.id <= archived.max_id,
                        )
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                await conn.execute(delete(audit_log).where(c.id.in_(ids)))
            return len(ids)

    # -- the retention job ---------------------------------------------------------------------

    async def schedule(self, kind: str, run_after: int, *, unless_running: bool) -> None:
        """Queue a job of `kind` unless one is pending (or, with `unless_running`, running)."""
        states = ("pending", "running") if unless_running else ("pending",)
        async with self.db.write() as conn:
            queued = await conn.scalar(
                select(func.count()).select_from(jobs).where(jobs.c.kind == kind, jobs.c.state.in_(states))
            )
            if not queued:
                await enqueue(conn, self.db.dialect, kind, {}, run_after=run_after)
