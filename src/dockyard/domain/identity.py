"""Immutable records of organizations, their teams, members and robots, and of permissions, as
services hand them to entry points.

Subjects of permissions are written as on the command line: a user `NAME`, a robot `NS+NAME`, a
team `ORG/TEAM`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dockyard.domain.access import split_robot_name, validate_namespace_name, validate_team_name
from dockyard.domain.errors import InvalidRequest

#: What a permission is given to.
SubjectKind = Literal["user", "robot", "team"]


@dataclass(frozen=True, slots=True)
class OrganizationInfo:
    name: str
    email: str | None
    created_at: int
    """Milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class TeamInfo:
    name: str
    role: str
    """member, creator or admin (domain.access.TeamRole)."""
    description: str | None
    members: int
    created_at: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """An account in one or more teams of an organization."""

    name: str
    kind: str
    """user or robot."""
    teams: tuple[str, ...] = ()
    """The organization's teams it is in, by name (empty when listing one team's members)."""


@dataclass(frozen=True, slots=True)
class RobotInfo:
    name: str
    """The full name, NS+NAME."""
    namespace: str
    created_at: int

    @property
    def short_name(self) -> str:
        return self.name.partition("+")[2]


@dataclass(frozen=True, slots=True)
class DefaultPermissionInfo:
    """A rule giving `subject` `role` on each new repository of an organization, created by
    `creator` (None: by anyone)."""

    id: int
    subject: str
    subject_kind: SubjectKind
    role: str
    creator: str | None


@dataclass(frozen=True, slots=True)
class PermissionInfo:
    """A role granted on one repository."""

    subject: str
    subject_kind: SubjectKind
    role: str


def subject_kind(subject: str) -> SubjectKind:
    """The kind of a subject written as `NAME`, `NS+NAME` or `ORG/TEAM`."""
    if "/" in subject:
        return "team"
    return "robot" if "+" in subject else "user"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 320
MAX_TEAM_DESCRIPTION = 1024


def validate_email(email: str) -> str:
    """A contact address: something@domain.tld, at most MAX_EMAIL characters."""
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise InvalidRequest(f"invalid email address {email!r}")
    return email


def validate_subject(subject: str) -> str:
    """A permission subject: a user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM`."""
    if "/" in subject:
        org, _, team = subject.partition("/")
        validate_namespace_name(org)
        validate_team_name(team)
    elif "+" in subject:
        split_robot_name(subject)
    else:
        validate_namespace_name(subject)
    return subject
