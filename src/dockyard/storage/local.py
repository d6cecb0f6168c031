"""Local disk driver: an upload is one file appended in place; completion is fsync + rename."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from dockyard.storage.protocol import (
    ObjectMissing,
    Part,
    PendingUpload,
    StorageError,
    no_pending_uploads,
    upload_key,
)

READ_CHUNK = 1024 * 1024


class LocalStore:
    """Objects are files under one directory. Durable: data is fsynced before it becomes visible."""

    derived_keys = True

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        # Nothing is touched here: a location that is down must not stop the server starting.
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"key {key!r} escapes the storage root")
        return path

    # -- objects -------------------------------------------------------------------------------

    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc
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
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {key}: {exc.strerror}") from exc

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    async def put(self, key: str, data: bytes) -> None:
        async def once() -> AsyncIterator[bytes]:
            yield data

        await self.write(key, once())

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        target = self._path(key)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                _write_all(fd, chunk)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temporary, target)
        return size

    async def copy(self, source: str, target: str) -> None:
        await self.write(target, self.read(source))

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() else base.parent
        for directory, _, files in os.walk(start):
            for file in files:
                key = str(Path(directory, file).relative_to(self.root))
                if key.startswith(prefix) and not file.endswith(".tmp"):
                    yield key

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> str:
        path = self._path(upload_key(upload_id))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            raise StorageError(f"cannot begin upload: {exc.strerror}") from exc
        return ""

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        offset = sum(part.size for part in parts)
        try:
            fd = os.open(self._path(upload_key(upload_id)), os.O_WRONLY | os.O_CREAT, 0o640)
        except OSError as exc:
            raise StorageError(f"cannot open upload: {exc.strerror}") from exc
        written = 0
        try:
            # Bytes past the recorded parts are scrap from an interrupted request.
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            async for chunk in chunks:
                # Page-cache writes of a few hundred KiB take microseconds: cheaper inline than a thread hop.
                _write_all(fd, chunk)
                written += len(chunk)
        finally:
            os.close(fd)
        number = parts[-1].number + 1 if parts else 1
        return [*parts, Part(number, written)]

    async def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes]:
        async for chunk in self.read(upload_key(upload_id), 0, sum(part.size for part in parts)):
            yield chunk

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        source, target = self._path(upload_key(upload_id)), self._path(key)
        size = sum(part.size for part in parts)
        try:
            await asyncio.to_thread(_commit, source, target, size)
        except OSError as exc:
            raise StorageError(f"cannot complete upload: {exc.strerror}") from exc
        return key

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        await self.delete(upload_key(upload_id))

    def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Nothing: an upload is the file `uploads/<id>`, which `keys` lists."""
        return no_pending_uploads()

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _commit(source: Path, target: Path, size: int) -> None:
    fd = os.open(source, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
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
