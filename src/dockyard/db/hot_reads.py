"""The reads on every request — manifest by tag or digest, blob in repository, the caller's access —
on the bare database driver.

These run once or more per pull, so they skip SQLAlchemy entirely: plain SQL on the driver,
prepared once. Measured on the embedded default, a tag lookup costs ~7 µs through `sqlite3`,
~110-270 µs through SQLAlchemy Core and ~3 ms through SQLAlchemy's async SQLite adapter
(docs/performance.md).

- SQLite: one read-only connection per worker process, queried directly on the event loop. In
  WAL mode readers never wait for writers, and a page-cached lookup takes microseconds, less than a
  hop to a thread would.
- PostgreSQL: a psycopg async pool with server-side prepared statements.

Placeholders are written as sqlite's `?`; the PostgreSQL reader swaps them for `%s`.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from typing import Any

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from dockyard.db.accounts_store import AccessFacts, strongest_team_role
from dockyard.domain.access import Role
from dockyard.domain.models import ManifestRecord

_BY_TAG = """
SELECT m.digest, m.media_type, m.size, m.content, m.subject_digest, m.artifact_type
FROM repositories r
JOIN tags t ON t.repository_id = r.id
JOIN manifests m ON m.id = t.manifest_id
WHERE r.name = ? AND r.state = 'normal' AND t.name = ? AND t.end_at IS NULL AND m.deleted_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > ?)
"""

_BY_DIGEST = """
SELECT m.digest, m.media_type, m.size, m.content, m.subject_digest, m.artifact_type
FROM repositories r
JOIN manifests m ON m.repository_id = r.id
WHERE r.name = ? AND r.state = 'normal' AND m.digest = ? AND m.deleted_at IS NULL
"""

_BLOB_SIZE = """
SELECT b.size
FROM repositories r
JOIN repository_blobs rb ON rb.repository_id = r.id
JOIN blobs b ON b.id = rb.blob_id
WHERE r.name = ? AND r.state = 'normal' AND b.digest = ?
"""

_ACCOUNT_STATE = "SELECT enabled, credential_epoch FROM accounts WHERE id = ?"
_APP_TOKEN_STATE = "SELECT revoked_at, expires_at FROM app_tokens WHERE id = ?"  # noqa: S105 - SQL
_FAILURES = "SELECT MAX(count) FROM login_failures WHERE key IN (?, ?) AND window_start > ?"
_NAMESPACE = "SELECT id, kind FROM namespaces WHERE name = ?"
_REPOSITORY = "SELECT id, visibility FROM repositories WHERE name = ? AND state = 'normal'"
_ACCOUNT_NAMESPACE = "SELECT namespace_id FROM accounts WHERE id = ? AND kind = 'user'"
_TEAM_ROLES = """
SELECT t.role FROM teams t JOIN team_members tm ON tm.team_id = t.id
WHERE t.namespace_id = ? AND tm.account_id = ?
"""
_GRANTS = """
SELECT p.role FROM repository_permissions p
WHERE p.repository_id = ?
  AND (p.account_id = ? OR p.team_id IN (SELECT team_id FROM team_members WHERE account_id = ?))
