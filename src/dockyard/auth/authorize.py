"""The single authorization decision: `authorize(policy, principal, action, resource)`.

Two things decide, in this order:

1. the principal's **roles**, from the account data (repository grants, team roles, namespace
   ownership, public visibility, the superuser flag) — or, for a registry bearer token, exactly
   the (repository, action) pairs it carries;
2. the principal's **token scopes**, when it presented a scoped token: each action needs one scope
   (`SCOPE_OF`), and a token without it may not perform the action whatever the roles allow. The
   superuser flag itself counts only with the `super:user` scope.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from dockyard.auth.principal import ANONYMOUS, REGISTRY_ACTIONS, Action, Principal, Resource
from dockyard.db.accounts_store import AccessFacts
from dockyard.domain.access import Role, Scope, TeamRole, effective_scopes
from dockyard.domain.errors import Denied, InsufficientScope, ScopeDenied, Unauthorized
from dockyard.domain.names import namespace_of

__all__ = ["ANONYMOUS", "SCOPE_OF", "AccessPolicy", "Action", "Principal", "Resource", "authorize"]

#: (account id or None, repository, namespace) -> the facts that decide access.
FactsReader = Callable[[int | None, str, str], Awaitable[AccessFacts]]

#: The scope a scoped token needs for each action.
SCOPE_OF: dict[Action, Scope] = {
    Action.PULL: Scope.REPO_READ,
    Action.CATALOG: Scope.REPO_READ,
    Action.PUSH: Scope.REPO_WRITE,
    Action.DELETE: Scope.REPO_WRITE,
    Action.REPO_ADMIN: Scope.REPO_ADMIN,
    Action.REPO_CREATE: Scope.REPO_CREATE,
    Action.NAMESPACE_ADMIN: Scope.ORG_ADMIN,
    Action.NAMESPACE_READ: Scope.ORG_ADMIN,
    Action.USER_READ: Scope.USER_READ,
    Action.USER_ADMIN: Scope.USER_ADMIN,
    Action.SUPERUSER: Scope.SUPER_USER,
}

#: Every action on a repository, held by a superuser.
_REPOSITORY_ACTIONS = frozenset({*REGISTRY_ACTIONS, Action.REPO_ADMIN, Action.REPO_CREATE})
_CREATORS = (TeamRole.CREATOR, TeamRole.ADMIN)


def scope_allows(principal: Principal, action: Action) -> bool:
    """Whether the principal's token scopes (if any) cover `action`."""
    return principal.scopes is None or SCOPE_OF[action] in effective_scopes(principal.scopes)


def acts_as_superuser(principal: Principal) -> bool:
    """A superuser, and (for a scoped token) holding `super:user`."""
    return principal.superuser and scope_allows(principal, Action.SUPERUSER)


class AccessPolicy:
    """Computes what a principal may do from the account data and its token's scopes."""

    def __init__(self, facts: FactsReader) -> None:
        self._facts = facts

    async def actions(self, principal: Principal, repository: str) -> frozenset[Action]:
        """The registry actions (pull, push, delete) `principal` holds on `repository` (which may
        not exist yet), within its token's scopes."""
        held = await self._repository_actions(principal, repository)
        return frozenset(action for action in held & REGISTRY_ACTIONS if scope_allows(principal, action))

    async def _repository_actions(self, principal: Principal, repository: str) -> frozenset[Action]:
        """Every action the principal's roles give it on `repository` (scopes not applied)."""
        if acts_as_superuser(principal):
            return _REPOSITORY_ACTIONS
        facts = await self._facts_for(principal, repository, namespace_of(repository))
        role = facts.granted
        if facts.owns_namespace or facts.org_team_role is TeamRole.ADMIN:
            role = Role.ADMIN
        if facts.public:
            role = max(role or Role.READ, Role.READ)
        held: set[Action] = set()
        if role is not None:
            held.add(Action.PULL)
        may_create = facts.owns_namespace or facts.org_team_role in _CREATORS
        if facts.repository_exists:
            if role is not None and role >= Role.WRITE:
                held |= {Action.PUSH, Action.DELETE}
            if role is Role.ADMIN:
                held.add(Action.REPO_ADMIN)
        elif may_create:
            held |= {Action.PULL, Action.PUSH, Action.DELETE}
        if may_create:
            held.add(Action.REPO_CREATE)
        return frozenset(held)

    async def _facts_for(self, principal: Principal, repository: str, namespace: str) -> AccessFacts:
        """The account's facts; an OAuth2 application acting as itself is its organization's admin."""
        facts = await self._facts(principal.account_id, repository, namespace)
        if principal.application_namespace is not None and principal.application_namespace == namespace:
            return dataclasses.replace(facts, org_team_role=TeamRole.ADMIN)
        return facts

    async def may(self, principal: Principal, action: Action, resource: Resource) -> bool:
        if action is Action.CATALOG:
            # The catalog is open to every caller; its listing is filtered by what each may read.
            return resource.repository is None and scope_allows(principal, action)
        if principal.grants is not None:
            # A registry bearer token: exactly the registry actions it carries.
            return resource.repository is not None and (resource.repository, action.value) in principal.grants
        if not scope_allows(principal, action):
            return False
        if action is Action.SUPERUSER:
            return acts_as_superuser(principal)
        if action in (Action.USER_READ, Action.USER_ADMIN):
            return principal.kind == "user" and resource.account is not None and resource.account == principal.name
        if action is Action.NAMESPACE_ADMIN:
            if resource.namespace is None or principal.anonymous:
                return False
            if acts_as_superuser(principal):
                return True
            facts = await self._facts_for(principal, "", resource.namespace)
            return facts.owns_namespace or facts.org_team_role is TeamRole.ADMIN
        if action is Action.NAMESPACE_READ:
            if principal.anonymous:
                return False
            if resource.namespace is None or acts_as_superuser(principal):
                # Without a namespace: the caller's organizations (the listing is filtered).
                return True
            facts = await self._facts_for(principal, "", resource.namespace)
            return facts.owns_namespace or facts.org_team_role is not None
        if resource.repository is None:
            return False
        return action in await self._repository_actions(principal, resource.repository)


async def authorize(policy: AccessPolicy, principal: Principal, action: Action, resource: Resource) -> None:
    """Return when `principal` may perform `action` on `resource`; raise otherwise.

    Anonymous callers get Unauthorized (401 with a challenge); registry bearer tokens lacking the
    action get InsufficientScope (401 with a challenge, so clients fetch a token for it); a scoped
    token whose roles would allow the action but whose scopes do not gets ScopeDenied (403); other
    authenticated callers get Denied (403).
    """
    if await policy.may(principal, action, resource):
        return
    detail: dict[str, str] = {"action": action.value}
    for field in ("repository", "namespace", "account"):
        value = getattr(resource, field)
        if value is not None:
            detail[field] = value
    if principal.anonymous and principal.grants is None:
        raise Unauthorized("authentication required", detail=detail)
    if principal.grants is not None:
        raise InsufficientScope("requested access to the resource is denied", detail=detail)
    if principal.scopes is not None and await policy.may(dataclasses.replace(principal, scopes=None), action, resource):
        # The scope the action needs, or else the superuser flag is what the scopes leave out.
        scope = (SCOPE_OF[action] if not scope_allows(principal, action) else Scope.SUPER_USER).value
        raise ScopeDenied(f"the token's scopes do not include {scope}", detail={**detail, "scope": scope})
    raise Denied("requested access to the resource is denied", detail=detail)
