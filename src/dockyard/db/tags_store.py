"""Tag lifecycle: history, restore within the time-machine window, expiry, immutability.

A tag is a sequence of history rows. The live row has no end and no past expiry; moving a tag
ends its row and starts another, restoring adds a row pointing at an earlier manifest, and an
expired row stays until it is ended on the next move (or by garbage collection).
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import immutability_rules, manifests, namespaces, repositories, tags
from dockyard.domain.audit import Actor
from dockyard.domain.errors import AlreadyExists, Denied, ManifestUnknown, NotFound
from dockyard.domain.names import namespace_of

DEFAULT_TIME_MACHINE_SECONDS = 14 * 86400


def live(now: int) -> Any:
    """The SQL condition of a live tag row."""
    return and_(tags.c.end_at.is_(None), or_(tags.c.expires_at.is_(None), tags.c.expires_at > now))


@dataclass(frozen=True, slots=True)
class TagChange:
    """What `move_tag` did: created the tag (`previous` None) or moved it from `previous`."""

    previous: str | None

    @property
    def kind(self) -> str:
        """The audit kind of the change."""
        return "tag.create" if self.previous is None else "tag.move"


@dataclass(frozen=True, slots=True)
class TagEvent:
    digest: str
    start_at: int
    end_at: int | None
    expires_at: int | None
    immutable: bool


async def immutability_reason(conn: AsyncConnection, repo_id: int, tag: str, now: int) -> str | None:
    """Why `tag` may not move or go (a rule or its own flag), or None."""
    flagged = await conn.scalar(
        select(tags.c.immutable).where(tags.c.repository_id == repo_id, tags.c.name == tag, live(now))
    )
    if flagged:
        return f"tag {tag!r} is marked immutable"
    for pattern in await conn.scalars(
        select(immutability_rules.c.pattern).where(immutability_rules.c.repository_id == repo_id)
    ):
        if fnmatch.fnmatchcase(tag, pattern):
            return f"tag {tag!r} matches the immutability rule {pattern!r}"
    return None


def _tag_lock_key(repo_id: int, tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"tag:{repo_id}:{tag}".encode()).digest()[:8], "big", signed=True)


async def move_tag(
    conn: AsyncConnection, repo_id: int, tag: str, manifest_id: int, now: int, *, expires_at: int | None = None
) -> TagChange | None:
    """Point `tag` at `manifest_id`, keeping history; refused for immutable tags.

    None when the tag pointed there already (only its expiry may change). Concurrent moves of one
    tag queue on a transaction lock of that tag (PostgreSQL; SQLite writers are serialised
    already), so each ends the row the previous one started.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _tag_lock_key(repo_id, tag)})
    row = (
        await conn.execute(
            select(tags.c.manifest_id, tags.c.expires_at, tags.c.immutable).where(
                tags.c.repository_id == repo_id, tags.c.name == tag, tags.c.end_at.is_(None)
            )
        )
    ).first()
    is_live = row is not None and (row.expires_at is None or row.expires_at > now)
    if is_live and row is not None and row.manifest_id == manifest_id:
        if expires_at is not None:
            await conn.execute(
                update(tags)
                .where(tags.c.repository_id == repo_id, tags.c.name == tag, tags.c.end_at.is_(None))
                .values(expires_at=expires_at)
            )
        return None
    previous = None
    if is_live and row is not None:
        reason = await immutability_reason(conn, repo_id, tag, now)
        if reason is not None:
            raise Denied(f"{reason}; it cannot be moved", detail={"tag": tag})
        previous = await conn.scalar(select(manifests.c.digest).where(manifests.c.id == row.manifest_id))
    if row is not None:
        # An expired row ends when it expired; a live one now.
        ended = now if is_live else min(now, int(row.expires_at))
        await conn.execute(
            update(tags)
            .where(tags.c.repository_id == repo_id, tags.c.name == tag, tags.c.end_at.is_(None))
            .values(end_at=ended)
        )
    await conn.execute(
        insert(tags).values(
            repository_id=repo_id, name=tag, manifest_id=manifest_id, start_at=now, expires_at=expires_at
        )
    )
    return TagChange(previous)


