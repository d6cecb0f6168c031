"""The caller of a request, what it asks to do, and on what."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dockyard.domain.access import Scope


class Action(enum.StrEnum):
    """What a principal asks to do.

    The first four are registry actions, named as in the Docker token protocol's scopes; the others
    are the administrative actions of the REST API.
    """

    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    CATALOG = "catalog"
    REPO_ADMIN = "repo-admin"
    """Change a repository's settings, rules and permissions; delete it (role admin)."""
    REPO_CREATE = "repo-create"
    """Create a repository (namespace owner, org team creator or admin)."""
    NAMESPACE_ADMIN = "namespace-admin"
    """Administer a user or organization namespace (its owner, an org team admin)."""
    NAMESPACE_READ = "namespace-read"
    """Read a namespace's organization data: teams and members (its owner, any member of a team
    of the organization). Without a namespace: list the organizations the caller belongs to."""
    USER_READ = "user-read"
    """Read one's own user account."""
    USER_ADMIN = "user-admin"
    """Change one's own user account (password, tokens)."""
    SUPERUSER = "superuser"
    """Administer the registry itself (users, every namespace)."""


#: Registry actions on a repository (what registry bearer tokens carry).
REGISTRY_ACTIONS = frozenset({Action.PULL, Action.PUSH, Action.DELETE})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `account_id` is None for an anonymous caller.

    `grants` is set when the caller presented a registry bearer token: it may do exactly the
    (repository, action) pairs the token carries, nothing else.

    `scopes` is set when the caller presented a scoped token (an app token, an OAuth2 access
    token): it caps what the account's roles allow. None means no cap (a password, a session, a
    robot token).

    `oauth_app` is the client id of the OAuth2 application acting, with `oauth_token_id` the
    access token it presented: for the user who granted it, or — client credentials, with
    `application_namespace` set and no account — for itself. Such an application holds an
    organization admin's roles in its own organization and an anonymous caller's elsewhere.
    """

    account_id: int | None = None
    name: str | None = None
    kind: str | None = None
    superuser: bool = False
    epoch: int = 0
    app_token_id: int | None = None
    via: str = "anonymous"
    grants: frozenset[tuple[str, str]] | None = None
    scopes: frozenset[Scope] | None = None
    oauth_app: str | None = None
    oauth_token_id: int | None = None
    application_namespace: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.account_id is None and self.application_namespace is None


ANONYMOUS = Principal()


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action applies to.

    - `repository`: a repository by name (which may not exist yet, for a push or a create);
    - `namespace`: a user or organization namespace by name;
    - `account`: a user account by name;
    - nothing: the registry itself (the catalog, superuser actions).
    """

    repository: str | None = None
    namespace: str | None = None
    account: str | None = None
