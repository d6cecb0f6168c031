"""The storage driver contract. Every driver passes the same conformance suite
(tests/storage/test_conformance.py) against its real server.

A driver is a narrow byte store for one location; registry meaning (digests, sessions, offsets,
placements) lives above it in `services`. Keys are relative, slash-separated paths built only
from validated digests and server-generated ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from dockyard.domain.digest import Digest


class StorageError(Exception):
    """The store failed (unreachable, refused, corrupt). Requests answer a retriable 5xx."""


class ObjectMissing(StorageError):
    """The object does not exist."""


class AccessRefused(StorageError):
    """The store refused the credentials."""


def blob_key(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"


@dataclass(frozen=True, slots=True)
class Part:
    """One stored piece of an upload; `token` is the driver's own (ETag, block id, object name)."""

    number: int
    size: int
    token: str = ""


class PendingUpload(NamedTuple):
    """An unfinished native upload a store keeps outside its object listing (`keys`)."""

    upload_id: str
    """The Dockyard upload id it was begun for."""
    handle: str
    """The handle `begin_upload` returned for it (what `abort_pending` needs)."""
    started_at: float
    """When the store says it began, in seconds since the epoch."""


async def no_pending_uploads() -> AsyncIterator[PendingUpload]:
    """`pending_uploads` of a driver that keeps nothing outside the objects `keys` lists."""
    nothing: tuple[PendingUpload, ...] = ()
    for pending in nothing:
        yield pending


class BlobStore(Protocol):
    """Byte-level storage for one location."""

    name: str
    derived_keys: bool
    """True when every blob lives at blob_key(digest) (then reads need no placement lookup)."""

    # -- objects -------------------------------------------------------------------------------

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes (to the end when None) from `offset`; ObjectMissing if absent."""
        ...

    async def size(self, key: str) -> int | None:
        """Size of the object at `key`, None when absent."""

    async def delete(self, key: str) -> None:
        """Remove `key`; an absent key is not an error."""

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object whole."""

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Stream an object of unknown length to `key` (whole or absent); return its size."""

    async def copy(self, source: str, target: str) -> None:
        """Copy an object within this store (server-side where the store can)."""

    def keys(self, prefix: str) -> AsyncIterator[str]:
        """Keys under `prefix`, in no particular order."""
        ...

    async def signed_url(self, key: str, *, expires_in: int) -> str | None:
        """A URL a client may GET `key` from directly for `expires_in` seconds; None if unsupported."""

    def local_path(self, key: str) -> Path | None:
        """A file the server may stream directly, or None when the driver is not local."""

    # -- uploads -------------------------------------------------------------------------------
    # The caller holds the upload's lock while calling these; an upload's bytes are the
    # concatenation of the parts the caller recorded, in order. Parts written by a request whose
    # result the caller did not record are scrap, cleaned by complete/abort.

    async def begin_upload(self, upload_id: str) -> str:
        """Prepare storage for a new upload; return an opaque handle the caller persists."""

    async def write_part(
        self, upload_id: str, handle: str, parts: Sequence[Part], chunks: AsyncIterator[bytes]
    ) -> list[Part]:
        """Append `chunks` after `parts`; return the upload's new list of parts."""

    def read_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> AsyncIterator[bytes] | None:
        """Stream an unfinished upload's bytes, or None when the store cannot read them back."""

    async def complete_upload(self, upload_id: str, handle: str, parts: Sequence[Part], key: str) -> str:
        """Make the upload's bytes an object, atomically; return its key.

        The object is at `key` when the driver can choose (local disk renames there); object
        stores that finish a multipart upload in place return the key it was begun under.
        """

    async def abort_upload(self, upload_id: str, handle: str, parts: Sequence[Part]) -> None:
        """Release the upload's storage."""

    # -- leftovers -----------------------------------------------------------------------------
    # What a crash can leave that `keys` does not list. The storage sweeper
    # (services/sweep.py) releases the ones no upload session in the database owns.

    def pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Unfinished native uploads begun by `begin_upload`, in no particular order.

        Only state the store keeps outside the objects `keys("uploads/")` and `keys("blobs/")`
        list (an S3 multipart upload, say); a driver whose upload parts are ordinary objects
        yields nothing. An upload already completed is not pending.
        """
        ...

    async def abort_pending(self, upload_id: str, handle: str) -> None:
        """Release one upload `pending_uploads` yielded; an upload already gone is not an error.

        Touches nothing `keys` lists, and nothing of an upload that was completed meanwhile.
        """
