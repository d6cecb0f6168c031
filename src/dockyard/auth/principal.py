"""The caller of a request."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.StrEnum):
    """Registry actions, named as in the Docker token protocol's scopes."""

    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    CATALOG = "catalog"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `account_id` is None for an anonymous caller.

    `grants` is set when the caller presented a registry bearer token: it may do exactly the
    (repository, action) pairs the token carries, nothing else.
    """

    account_id: int | None = None
    name: str | None = None
    kind: str | None = None
    superuser: bool = False
    epoch: int = 0
    app_token_id: int | None = None
    via: str = "anonymous"
    grants: frozenset[tuple[str, str]] | None = None

    @property
    def anonymous(self) -> bool:
        return self.account_id is None


ANONYMOUS = Principal()


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action applies to: a repository by name, or the registry (`repository=None`)."""

    repository: str | None = None
