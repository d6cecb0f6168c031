"""Request and response bodies of organizations, members, teams, robots, default permissions,
quotas and repository permissions, the path parameters naming them, and their conversions from
service records."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from dockyard.api.schemas import moment
from dockyard.domain.identity import (
    MAX_EMAIL,
    MAX_TEAM_DESCRIPTION,
    DefaultPermissionInfo,
    MemberInfo,
    OrganizationInfo,
    PermissionInfo,
    RobotInfo,
    SubjectKind,
    TeamInfo,
)

TeamRoleName = Literal["member", "creator", "admin"]
RoleName = Literal["read", "write", "admin"]

_NAMESPACE = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_ROBOT = r"[a-z][a-z0-9_]{0,63}"
_TEAM = r"[a-z0-9][a-z0-9_-]{0,63}"
NAMESPACE_PATTERN = rf"^{_NAMESPACE}$"
ROBOT_PATTERN = rf"^{_ROBOT}$"
TEAM_PATTERN = rf"^{_TEAM}$"
MEMBER_PATTERN = rf"^{_NAMESPACE}(?:\+{_ROBOT})?$"
SUBJECT_PATTERN = rf"^{_NAMESPACE}(?:\+{_ROBOT}|/{_TEAM})?$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

OrgName = Annotated[
    str,
    Path(description="An organization.", max_length=255, pattern=NAMESPACE_PATTERN, examples=["acme"]),
]
#: The organization a DELETE names: its example is the one the create example makes, not `acme`.
OrgToDelete = Annotated[
    str,
    Path(description="An organization.", max_length=255, pattern=NAMESPACE_PATTERN, examples=["retired"]),
]
TeamName = Annotated[str, Path(description="A team of the organization.", pattern=TEAM_PATTERN, examples=["owners"])]
MemberName = Annotated[
    str,
    Path(
        description="A user, or a robot `NS+NAME`.",
        max_length=320,
        pattern=MEMBER_PATTERN,
        examples=["admin"],
    ),
]
RobotName = Annotated[
    str, Path(description="The robot's short name (without `NS+`).", pattern=ROBOT_PATTERN, examples=["ci"])
]
SubjectName = Annotated[
    str,
    Path(
        description="A user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM` (its slash as it is).",
        max_length=320,
        pattern=SUBJECT_PATTERN,
        examples=["admin"],
    ),
]
RuleId = Annotated[int, Path(description="The rule's id.", ge=1, le=2**31 - 1, examples=[1])]


class _Request(BaseModel):
    """Request bodies: unknown fields are errors, and values are taken only in their own JSON type."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- organizations -----------------------------------------------------------------------------


class Organization(BaseModel):
    name: str
    email: str | None = Field(description="The organization's contact address.")
    created_at: dt.datetime

    @classmethod
    def of(cls, info: OrganizationInfo) -> Organization:
        return cls(name=info.name, email=info.email, created_at=moment(info.created_at))


class OrganizationCreate(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "retired", "email": "ops@example.com"}]})

    name: str = Field(max_length=255, pattern=NAMESPACE_PATTERN, description="Free among users and organizations.")
    email: str | None = Field(None, max_length=MAX_EMAIL, pattern=EMAIL_PATTERN)


class OrganizationUpdate(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "registry@example.com"}]})

    email: str | None = Field(max_length=MAX_EMAIL, pattern=EMAIL_PATTERN, description="null removes the address.")


class Member(BaseModel):
    name: str = Field(description="A user, or a robot `NS+NAME`.")
    kind: Literal["user", "robot"]
    teams: list[str] = Field(description="The organization's teams it is in.")

    @classmethod
    def of(cls, info: MemberInfo) -> Member:
        return cls(name=info.name, kind="robot" if info.kind == "robot" else "user", teams=list(info.teams))


# -- teams -------------------------------------------------------------------------------------


class Team(BaseModel):
    name: str
    role: TeamRoleName = Field(
        description="member: what is granted to the team; creator: may also create repositories; "
        "admin: administers the organization and all its repositories."
    )
    description: str | None
    members: int = Field(description="How many users and robots are in it.")
    created_at: dt.datetime

    @classmethod
    def of(cls, info: TeamInfo) -> Team:
        role: TeamRoleName = "admin" if info.role == "admin" else "creator" if info.role == "creator" else "member"
        return cls(
            name=info.name,
            role=role,
            description=info.description,
            members=info.members,
            created_at=moment(info.created_at),
        )


