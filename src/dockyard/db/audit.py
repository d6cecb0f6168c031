"""The audit log: who did what, when and from where, one row per event (docs/audit.md).

`AuditWriter` writes in the caller's transaction, so an event is logged exactly when the change
it describes commits (a disabled writer, `audit.enabled: false`, writes nothing). Pulls are the
exception: they are buffered by the service and written many at a time (`AuditStore.insert_values`:
a few multi-row INSERTs in a transaction of their own; on SQLite through a connection and a thread
of its own, off the event loop and around SQLAlchemy, since pulls are the log's one hot path).
`AuditStore` reads entries back (newest first for queries, oldest first for exports and
archives), counts them per day and kind, and keeps the table of days moved to archives.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.jobs_store import enqueue
from dockyard.db.tables import audit_archives, audit_log, jobs
from dockyard.domain.audit import DAY_MS, Actor, AuditEntry, AuditFilter, kind_matches

__all__ = [
    "COLUMNS",
    "ActorColumns",
    "ArchiveRecord",
    "AuditEntry",
    "AuditStore",
    "AuditWriter",
    "PendingEntry",
    "actor_columns",
    "record",
]


#: The columns a batch of entries is written with, in this order: first those that depend on who
#: acted and from where, then on what, then when (a pull's row is three cached pieces and a time).
COLUMNS = (
    "kind",
    "performer",
    "performer_kind",
    "performer_id",
    "via_app",
    "ip",
    "user_agent",
    "namespace",
    "repository",
    "metadata",
    "created_at",
)


#: The row counts a batch's INSERTs have: a batch of any size is a few statements of these sizes,
#: each compiled once and reused (SQLite compiles a new 1 000-row INSERT in about the time it takes
#: to run it, so one statement per batch size would double the cost of a batch).
_STATEMENT_ROWS = (512, 128, 32, 8, 1)


_COPY = f"COPY audit_log ({', '.join(COLUMNS)}) FROM STDIN"


def _statement_rows(rows: int) -> list[int]:
    """`rows` as a sum of `_STATEMENT_ROWS`, largest first."""
    sizes = []
    for size in _STATEMENT_ROWS:
        count, rows = divmod(rows, size)
        sizes += [size] * count
    return sizes


@functools.lru_cache(maxsize=16)
def _multi_row_insert(rows: int, placeholder: str) -> str:
    """`INSERT INTO audit_log (…) VALUES (…), (…), …` for `rows` rows, in the driver's own SQL.

    Built by hand: SQLAlchemy takes ~75 ms to compile a 500-row VALUES list (on the event loop
    the pulls are served from); this is a string join, cached per row count.
    """
    row = "(" + ", ".join([placeholder] * len(COLUMNS)) + ")"
    # Only constants and placeholders go into the text; every value is a bound parameter.
    return f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES " + ", ".join([row] * rows)  # noqa: S608


#: The values of the first columns, `kind` to `user_agent`: what an actor and an entry's kind give.
ActorColumns = tuple[str, str | None, str | None, int | None, str | None, str | None, str | None]


def actor_columns(kind: str, actor: Actor) -> ActorColumns:
    """`kind` and who acted, from where: the first seven of `COLUMNS`, cut to the columns' sizes."""
    return (
        kind,
        actor.performer[:300] if actor.performer else actor.performer,
        actor.performer_kind,
        actor.performer_id,
        actor.via_app,
        actor.ip[:64] if actor.ip else actor.ip,
        actor.user_agent[:512] if actor.user_agent else actor.user_agent,
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
        if not kind_matches(wanted.kind, "pull"):
            # Changes nothing but lets the kind index, which leaves pulls out, serve the query: the
            # term must be the index's own, word for word (a literal, not a parameter).
            query = query.where(c.kind != literal_column("'pull'"))
    if wanted.since is not None:
        query = query.where(c.created_at >= wanted.since)
    if wanted.until is not None:
        query = query.where(c.created_at < wanted.until)
    return query


class _SqliteAppender:
    """Appends batches of rows to the audit log of a SQLite file through a connection of its own,
    used only on a thread of its own: the event loop never waits on the database's write lock
    (pulls go on being answered), and each batch costs one hop to the thread and a bare
    BEGIN / INSERT / COMMIT (through SQLAlchemy's async adapter it is five hops and a few
    milliseconds of the event loop's time for the same INSERT)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-appender")

    def _append(self, values: list[Any], rows: int) -> None:
        conn = self._conn
        if conn is None:
            # The busy timeout and the synchronous level of the serving engine (db/engine.py);
            # the file is in WAL mode already.
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = 0
            for size in _statement_rows(rows):
                end = start + size * len(COLUMNS)
                conn.execute(_multi_row_insert(size, "?"), values[start:end])
                start = end
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def write(self, values: list[Any], rows: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._append, values, rows)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)


def _sqlite_file(db: Database) -> str | None:
    """The file of a SQLite database (None for another database, or one in memory)."""
    path = db.engine.url.database if db.dialect == "sqlite" else None
    return path if path and path != ":memory:" and not path.startswith("file:") else None


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite_path = _sqlite_file(db)
        self._appender: _SqliteAppender | None = None

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
        """Write entries in a transaction of their own."""
        values: list[Any] = []
        for p in pending:
            row = _values(p.kind, p.actor, p.namespace, p.repository, p.metadata, p.created_at)
            values.extend(row[column] for column in COLUMNS)
        await self.insert_values(values, len(pending))

    async def insert_values(self, values: list[Any], rows: int) -> None:
        """Write `rows` rows given as one flat list of values (`COLUMNS`, row after row) with a
        few multi-row INSERTs in a transaction of their own."""
        if not rows:
            return
        if self._appender is None and self._sqlite_path is not None:
            self._appender = _SqliteAppender(self._sqlite_path)
        if self._appender is not None:
            await self._appender.write(values, rows)
            return
        if self.db.dialect == "postgresql":
            await self._copy(values, rows)
            return
        placeholder = "?" if self.db.engine.dialect.paramstyle == "qmark" else "%s"
        async with self.db.write() as conn:
            start = 0
            for size in _statement_rows(rows):
                end = start + size * len(COLUMNS)
                await conn.exec_driver_sql(_multi_row_insert(size, placeholder), tuple(values[start:end]))
                start = end

    async def _copy(self, values: list[Any], rows: int) -> None:
        """PostgreSQL: the rows through COPY, in a transaction of their own.

        A multi-row INSERT costs the event loop ~60 µs per row there: psycopg caches the parsing of
        short statements only, and re-parses the placeholders of one of thousands on every batch.
        COPY adapts the values in psycopg's C code and sends them in one stream (≈ 2 µs per row).
        """
        width = len(COLUMNS)
        async with self.db.write() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            async with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
                for start in range(0, rows * width, width):
                    await copy.write_row(values[start : start + width])

    async def close(self) -> None:
        """Close the SQLite appender's connection and thread, if `insert_values` opened them."""
        if self._appender is not None:
            appender, self._appender = self._appender, None
            await appender.close()

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
