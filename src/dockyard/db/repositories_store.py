"""Reads that browse repositories for the REST API, each a page in keyset order, and the
repository description.

Every listing takes the sort key of the last item seen (`after`) and a `limit`, and returns at
most `limit` items in a stable total order (ties broken by id), so a page never repeats or skips
an item however the data changes between requests.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.accounts_store import readable_by
from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import immutability_rules, manifests, namespaces, repositories, tags
from dockyard.db.tags_store import live
from dockyard.domain.audit import Actor
from dockyard.domain.errors import NotFound
from dockyard.domain.models import HistoryRow, ManifestRecord, RepositoryInfo, RepositorySort, TagInfo
from dockyard.domain.names import namespace_of

_REPOSITORY_COLUMNS = (
    repositories.c.id,
    repositories.c.name,
    namespaces.c.name.label("namespace"),
    repositories.c.visibility,
    repositories.c.description,
    repositories.c.created_at,
)


def _repository(row: Any) -> RepositoryInfo:
    return RepositoryInfo(
        id=int(row.id),
        name=row.name,
        namespace=row.namespace,
        public=row.visibility == "public",
        description=row.description,
        created_at=int(row.created_at),
    )


def _after(columns: tuple[Any, ...], values: tuple[Any, ...], *, descending: bool) -> Any:
    """Rows strictly after `values` in the (lexicographic) order of `columns`."""
    first, *rest = columns
    head = values[0]
    beyond = first < head if descending else first > head
    if not rest:
        return beyond
    return or_(beyond, and_(first == head, _after(tuple(rest), values[1:], descending=descending)))


def _tag_query(repo_id: int, now: int) -> Any:
    return (
        select(
            tags.c.name,
            tags.c.start_at,
            tags.c.expires_at,
            tags.c.immutable,
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.size,
        )
        .join(manifests, manifests.c.id == tags.c.manifest_id)
        .where(tags.c.repository_id == repo_id, live(now))
    )


def _tag(row: Any) -> TagInfo:
    return TagInfo(
        name=row.name,
        digest=row.digest,
        media_type=row.media_type,
        size=int(row.size),
        start_at=int(row.start_at),
        expires_at=row.expires_at,
        immutable=bool(row.immutable),
    )


class RepositoriesStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    @staticmethod
    async def _repo_id(conn: AsyncConnection, name: str) -> int:
        repo_id = await conn.scalar(
            select(repositories.c.id).where(repositories.c.name == name, repositories.c.state == "normal")
        )
        if repo_id is None:
            raise NotFound(f"no repository {name}")
        return int(repo_id)

    # -- repositories --------------------------------------------------------------------------

    async def listing(
        self,
        *,
        viewer: int | None,
        everything: bool,
        organization: str | None = None,
        namespace: str | None,
        contains: str | None,
        public: bool | None,
        sort: RepositorySort,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[RepositoryInfo]:
        """Repositories `viewer` (or an application of `organization`) may read (all with
        `everything`), filtered, in `sort` order."""
        query = (
            select(*_REPOSITORY_COLUMNS)
            .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
            .where(repositories.c.state == "normal")
        )
        if not everything:
            query = query.where(readable_by(viewer, organization))
        if namespace is not None:
            query = query.where(namespaces.c.name == namespace)
        if contains:
            query = query.where(repositories.c.name.contains(contains, autoescape=True))
        if public is not None:
            query = query.where(repositories.c.visibility == ("public" if public else "private"))
        descending = sort.startswith("-")
        columns: tuple[Any, ...] = (
            (repositories.c.name,) if sort.endswith("name") else (repositories.c.created_at, repositories.c.id)
        )
        if after is not None:
            query = query.where(_after(columns, after, descending=descending))
        order = [column.desc() if descending else column.asc() for column in columns]
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(*order).limit(limit))
            return [_repository(row) for row in rows]

    async def get(self, name: str) -> RepositoryInfo | None:
        query = (
            select(*_REPOSITORY_COLUMNS)
            .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
            .where(repositories.c.name == name, repositories.c.state == "normal")
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _repository(row)

    async def set_description(self, name: str, description: str | None, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_id = await self._repo_id(conn, name)
            old = await conn.scalar(select(repositories.c.description).where(repositories.c.id == repo_id))
            if old == description:
                return
            await conn.execute(update(repositories).where(repositories.c.id == repo_id).values(description=description))
            await self.audit(
                conn,
                "repository.description",
                actor,
                namespace=namespace_of(name),
                repository=name,
                metadata={"old": old, "new": description},
            )

    # -- tags ----------------------------------------------------------------------------------

    async def tags(self, repository: str, *, after: str | None, limit: int) -> list[TagInfo]:
        """Live tags after `after`, by name, with what they point at."""
        async with self.db.read() as conn:
            query = _tag_query(await self._repo_id(conn, repository), now_ms())
            if after is not None:
                query = query.where(tags.c.name > after)
            rows = await conn.execute(query.order_by(tags.c.name).limit(limit))
            return [_tag(row) for row in rows]

    async def tag(self, repository: str, tag: str) -> TagInfo | None:
        """The live tag `tag`, None when there is none."""
        async with self.db.read() as conn:
            query = _tag_query(await self._repo_id(conn, repository), now_ms())
            row = (await conn.execute(query.where(tags.c.name == tag))).first()
        return None if row is None else _tag(row)

    async def history(
        self, repository: str, tag: str, *, after: tuple[int, int] | None, limit: int
    ) -> list[HistoryRow]:
        """History rows of `tag`, newest first, after `(start_at, id)`."""
        async with self.db.read() as conn:
            repo_id = await self._repo_id(conn, repository)
            query = (
                select(
                    tags.c.id, tags.c.start_at, tags.c.end_at, tags.c.expires_at, tags.c.immutable, manifests.c.digest
                )
                .join(manifests, manifests.c.id == tags.c.manifest_id)
                .where(tags.c.repository_id == repo_id, tags.c.name == tag)
            )
            if after is not None:
                query = query.where(_after((tags.c.start_at, tags.c.id), after, descending=True))
            rows = await conn.execute(query.order_by(tags.c.start_at.desc(), tags.c.id.desc()).limit(limit))
            return [
                HistoryRow(int(r.id), r.digest, int(r.start_at), r.end_at, r.expires_at, bool(r.immutable))
                for r in rows
            ]

    async def rules(self, repository: str, *, after: str | None, limit: int) -> list[str]:
        """Immutability rule patterns after `after`, in order."""
        async with self.db.read() as conn:
            repo_id = await self._repo_id(conn, repository)
            query = select(immutability_rules.c.pattern).where(immutability_rules.c.repository_id == repo_id)
            if after is not None:
                query = query.where(immutability_rules.c.pattern > after)
            return list(await conn.scalars(query.order_by(immutability_rules.c.pattern).limit(limit)))

    # -- manifests -----------------------------------------------------------------------------

    async def referrers(self, repository: str, subject: str, *, after: str | None, limit: int) -> list[ManifestRecord]:
        """Manifests of `repository` whose subject is `subject`, by digest, after `after`."""
        async with self.db.read() as conn:
            repo_id = await self._repo_id(conn, repository)
            query = select(
                manifests.c.digest,
                manifests.c.media_type,
                manifests.c.size,
                manifests.c.content,
                manifests.c.subject_digest,
                manifests.c.artifact_type,
            ).where(
                manifests.c.repository_id == repo_id,
                manifests.c.subject_digest == subject,
                manifests.c.deleted_at.is_(None),
            )
            if after is not None:
                query = query.where(manifests.c.digest > after)
            rows = await conn.execute(query.order_by(manifests.c.digest).limit(limit))
            return [
                ManifestRecord(r.digest, r.media_type, int(r.size), bytes(r.content), r.subject_digest, r.artifact_type)
                for r in rows
            ]