async def end_tag(conn: AsyncConnection, repo_id: int, tag: str, now: int) -> bool:
    """End the live row of `tag` (refused when immutable); False when there is none."""
    reason = await immutability_reason(conn, repo_id, tag, now)
    exists = await conn.scalar(select(tags.c.id).where(tags.c.repository_id == repo_id, tags.c.name == tag, live(now)))
    if exists is None:
        return False
    if reason is not None:
        raise Denied(f"{reason}; it cannot be deleted", detail={"tag": tag})
    await conn.execute(update(tags).where(tags.c.id == exists).values(end_at=now))
    return True


async def live_digest(conn: AsyncConnection, repo_id: int, tag: str, now: int) -> str | None:
    """The digest the live tag points at, None when there is no live tag."""
    digest = await conn.scalar(
        select(manifests.c.digest)
        .join(tags, tags.c.manifest_id == manifests.c.id)
        .where(tags.c.repository_id == repo_id, tags.c.name == tag, live(now))
    )
    return None if digest is None else str(digest)


class TagsStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    async def _repo(self, conn: AsyncConnection, repository: str) -> tuple[int, int]:
        row = (
            await conn.execute(
                select(repositories.c.id, repositories.c.namespace_id).where(
                    repositories.c.name == repository, repositories.c.state == "normal"
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"no repository {repository}")
        return int(row.id), int(row.namespace_id)

    async def history(self, repository: str, tag: str) -> list[TagEvent]:
        async with self.db.read() as conn:
            repo_id, _ = await self._repo(conn, repository)
            rows = await conn.execute(
                select(tags.c.start_at, tags.c.end_at, tags.c.expires_at, tags.c.immutable, manifests.c.digest)
                .join(manifests, manifests.c.id == tags.c.manifest_id)
                .where(tags.c.repository_id == repo_id, tags.c.name == tag)
                .order_by(tags.c.start_at.desc(), tags.c.id.desc())
            )
            return [TagEvent(r.digest, int(r.start_at), r.end_at, r.expires_at, bool(r.immutable)) for r in rows]

    async def window(self, conn: AsyncConnection, namespace_id: int) -> int:
        seconds = await conn.scalar(select(namespaces.c.time_machine_seconds).where(namespaces.c.id == namespace_id))
        return DEFAULT_TIME_MACHINE_SECONDS if seconds is None else int(seconds)

    async def restore(self, repository: str, tag: str, digest: str, *, actor: Actor) -> None:
        """Point `tag` back at `digest`, which it pointed at within the namespace's window."""
        now = now_ms()
        async with self.db.write() as conn:
            repo_id, namespace_id = await self._repo(conn, repository)
            since = now - await self.window(conn, namespace_id) * 1000
            manifest_id = await conn.scalar(
                select(tags.c.manifest_id)
                .join(manifests, manifests.c.id == tags.c.manifest_id)
                .where(
                    tags.c.repository_id == repo_id,
                    tags.c.name == tag,
                    manifests.c.digest == digest,
                    or_(tags.c.end_at.is_(None), tags.c.end_at >= since),
                )
                .limit(1)
            )
            if manifest_id is None:
                raise ManifestUnknown(
                    f"{repository}:{tag} did not point at {digest} within the time-machine window",
                    detail={"tag": tag, "digest": digest},
                )
            revived = await conn.execute(
                update(manifests).where(manifests.c.id == manifest_id).values(deleted_at=None, touched_at=now)
            )
            if not revived.rowcount:
                raise ManifestUnknown(f"{digest} was collected meanwhile", detail={"tag": tag, "digest": digest})
            change = await move_tag(conn, repo_id, tag, int(manifest_id), now)
            await self.audit(
                conn,
                "tag.restore",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"tag": tag, "digest": digest, "previous": None if change is None else change.previous},
                now=now,
            )

    async def point(self, repository: str, tag: str, digest: str, *, actor: Actor) -> TagChange | None:
        """Create `tag` on, or move it to, the manifest `digest` of the repository.

        None when the tag pointed there already. Touching the manifest in the same transaction
        tells a concurrent collector that it is referenced again.
        """
        now = now_ms()
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            touched = await conn.execute(
                update(manifests)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifests.c.digest == digest,
                    manifests.c.deleted_at.is_(None),
                )
                .values(touched_at=now)
            )
            if not touched.rowcount:
                raise ManifestUnknown(f"manifest {digest} is not in {repository}", detail={"digest": digest})
            manifest_id = (
                await conn.execute(
                    select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                )
            ).scalar_one()
            change = await move_tag(conn, repo_id, tag, int(manifest_id), now)
            if change is not None:
                await self.audit(
                    conn,
                    change.kind,
                    actor,
                    namespace=namespace_of(repository),
                    repository=repository,
                    metadata={"tag": tag, "digest": digest, "previous": change.previous},
                    now=now,
                )
            return change

    async def purge(self, repository: str, tag: str, *, actor: Actor) -> int:
        """Delete `tag` permanently: end it and drop its history, so it cannot be restored."""
        now = now_ms()
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            digest = await live_digest(conn, repo_id, tag, now)
            await end_tag(conn, repo_id, tag, now)
            result = await conn.execute(delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag))
            if result.rowcount:
                await self.audit(
                    conn,
                    "tag.purge",
                    actor,
                    namespace=namespace_of(repository),
                    repository=repository,
                    metadata={"tag": tag, "digest": digest, "history_rows": int(result.rowcount)},
                    now=now,
                )
            return int(result.rowcount)

    async def _live_row(self, conn: AsyncConnection, repo_id: int, repository: str, tag: str, now: int) -> Any:
        row = (
            await conn.execute(
                select(tags.c.id, tags.c.expires_at, tags.c.immutable, manifests.c.digest)
                .join(manifests, manifests.c.id == tags.c.manifest_id)
                .where(tags.c.repository_id == repo_id, tags.c.name == tag, live(now))
            )
        ).first()
        if row is None:
            raise NotFound(f"no live tag {repository}:{tag}")
        return row

    async def set_expiry(self, repository: str, tag: str, expires_at: int | None, *, actor: Actor) -> None:
        now = now_ms()
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            row = await self._live_row(conn, repo_id, repository, tag, now)
            await conn.execute(update(tags).where(tags.c.id == row.id).values(expires_at=expires_at))
            await self.audit(
                conn,
                "tag.expiry",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"tag": tag, "digest": row.digest, "old": row.expires_at, "new": expires_at},
                now=now,
            )

    async def set_immutable(self, repository: str, tag: str, immutable: bool, *, actor: Actor) -> None:
        now = now_ms()
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            row = await self._live_row(conn, repo_id, repository, tag, now)
            await conn.execute(update(tags).where(tags.c.id == row.id).values(immutable=immutable))
            await self.audit(
                conn,
                "tag.immutable",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"tag": tag, "digest": row.digest, "old": bool(row.immutable), "new": immutable},
                now=now,
            )

    async def add_rule(self, repository: str, pattern: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(immutability_rules).values(repository_id=repo_id, pattern=pattern, created_at=now_ms())
                    )
            except IntegrityError:
                raise AlreadyExists(f"rule {pattern!r} exists on {repository}") from None
            await self.audit(
                conn,
                "immutability_rule.add",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"pattern": pattern},
            )

    async def remove_rule(self, repository: str, pattern: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_id, _ = await self._repo(conn, repository)
            result = await conn.execute(
                delete(immutability_rules).where(
                    immutability_rules.c.repository_id == repo_id, immutability_rules.c.pattern == pattern
                )
            )
            if not result.rowcount:
                raise NotFound(f"no rule {pattern!r} on {repository}")
            await self.audit(
                conn,
                "immutability_rule.remove",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"pattern": pattern},
            )

    async def rules(self, repository: str) -> list[str]:
        async with self.db.read() as conn:
            repo_id, _ = await self._repo(conn, repository)
            return list(
                await conn.scalars(
                    select(immutability_rules.c.pattern)
                    .where(immutability_rules.c.repository_id == repo_id)
                    .order_by(immutability_rules.c.pattern)
                )
            )

    async def set_window(self, namespace: str, seconds: int, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(namespaces.c.id, namespaces.c.time_machine_seconds).where(
                        namespaces.c.name == namespace, namespaces.c.state == "normal"
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no namespace {namespace!r}")
            await conn.execute(update(namespaces).where(namespaces.c.id == row.id).values(time_machine_seconds=seconds))
            await self.audit(
                conn,
                "namespace.time_machine",
                actor,
                namespace=namespace,
                metadata={"old_seconds": row.time_machine_seconds, "new_seconds": seconds},
            )
