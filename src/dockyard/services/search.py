"""Search by name across repositories, users, organizations and teams, in one keyset-paged list.

Results come kind by kind (repositories, users, organizations, teams: `SEARCH_KINDS`), each kind
by name; the sort key of a result is (the kind's position, its name). Who sees what is decided by
the entry point from the caller (`SearchViewer`):

- repositories: those the viewer may read (public ones for anonymous callers);
- users and organizations: their names, for everyone;
- teams: those of organizations in which the viewer is in a team; none for anonymous callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.db.search_store import SearchStore
from dockyard.domain.errors import InvalidRequest, PaginationInvalid
from dockyard.domain.users import SEARCH_KINDS, SearchHit, SearchKind

MAX_QUERY = 255


@dataclass(frozen=True, slots=True)
class SearchViewer:
    """What one caller may find."""

    account_id: int | None
    """Repositories this account may read (None: public ones only)."""
    all_repositories: bool = False
    organization: str | None = None
    """Every repository of this organization too (an OAuth application acting for itself)."""
    teams_of: int | None = None
    """Teams of the organizations this account is in (None: no teams)."""
    all_teams: bool = False


class SearchService:
    def __init__(self, store: SearchStore) -> None:
        self.store = store

    async def search(
        self,
        text: str,
        viewer: SearchViewer,
        *,
        kinds: Iterable[SearchKind] = SEARCH_KINDS,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[SearchHit]:
        """Up to `limit` results whose name contains `text` (case-insensitive), after `after`."""
        text = text.strip().lower()
        if not text or len(text) > MAX_QUERY or "\0" in text:
            raise InvalidRequest(f"search for 1 to {MAX_QUERY} characters (no NUL)")
        wanted = set(kinds)
        start, after_name = after if after is not None else (0, None)
        if not 0 <= start < len(SEARCH_KINDS):
            raise PaginationInvalid("the cursor is malformed")
        hits: list[SearchHit] = []
        for position, kind in enumerate(SEARCH_KINDS):
            if position < start or kind not in wanted:
                continue
            hits += await self._kind(kind, text, viewer, after_name if position == start else None, limit - len(hits))
            if len(hits) >= limit:
                break
        return hits

    async def _kind(
        self, kind: SearchKind, text: str, viewer: SearchViewer, after: str | None, limit: int
    ) -> list[SearchHit]:
        store = self.store
        if kind == "repository":
            return await store.repositories(
                text,
                viewer=viewer.account_id,
                everything=viewer.all_repositories,
                organization=viewer.organization,
                after=after,
                limit=limit,
            )
        if kind == "user":
            return await store.users(text, after=after, limit=limit)
        if kind == "organization":
            return await store.organizations(text, after=after, limit=limit)
        return await store.teams(text, member=viewer.teams_of, everything=viewer.all_teams, after=after, limit=limit)


def sort_key(hit: SearchHit) -> tuple[int, str]:
    """Where a result stands in a search's order (its cursor)."""
    return SEARCH_KINDS.index(hit.kind), hit.name
