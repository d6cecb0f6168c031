"""Local disk driver: uploads append to files; commit is fsync + atomic rename."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from dockyard.storage.protocol import StorageError, UploadBusy

READ_CHUNK = 1024 * 1024


class _FileWriter:
    def __init__(self, fd: int, release: Callable[[], None]) -> None:
        self._fd = fd
        self._release = release

    async def start(self, offset: int) -> None:
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)

    async def write(self, data: bytes) -> None:
        # Page-cache writes of a few hundred KiB take microseconds: cheaper inline than a thread hop.
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def close(self) -> None:
        try:
            os.close(self._fd)  # also releases the file lock
        finally:
            self._release()


class LocalStore:
    """Blobs under one directory. Durable: data is fsynced before it becomes visible."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root.resolve()
        self._writing: set[str] = set()
        for sub in ("blobs", "uploads", "_health"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"key {key!r} escapes the storage root")
        return path

    async def open_upload(self, key: str) -> _FileWriter:
        # Exclusion within this process (a set) and across processes (flock, which the kernel
        # releases when the holder dies, even on kill -9; over NFS Linux maps it to a POSIX lock,
        # which excludes other hosts).
        if key in self._writing:
            raise UploadBusy(f"{key} is being written by another request")
        path = self._path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot open upload: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UploadBusy(f"{key} is being written by another request") from None
        self._writing.add(key)
        return _FileWriter(fd, lambda: self._writing.discard(key))

    async def commit(self, upload: str, key: str) -> None:
        source, target = self._path(upload), self._path(key)
        await asyncio.to_thread(self._commit, source, target)

    @staticmethod
    def _commit(source: Path, target: Path) -> None:
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        fd = os.open(self._path(key), os.O_RDONLY)
        loop = asyncio.get_running_loop()
        try:
            remaining = os.fstat(fd).st_size - offset if length is None else length
            position = offset
            while remaining > 0:
                chunk = await loop.run_in_executor(None, os.pread, fd, min(READ_CHUNK, remaining), position)
                if not chunk:
                    raise StorageError(f"{key} is shorter than expected")
                position += len(chunk)
                remaining -= len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
