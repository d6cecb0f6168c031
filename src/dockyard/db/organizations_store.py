"""Organizations as the REST API administers them: their settings, members, teams, robots and
default permissions, and the permissions granted on a repository.

Listings are keyset pages: the sort key of the last item seen (`after`) and a `limit`, in a total
order, so a page never repeats or skips an item however the data changes between requests. Every
change writes its audit entry in its own transaction, with the values before and after; a change
that changes nothing writes none.

Creating organizations, teams, robots and grants, and adding team members, live in
`AccountsStore`, shared with the command line.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, delete, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.engine import Database
from dockyard.db.tables import (
    accounts,
    default_permissions,
    namespaces,
    repositories,
    repository_permissions,
    team_members,
    teams,
)
from dockyard.domain.access import OWNERS_TEAM, TeamRole
from dockyard.domain.audit import Actor
from dockyard.domain.errors import Conflict, NotFound
from dockyard.domain.identity import (
    DefaultPermissionInfo,
    MemberInfo,
    OrganizationInfo,
    PermissionInfo,
    RobotInfo,
    TeamInfo,
    subject_kind,
)

_ORGANIZATION_COLUMNS = (namespaces.c.name, namespaces.c.email, namespaces.c.created_at)


def _organization(row: Any) -> OrganizationInfo:
    return OrganizationInfo(name=row.name, email=row.email, created_at=int(row.created_at))


def _team(row: Any) -> TeamInfo:
    return TeamInfo(
        name=row.name,
        role=row.role,
        description=row.description,
        members=int(row.members),
        created_at=int(row.created_at),
    )


def _team_query(namespace_id: int) -> Any:
    members = select(func.count()).where(team_members.c.team_id == teams.c.id).scalar_subquery()
    return select(
        teams.c.id, teams.c.name, teams.c.role, teams.c.description, teams.c.created_at, members.label("members")
    ).where(teams.c.namespace_id == namespace_id)


def _default_permission_query(namespace_id: int) -> Any:
    subject = accounts.alias("subject")
    creator = accounts.alias("creator")
    team_namespace = namespaces.alias("team_namespace")
    return (
        select(
            default_permissions.c.id,
            default_permissions.c.role,
            subject.c.name.label("account"),
            (team_namespace.c.name + "/" + teams.c.name).label("team"),
            creator.c.name.label("creator"),
        )
        .select_from(
            default_permissions.outerjoin(subject, subject.c.id == default_permissions.c.account_id)
            .outerjoin(teams, teams.c.id == default_permissions.c.team_id)
            .outerjoin(team_namespace, team_namespace.c.id == teams.c.namespace_id)
            .outerjoin(creator, creator.c.id == default_permissions.c.creator_account_id)
        )
        .where(default_permissions.c.namespace_id == namespace_id)
    )


def _default_permission(row: Any) -> DefaultPermissionInfo:
    subject = row.team if row.team is not None else row.account
    return DefaultPermissionInfo(
        id=int(row.id), subject=subject, subject_kind=subject_kind(subject), role=row.role, creator=row.creator
    )


class OrganizationsStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    @staticmethod
    async def _org_id(conn: AsyncConnection, name: str) -> int:
        row = (
            await conn.execute(
                select(namespaces.c.id, namespaces.c.kind).where(
                    namespaces.c.name == name, namespaces.c.state == "normal"
                )
            )
        ).first()
        if row is None or row.kind != "org":
            raise NotFound(f"no organization {name}")
        return int(row.id)

    @staticmethod
    async def _team_row(conn: AsyncConnection, namespace_id: int, org: str, team: str) -> Any:
        row = (await conn.execute(_team_query(namespace_id).where(teams.c.name == team))).first()
        if row is None:
            raise NotFound(f"no team {org}/{team}")
        return row

    @staticmethod
    async def _member_id(conn: AsyncConnection, name: str) -> int:
        account_id = await conn.scalar(select(accounts.c.id).where(accounts.c.name == name))
        if account_id is None:
            raise NotFound(f"no user or robot {name!r}")
        return int(account_id)

    @staticmethod
    async def _keep_an_owner(conn: AsyncConnection, org: str, owners_id: int, leaving: int) -> None:
        """Conflict unless a user other than `leaving` stays in the owners team. The team row is
        locked first, so two removals at once cannot each leave the other as the last owner."""
        await conn.execute(select(teams.c.id).where(teams.c.id == owners_id).with_for_update())
        others = await conn.scalar(
            select(func.count())
            .select_from(team_members.join(accounts, accounts.c.id == team_members.c.account_id))
            .where(
                team_members.c.team_id == owners_id,
                team_members.c.account_id != leaving,
                accounts.c.kind == "user",
            )
        )
        if not others:
            raise Conflict(f"the owners team of {org} would have no user left: add another owner first")

    # -- organizations -------------------------------------------------------------------------

    async def organizations(
        self, *, viewer: int | None, everything: bool, after: str | None, limit: int
    ) -> list[OrganizationInfo]:
        """Organizations by name: every one with `everything`, else those where account `viewer`
        is in a team."""
        query = select(*_ORGANIZATION_COLUMNS).where(namespaces.c.kind == "org", namespaces.c.state == "normal")
        if not everything:
            if viewer is None:
                return []
            mine = (
                select(teams.c.namespace_id)
                .join(team_members, team_members.c.team_id == teams.c.id)
                .where(team_members.c.account_id == viewer)
            )
            query = query.where(namespaces.c.id.in_(mine))
        if after is not None:
            query = query.where(namespaces.c.name > after)
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(namespaces.c.name).limit(limit))
            return [_organization(row) for row in rows]

    async def organization(self, name: str) -> OrganizationInfo:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(*_ORGANIZATION_COLUMNS, namespaces.c.kind).where(
                        namespaces.c.name == name, namespaces.c.state == "normal"
                    )
                )
            ).first()
        if row is None or row.kind != "org":
            raise NotFound(f"no organization {name}")
        return _organization(row)

    async def set_email(self, name: str, email: str | None, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            namespace_id = await self._org_id(conn, name)
            old = await conn.scalar(select(namespaces.c.email).where(namespaces.c.id == namespace_id))
            if old == email:
                return
            await conn.execute(update(namespaces).where(namespaces.c.id == namespace_id).values(email=email))
            await self.audit(
                conn,
                "organization.update",
                actor,
                namespace=name,
                metadata={"old": {"email": old}, "new": {"email": email}},
            )

    # -- members -------------------------------------------------------------------------------

    async def members(self, org: str, *, after: str | None, limit: int) -> list[MemberInfo]:
        """Accounts in any team of `org`, by name, each with its teams."""
        async with self.db.read() as conn:
            namespace_id = await self._org_id(conn, org)
            in_org = (
                select(team_members.c.account_id)
                .join(teams, teams.c.id == team_members.c.team_id)
                .where(teams.c.namespace_id == namespace_id)
            )
            query = select(accounts.c.id, accounts.c.name, accounts.c.kind).where(accounts.c.id.in_(in_org))
            if after is not None:
                query = query.where(accounts.c.name > after)
            rows = (await conn.execute(query.order_by(accounts.c.name).limit(limit))).all()
            memberships: dict[int, list[str]] = {int(row.id): [] for row in rows}
            if memberships:
                pairs = await conn.execute(
                    select(team_members.c.account_id, teams.c.name)
                    .join(teams, teams.c.id == team_members.c.team_id)
                    .where(teams.c.namespace_id == namespace_id, team_members.c.account_id.in_(list(memberships)))
                    .order_by(teams.c.name)
                )
                for pair in pairs:
                    memberships[int(pair.account_id)].append(pair.name)
        return [MemberInfo(row.name, row.kind, tuple(memberships[int(row.id)])) for row in rows]

    async def remove_member(self, org: str, member: str, *, actor: Actor) -> None:
        """Take `member` out of every team of `org` (Conflict when it is the last owner)."""
        async with self.db.write() as conn:
            namespace_id = await self._org_id(conn, org)
            account_id = await self._member_id(conn, member)
            held = (
                await conn.execute(
                    select(teams.c.id, teams.c.name)
                    .join(team_members, team_members.c.team_id == teams.c.id)
                    .where(teams.c.namespace_id == namespace_id, team_members.c.account_id == account_id)
                    .order_by(teams.c.name)
                )
            ).all()
            if not held:
                raise NotFound(f"{member} is not a member of {org}")
            for team in held:
                if team.name == OWNERS_TEAM:
                    await self._keep_an_owner(conn, org, int(team.id), account_id)
            await conn.execute(
                delete(team_members).where(
                    team_members.c.account_id == account_id,
                    team_members.c.team_id.in_([int(team.id) for team in held]),
                )
            )
            await self.audit(
                conn,
                "organization.member.remove",
                actor,
                namespace=org,
                metadata={"member": member, "teams": [team.name for team in held]},
            )

    # -- teams ---------------------------------------------------------------------------------

    async def teams(self, org: str, *, after: str | None, limit: int) -> list[TeamInfo]:
        async with self.db.read() as conn:
            query = _team_query(await self._org_id(conn, org))
            if after is not None:
                query = query.where(teams.c.name > after)
            rows = await conn.execute(query.order_by(teams.c.name).limit(limit))
            return [_team(row) for row in rows]

    async def team(self, org: str, name: str) -> TeamInfo:
        async with self.db.read() as conn:
            return _team(await self._team_row(conn, await self._org_id(conn, org), org, name))

    async def update_team(
        self,
        org: str,
        name: str,
        *,
        role: TeamRole | None,
        description: str | None,
        clear_description: bool,
        actor: Actor,
    ) -> None:
        """Change the team's role and/or description (`clear_description` removes it)."""
        async with self.db.write() as conn:
            row = await self._team_row(conn, await self._org_id(conn, org), org, name)
            new_role = row.role if role is None else role.value
            new_description = None if clear_description else description if description is not None else row.description
            if name == OWNERS_TEAM and new_role != TeamRole.ADMIN.value:
                raise Conflict(f"the owners team of {org} keeps the admin role")
            if (new_role, new_description) == (row.role, row.description):
                return
            await conn.execute(
                update(teams).where(teams.c.id == row.id).values(role=new_role, description=new_description)
            )
            await self.audit(
                conn,
                "team.update",
                actor,
                namespace=org,
                metadata={
                    "team": name,
                    "old": {"role": row.role, "description": row.description},
                    "new": {"role": new_role, "description": new_description},
                },
            )

    async def delete_team(self, org: str, name: str, *, actor: Actor) -> None:
        """Delete the team with its memberships, grants and default permissions (not the owners team)."""
        async with self.db.write() as conn:
            row = await self._team_row(conn, await self._org_id(conn, org), org, name)
            if name == OWNERS_TEAM:
                raise Conflict(f"the owners team of {org} cannot be deleted")
            members = list(
                await conn.scalars(
                    select(accounts.c.name)
                    .join(team_members, team_members.c.account_id == accounts.c.id)
                    .where(team_members.c.team_id == row.id)
                    .order_by(accounts.c.name)
                )
            )
            # Memberships, grants and default permissions of the team go with it (ON DELETE CASCADE).
            await conn.execute(delete(teams).where(teams.c.id == row.id))
            await self.audit(
                conn,
                "team.delete",
                actor,
                namespace=org,
                metadata={"team": name, "role": row.role, "members": members},
            )

    async def team_members(self, org: str, team: str, *, after: str | None, limit: int) -> list[MemberInfo]:
        async with self.db.read() as conn:
            row = await self._team_row(conn, await self._org_id(conn, org), org, team)
            query = (
                select(accounts.c.name, accounts.c.kind)
                .join(team_members, team_members.c.account_id == accounts.c.id)
                .where(team_members.c.team_id == row.id)
            )
            if after is not None:
                query = query.where(accounts.c.name > after)
            rows = await conn.execute(query.order_by(accounts.c.name).limit(limit))
            return [MemberInfo(member.name, member.kind) for member in rows]

    async def remove_team_member(self, org: str, team: str, member: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            row = await self._team_row(conn, await self._org_id(conn, org), org, team)
            account_id = await self._member_id(conn, member)
            if team == OWNERS_TEAM:
                await self._keep_an_owner(conn, org, int(row.id), account_id)
            result = await conn.execute(
                delete(team_members).where(team_members.c.team_id == row.id, team_members.c.account_id == account_id)
            )
            if not result.rowcount:
                raise NotFound(f"{member} is not in {org}/{team}")
            await self.audit(
                conn, "team.member.remove", actor, namespace=org, metadata={"team": team, "member": member}
            )

    # -- robots --------------------------------------------------------------------------------

    async def robots(self, namespace: str, *, after: str | None, limit: int) -> list[RobotInfo]:
        """Robots of a user or organization namespace, by full name."""
        async with self.db.read() as conn:
            namespace_id = await conn.scalar(
                select(namespaces.c.id).where(namespaces.c.name == namespace, namespaces.c.state == "normal")
            )
            if namespace_id is None:
                raise NotFound(f"no user or organization {namespace}")
            query = select(accounts.c.name, accounts.c.created_at).where(
                accounts.c.namespace_id == namespace_id, accounts.c.kind == "robot"
            )
            if after is not None:
                query = query.where(accounts.c.name > after)
            rows = await conn.execute(query.order_by(accounts.c.name).limit(limit))
            return [RobotInfo(row.name, namespace, int(row.created_at)) for row in rows]

    async def robot(self, full_name: str) -> RobotInfo:
        async with self.db.read() as conn:
            created_at = await conn.scalar(
                select(accounts.c.created_at).where(accounts.c.name == full_name, accounts.c.kind == "robot")
            )
        if created_at is None:
            raise NotFound(f"no robot {full_name}")
        return RobotInfo(full_name, full_name.partition("+")[0], int(created_at))

    # -- default permissions -------------------------------------------------------------------

    async def default_permissions(self, org: str, *, after: int | None, limit: int) -> list[DefaultPermissionInfo]:
        """The organization's default permission rules, oldest first."""
        async with self.db.read() as conn:
            query = _default_permission_query(await self._org_id(conn, org))
            if after is not None:
                query = query.where(default_permissions.c.id > after)
            rows = await conn.execute(query.order_by(default_permissions.c.id).limit(limit))
            return [_default_permission(row) for row in rows]

    async def default_permission(self, org: str, rule_id: int) -> DefaultPermissionInfo:
        async with self.db.read() as conn:
            query = _default_permission_query(await self._org_id(conn, org))
            row = (await conn.execute(query.where(default_permissions.c.id == rule_id))).first()
        if row is None:
            raise NotFound(f"{org} has no default permission {rule_id}")
        return _default_permission(row)

    async def remove_default_permission(self, org: str, rule_id: int, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            query = _default_permission_query(await self._org_id(conn, org))
            row = (await conn.execute(query.where(default_permissions.c.id == rule_id))).first()
            if row is None:
                raise NotFound(f"{org} has no default permission {rule_id}")
            rule = _default_permission(row)
            await conn.execute(delete(default_permissions).where(default_permissions.c.id == rule_id))
            await self.audit(
                conn,
                "default_permission.remove",
                actor,
                namespace=org,
                metadata={"id": rule_id, "subject": rule.subject, "role": rule.role, "creator": rule.creator},
            )

    # -- repository permissions ----------------------------------------------------------------

    async def permissions(self, repository: str, *, after: str | None, limit: int) -> list[PermissionInfo]:
        """The roles granted on a repository, by subject (`NAME`, `NS+NAME`, `ORG/TEAM`)."""
        async with self.db.read() as conn:
            repo_id = await conn.scalar(
                select(repositories.c.id).where(repositories.c.name == repository, repositories.c.state == "normal")
            )
            if repo_id is None:
                raise NotFound(f"no repository {repository}")
            to_accounts = (
                select(
                    accounts.c.name.label("subject"),
                    accounts.c.kind.label("kind"),
                    repository_permissions.c.role,
                )
                .select_from(
                    repository_permissions.join(accounts, accounts.c.id == repository_permissions.c.account_id)
                )
                .where(repository_permissions.c.repository_id == repo_id)
            )
            to_teams = (
                select(
                    (namespaces.c.name + "/" + teams.c.name).label("subject"),
                    literal("team", String).label("kind"),
                    repository_permissions.c.role,
                )
                .select_from(
                    repository_permissions.join(teams, teams.c.id == repository_permissions.c.team_id).join(
                        namespaces, namespaces.c.id == teams.c.namespace_id
                    )
                )
                .where(repository_permissions.c.repository_id == repo_id)
            )
            granted = union_all(to_accounts, to_teams).subquery()
            query = select(granted.c.subject, granted.c.kind, granted.c.role)
            if after is not None:
                query = query.where(granted.c.subject > after)
            rows = await conn.execute(query.order_by(granted.c.subject).limit(limit))
            return [PermissionInfo(row.subject, subject_kind(row.subject), row.role) for row in rows]
