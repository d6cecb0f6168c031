"""Search queries: names containing a text, one kind at a time, each a keyset page by name.

What each viewer may find is decided by the caller (services/search.py); these queries only
apply it: repositories through `readable_by`, teams through organization membership.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dockyard.db.accounts_store import readable_by
from dockyard.db.engine import Database
from dockyard.db.tables import accounts, namespaces, repositories, team_members, teams
from dockyard.domain.users import SearchHit


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def repositories(
        self,
        text: str,
        *,
        viewer: int | None,
        everything: bool,
        organization: str | None = None,
        after: str | None,
        limit: int,
    ) -> list[SearchHit]:
        """Repositories whose name contains `text` that `viewer` (or an application of
        `organization`) may read (all with `everything`)."""
        query = (
            select(
                repositories.c.name,
                namespaces.c.name.label("namespace"),
                repositories.c.description,
                repositories.c.visibility,
            )
            .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
            .where(repositories.c.state == "normal", repositories.c.name.contains(text, autoescape=True))
        )
        if not everything:
            query = query.where(readable_by(viewer, organization))
        rows = await self._page(query, repositories.c.name, after, limit)
        return [
            SearchHit(
                kind="repository",
                name=row.name,
                namespace=row.namespace,
                description=row.description,
                public=row.visibility == "public",
            )
            for row in rows
        ]

    async def users(self, text: str, *, after: str | None, limit: int) -> list[SearchHit]:
        """User accounts (not robots) whose name contains `text`."""
        query = select(accounts.c.name).where(
            accounts.c.kind == "user", accounts.c.name.contains(text, autoescape=True)
        )
        return [SearchHit(kind="user", name=row.name) for row in await self._page(query, accounts.c.name, after, limit)]

    async def organizations(self, text: str, *, after: str | None, limit: int) -> list[SearchHit]:
        query = select(namespaces.c.name).where(
            namespaces.c.kind == "org", namespaces.c.name.contains(text, autoescape=True)
        )
        rows = await self._page(query, namespaces.c.name, after, limit)
        return [SearchHit(kind="organization", name=row.name) for row in rows]

    async def teams(
        self, text: str, *, member: int | None, everything: bool, after: str | None, limit: int
    ) -> list[SearchHit]:
        """Teams whose full name `ORG/TEAM` contains `text`, of the organizations where account
        `member` is in a team (of every organization with `everything`)."""
        full_name = namespaces.c.name + "/" + teams.c.name
        query = (
            select(full_name.label("full_name"), namespaces.c.name.label("namespace"), teams.c.description)
            .select_from(teams)
            .join(namespaces, namespaces.c.id == teams.c.namespace_id)
            .where(full_name.contains(text, autoescape=True))
        )
        if not everything:
            if member is None:
                return []
            organizations = (
                select(teams.c.namespace_id)
                .join(team_members, team_members.c.team_id == teams.c.id)
                .where(team_members.c.account_id == member)
            )
            query = query.where(teams.c.namespace_id.in_(organizations))
        rows = await self._page(query, full_name, after, limit)
        return [
            SearchHit(kind="team", name=row.full_name, namespace=row.namespace, description=row.description)
            for row in rows
        ]

    async def _page(self, query: Any, key: Any, after: str | None, limit: int) -> list[Any]:
        if after is not None:
            query = query.where(key > after)
        async with self.db.read() as conn:
            return list(await conn.execute(query.order_by(key).limit(limit)))
