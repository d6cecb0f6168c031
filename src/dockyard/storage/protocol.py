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


class UploadBusy(StorageError):
    """Another writer holds the upload."""


class UploadWriter(Protocol):
    """Exclusive access to an upload's bytes, appending from a given offset.

    While a writer is open no other writer, in any process sharing the store, can open the same
    upload: `open_upload` raises UploadBusy instead.
    """

    async def start(self, offset: int) -> None:
        """Discard any bytes stored past `offset` and append from there."""

    async def write(self, data: bytes) -> None:
        """Append `data`. Bytes are durable only after `close()`."""

    async def close(self) -> None:
        """Flush and release the upload; the bytes written so far are kept."""


class BlobStore(Protocol):
    """Byte-level storage for one location. Keys are relative, slash-separated paths."""

    name: str

    async def open_upload(self, key: str) -> UploadWriter:
        """Take exclusive hold of the upload at `key` (created when absent); UploadBusy if held."""

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
