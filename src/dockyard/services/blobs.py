"""Reading, deleting and locating blobs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.db.registry_store import RegistryStore
from dockyard.domain.audit import Actor
from dockyard.domain.digest import Digest
from dockyard.domain.errors import BlobUnknown, RangeNotSatisfiable, StorageUnavailable
from dockyard.domain.models import BlobInfo
from dockyard.storage import BlobStore, StorageError, blob_key

_RANGE = re.compile(r"bytes=(?P<first>\d*)-(?P<last>\d*)")


@dataclass(frozen=True, slots=True)
class BlobContent:
    """What to send for a blob GET: a byte range of it, as a local file or a stream."""

    digest: str
    size: int
    start: int
    length: int
    partial: bool
    path: Path | None
    open_stream: Callable[[], AsyncIterator[bytes]]
    redirect: str | None = None
    """A signed URL to send the client to instead of the bytes."""


class Locations:
    """The storage locations of this instance, in its preference order."""

    def __init__(self, stores: dict[str, BlobStore], preference: list[str]) -> None:
        self.stores = stores
        self.preference = preference
        self.primary = stores[preference[0]]

    async def for_read(self, store: RegistryStore, digest: str) -> tuple[BlobStore, str]:
        """The location to read `digest` from (first preferred that holds it) and its key there."""
        if len(self.stores) == 1 and self.primary.derived_keys:
            return self.primary, blob_key(Digest.parse(digest))
        return self.choose(digest, await store.placements_of(digest))

    def choose(self, digest: str, held: dict[str, str | None]) -> tuple[BlobStore, str]:
        """Of the locations holding `digest` (location -> key), the first preferred, else any."""
        names = [name for name in self.preference if name in held]
        names += sorted(name for name in held if name in self.stores and name not in names)
        if not names:
            raise StorageUnavailable(f"no configured location holds {digest}")
        return self.stores[names[0]], held[names[0]] or blob_key(Digest.parse(digest))


def parse_range(header: str, size: int) -> tuple[int, int]:
    """Parse a single `bytes=` range into (start, length); raise RangeNotSatisfiable when it is not."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiable(f"unsupported Range {header!r}", size=size)
    first, last = match["first"], match["last"]
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    elif last and int(last) > 0:
        start, end = max(size - int(last), 0), size - 1
    else:
        raise RangeNotSatisfiable(f"invalid Range {header!r}", size=size)
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"Range {header!r} lies outside a blob of {size} bytes", size=size)
    return start, end - start + 1


class BlobService:
    def __init__(
        self, store: RegistryStore, locations: Locations, *, redirect: bool = True, redirect_expiry: int = 300
    ) -> None:
        self.store = store
        self.locations = locations
        self.redirect = redirect
        self.redirect_expiry = redirect_expiry

    async def stat(self, repository: str, digest: str) -> BlobInfo:
        Digest.parse(digest)
        info = await self.store.blob_in_repository(repository, digest)
        if info is None:
            raise BlobUnknown(f"blob {digest} is not in {repository}", detail={"digest": digest})
        return info

    async def content(
        self, repository: str, digest: str, range_header: str | None, *, head: bool = False
    ) -> BlobContent:
        """What a GET (or HEAD) of the blob sends: a redirect to a signed URL, a file or a stream."""
        info = await self.stat(repository, digest)
        start, length, partial = 0, info.size, False
        if range_header:
            start, length = parse_range(range_header, info.size)
            partial = True
        location, key = await self.locations.for_read(self.store, digest)
        redirect = None
        if self.redirect and not head:
            try:
                redirect = await location.signed_url(key, expires_in=self.redirect_expiry)
            except StorageError as exc:
                raise StorageUnavailable(f"storage failed: {exc}") from exc
        path = location.local_path(key)
        if path is not None and not path.exists():
            raise StorageUnavailable(f"blob {digest} is missing from location {location.name}")

        def open_stream() -> AsyncIterator[bytes]:
            return _guarded(location.read(key, start, length))

        return BlobContent(digest, info.size, start, length, partial, path, open_stream, redirect)

    async def read_small(self, digest: str, limit: int) -> bytes | None:
        """The bytes of a small blob (an image config), None when absent or larger than `limit`."""
        size = await self.store.blob_size(digest)
        if size is None or size > limit:
            return None
        location, key = await self.locations.for_read(self.store, digest)
        try:
            return b"".join([chunk async for chunk in location.read(key)])
        except StorageError as exc:
            raise StorageUnavailable(f"storage failed: {exc}") from exc

    async def delete(self, repository: str, digest: str, *, actor: Actor) -> None:
        Digest.parse(digest)
        if not await self.store.unlink_blob(repository, digest, actor=actor):
            raise BlobUnknown(f"blob {digest} is not in {repository}", detail={"digest": digest})


async def _guarded(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except (OSError, StorageError) as exc:
        raise StorageUnavailable(f"storage read failed: {exc}") from exc
