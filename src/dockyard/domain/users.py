"""Immutable records of user accounts, starred repositories and search results, as services hand
them to entry points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dockyard.domain.models import RepositoryInfo

#: What a search result is; also the order in which a search lists them.
SearchKind = Literal["repository", "user", "organization", "team"]
SEARCH_KINDS: tuple[SearchKind, ...] = ("repository", "user", "organization", "team")


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user account as a superuser manages it (never its secrets)."""

    id: int
    name: str
    email: str | None
    enabled: bool
    superuser: bool
    """The account's own flag (`auth.superusers` in the configuration may add more)."""
    created_at: int
    """Milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What a superuser changes on a user; None leaves a field as it is."""

    email: str | None = None
    clear_email: bool = False
    enabled: bool | None = None
    superuser: bool | None = None
    password_hash: str | None = None


@dataclass(frozen=True, slots=True)
class StarredRepository:
    repository: RepositoryInfo
    starred_at: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result. `name` is the full name: `NS/REPO`, `USER`, `ORG`, `ORG/TEAM`."""

    kind: SearchKind
    name: str
    namespace: str | None = None
    """The namespace of a repository, the organization of a team."""
    description: str | None = None
    public: bool | None = None
    """Repositories only."""
