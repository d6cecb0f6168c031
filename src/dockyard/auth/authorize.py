"""The single authorization decision."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dockyard.domain.errors import Denied, Unauthorized


class Action(enum.StrEnum):
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    CATALOG = "catalog"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `name` is None for an anonymous caller."""

    name: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.name is None


ANONYMOUS = Principal()


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action applies to: a repository by name, or the registry (`repository=None`)."""

    repository: str | None = None


class AccessPolicy:
    """Decides actions. Until accounts exist, the embedded default is an open registry."""

    def __init__(self, *, anonymous_access: bool = True) -> None:
        self.anonymous_access = anonymous_access

    def allows(self, principal: Principal, action: Action, resource: Resource) -> bool:
        if principal.anonymous:
            return self.anonymous_access
        return True


def authorize(policy: AccessPolicy, principal: Principal, action: Action, resource: Resource) -> None:
    """Return when `principal` may perform `action` on `resource`; raise Unauthorized/Denied otherwise."""
    if policy.allows(principal, action, resource):
        return
    if principal.anonymous:
        raise Unauthorized("authentication required", detail={"action": action.value, "resource": resource.repository})
    raise Denied("requested access to the resource is denied", detail={"action": action.value})
