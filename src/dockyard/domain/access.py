"""Roles, account kinds and the names of principals."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from dockyard.domain.errors import InvalidRequest


class Role(enum.IntEnum):
    """Repository roles, ordered: a stronger role includes the weaker ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise InvalidRequest(f"role must be read, write or admin, not {text!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class TeamRole(enum.StrEnum):
    MEMBER = "member"
    CREATOR = "creator"
    ADMIN = "admin"

    @classmethod
    def parse(cls, text: str) -> TeamRole:
        try:
            return cls(text.lower())
        except ValueError:
            raise InvalidRequest(f"team role must be member, creator or admin, not {text!r}") from None


OWNERS_TEAM = "owners"


class Scope(enum.StrEnum):
    """What a token may be used for. A token's scopes cap what its principal may do; a credential
    without scopes (a password, a robot token) is capped only by the principal's roles."""

    REPO_READ = "repo:read"
    REPO_WRITE = "repo:write"
    REPO_ADMIN = "repo:admin"
    REPO_CREATE = "repo:create"
    ORG_ADMIN = "org:admin"
    USER_READ = "user:read"
    USER_ADMIN = "user:admin"
    SUPER_USER = "super:user"

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls(text.strip().lower())
        except ValueError:
            known = ", ".join(scope.value for scope in cls)
            raise InvalidRequest(f"unknown scope {text!r} (known: {known})") from None


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)

#: A scope includes the weaker scopes of the same kind (`repo:write` lets a client pull, too).
_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.REPO_ADMIN: frozenset({Scope.REPO_WRITE, Scope.REPO_READ}),
    Scope.REPO_WRITE: frozenset({Scope.REPO_READ}),
    Scope.USER_ADMIN: frozenset({Scope.USER_READ}),
}


def parse_scopes(texts: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names (each item may hold several, separated by spaces or commas)."""
    return frozenset(Scope.parse(word) for text in texts for word in re.split(r"[\s,]+", text) if word)


def effective_scopes(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """`scopes` with every scope they imply."""
    held = set(scopes)
    for scope in list(held):
        held |= _IMPLIED.get(scope, frozenset())
    return frozenset(held)


def scopes_text(scopes: Iterable[Scope]) -> str:
    """The stored and displayed form: names in a fixed order, separated by spaces."""
    order = list(Scope)
    return " ".join(scope.value for scope in sorted(set(scopes), key=order.index))


_NAMESPACE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_ROBOT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def validate_namespace_name(name: str) -> str:
    """User and organization names: one repository-name component, at most 255 characters."""
    if len(name) > 255 or not _NAMESPACE.match(name):
        raise InvalidRequest(f"invalid user or organization name {name!r}")
    return name


def validate_team_name(name: str) -> str:
    if not _TEAM.match(name):
        raise InvalidRequest(f"invalid team name {name!r}")
    return name


#: Longest account name (users, and robots `NS+NAME`).
MAX_ACCOUNT_NAME = 300


def robot_full_name(namespace: str, short: str) -> str:
    validate_namespace_name(namespace)
    if not _ROBOT.match(short):
        raise InvalidRequest(f"invalid robot name {short!r} (lower-case letters, digits and _)")
    if len(namespace) + 1 + len(short) > MAX_ACCOUNT_NAME:
        raise InvalidRequest(f"a robot's full name NAMESPACE+NAME has at most {MAX_ACCOUNT_NAME} characters")
    return f"{namespace}+{short}"


def split_robot_name(full: str) -> tuple[str, str]:
    namespace, plus, short = full.partition("+")
    if not plus:
        raise InvalidRequest(f"robot names are NAMESPACE+NAME, not {full!r}")
    robot_full_name(namespace, short)
    return namespace, short
