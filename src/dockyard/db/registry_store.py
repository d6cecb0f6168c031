"""Queries of the registry data path. Each method is one transaction; results are immutable records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.accounts_store import apply_creation_rules, readable_by
from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.hot_reads import HotReads
from dockyard.db.jobs_store import enqueue
from dockyard.db.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    namespaces,
    placements,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from dockyard.db.tags_store import end_tag, immutability_reason, live, live_digest, move_tag
from dockyard.db.usage import charge
from dockyard.domain.audit import DOCKYARD, Actor
from dockyard.domain.errors import Denied, ManifestBlobUnknown
from dockyard.domain.models import BlobInfo, ManifestRecord, Page, UploadState
from dockyard.domain.names import namespace_of

#: Job kind of blob replication.
REPLICATE = "replicate"
#: Job kind of purging a repository marked for deletion.
PURGE_REPOSITORY = "purge-repository"


class RegistryStore:
    def __init__(self, db: Database, hot: HotReads | None = None, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.hot = hot
        self.audit = audit or AuditWriter()

    async def close(self) -> None:
        if self.hot is not None:
            await self.hot.close()
        await self.db.dispose()

    # -- helpers -------------------------------------------------------------------------------

    def _insert_ignore(self, table: Any, values: dict[str, Any], conflict: Sequence[str]) -> Any:
        if self.db.dialect == "postgresql":
            return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))
        if self.db.dialect == "sqlite":
            return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))
        return insert(table).values(values).prefix_with("IGNORE")

    async def _ensure_repository(
        self, conn: AsyncConnection, name: str, creator: int | None, actor: Actor | None = None
    ) -> int:
        """The repository's id, creating it (private) on first push with the org's creation rules.

        Authorization has already decided the creator may create it. A namespace that does not
        exist yet (only a superuser may push there) is created as an organization. A creation is
        audited as `actor`'s.
        """
        repo_id = await conn.scalar(select(repositories.c.id).where(repositories.c.name == name))
        if repo_id is not None:
            return int(repo_id)
        now = now_ms()
        namespace = namespace_of(name)
        await conn.execute(
            self._insert_ignore(namespaces, {"name": namespace, "kind": "org", "created_at": now}, ["name"])
        )
        namespace_id = int(
            (await conn.execute(select(namespaces.c.id).where(namespaces.c.name == namespace))).scalar_one()
        )
        # Whether this transaction created it comes from RETURNING: for an INSERT, the rowcount
        # of the async PostgreSQL driver is -1 whatever happened.
        created = await conn.scalar(
            self._insert_ignore(
                repositories, {"name": name, "namespace_id": namespace_id, "created_at": now}, ["name"]
            ).returning(repositories.c.id)
        )
        repo_id = (await conn.execute(select(repositories.c.id).where(repositories.c.name == name))).scalar_one()
        if created is not None:
            grants = await apply_creation_rules(conn, int(repo_id), namespace_id, creator)
            metadata: dict[str, object] = {"visibility": "private", "via": "push"}
            if grants:
                metadata["grants"] = grants
            await self.audit(
                conn,
                "repository.create",
                actor or DOCKYARD,
                namespace=namespace,
                repository=name,
                metadata=metadata,
                now=now,
            )
        return int(repo_id)

    @staticmethod
    async def _namespace_id(conn: AsyncConnection, repo_id: int) -> int:
        return int(
            (await conn.execute(select(repositories.c.namespace_id).where(repositories.c.id == repo_id))).scalar_one()
        )

    async def _claim_blob(self, conn: AsyncConnection, digest: str, size: int, now: int) -> int:
        """The blob row's id, created if absent, touched so that GC keeps it past this transaction.

        The touch is an update of the row itself: a collector deleting it concurrently either
        waits and then sees the fresh touch time (and skips it), or has committed first, and the
        row is inserted again.
        """
        while True:
            touched = await conn.execute(update(blobs).where(blobs.c.digest == digest).values(touched_at=now))
            if touched.rowcount:
                return int((await conn.execute(select(blobs.c.id).where(blobs.c.digest == digest))).scalar_one())
            inserted = await conn.scalar(
                self._insert_ignore(
                    blobs, {"digest": digest, "size": size, "created_at": now, "touched_at": now}, ["digest"]
                ).returning(blobs.c.id)
            )
            if inserted is not None:
                return int(inserted)

    @staticmethod
    async def _repository_id(conn: AsyncConnection, name: str) -> int | None:
        value = await conn.scalar(
            select(repositories.c.id).where(repositories.c.name == name, repositories.c.state == "normal")
        )
        return None if value is None else int(value)

    async def repository_exists(self, name: str) -> bool:
        async with self.db.read() as conn:
            return await self._repository_id(conn, name) is not None

    # -- blobs ---------------------------------------------------------------------------------

    async def blob_in_repository(self, repository: str, digest: str) -> BlobInfo | None:
        if self.hot is not None:
            size = await self.hot.blob_size(repository, digest)
            return None if size is None else BlobInfo(digest=digest, size=size, key="")
        query = (
            select(blobs.c.size)
            .select_from(
                repositories.join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id).join(
                    blobs, blobs.c.id == repository_blobs.c.blob_id
                )
            )
            .where(repositories.c.name == repository, repositories.c.state == "normal", blobs.c.digest == digest)
        )
        async with self.db.read() as conn:
            size = await conn.scalar(query)
        return None if size is None else BlobInfo(digest=digest, size=int(size), key="")

    async def blob(self, digest: str) -> BlobInfo | None:
        async with self.db.read() as conn:
            size = await conn.scalar(select(blobs.c.size).where(blobs.c.digest == digest))
        return None if size is None else BlobInfo(digest=digest, size=int(size), key="")

    async def placements_of(self, digest: str) -> dict[str, str | None]:
        """Locations holding `digest` -> the object's key there (None: the digest-derived key)."""
        query = (
            select(placements.c.location, placements.c.key)
            .join(blobs, blobs.c.id == placements.c.blob_id)
            .where(blobs.c.digest == digest)
        )
        async with self.db.read() as conn:
            return {row.location: row.key for row in await conn.execute(query)}

    async def record_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        location: str,
        *,
        key: str | None,
        upload_id: str | None,
        creator: int | None,
        actor: Actor | None = None,
    ) -> None:
        """Make a stored blob visible in `repository` (and drop the finished upload) atomically.

        QuotaExceeded (nothing recorded) when the blob would take the namespace past its quota.
        """
        now = now_ms()
        async with self.db.write() as conn:
            repo_id = await self._ensure_repository(conn, repository, creator, actor)
            blob_id = await self._claim_blob(conn, digest, size, now)
            await conn.execute(
                self._insert_ignore(
                    placements,
                    {"blob_id": blob_id, "location": location, "key": key, "created_at": now},
                    ["blob_id", "location"],
                )
            )
            await self._link(conn, repo_id, blob_id, now)
            await charge(conn, self.db.dialect, await self._namespace_id(conn, repo_id), digest, size, now)
            if upload_id is not None:
                await conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    async def _link(self, conn: AsyncConnection, repo_id: int, blob_id: int, now: int) -> None:
        # A fresh link restarts the grace period that protects an unreferenced blob from GC.
        result = await conn.execute(
            update(repository_blobs)
            .where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id == blob_id)
            .values(created_at=now)
        )
        if result.rowcount == 0:
            await conn.execute(
                self._insert_ignore(
                    repository_blobs,
                    {"repository_id": repo_id, "blob_id": blob_id, "created_at": now},
                    ["repository_id", "blob_id"],
                )
            )

    async def mount_blob(
        self, repository: str, digest: str, source: str | None, creator: int | None, *, actor: Actor | None = None
    ) -> bool:
        """Link an existing blob into `repository`; from `source` only, or from anywhere when None."""
        now = now_ms()
        async with self.db.write() as conn:
            query = select(blobs.c.id, blobs.c.size).where(blobs.c.digest == digest)
            if source is not None:
                query = (
                    query.join(repository_blobs, repository_blobs.c.blob_id == blobs.c.id)
                    .join(
                        repositories,
                        and_(repositories.c.id == repository_blobs.c.repository_id, repositories.c.name == source),
                    )
                    .where(repositories.c.state == "normal")
                )
            row = (await conn.execute(query.limit(1))).first()
            if row is None:
                return False
            touched = await conn.execute(update(blobs).where(blobs.c.id == row.id).values(touched_at=now))
            if not touched.rowcount:
                return False  # collected meanwhile: the client uploads it instead
            repo_id = await self._ensure_repository(conn, repository, creator, actor)
            await self._link(conn, repo_id, int(row.id), now)
            await charge(conn, self.db.dialect, await self._namespace_id(conn, repo_id), digest, int(row.size), now)
            return True

    async def repositories_holding(self, digest: str, limit: int) -> list[str]:
        query = (
            select(repositories.c.name)
            .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
            .join(blobs, blobs.c.id == repository_blobs.c.blob_id)
            .where(blobs.c.digest == digest, repositories.c.state == "normal")
            .order_by(repositories.c.name)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return list((await conn.scalars(query)).all())

    async def unlink_blob(self, repository: str, digest: str, *, actor: Actor) -> bool:
        async with self.db.write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            blob_id = await conn.scalar(select(blobs.c.id).where(blobs.c.digest == digest))
            if blob_id is None:
                return False
            result = await conn.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id == blob_id
                )
            )
            if result.rowcount:
                await self.audit(
                    conn,
                    "blob.delete",
                    actor,
                    namespace=namespace_of(repository),
                    repository=repository,
                    metadata={"digest": digest},
                )
            return bool(result.rowcount)

    # -- uploads -------------------------------------------------------------------------------

    async def create_upload(
        self,
        repository: str,
        upload_id: str,
        location: str,
        handle: str,
        creator: int | None,
        *,
        actor: Actor | None = None,
    ) -> UploadState:
        now = now_ms()
        async with self.db.write() as conn:
            repo_id = await self._ensure_repository(conn, repository, creator, actor)
            await conn.execute(
                insert(uploads).values(
                    id=upload_id,
                    repository_id=repo_id,
                    offset=0,
                    location=location,
                    handle=handle,
                    parts="[]",
                    created_at=now,
                    updated_at=now,
                )
            )
        return UploadState(upload_id, repository, 0, location, now, handle, "[]")

    async def upload(self, repository: str, upload_id: str) -> UploadState | None:
        query = (
            select(uploads.c.offset, uploads.c.location, uploads.c.created_at, uploads.c.handle, uploads.c.parts)
            .join(repositories, repositories.c.id == uploads.c.repository_id)
            .where(uploads.c.id == upload_id, repositories.c.name == repository)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return UploadState(
            upload_id, repository, int(row.offset), row.location, int(row.created_at), row.handle, row.parts
        )

    async def advance_upload(self, upload_id: str, expected: int, offset: int, parts: str) -> bool:
        """Move the offset from `expected` to `offset` with the new parts; False if moved meanwhile."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.offset == expected)
                .values(offset=offset, parts=parts, updated_at=now_ms())
            )
            return bool(result.rowcount)

    async def delete_upload(self, upload_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(delete(uploads).where(uploads.c.id == upload_id))
            return bool(result.rowcount)

    async def count_uploads(self) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(uploads)) or 0)

    # -- manifests and tags --------------------------------------------------------------------

    async def put_manifest(
        self,
        repository: str,
        digest: str,
        media_type: str,
        content: bytes,
        *,
        artifact_type: str | None,
        subject: str | None,
        blob_digests: Sequence[str],
        child_digests: Sequence[str],
        tag: str | None,
        creator: int | None,
        replicate: bool = False,
        expires_at: int | None = None,
        actor: Actor,
    ) -> None:
        """Store a manifest with its edges and point `tag` at it, in one transaction.

        With `replicate`, the same transaction enqueues a replication job per blob. The push is
        audited (and a tag created or moved by it) in the same transaction.
        """
        now = now_ms()
        async with self.db.write() as conn:
            repo_id = await self._ensure_repository(conn, repository, creator, actor)
            blob_ids = await self._blob_ids_in(conn, repo_id, blob_digests)
            child_ids = await self._manifest_ids_in(conn, repo_id, child_digests)
            # Re-pushing a known manifest revives it; the update also tells a concurrent collector
            # (through touched_at) that it is referenced again.
            manifest_id, created = await self._claim_manifest(
                conn, repo_id, digest, media_type, content, artifact_type, subject, now
            )
            if created:
                if blob_ids:
                    await conn.execute(
                        insert(manifest_blobs), [{"manifest_id": manifest_id, "blob_id": b} for b in blob_ids]
                    )
                if child_ids:
                    await conn.execute(
                        insert(manifest_children), [{"parent_id": manifest_id, "child_id": c} for c in child_ids]
                    )
            namespace = namespace_of(repository)
            await self.audit(
                conn,
                "push",
                actor,
                namespace=namespace,
                repository=repository,
                metadata={"tag": tag, "digest": digest, "media_type": media_type},
                now=now,
            )
            if tag is not None:
                change = await move_tag(conn, repo_id, tag, int(manifest_id), now, expires_at=expires_at)
                if change is not None:
                    await self.audit(
                        conn,
                        change.kind,
                        actor,
                        namespace=namespace,
                        repository=repository,
                        metadata={"tag": tag, "digest": digest, "previous": change.previous},
                        now=now,
                    )
            if replicate:
                for blob_digest in sorted(set(blob_digests)):
                    await enqueue(
                        conn,
                        self.db.dialect,
                        REPLICATE,
                        {"digest": blob_digest, "namespace": namespace},
                        dedupe_key=f"{REPLICATE}:{namespace}:{blob_digest}",
                    )
            # Last: a namespace with a quota serialises new bytes on its lock until this commits.
            await charge(conn, self.db.dialect, await self._namespace_id(conn, repo_id), digest, len(content), now)

    async def _claim_manifest(
        self,
        conn: AsyncConnection,
        repo_id: int,
        digest: str,
        media_type: str,
        content: bytes,
        artifact_type: str | None,
        subject: str | None,
        now: int,
    ) -> tuple[int, bool]:
        """The manifest row's id, and whether this transaction created it.

        Re-pushing a known manifest revives it; the update also tells a concurrent collector
        (through touched_at) that it is referenced again. Two first pushes of one manifest race
        on the unique (repository, digest): the loser waits for the winner and revives its row.
        """
        while True:
            revived = await conn.execute(
                update(manifests)
                .where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                .values(deleted_at=None, touched_at=now)
            )
            if revived.rowcount:
                query = select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                return int((await conn.execute(query)).scalar_one()), False
            inserted = await conn.scalar(
                self._insert_ignore(
                    manifests,
                    {
                        "repository_id": repo_id,
                        "digest": digest,
                        "media_type": media_type,
                        "artifact_type": artifact_type,
                        "subject_digest": subject,
                        "size": len(content),
                        "content": content,
                        "created_at": now,
                        "touched_at": now,
                    },
                    ["repository_id", "digest"],
                ).returning(manifests.c.id)
            )
            if inserted is not None:
                return int(inserted), True

    async def _blob_ids_in(self, conn: AsyncConnection, repo_id: int, digests: Sequence[str]) -> list[int]:
        wanted = set(digests)
        if not wanted:
            return []
        rows = await conn.execute(
            select(blobs.c.id, blobs.c.digest)
            .join(repository_blobs, repository_blobs.c.blob_id == blobs.c.id)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest.in_(wanted))
        )
        found = {row.digest: int(row.id) for row in rows}
        missing = sorted(wanted - found.keys())
        if missing:
            raise ManifestBlobUnknown(f"blob {missing[0]} is not in the repository", detail={"digest": missing[0]})
        # Renew the links: a collector dropping one concurrently either sees the renewal or has
        # committed first, and then the count tells.
        renewed = await conn.execute(
            update(repository_blobs)
            .where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.blob_id.in_(found.values()))
            .values(created_at=now_ms())
        )
        if renewed.rowcount != len(found):
            raise ManifestBlobUnknown("a blob of the manifest was collected meanwhile; push it again")
        return list(found.values())

    async def _manifest_ids_in(self, conn: AsyncConnection, repo_id: int, digests: Sequence[str]) -> list[int]:
        wanted = set(digests)
        if not wanted:
            return []
        rows = await conn.execute(
            select(manifests.c.id, manifests.c.digest).where(
                manifests.c.repository_id == repo_id, manifests.c.digest.in_(wanted), manifests.c.deleted_at.is_(None)
            )
        )
        found = {row.digest: int(row.id) for row in rows}
        missing = sorted(wanted - found.keys())
        if missing:
            raise ManifestBlobUnknown(
                f"child manifest {missing[0]} is not in the repository", detail={"digest": missing[0]}
            )
        touched = await conn.execute(
            update(manifests)
            .where(manifests.c.id.in_(found.values()), manifests.c.deleted_at.is_(None))
            .values(touched_at=now_ms())
        )
        if touched.rowcount != len(found):
            raise ManifestBlobUnknown("a child manifest was collected meanwhile; push it again")
        return list(found.values())

    _MANIFEST_COLUMNS = (
        manifests.c.digest,
        manifests.c.media_type,
        manifests.c.size,
        manifests.c.content,
        manifests.c.subject_digest,
        manifests.c.artifact_type,
    )

    @staticmethod
    def _record(row: Any) -> ManifestRecord:
        return ManifestRecord(
            digest=row.digest,
            media_type=row.media_type,
            size=int(row.size),
            content=bytes(row.content),
            subject=row.subject_digest,
            artifact_type=row.artifact_type,
        )

    async def manifest_by_tag(self, repository: str, tag: str) -> ManifestRecord | None:
        if self.hot is not None:
            return await self.hot.manifest_by_tag(repository, tag)
        query = (
            select(*self._MANIFEST_COLUMNS)
            .select_from(
                repositories.join(tags, tags.c.repository_id == repositories.c.id).join(
                    manifests, manifests.c.id == tags.c.manifest_id
                )
            )
            .where(
                repositories.c.name == repository,
                repositories.c.state == "normal",
                tags.c.name == tag,
                live(now_ms()),
                manifests.c.deleted_at.is_(None),
            )
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._record(row)

    async def manifest_by_digest(self, repository: str, digest: str) -> ManifestRecord | None:
        if self.hot is not None:
            return await self.hot.manifest_by_digest(repository, digest)
        query = (
            select(*self._MANIFEST_COLUMNS)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(
                repositories.c.name == repository,
                repositories.c.state == "normal",
                manifests.c.digest == digest,
                manifests.c.deleted_at.is_(None),
            )
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._record(row)

    async def delete_tag(self, repository: str, tag: str, *, actor: Actor) -> bool:
        now = now_ms()
        async with self.db.write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            digest = await live_digest(conn, repo_id, tag, now)
            if not await end_tag(conn, repo_id, tag, now):
                return False
            await self.audit(
                conn,
                "tag.delete",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"tag": tag, "digest": digest},
                now=now,
            )
            return True

    async def delete_manifest(self, repository: str, digest: str, *, actor: Actor) -> bool:
        """Hide a manifest and end every live tag pointing at it."""
        now = now_ms()
        async with self.db.write() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return False
            manifest_id = await conn.scalar(
                select(manifests.c.id).where(
                    manifests.c.repository_id == repo_id, manifests.c.digest == digest, manifests.c.deleted_at.is_(None)
                )
            )
            if manifest_id is None:
                return False
            live_tags = sorted(
                await conn.scalars(select(tags.c.name).where(tags.c.manifest_id == manifest_id, live(now)))
            )
            for tag in live_tags:
                reason = await immutability_reason(conn, repo_id, tag, now)
                if reason is not None:
                    raise Denied(f"{reason}; the manifest it points at cannot be deleted", detail={"tag": tag})
            await conn.execute(
                update(tags).where(tags.c.manifest_id == manifest_id, tags.c.end_at.is_(None)).values(end_at=now)
            )
            await conn.execute(update(manifests).where(manifests.c.id == manifest_id).values(deleted_at=now))
            await self.audit(
                conn,
                "manifest.delete",
                actor,
                namespace=namespace_of(repository),
                repository=repository,
                metadata={"digest": digest, "tags": live_tags},
                now=now,
            )
            return True

    async def list_tags(self, repository: str, last: str | None, limit: int) -> Page | None:
        async with self.db.read() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return None
            query = select(tags.c.name).where(tags.c.repository_id == repo_id, live(now_ms()))
            if last:
                query = query.where(tags.c.name > last)
            names = list((await conn.scalars(query.order_by(tags.c.name).limit(limit + 1))).all())
        return _page(names, limit)

    async def catalog(self, last: str | None, limit: int, *, viewer: int | None, everything: bool) -> Page:
        """Repository names after `last`: all of them, or those account `viewer` may read."""
        query = select(repositories.c.name).where(repositories.c.state == "normal")
        if not everything:
            query = query.where(readable_by(viewer))
        if last:
            query = query.where(repositories.c.name > last)
        async with self.db.read() as conn:
            names = list((await conn.scalars(query.order_by(repositories.c.name).limit(limit + 1))).all())
        return _page(names, limit)

    async def referrers(self, repository: str, subject: str) -> list[ManifestRecord] | None:
        async with self.db.read() as conn:
            repo_id = await self._repository_id(conn, repository)
            if repo_id is None:
                return None
            rows = await conn.execute(
                select(*self._MANIFEST_COLUMNS)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifests.c.subject_digest == subject,
                    manifests.c.deleted_at.is_(None),
                )
                .order_by(manifests.c.created_at, manifests.c.id)
            )
            return [self._record(row) for row in rows]

    async def blob_size(self, digest: str) -> int | None:
        async with self.db.read() as conn:
            size = await conn.scalar(select(blobs.c.size).where(blobs.c.digest == digest))
        return None if size is None else int(size)

    async def add_placement(self, digest: str, location: str, key: str | None) -> bool:
        """Record that `location` holds the blob; False when the blob is no longer recorded."""
        async with self.db.write() as conn:
            blob_id = await conn.scalar(select(blobs.c.id).where(blobs.c.digest == digest))
            if blob_id is None:
                return False
            await conn.execute(
                self._insert_ignore(
                    placements,
                    {"blob_id": blob_id, "location": location, "key": key, "created_at": now_ms()},
                    ["blob_id", "location"],
                )
            )
            return True

    async def placement_counts(self) -> tuple[int, dict[str, int]]:
        """(blobs in all, blobs held per location)."""
        async with self.db.read() as conn:
            total = int(await conn.scalar(select(func.count()).select_from(blobs)) or 0)
            rows = await conn.execute(select(placements.c.location, func.count()).group_by(placements.c.location))
            return total, {row[0]: int(row[1]) for row in rows}

    async def ping(self) -> None:
        async with self.db.read() as conn:
            await conn.scalar(select(exists().where(repositories.c.id == 0)))


def _page(names: list[str], limit: int) -> Page:
    if len(names) > limit:
        names = names[:limit]
        return Page(items=names, next_last=names[-1] if names else None)
    return Page(items=names, next_last=None)
