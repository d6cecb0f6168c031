"""Organizations as the REST API administers them: settings, members, teams, robots (of an
organization or of a user's own namespace), default permissions, and the permissions granted on a
repository.

Changes the command line makes too (creating organizations, teams, robots, grants; adding team
members) go through `AccountService`, deleting an organization through garbage collection, so that
every path validates alike and records the same audit entries.
"""

from __future__ import annotations

from typing import Literal

from dockyard.db.organizations_store import OrganizationsStore
from dockyard.domain.access import Role, TeamRole, robot_full_name, validate_namespace_name, validate_team_name
from dockyard.domain.audit import Actor
from dockyard.domain.errors import InvalidRequest
from dockyard.domain.identity import (
    MAX_TEAM_DESCRIPTION,
    DefaultPermissionInfo,
    MemberInfo,
    OrganizationInfo,
    PermissionInfo,
    RobotInfo,
    TeamInfo,
    subject_kind,
    validate_email,
    validate_subject,
)
from dockyard.domain.names import validate_repository_name
from dockyard.services.accounts import AccountService
from dockyard.services.gc import GcService

#: Whose robots: an organization's, or a user's own namespace's.
NamespaceKind = Literal["org", "user"]


class OrganizationService:
    def __init__(self, store: OrganizationsStore, accounts: AccountService, gc: GcService) -> None:
        self.store = store
        self.accounts = accounts
        self.gc = gc

    # -- organizations -------------------------------------------------------------------------

    async def listing(
        self, *, viewer: int | None, everything: bool, after: str | None, limit: int
    ) -> list[OrganizationInfo]:
        """Organizations account `viewer` is a member of (every one with `everything`), by name."""
        return await self.store.organizations(viewer=viewer, everything=everything, after=after, limit=limit)

    async def get(self, name: str) -> OrganizationInfo:
        return await self.store.organization(validate_namespace_name(name))

    async def create(self, name: str, *, owner: str, email: str | None, actor: Actor) -> OrganizationInfo:
        """Create organization `name` whose owners team holds user `owner`."""
        await self.accounts.create_org(name, owner, email=email, actor=actor)
        return await self.get(name)

    async def set_email(self, name: str, email: str | None, *, actor: Actor) -> OrganizationInfo:
        """Set the organization's contact address (None removes it)."""
        await self.store.set_email(
            validate_namespace_name(name), None if email is None else validate_email(email), actor=actor
        )
        return await self.get(name)

    async def delete(self, name: str, *, actor: Actor) -> int:
        """Delete the organization at once (its name is free again) with its teams and robots; a
        background job purges its repositories. Return how many repositories it held."""
        await self.get(name)
        return await self.gc.delete_namespace(name, actor=actor)

    # -- members -------------------------------------------------------------------------------

    async def members(self, org: str, *, after: str | None, limit: int) -> list[MemberInfo]:
        return await self.store.members(validate_namespace_name(org), after=after, limit=limit)

    async def remove_member(self, org: str, member: str, *, actor: Actor) -> None:
        """Take a user or robot out of every team of the organization."""
        await self.store.remove_member(validate_namespace_name(org), validate_subject(member), actor=actor)

    # -- teams ---------------------------------------------------------------------------------

    async def teams(self, org: str, *, after: str | None, limit: int) -> list[TeamInfo]:
        return await self.store.teams(validate_namespace_name(org), after=after, limit=limit)

    async def team(self, org: str, name: str) -> TeamInfo:
        return await self.store.team(validate_namespace_name(org), validate_team_name(name))

    async def create_team(self, org: str, name: str, *, role: str, description: str | None, actor: Actor) -> TeamInfo:
        await self.get(org)
        await self.accounts.create_team(org, name, role, description=description, actor=actor)
        return await self.team(org, name)

    async def update_team(
        self,
        org: str,
        name: str,
        *,
        role: str | None,
        description: str | None,
        clear_description: bool,
        actor: Actor,
    ) -> TeamInfo:
        """Change the team's role and/or description (`clear_description` or "" removes it)."""
        if description is not None and len(description) > MAX_TEAM_DESCRIPTION:
            raise InvalidRequest(f"a team description has at most {MAX_TEAM_DESCRIPTION} characters")
        await self.store.update_team(
            validate_namespace_name(org),
            validate_team_name(name),
            role=None if role is None else TeamRole.parse(role),
            description=description or None,
            clear_description=clear_description or description == "",
            actor=actor,
        )
        return await self.team(org, name)

    async def delete_team(self, org: str, name: str, *, actor: Actor) -> None:
        await self.store.delete_team(validate_namespace_name(org), validate_team_name(name), actor=actor)

    async def team_members(self, org: str, team: str, *, after: str | None, limit: int) -> list[MemberInfo]:
        return await self.store.team_members(
            validate_namespace_name(org), validate_team_name(team), after=after, limit=limit
        )

    async def add_team_member(self, org: str, team: str, member: str, *, actor: Actor) -> MemberInfo:
        """Add a user, or a robot of the organization, to the team (nothing when it is in already)."""
        if "/" in validate_subject(member):
            raise InvalidRequest("team members are users and robots, not teams")
        await self.get(org)
        await self.accounts.add_team_member(org, validate_team_name(team), member, actor=actor)
        return MemberInfo(member, subject_kind(member))

    async def remove_team_member(self, org: str, team: str, member: str, *, actor: Actor) -> None:
        await self.store.remove_team_member(
            validate_namespace_name(org), validate_team_name(team), validate_subject(member), actor=actor
        )

    # -- robots --------------------------------------------------------------------------------

    async def _require(self, namespace: str, kind: NamespaceKind) -> None:
        if kind == "org":
            await self.get(namespace)
        else:
            await self.accounts.user(namespace)

    async def robots(self, namespace: str, kind: NamespaceKind, *, after: str | None, limit: int) -> list[RobotInfo]:
        await self._require(namespace, kind)
        return await self.store.robots(namespace, after=after, limit=limit)

    async def robot(self, namespace: str, kind: NamespaceKind, name: str) -> RobotInfo:
        full = robot_full_name(namespace, name)
        await self._require(namespace, kind)
        return await self.store.robot(full)

    async def create_robot(
        self, namespace: str, kind: NamespaceKind, name: str, *, actor: Actor
    ) -> tuple[RobotInfo, str]:
        """Create robot `namespace+name`; return it and its token (shown only now)."""
        robot_full_name(namespace, name)
        await self._require(namespace, kind)
        full, token = await self.accounts.create_robot(namespace, name, actor=actor)
        return await self.store.robot(full), token

    async def regenerate_robot(
        self, namespace: str, kind: NamespaceKind, name: str, *, actor: Actor
    ) -> tuple[RobotInfo, str]:
        """Give the robot a new token; the old one and tokens issued for it stop working."""
        robot = await self.robot(namespace, kind, name)
        token = await self.accounts.regenerate_robot_token(robot.name, actor=actor)
        return robot, token

    async def delete_robot(self, namespace: str, kind: NamespaceKind, name: str, *, actor: Actor) -> None:
        robot = await self.robot(namespace, kind, name)
        await self.accounts.delete_robot(robot.name, actor=actor)

    # -- default permissions -------------------------------------------------------------------

    async def default_permissions(self, org: str, *, after: int | None, limit: int) -> list[DefaultPermissionInfo]:
        return await self.store.default_permissions(validate_namespace_name(org), after=after, limit=limit)

    async def add_default_permission(
        self, org: str, subject: str, role: str, creator: str | None, *, actor: Actor
    ) -> DefaultPermissionInfo:
        """When `creator` (None: anyone) creates a repository in `org`, `subject` gets `role` on it;
        replaces the rule for the same subject and creator."""
        validate_namespace_name(org)
        validate_subject(subject)
        if creator is not None and "/" in validate_subject(creator):
            raise InvalidRequest("a creator is a user or a robot, not a team")
        await self.get(org)
        rule_id = await self.accounts.add_default_permission(org, subject, role, creator, actor=actor)
        return await self.store.default_permission(org, rule_id)

    async def remove_default_permission(self, org: str, rule_id: int, *, actor: Actor) -> None:
        await self.store.remove_default_permission(validate_namespace_name(org), rule_id, actor=actor)

    # -- repository permissions ----------------------------------------------------------------

    async def permissions(self, repository: str, *, after: str | None, limit: int) -> list[PermissionInfo]:
        return await self.store.permissions(validate_repository_name(repository), after=after, limit=limit)

    async def set_permission(self, repository: str, subject: str, role: str, *, actor: Actor) -> PermissionInfo:
        """Give `subject` (a user, or a robot or team of the repository's namespace) `role`."""
        granted = Role.parse(role)
        await self.accounts.grant(repository, validate_subject(subject), granted.label, actor=actor)
        return PermissionInfo(subject, subject_kind(subject), granted.label)

    async def remove_permission(self, repository: str, subject: str, *, actor: Actor) -> None:
        await self.accounts.revoke(repository, validate_subject(subject), actor=actor)
