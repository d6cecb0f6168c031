"""The API's authorization model over fixed facts: admin actions and token scopes (docs/api.md)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dockyard.auth import AccessPolicy, Action, Principal, Resource, authorize
from dockyard.db.accounts_store import AccessFacts
from dockyard.domain.access import ALL_SCOPES, Role, Scope, TeamRole, effective_scopes, parse_scopes, scopes_text
from dockyard.domain.errors import Denied, InvalidRequest, ScopeDenied, Unauthorized

pytestmark = pytest.mark.unit

USER = Principal(account_id=7, name="u", kind="user")
ROBOT = Principal(account_id=8, name="ns+bot", kind="robot")
SUPER = Principal(account_id=1, name="root", kind="user", superuser=True)
REPO = Resource(repository="ns/repo")


def facts(**overrides: object) -> AccessFacts:
    base: dict[str, object] = {
        "repository_exists": True,
        "public": False,
        "namespace_exists": True,
        "owns_namespace": False,
        "org_team_role": None,
        "granted": None,
    }
    base.update(overrides)
    return AccessFacts(**base)  # type: ignore[arg-type]


def policy(fixed: AccessFacts) -> AccessPolicy:
    async def reader(account: int | None, repository: str, namespace: str) -> AccessFacts:
        return fixed

    return AccessPolicy(reader)


def may(principal: Principal, action: Action, resource: Resource, fixed: AccessFacts) -> bool:
    return asyncio.run(policy(fixed).may(principal, action, resource))


def scoped(principal: Principal, *names: str) -> Principal:
    return dataclasses.replace(principal, scopes=parse_scopes(names))


@pytest.mark.parametrize(
    ("fixed", "admin", "create"),
    [
        (facts(), False, False),
        (facts(granted=Role.WRITE), False, False),
        (facts(granted=Role.ADMIN), True, False),
        (facts(owns_namespace=True), True, True),
        (facts(org_team_role=TeamRole.ADMIN), True, True),
        (facts(org_team_role=TeamRole.CREATOR), False, True),
        (facts(org_team_role=TeamRole.MEMBER, granted=Role.READ), False, False),
        (facts(public=True), False, False),
    ],
)
def test_repository_admin_and_create_follow_roles(fixed: AccessFacts, admin: bool, create: bool) -> None:
    assert may(USER, Action.REPO_ADMIN, REPO, fixed) is admin
    assert may(USER, Action.REPO_CREATE, REPO, fixed) is create


def test_namespace_admin_is_the_owner_or_an_org_admin() -> None:
    space = Resource(namespace="ns")
    assert may(USER, Action.NAMESPACE_ADMIN, space, facts(owns_namespace=True))
    assert may(USER, Action.NAMESPACE_ADMIN, space, facts(org_team_role=TeamRole.ADMIN))
    assert not may(USER, Action.NAMESPACE_ADMIN, space, facts(org_team_role=TeamRole.CREATOR))
    assert not may(Principal(), Action.NAMESPACE_ADMIN, space, facts(owns_namespace=True))
    assert may(SUPER, Action.NAMESPACE_ADMIN, space, facts())


def test_user_actions_are_on_ones_own_user_account_only() -> None:
    assert may(USER, Action.USER_READ, Resource(account="u"), facts())
    assert not may(USER, Action.USER_READ, Resource(account="other"), facts())
    assert not may(ROBOT, Action.USER_READ, Resource(account="ns+bot"), facts())
    assert not may(Principal(), Action.USER_READ, Resource(account=None), facts())
    assert may(SUPER, Action.SUPERUSER, Resource(), facts())
    assert not may(USER, Action.SUPERUSER, Resource(), facts())


def test_scopes_cap_what_roles_allow() -> None:
    owner = facts(owns_namespace=True)
    reader = scoped(USER, "repo:read")
    assert may(reader, Action.PULL, REPO, owner)
    for action in (Action.PUSH, Action.DELETE, Action.REPO_ADMIN, Action.REPO_CREATE):
        assert not may(reader, action, REPO, owner), action
    writer = scoped(USER, "repo:write")
    assert may(writer, Action.PULL, REPO, owner)  # repo:write includes repo:read
    assert may(writer, Action.PUSH, REPO, owner)
    assert not may(writer, Action.REPO_ADMIN, REPO, owner)
    assert asyncio.run(policy(owner).actions(reader, "ns/repo")) == {Action.PULL}
    # A scope never adds to the roles.
    assert not may(scoped(USER, "repo:admin"), Action.REPO_ADMIN, REPO, facts(granted=Role.WRITE))
    assert not may(scoped(USER, "user:read"), Action.CATALOG, Resource(), facts())
    assert may(scoped(USER, "user:admin"), Action.USER_READ, Resource(account="u"), facts())


def test_superuser_powers_need_the_super_user_scope() -> None:
    token = scoped(SUPER, "repo:admin", "repo:create")
    assert not may(token, Action.PULL, REPO, facts())
    assert not may(token, Action.SUPERUSER, Resource(), facts())
    # Without super:user it is an ordinary user: its own roles still count.
    assert may(token, Action.REPO_ADMIN, REPO, facts(owns_namespace=True))
    full = scoped(SUPER, "super:user", "repo:admin")
    assert may(full, Action.REPO_ADMIN, REPO, facts())
    assert may(full, Action.SUPERUSER, Resource(), facts())


def test_refusal_says_whether_the_scope_or_the_role_is_missing() -> None:
    owner = facts(owns_namespace=True)
    with pytest.raises(ScopeDenied) as scope:
        asyncio.run(authorize(policy(owner), scoped(USER, "repo:read"), Action.PUSH, REPO))
    assert scope.value.detail == {"action": "push", "repository": "ns/repo", "scope": "repo:write"}
    with pytest.raises(Denied) as role:
        asyncio.run(authorize(policy(facts()), scoped(USER, "repo:write"), Action.PUSH, REPO))
    assert not isinstance(role.value, ScopeDenied)
    with pytest.raises(ScopeDenied) as superuser:
        asyncio.run(authorize(policy(facts()), scoped(SUPER, "repo:admin"), Action.REPO_ADMIN, REPO))
    assert isinstance(superuser.value.detail, dict)
    assert superuser.value.detail["scope"] == "super:user"
    with pytest.raises(Unauthorized):
        asyncio.run(authorize(policy(facts()), Principal(), Action.REPO_ADMIN, REPO))


def test_scope_names() -> None:
    assert parse_scopes(["repo:read user:read", "repo:write,org:admin"]) == {
        Scope.REPO_READ,
        Scope.USER_READ,
        Scope.REPO_WRITE,
        Scope.ORG_ADMIN,
    }
    assert effective_scopes({Scope.REPO_ADMIN}) == {Scope.REPO_ADMIN, Scope.REPO_WRITE, Scope.REPO_READ}
    assert scopes_text(ALL_SCOPES).split()[0] == "repo:read"
    with pytest.raises(InvalidRequest, match="unknown scope"):
        parse_scopes(["repo:everything"])
