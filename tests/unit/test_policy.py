"""AccessPolicy over fixed facts: the role rules of docs/identity.md."""

from __future__ import annotations

import asyncio

import pytest

from dockyard.auth import AccessPolicy, Action, Principal, Resource, authorize
from dockyard.db.accounts_store import AccessFacts
from dockyard.domain.access import Role, TeamRole
from dockyard.domain.errors import Denied, InsufficientScope, Unauthorized

pytestmark = pytest.mark.unit

USER = Principal(account_id=7, name="u", kind="user")
SUPER = Principal(account_id=1, name="root", kind="user", superuser=True)
PULL, PUSH, DELETE = Action.PULL, Action.PUSH, Action.DELETE


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


def actions(principal: Principal, fixed: AccessFacts) -> set[Action]:
    async def reader(account: int | None, repository: str, namespace: str) -> AccessFacts:
        assert namespace == repository.split("/", maxsplit=1)[0]
        return fixed

    return set(asyncio.run(AccessPolicy(reader).actions(principal, "ns/repo")))


@pytest.mark.parametrize(
    ("principal", "fixed", "expected"),
    [
        (Principal(), facts(), set()),
        (Principal(), facts(public=True), {PULL}),
        (USER, facts(), set()),
        (USER, facts(public=True), {PULL}),
        (USER, facts(granted=Role.READ), {PULL}),
        (USER, facts(granted=Role.WRITE), {PULL, PUSH, DELETE}),
        (USER, facts(granted=Role.ADMIN), {PULL, PUSH, DELETE}),
        (USER, facts(owns_namespace=True), {PULL, PUSH, DELETE}),
        (USER, facts(org_team_role=TeamRole.ADMIN), {PULL, PUSH, DELETE}),
        (USER, facts(org_team_role=TeamRole.CREATOR), set()),
        (USER, facts(org_team_role=TeamRole.MEMBER, granted=Role.READ), {PULL}),
        # Repositories that do not exist yet: only creators may push (create) them.
        (USER, facts(repository_exists=False), set()),
        (USER, facts(repository_exists=False, granted=None, org_team_role=TeamRole.MEMBER), set()),
        (USER, facts(repository_exists=False, org_team_role=TeamRole.CREATOR), {PULL, PUSH, DELETE}),
        (USER, facts(repository_exists=False, owns_namespace=True), {PULL, PUSH, DELETE}),
        (Principal(), facts(repository_exists=False), set()),
        (SUPER, facts(), {PULL, PUSH, DELETE}),
    ],
)
def test_actions(principal: Principal, fixed: AccessFacts, expected: set[Action]) -> None:
    assert actions(principal, fixed) == expected


def _authorize(principal: Principal, action: Action, fixed: AccessFacts) -> None:
    async def reader(account: int | None, repository: str, namespace: str) -> AccessFacts:
        return fixed

    asyncio.run(authorize(AccessPolicy(reader), principal, action, Resource("ns/repo")))


def test_refusals_by_kind_of_caller() -> None:
    with pytest.raises(Unauthorized) as anonymous:
        _authorize(Principal(), PULL, facts())
    assert not isinstance(anonymous.value, InsufficientScope)
    with pytest.raises(Denied):
        _authorize(USER, PUSH, facts(granted=Role.READ))
    token = Principal(account_id=7, grants=frozenset({("ns/repo", "pull")}))
    _authorize(token, PULL, facts())
    with pytest.raises(InsufficientScope):
        _authorize(token, PUSH, facts(granted=Role.ADMIN))
    other = Principal(account_id=7, grants=frozenset({("ns/other", "push")}))
    with pytest.raises(InsufficientScope):
        _authorize(other, PUSH, facts(granted=Role.ADMIN))
