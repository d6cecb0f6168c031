"""Per-upload write locks that die with their holder.

Only one request at a time may write an upload session, on any instance. A lock held by a server
that crashes (even kill -9) must vanish with it, so that the client can resume at once:

- PostgreSQL: session advisory locks on one dedicated connection per worker process; they are
  released when that connection closes, which the crash of the process does.
- SQLite (one host): POSIX record locks on one byte per upload in a lock file; the kernel
  releases them when the process exits.

Both are per process, so an in-process set excludes two requests of the same process.

The same mechanism gives per-digest blob locks, shared or exclusive: uploads and replication
hold a digest's lock shared while they write its object and record it; garbage collection holds
it exclusive while it re-checks and deletes the object. A blob object is therefore never deleted
under a writer that is about to record it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url


def _key(upload_id: str) -> int:
    return int.from_bytes(hashlib.sha256(upload_id.encode()).digest()[:8], "big", signed=True)


def _digest_key(digest: str) -> int:
    return _key(f"blob:{digest}")


class UploadLocks(Protocol):
    async def acquire(self, upload_id: str) -> bool:
        """Take the upload's lock without waiting; False when someone holds it."""

    async def release(self, upload_id: str) -> None: ...

    async def acquire_digest(self, digest: str, *, shared: bool) -> bool:
        """Take a blob digest's lock, shared or exclusive, without waiting; False when refused."""

    async def release_digest(self, digest: str) -> None: ...

    async def close(self) -> None: ...


class _DigestHolds:
    """This process's holds on digest locks: a count of shared holders, or -1 when exclusive."""

    def __init__(self) -> None:
        self.holds: dict[str, int] = {}

    def admit(self, digest: str, shared: bool) -> bool | None:
        """True: already held compatibly (count it); False: refused; None: ask the lock itself."""
        current = self.holds.get(digest, 0)
        if current == -1 or (current > 0 and not shared):
            return False
        if current > 0:
            self.holds[digest] = current + 1
            return True
        return None

    def taken(self, digest: str, shared: bool) -> None:
        self.holds[digest] = 1 if shared else -1

    def drop(self, digest: str) -> tuple[bool, bool]:
        """(whether the process-level lock must be released now, whether it was shared)."""
        current = self.holds.get(digest, 0)
        if current == 0:
            return False, False
        if current > 1:
            self.holds[digest] = current - 1
            return False, True
        del self.holds[digest]
        return True, current == 1


class FileLocks:
    _RANGE = 1 << 40

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._held: set[str] = set()
        self._digests = _DigestHolds()

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

    async def acquire_digest(self, digest: str, *, shared: bool) -> bool:
        admitted = self._digests.admit(digest, shared)
        if admitted is not None:
            return admitted
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.lockf(self._file(), mode | fcntl.LOCK_NB, 1, self._RANGE + _digest_key(digest) % self._RANGE)
        except OSError:
            return False
        self._digests.taken(digest, shared)
        return True

    async def release_digest(self, digest: str) -> None:
        release, _ = self._digests.drop(digest)
        if release:
            fcntl.lockf(self._file(), fcntl.LOCK_UN, 1, self._RANGE + _digest_key(digest) % self._RANGE)

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
        self._digests = _DigestHolds()

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

    async def acquire_digest(self, digest: str, *, shared: bool) -> bool:
        async with self._mutex:
            admitted = self._digests.admit(digest, shared)
            if admitted is not None:
                return admitted
            conn = await self._connection()
            function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
            cursor = await conn.execute(f"SELECT {function}(%s)", (_digest_key(digest),))
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return False
            self._digests.taken(digest, shared)
            return True

    async def release_digest(self, digest: str) -> None:
        async with self._mutex:
            release, shared = self._digests.drop(digest)
            if release:
                conn = await self._connection()
                function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
                await conn.execute(f"SELECT {function}(%s)", (_digest_key(digest),))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


@contextlib.asynccontextmanager
async def digest_held(locks: UploadLocks, digest: str, *, shared: bool, wait: float = 60.0) -> AsyncIterator[None]:
    """Hold a digest's lock for the block, waiting up to `wait` seconds for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.005
    while not await locks.acquire_digest(digest, shared=shared):
        if loop.time() > deadline:
            raise TimeoutError(f"blob {digest} stayed locked for {wait} seconds")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    try:
        yield
    finally:
        await locks.release_digest(digest)


def open_upload_locks(url: str, data_dir: Path) -> UploadLocks:
    if make_url(url).get_backend_name() == "postgresql":
        return PostgresLocks(url)
    return FileLocks(data_dir / "run" / "upload.locks")
