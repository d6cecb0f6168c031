"""Reading an organization (`namespace-read`) over fixed facts: membership of any team, the
namespace's owner, or a superuser; a token needs `org:admin` (docs/api.md)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dockyard.auth import AccessPolicy, Action, Principal, Resource, authorize
from dockyard.db.accounts_store import AccessFacts
from dockyard.domain.access import TeamRole, parse_scopes
from dockyard.domain.errors import Denied, ScopeDenied, Unauthorized

pytestmark = pytest.mark.unit

USER = Principal(account_id=7, name="u", kind="user")
ROBOT = Principal(account_id=8, name="ns+bot", kind="robot")
SUPER = Principal(account_id=1, name="root", kind="user", superuser=True)
ORG = Resource(namespace="ns")


def facts(*, owns: bool = False, role: TeamRole | None = None) -> AccessFacts:
    return AccessFacts(
        repository_exists=False,
        public=False,
        namespace_exists=True,
        owns_namespace=owns,
        org_team_role=role,
        granted=None,
    )


def policy(fixed: AccessFacts) -> AccessPolicy:
    async def reader(account: int | None, repository: str, namespace: str) -> AccessFacts:
        return fixed

    return AccessPolicy(reader)


def may(principal: Principal, resource: Resource, fixed: AccessFacts) -> bool:
    return asyncio.run(policy(fixed).may(principal, Action.NAMESPACE_READ, resource))


@pytest.mark.parametrize("role", list(TeamRole))
def test_any_team_member_reads_the_organization_but_only_admins_administer_it(role: TeamRole) -> None:
    assert may(USER, ORG, facts(role=role))
    assert may(ROBOT, ORG, facts(role=role))
    admin = asyncio.run(policy(facts(role=role)).may(USER, Action.NAMESPACE_ADMIN, ORG))
    assert admin is (role is TeamRole.ADMIN)


def test_outsiders_and_anonymous_callers_read_nothing() -> None:
    assert not may(USER, ORG, facts())
    assert not may(ROBOT, ORG, facts())
    assert not may(Principal(), ORG, facts(role=TeamRole.ADMIN))
    assert may(USER, ORG, facts(owns=True))
    assert may(SUPER, ORG, facts())


def test_listing_needs_an_account_and_the_scope() -> None:
    assert may(USER, Resource(), facts())
    assert may(ROBOT, Resource(), facts())
    assert not may(Principal(), Resource(), facts())
    assert not may(dataclasses.replace(USER, scopes=parse_scopes(["repo:read"])), Resource(), facts())
    assert may(dataclasses.replace(USER, scopes=parse_scopes(["org:admin"])), Resource(), facts())


def test_refusals_name_what_is_missing() -> None:
    member = policy(facts(role=TeamRole.MEMBER))
    scoped = dataclasses.replace(USER, scopes=parse_scopes(["user:read"]))
    with pytest.raises(ScopeDenied) as refused:
        asyncio.run(authorize(member, scoped, Action.NAMESPACE_READ, ORG))
    assert isinstance(refused.value.detail, dict)
    assert refused.value.detail["scope"] == "org:admin"
    with pytest.raises(Denied):
        asyncio.run(authorize(policy(facts()), USER, Action.NAMESPACE_READ, ORG))
    with pytest.raises(Unauthorized):
        asyncio.run(authorize(member, Principal(), Action.NAMESPACE_READ, ORG))
    # The superuser flag counts only with super:user.
    no_su = dataclasses.replace(SUPER, scopes=parse_scopes(["org:admin"]))
    with pytest.raises(ScopeDenied) as refused:
        asyncio.run(authorize(policy(facts()), no_su, Action.NAMESPACE_READ, ORG))
    assert isinstance(refused.value.detail, dict)
    assert refused.value.detail["scope"] == "super:user"
