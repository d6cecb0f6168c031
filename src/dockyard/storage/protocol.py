"""The storage driver contract. Every driver passes the same conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from dockyard.domain.digest import Digest


class StorageError(Exception):
    """The store failed (unreachable, refused, corrupt). Requests answer a retriable 5xx."""


def blob_key(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"


class UploadWriter(Protocol):
    """Appends to an upload's bytes from a given offset."""

    async def write(self, data: bytes) -> None:
        """Append `data`. Bytes are durable only after `close()`."""

    async def close(self) -> None:
        """Flush; the bytes written so far are kept."""


class BlobStore(Protocol):
    """Byte-level storage for one location. Keys are relative, slash-separated paths."""

    name: str

    async def open_upload(self, key: str, offset: int) -> UploadWriter:
        """Open `key` for appending at `offset`, discarding any bytes stored past it."""

    async def commit(self, upload: str, key: str) -> None:
        """Durably move the bytes of `upload` to `key` (atomic: `key` is whole or absent)."""

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes (to the end when None) from `offset`. Missing key: FileNotFoundError."""

    async def size(self, key: str) -> int | None:
        """Size of the object at `key`, None when absent."""

    async def delete(self, key: str) -> None:
        """Remove `key`; absent keys are not an error."""

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object whole (health checks, metadata)."""

    def local_path(self, key: str) -> Path | None:
        """A file path the server may stream directly, or None when the driver is not local."""
