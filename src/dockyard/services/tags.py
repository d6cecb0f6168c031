"""Tag lifecycle use cases: history, restore, permanent delete, expiry, immutability, window."""

from __future__ import annotations

import fnmatch
import time

from dockyard.db.tags_store import TagEvent, TagsStore
from dockyard.domain.digest import Digest
from dockyard.domain.errors import InvalidRequest
from dockyard.domain.names import validate_repository_name, validate_tag
from dockyard.services.durations import parse_duration


class TagService:
    def __init__(self, store: TagsStore) -> None:
        self.store = store

    async def history(self, repository: str, tag: str) -> list[TagEvent]:
        return await self.store.history(validate_repository_name(repository), validate_tag(tag))

    async def restore(self, repository: str, tag: str, digest: str) -> None:
        Digest.parse(digest)
        await self.store.restore(validate_repository_name(repository), validate_tag(tag), digest)

    async def purge(self, repository: str, tag: str) -> int:
        return await self.store.purge(validate_repository_name(repository), validate_tag(tag))

    async def expire_in(self, repository: str, tag: str, duration: str | None) -> int | None:
        """Set the tag to expire after `duration` (None clears its expiry); return the time (ms)."""
        expires_at = None if duration is None else int((time.time() + parse_duration(duration)) * 1000)
        await self.store.set_expiry(validate_repository_name(repository), validate_tag(tag), expires_at)
        return expires_at

    async def set_immutable(self, repository: str, tag: str, immutable: bool) -> None:
        await self.store.set_immutable(validate_repository_name(repository), validate_tag(tag), immutable)

    async def add_rule(self, repository: str, pattern: str) -> None:
        await self.store.add_rule(validate_repository_name(repository), validate_tag_pattern(pattern))

    async def remove_rule(self, repository: str, pattern: str) -> None:
        await self.store.remove_rule(validate_repository_name(repository), pattern)

    async def rules(self, repository: str) -> list[str]:
        return await self.store.rules(validate_repository_name(repository))

    async def set_window(self, namespace: str, window: str) -> None:
        seconds = 0 if window.strip() == "0" else parse_duration(window)
        await self.store.set_window(namespace, seconds)


def validate_tag_pattern(pattern: str) -> str:
    """A tag glob (`v*`, `release-?.*`); it must be able to match some tag."""
    if not pattern or len(pattern) > 128 or "/" in pattern:
        raise InvalidRequest(f"invalid tag pattern {pattern!r}")
    fnmatch.translate(pattern)
    return pattern