"""


def _record(row: Any) -> ManifestRecord | None:
    if row is None:
        return None
    digest, media_type, size, content, subject, artifact_type = row
    return ManifestRecord(digest, media_type, int(size), bytes(content), subject, artifact_type)


class HotReads(abc.ABC):
    """The hot queries, written once over a driver's `_one`/`_all`."""

    @abc.abstractmethod
    async def _one(self, query: str, params: tuple[Any, ...]) -> Any: ...

    @abc.abstractmethod
    async def _all(self, query: str, params: tuple[Any, ...]) -> list[Any]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def manifest_by_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        return _record(await self._one(_BY_TAG, (repository, tag, time.time_ns() // 1_000_000)))

    async def manifest_by_digest(self, repository: str, digest: str) -> ManifestRecord | None:
        return _record(await self._one(_BY_DIGEST, (repository, digest)))

    async def blob_size(self, repository: str, digest: str) -> int | None:
        row = await self._one(_BLOB_SIZE, (repository, digest))
        return None if row is None else int(row[0])

    async def credential_state(self, account_id: int, app_token_id: int | None) -> tuple[bool, int] | None:
        """(enabled, epoch) of a live account; None when it, or its app token, no longer holds."""
        account = await self._one(_ACCOUNT_STATE, (account_id,))
        if account is None:
            return None
        if app_token_id is not None:
            token = await self._one(_APP_TOKEN_STATE, (app_token_id,))
            if token is None:
                return None
            revoked_at, expires_at = token
            if revoked_at is not None or (expires_at is not None and expires_at <= time.time() * 1000):
                return None
        return bool(account[0]), int(account[1])

    async def failures(self, keys: list[str], window_ms: int) -> int:
        """The highest failed-login count among two keys (user, IP) within the window."""
        user, ip = keys
        row = await self._one(_FAILURES, (user, ip, time.time_ns() // 1_000_000 - window_ms))
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def access_facts(self, account_id: int | None, repository: str, namespace: str) -> AccessFacts:
        """The same facts as AccountsStore.access_facts, on the bare driver."""
        ns = await self._one(_NAMESPACE, (namespace,))
        repo = await self._one(_REPOSITORY, (repository,))
        owns = False
        team_role = None
        granted: Role | None = None
        if account_id is not None and ns is not None:
            own = await self._one(_ACCOUNT_NAMESPACE, (account_id,))
            owns = own is not None and own[0] == ns[0]
            if ns[1] == "org":
                team_role = strongest_team_role(row[0] for row in await self._all(_TEAM_ROLES, (ns[0], account_id)))
        if account_id is not None and repo is not None:
            for (value,) in await self._all(_GRANTS, (repo[0], account_id, account_id)):
                role = Role.parse(value)
                granted = role if granted is None else max(granted, role)
        return AccessFacts(
            repository_exists=repo is not None,
            public=repo is not None and repo[1] == "public",
            namespace_exists=ns is not None,
            owns_namespace=owns,
            org_team_role=team_role,
            granted=granted,
        )


class SqliteHotReads(HotReads):
    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, isolation_level=None, cached_statements=64)
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
        return self._conn

    async def _one(self, query: str, params: tuple[Any, ...]) -> Any:
        # fetchall, never fetchone: a statement left mid-step keeps its read transaction open, and
        # every later read on this connection would see that old snapshot.
        rows = self._connection().execute(query, params).fetchall()
        return rows[0] if rows else None

    async def _all(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        return self._connection().execute(query, params).fetchall()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresHotReads(HotReads):
    def __init__(self, url: str, pool_size: int) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=pool_size, open=False, kwargs={"autocommit": True}
        )
        self._opened = False
        self._queries: dict[str, str] = {}

    async def _cursor_rows(self, query: str, params: tuple[Any, ...], *, one: bool) -> Any:
        if not self._opened:
            await self._pool.open()
            self._opened = True
        sql = self._queries.get(query)
        if sql is None:
            sql = self._queries[query] = query.replace("?", "%s")
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(sql, params, prepare=True)
            return await cursor.fetchone() if one else await cursor.fetchall()

    async def _one(self, query: str, params: tuple[Any, ...]) -> Any:
        return await self._cursor_rows(query, params, one=True)

    async def _all(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        return list(await self._cursor_rows(query, params, one=False))

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()


def open_hot_reads(url: str, pool_size: int) -> HotReads | None:
    """The bare-driver reader for `url`, or None where the SQLAlchemy queries serve (MySQL)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database:
        return SqliteHotReads(parsed.database)
    if backend == "postgresql":
        return PostgresHotReads(url, pool_size)
    return None
