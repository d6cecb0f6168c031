"""Tag lifecycle use cases: history, restore, permanent delete, expiry, immutability, window."""

from __future__ import annotations

import fnmatch
import time

from dockyard.db.tags_store import TagEvent, TagsStore
from dockyard.domain.audit import Actor
from dockyard.domain.digest import Digest
from dockyard.domain.errors import InvalidRequest
from dockyard.domain.names import validate_repository_name, validate_tag
from dockyard.services.durations import parse_duration


class TagService:
    def __init__(self, store: TagsStore) -> None:
        self.store = store

    async def history(self, repository: str, tag: str) -> list[TagEvent]:
        return await self.store.history(validate_repository_name(repository), validate_tag(tag))

    async def restore(self, repository: str, tag: str, digest: str, *, actor: Actor) -> None:
        Digest.parse(digest)
        await self.store.restore(validate_repository_name(repository), validate_tag(tag), digest, actor=actor)

    async def point(self, repository: str, tag: str, digest: str, *, actor: Actor) -> bool:
        """Create or move `tag` to the manifest `digest`; True when the tag was created."""
        Digest.parse(digest)
        change = await self.store.point(validate_repository_name(repository), validate_tag(tag), digest, actor=actor)
        return change is not None and change.previous is None

    async def purge(self, repository: str, tag: str, *, actor: Actor) -> int:
        return await self.store.purge(validate_repository_name(repository), validate_tag(tag), actor=actor)

    async def expire_in(self, repository: str, tag: str, duration: str | None, *, actor: Actor) -> int | None:
        """Set the tag to expire after `duration` (None clears its expiry); return the time (ms)."""
        expires_at = None if duration is None else int((time.time() + parse_duration(duration)) * 1000)
        await self.store.set_expiry(validate_repository_name(repository), validate_tag(tag), expires_at, actor=actor)
        return expires_at

    async def expire_at(self, repository: str, tag: str, expires_at: int, *, actor: Actor) -> None:
        """Set the tag to expire at `expires_at` (ms since the epoch, in the future)."""
        if expires_at <= time.time() * 1000:
            raise InvalidRequest("an expiry must lie in the future")
        await self.store.set_expiry(validate_repository_name(repository), validate_tag(tag), expires_at, actor=actor)

    async def set_immutable(self, repository: str, tag: str, immutable: bool, *, actor: Actor) -> None:
        await self.store.set_immutable(validate_repository_name(repository), validate_tag(tag), immutable, actor=actor)

    async def add_rule(self, repository: str, pattern: str, *, actor: Actor) -> None:
        await self.store.add_rule(validate_repository_name(repository), validate_tag_pattern(pattern), actor=actor)

    async def remove_rule(self, repository: str, pattern: str, *, actor: Actor) -> None:
        await self.store.remove_rule(validate_repository_name(repository), pattern, actor=actor)

    async def rules(self, repository: str) -> list[str]:
        return await self.store.rules(validate_repository_name(repository))

    async def set_window(self, namespace: str, window: str, *, actor: Actor) -> None:
        seconds = 0 if window.strip() == "0" else parse_duration(window)
        await self.store.set_window(namespace, seconds, actor=actor)


def validate_tag_pattern(pattern: str) -> str:
    """A tag glob (`v*`, `release-?.*`); it must be able to match some tag."""
    if not pattern or len(pattern) > 128 or "/" in pattern:
        raise InvalidRequest(f"invalid tag pattern {pattern!r}")
    fnmatch.translate(pattern)
    return pattern
