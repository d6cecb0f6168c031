"""`/search`: find repositories, users, organizations and teams by part of their name.

Open to every caller; what each finds is what it may see (services/search.py):

- repositories the caller may read (anonymous callers: public ones; superusers with
  `super:user`: all). A token without `repo:read` finds public repositories only;
- user and organization names, for everyone (nothing else about them);
- teams of the organizations the caller is in (superusers with `super:user`: all); a token
  needs `org:admin` for them. Anonymous callers find no teams.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from dockyard.api.context import SECURITY, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import documented
from dockyard.api.schemas import Visibility
from dockyard.auth import Action
from dockyard.auth.authorize import acts_as_superuser, scope_allows
from dockyard.domain.users import SEARCH_KINDS, SearchHit, SearchKind
from dockyard.services.search import MAX_QUERY, SearchViewer, sort_key

router = APIRouter(tags=["search"], dependencies=SECURITY, responses=documented(400, 401, 422, 429))


class SearchResult(BaseModel):
    kind: SearchKind
    name: str = Field(description="Full name: NS/REPO, USER, ORG or ORG/TEAM.")
    namespace: str | None = Field(description="The namespace of a repository, the organization of a team.")
    description: str | None = Field(description="Of a repository or a team.")
    visibility: Visibility | None = Field(description="Of a repository.")

    @classmethod
    def of(cls, hit: SearchHit) -> SearchResult:
        return cls(
            kind=hit.kind,
            name=hit.name,
            namespace=hit.namespace,
            description=hit.description,
            visibility=None if hit.public is None else "public" if hit.public else "private",
        )


class SearchPage(Page[SearchResult]):
    """A page of results: repositories, then users, organizations and teams, each by name."""


@router.get("/search", summary="Search by name")
async def search(
    caller: CallerDep,
    paging: PagingDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, description="Part of the name (case-insensitive).")],
    kind: Annotated[
        list[SearchKind] | None, Query(description="Only results of these kinds (repeat for several).")
    ] = None,
) -> SearchPage:
    """Open to every caller; each finds only what it may see (docs/api.md)."""
    principal = caller.principal
    superuser = acts_as_superuser(principal)
    reads_repositories = scope_allows(principal, Action.CATALOG)
    reads_teams = scope_allows(principal, Action.NAMESPACE_READ)
    viewer = SearchViewer(
        account_id=principal.account_id if reads_repositories else None,
        all_repositories=superuser and reads_repositories,
        organization=principal.application_namespace if reads_repositories else None,
        teams_of=principal.account_id if reads_teams else None,
        all_teams=superuser and reads_teams,
    )
    after = paging.after("search", (int, str))
    rows = await caller.services.search.search(q, viewer, kinds=kind or SEARCH_KINDS, after=after, limit=paging.fetch)
    return paging.page(SearchPage, rows, key=sort_key, item=SearchResult.of)
