"""The single authorization decision: `authorize(policy, principal, action, resource)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dockyard.auth.principal import ANONYMOUS, Action, Principal, Resource
from dockyard.db.accounts_store import AccessFacts
from dockyard.domain.access import Role, TeamRole
from dockyard.domain.errors import Denied, InsufficientScope, Unauthorized
from dockyard.domain.names import namespace_of

__all__ = ["ANONYMOUS", "AccessPolicy", "Action", "Principal", "Resource", "authorize"]

_ALL = frozenset(Action)

#: (account id or None, repository, namespace) -> the facts that decide access.
FactsReader = Callable[[int | None, str, str], Awaitable[AccessFacts]]


class AccessPolicy:
    """Computes what a principal may do on a repository from the account data."""

    def __init__(self, facts: FactsReader) -> None:
        self._facts = facts

    async def actions(self, principal: Principal, repository: str) -> frozenset[Action]:
        """Every action `principal` holds on `repository` (which may not exist yet)."""
        if principal.superuser:
            return _ALL
        facts = await self._facts(principal.account_id, repository, namespace_of(repository))
        role = facts.granted
        if facts.owns_namespace or facts.org_team_role is TeamRole.ADMIN:
            role = Role.ADMIN
        if facts.public:
            role = max(role or Role.READ, Role.READ)
        held: set[Action] = set()
        if role is not None:
            held.add(Action.PULL)
        if facts.repository_exists:
            if role is not None and role >= Role.WRITE:
                held |= {Action.PUSH, Action.DELETE}
        elif facts.owns_namespace or facts.org_team_role in (TeamRole.CREATOR, TeamRole.ADMIN):
            held |= {Action.PULL, Action.PUSH, Action.DELETE}
        return frozenset(held)

    async def may(self, principal: Principal, action: Action, resource: Resource) -> bool:
        if resource.repository is None:
            # The catalog is open to every caller; its listing is filtered by what each may read.
            return action is Action.CATALOG
        if principal.grants is not None:
            return (resource.repository, action.value) in principal.grants
        return action in await self.actions(principal, resource.repository)


async def authorize(policy: AccessPolicy, principal: Principal, action: Action, resource: Resource) -> None:
    """Return when `principal` may perform `action` on `resource`; raise otherwise.

    Anonymous callers get Unauthorized (401 with a challenge); bearer tokens lacking the action
    get InsufficientScope (401 with a challenge, so clients fetch a token for it); other
    authenticated callers get Denied (403).
    """
    if await policy.may(principal, action, resource):
        return
    detail = {"action": action.value, "repository": resource.repository}
    if principal.anonymous and principal.grants is None:
        raise Unauthorized("authentication required", detail=detail)
    if principal.grants is not None:
        raise InsufficientScope("requested access to the resource is denied", detail=detail)
    raise Denied("requested access to the resource is denied", detail=detail)