class TeamCreate(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "builders", "role": "creator", "description": "CI pipelines"}]}
    )

    name: str = Field(pattern=TEAM_PATTERN)
    role: TeamRoleName = "member"
    description: str | None = Field(None, max_length=MAX_TEAM_DESCRIPTION)


class TeamUpdate(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "creator", "description": "Release team"}]})

    role: TeamRoleName | None = Field(None, description="The owners team keeps admin.")
    description: str | None = Field(None, max_length=MAX_TEAM_DESCRIPTION, description="null removes it.")


class TeamMember(BaseModel):
    name: str = Field(description="A user, or a robot `NS+NAME`.")
    kind: Literal["user", "robot"]

    @classmethod
    def of(cls, info: MemberInfo) -> TeamMember:
        return cls(name=info.name, kind="robot" if info.kind == "robot" else "user")


# -- robots ------------------------------------------------------------------------------------


class Robot(BaseModel):
    name: str = Field(description="The full name, `NS+NAME`: the user name it logs in with.")
    short_name: str
    namespace: str
    created_at: dt.datetime

    @classmethod
    def of(cls, info: RobotInfo) -> Robot:
        return cls(
            name=info.name, short_name=info.short_name, namespace=info.namespace, created_at=moment(info.created_at)
        )


class RobotWithToken(Robot):
    token: str = Field(description="The robot's token: shown only in this answer, stored hashed.")

    @classmethod
    def issued(cls, info: RobotInfo, token: str) -> RobotWithToken:
        return cls(**Robot.of(info).model_dump(), token=token)


class RobotCreate(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "deployer"}]})

    name: str = Field(pattern=ROBOT_PATTERN, description="The short name: lower-case letters, digits and _.")


# -- permissions -------------------------------------------------------------------------------


class DefaultPermission(BaseModel):
    id: int
    subject: str = Field(description="A user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM`.")
    subject_kind: SubjectKind
    role: RoleName
    creator: str | None = Field(description="Applies to repositories this account creates; null: anyone's.")

    @classmethod
    def of(cls, info: DefaultPermissionInfo) -> DefaultPermission:
        return cls(
            id=info.id,
            subject=info.subject,
            subject_kind=info.subject_kind,
            role=_role(info.role),
            creator=info.creator,
        )


class DefaultPermissionCreate(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"subject": "acme/owners", "role": "write"}]})

    subject: str = Field(max_length=320, pattern=SUBJECT_PATTERN, description="A user, a robot or a team of the org.")
    role: RoleName
    creator: str | None = Field(
        None, max_length=320, pattern=MEMBER_PATTERN, description="Only for repositories this account creates."
    )


class Permission(BaseModel):
    subject: str = Field(description="A user `NAME`, a robot `NS+NAME` or a team `ORG/TEAM`.")
    subject_kind: SubjectKind
    role: RoleName

    @classmethod
    def of(cls, info: PermissionInfo) -> Permission:
        return cls(subject=info.subject, subject_kind=info.subject_kind, role=_role(info.role))


class PermissionSet(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "write"}]})

    role: RoleName


def _role(value: str) -> RoleName:
    return "admin" if value == "admin" else "write" if value == "write" else "read"


# -- quota -------------------------------------------------------------------------------------


class Quota(BaseModel):
    namespace: str
    limit: int | None = Field(description="Bytes; null when there is no quota.")
    warn_percent: int
    reject_percent: int
    warn_bytes: int | None
    reject_bytes: int | None
    used: int = Field(description="Bytes counted: each blob and manifest once per namespace.")
    items: int = Field(description="Distinct digests counted.")
    pending_collection: int = Field(description="Counted digests nothing references any more (GC removes them).")
    state: Literal["ok", "warning", "over"]


class QuotaSet(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"limit": "10GiB", "warn_percent": 80}]})

    limit: str = Field(
        min_length=1,
        max_length=32,
        description="A size: 1048576 (bytes), 500MB (powers of 1000), 10GiB (powers of 1024).",
    )
    warn_percent: int | None = Field(None, ge=1, le=100, description="Default: the current one, or 80.")
    reject_percent: int | None = Field(None, ge=1, le=100, description="Default: the current one, or 100.")
