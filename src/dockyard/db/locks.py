"""Per-upload write locks that die with their holder.

Only one request at a time may write an upload session, on any instance. A lock held by a server
that crashes (even kill -9) must vanish with it, so that the client can resume at once:

- PostgreSQL: session advisory locks on one dedicated connection per worker process; they are
  released when that connection closes, which the crash of the process does.
- SQLite (one host): POSIX record locks on one byte per upload in a lock file; the kernel
  releases them when the process exits.

Both are per process, so an in-process set excludes two requests of the same process.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url


def _key(upload_id: str) -> int:
    return int.from_bytes(hashlib.sha256(upload_id.encode()).digest()[:8], "big", signed=True)


class UploadLocks(Protocol):
    async def acquire(self, upload_id: str) -> bool:
        """Take the upload's lock without waiting; False when someone holds it."""

    async def release(self, upload_id: str) -> None: ...

    async def close(self) -> None: ...


class FileLocks:
    _RANGE = 1 << 40

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._held: set[str] = set()

    def _file(self) -> int:
        if self._fd is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    async def acquire(self, upload_id: str) -> bool:
        if upload_id in self._held:
            return False
        try:
            fcntl.lockf(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _key(upload_id) % self._RANGE)
        except OSError:
            return False
        self._held.add(upload_id)
        return True

    async def release(self, upload_id: str) -> None:
        if upload_id in self._held:
            fcntl.lockf(self._file(), fcntl.LOCK_UN, 1, _key(upload_id) % self._RANGE)
            self._held.discard(upload_id)

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PostgresLocks:
    def __init__(self, url: str) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._mutex = asyncio.Lock()
        self._held: set[str] = set()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    async def acquire(self, upload_id: str) -> bool:
        # Advisory locks are re-entrant within a session, and every request of this process shares
        # the one session: the in-process set must be checked and updated under the mutex.
        async with self._mutex:
            if upload_id in self._held:
                return False
            conn = await self._connection()
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(upload_id),))
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return False
            self._held.add(upload_id)
            return True

    async def release(self, upload_id: str) -> None:
        async with self._mutex:
            if upload_id not in self._held:
                return
            conn = await self._connection()
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_key(upload_id),))
            self._held.discard(upload_id)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def open_upload_locks(url: str, data_dir: Path) -> UploadLocks:
    if make_url(url).get_backend_name() == "postgresql":
        return PostgresLocks(url)
    return FileLocks(data_dir / "run" / "upload.locks")
