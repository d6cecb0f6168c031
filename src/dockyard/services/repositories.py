"""Repositories as the REST API manages them: listing with filters and keyset paging, settings,
creation and deletion, and paged reads of their tags, tag history, rules and referrers.

Writes go through the services that own them (accounts for creation and visibility, garbage
collection for deletion) so that every path records the same audit entries.
"""

from __future__ import annotations

from typing import Any

from dockyard.db.repositories_store import RepositoriesStore
from dockyard.domain.access import validate_namespace_name
from dockyard.domain.audit import Actor
from dockyard.domain.digest import Digest
from dockyard.domain.errors import NotFound
from dockyard.domain.models import Descriptor, HistoryRow, RepositoryInfo, RepositorySort, TagInfo
from dockyard.domain.names import validate_repository_name, validate_tag
from dockyard.services.accounts import AccountService
from dockyard.services.gc import GcService
from dockyard.services.manifests import referrer_descriptor

MAX_DESCRIPTION = 4096


class RepositoryService:
    def __init__(self, store: RepositoriesStore, accounts: AccountService, gc: GcService) -> None:
        self.store = store
        self.accounts = accounts
        self.gc = gc

    # -- repositories --------------------------------------------------------------------------

    async def listing(
        self,
        *,
        viewer: int | None,
        everything: bool,
        organization: str | None = None,
        namespace: str | None = None,
        contains: str | None = None,
        public: bool | None = None,
        sort: RepositorySort = "name",
        after: tuple[Any, ...] | None = None,
        limit: int,
    ) -> list[RepositoryInfo]:
        """Repositories account `viewer` may read (every one with `everything`), filtered; with
        `organization`, an OAuth application of that organization acting for itself reads its own."""
        if namespace is not None:
            validate_namespace_name(namespace)
        return await self.store.listing(
            viewer=viewer,
            everything=everything,
            organization=organization,
            namespace=namespace,
            contains=contains.lower() if contains else None,
            public=public,
            sort=sort,
            after=after,
            limit=limit,
        )

    async def get(self, name: str) -> RepositoryInfo:
        found = await self.store.get(validate_repository_name(name))
        if found is None:
            raise NotFound(f"no repository {name}")
        return found

    async def create(
        self, name: str, *, public: bool, description: str | None, creator: int | None, actor: Actor
    ) -> RepositoryInfo:
        await self.accounts.create_repository(
            name, public=public, creator=creator, description=description, actor=actor
        )
        return await self.get(name)

    async def update(
        self,
        name: str,
        *,
        public: bool | None = None,
        description: str | None = None,
        clear_description: bool = False,
        actor: Actor,
    ) -> RepositoryInfo:
        """Change visibility and/or description (`clear_description` removes it)."""
        await self.get(name)
        if public is not None:
            await self.accounts.set_visibility(name, public=public, actor=actor)
        if description is not None or clear_description:
            await self.store.set_description(name, description or None, actor=actor)
        return await self.get(name)

    async def delete(self, name: str, *, actor: Actor) -> None:
        """The repository disappears at once; a background job purges its contents."""
        await self.gc.delete_repository(validate_repository_name(name), actor=actor)

    # -- tags, history, rules, referrers -------------------------------------------------------

    async def tags(self, repository: str, *, after: str | None, limit: int) -> list[TagInfo]:
        return await self.store.tags(validate_repository_name(repository), after=after, limit=limit)

    async def tag(self, repository: str, tag: str) -> TagInfo:
        found = await self.store.tag(validate_repository_name(repository), validate_tag(tag))
        if found is None:
            raise NotFound(f"no tag {repository}:{tag}")
        return found

    async def history(
        self, repository: str, tag: str, *, after: tuple[int, int] | None, limit: int
    ) -> list[HistoryRow]:
        return await self.store.history(
            validate_repository_name(repository), validate_tag(tag), after=after, limit=limit
        )

    async def rules(self, repository: str, *, after: str | None, limit: int) -> list[str]:
        return await self.store.rules(validate_repository_name(repository), after=after, limit=limit)

    async def referrers(self, repository: str, subject: str, *, after: str | None, limit: int) -> list[Descriptor]:
        Digest.parse(subject)
        records = await self.store.referrers(validate_repository_name(repository), subject, after=after, limit=limit)
        return [referrer_descriptor(record) for record in records]
