"""Queries for accounts, teams, permissions, tokens, signing keys and login rate limits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import (
    accounts,
    app_tokens,
    default_permissions,
    login_failures,
    namespaces,
    repositories,
    repository_permissions,
    server_secrets,
    signing_keys,
    team_members,
    teams,
)
from dockyard.domain.access import OWNERS_TEAM, Role, TeamRole
from dockyard.domain.audit import Actor
from dockyard.domain.errors import AlreadyExists, InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    kind: str
    name: str
    namespace_id: int
    email: str | None
    password_hash: str | None
    token_hash: str | None
    enabled: bool
    superuser: bool
    epoch: int


@dataclass(frozen=True, slots=True)
class AppToken:
    id: int
    account_id: int
    title: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None
    scopes: str = ""
    """Space-separated scope names (domain.access.Scope)."""


@dataclass(frozen=True, slots=True)
class AccessFacts:
    """What decides an account's role on a repository name (existing or not)."""

    repository_exists: bool
    public: bool
    namespace_exists: bool
    owns_namespace: bool
    org_team_role: TeamRole | None
    """The strongest role of the account's teams in the repository's organization."""
    granted: Role | None
    """The strongest grant to the account or its teams on the repository."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_pem: str
    public_pem: str
    created_at: int
    retired_at: int | None


_TEAM_ORDER = {TeamRole.MEMBER: 0, TeamRole.CREATOR: 1, TeamRole.ADMIN: 2}


def strongest_team_role(values: Iterable[str]) -> TeamRole | None:
    strongest: TeamRole | None = None
    for value in values:
        role = TeamRole(value)
        if strongest is None or _TEAM_ORDER[role] > _TEAM_ORDER[strongest]:
            strongest = role
    return strongest


def _account(row: Any) -> Account:
    return Account(
        id=int(row.id),
        kind=row.kind,
        name=row.name,
        namespace_id=int(row.namespace_id),
        email=row.email,
        password_hash=row.password_hash,
        token_hash=row.token_hash,
        enabled=bool(row.enabled),
        superuser=bool(row.superuser),
        epoch=int(row.credential_epoch),
    )


def _home(name: str) -> str:
    """The namespace an account lives in: a user's own, a robot's `NS` of `NS+NAME`."""
    return name.split("+", 1)[0]


class AccountsStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    # -- accounts ------------------------------------------------------------------------------

    async def account(self, name: str) -> Account | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        return None if row is None else _account(row)

    async def robot_by_token_hash(self, token_hash: str) -> Account | None:
        """The robot whose token hashes to `token_hash` (bearer robot tokens carry no name)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(accounts).where(accounts.c.token_hash == token_hash, accounts.c.kind == "robot")
                )
            ).first()
        return None if row is None else _account(row)

    async def account_by_id(self, account_id: int) -> Account | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else _account(row)

    async def count_accounts(self) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(accounts)) or 0)

    async def create_user(
        self, name: str, *, email: str | None, password_hash: str | None, superuser: bool, actor: Actor
    ) -> Account:
        now = now_ms()
        async with self.db.write() as conn:
            if await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == name)) is not None:
                raise AlreadyExists(f"namespace {name!r} exists already")
            namespace_id = (
                await conn.execute(
                    insert(namespaces).values(name=name, kind="user", created_at=now).returning(namespaces.c.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(accounts).values(
                    kind="user",
                    name=name,
                    namespace_id=namespace_id,
                    email=email,
                    password_hash=password_hash,
                    superuser=superuser,
                    created_at=now,
                )
            )
            await self.audit(
                conn, "user.create", actor, namespace=name, metadata={"user": name, "superuser": superuser}
            )
        account = await self.account(name)
        assert account is not None
        return account

    async def set_password(self, name: str, password_hash: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(accounts)
                .where(accounts.c.name == name, accounts.c.kind == "user")
                .values(password_hash=password_hash, credential_epoch=accounts.c.credential_epoch + 1)
            )
            if not result.rowcount:
                raise NotFound(f"no user {name!r}")
            await self.audit(conn, "user.password", actor, namespace=name, metadata={"user": name})

    async def set_enabled(self, name: str, enabled: bool, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(accounts)
                .where(accounts.c.name == name)
                .values(enabled=enabled, credential_epoch=accounts.c.credential_epoch + 1)
            )
            if not result.rowcount:
                raise NotFound(f"no account {name!r}")
            kind = "user.enable" if enabled else "user.disable"
            await self.audit(conn, kind, actor, namespace=_home(name), metadata={"account": name})

    # -- organizations, teams, robots ----------------------------------------------------------

    async def _namespace(self, conn: AsyncConnection, name: str) -> tuple[int, str]:
        row = (await conn.execute(select(namespaces.c.id, namespaces.c.kind).where(namespaces.c.name == name))).first()
        if row is None:
            raise NotFound(f"no user or organization {name!r}")
        return int(row.id), row.kind

    async def _account_id(self, conn: AsyncConnection, name: str) -> int:
        account_id = await conn.scalar(select(accounts.c.id).where(accounts.c.name == name))
        if account_id is None:
            raise NotFound(f"no user or robot {name!r}")
        return int(account_id)

    async def _team_id(self, conn: AsyncConnection, org: str, team: str) -> int:
        namespace_id, _ = await self._namespace(conn, org)
        team_id = await conn.scalar(
            select(teams.c.id).where(teams.c.namespace_id == namespace_id, teams.c.name == team)
        )
        if team_id is None:
            raise NotFound(f"no team {org}/{team}")
        return int(team_id)

    async def create_org(self, name: str, owner: str, *, email: str | None = None, actor: Actor) -> None:
        now = now_ms()
        async with self.db.write() as conn:
            owner_id = await conn.scalar(
                select(accounts.c.id).where(accounts.c.name == owner, accounts.c.kind == "user")
            )
            if owner_id is None:
                raise NotFound(f"no user {owner!r}")
            if await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == name)) is not None:
                raise AlreadyExists(f"namespace {name!r} exists already")
            try:
                namespace_id = (
                    await conn.execute(
                        insert(namespaces)
                        .values(name=name, kind="org", email=email, created_at=now)
                        .returning(namespaces.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                # Created by a concurrent request since the check above.
                raise AlreadyExists(f"namespace {name!r} exists already") from None
            team_id = (
                await conn.execute(
                    insert(teams)
                    .values(namespace_id=namespace_id, name=OWNERS_TEAM, role=TeamRole.ADMIN.value, created_at=now)
                    .returning(teams.c.id)
                )
            ).scalar_one()
            await conn.execute(insert(team_members).values(team_id=team_id, account_id=owner_id))
            metadata = {"owner": owner, **({"email": email} if email else {})}
            await self.audit(conn, "organization.create", actor, namespace=name, metadata=metadata)

    async def create_team(
        self, org: str, name: str, role: TeamRole, *, description: str | None = None, actor: Actor
    ) -> None:
        async with self.db.write() as conn:
            namespace_id, kind = await self._namespace(conn, org)
            if kind != "org":
                raise InvalidRequest(f"{org!r} is not an organization")
            try:
                await conn.execute(
                    insert(teams).values(
                        namespace_id=namespace_id,
                        name=name,
                        role=role.value,
                        description=description,
                        created_at=now_ms(),
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"team {org}/{name} exists already") from None
            metadata = {"team": name, "role": role.value, **({"description": description} if description else {})}
            await self.audit(conn, "team.create", actor, namespace=org, metadata=metadata)

    async def add_team_member(self, org: str, team: str, member: str, *, actor: Actor) -> None:
        """Add `member` (a user, or a robot of the organization) to the team; nothing when it is in."""
        async with self.db.write() as conn:
            team_id = await self._team_id(conn, org, team)
            account_id = await self._account_id(conn, member)
            _same_namespace(member, org)
            exists = await conn.scalar(
                select(team_members.c.team_id).where(
                    team_members.c.team_id == team_id, team_members.c.account_id == account_id
                )
            )
            if exists is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(insert(team_members).values(team_id=team_id, account_id=account_id))
                except IntegrityError:
                    return  # a concurrent request added it
                await self.audit(
                    conn, "team.member.add", actor, namespace=org, metadata={"team": team, "member": member}
                )

    async def create_robot(self, namespace: str, full_name: str, token_hash: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            namespace_id, _ = await self._namespace(conn, namespace)
            try:
                await conn.execute(
                    insert(accounts).values(
                        kind="robot",
                        name=full_name,
                        namespace_id=namespace_id,
                        token_hash=token_hash,
                        created_at=now_ms(),
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"robot {full_name} exists already") from None
            await self.audit(conn, "robot.create", actor, namespace=namespace, metadata={"robot": full_name})

    async def set_robot_token(self, full_name: str, token_hash: str, *, actor: Actor) -> None:
        """Replace a robot's token; tokens issued for the old one stop working (new epoch)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(accounts)
                .where(accounts.c.name == full_name, accounts.c.kind == "robot")
                .values(token_hash=token_hash, credential_epoch=accounts.c.credential_epoch + 1)
            )
            if not result.rowcount:
                raise NotFound(f"no robot {full_name!r}")
            await self.audit(conn, "robot.regenerate", actor, namespace=_home(full_name), metadata={"robot": full_name})

    async def delete_robot(self, full_name: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(accounts).where(accounts.c.name == full_name, accounts.c.kind == "robot")
            )
            if not result.rowcount:
                raise NotFound(f"no robot {full_name!r}")
            await self.audit(conn, "robot.delete", actor, namespace=_home(full_name), metadata={"robot": full_name})

    # -- repositories and permissions ----------------------------------------------------------

    async def create_repository(
        self,
        name: str,
        namespace: str,
        *,
        public: bool,
        creator_id: int | None,
        description: str | None = None,
        actor: Actor,
    ) -> None:
        async with self.db.write() as conn:
            namespace_id, _ = await self._namespace(conn, namespace)
            if await conn.scalar(select(repositories.c.id).where(repositories.c.name == name)) is not None:
                raise AlreadyExists(f"repository {name} exists already")
            repo_id = (
                await conn.execute(
                    insert(repositories)
                    .values(
                        name=name,
                        namespace_id=namespace_id,
                        visibility="public" if public else "private",
                        created_at=now_ms(),
                        description=description,
                    )
                    .returning(repositories.c.id)
                )
            ).scalar_one()
            grants = await apply_creation_rules(conn, int(repo_id), namespace_id, creator_id)
            metadata: dict[str, object] = {"visibility": "public" if public else "private"}
            if grants:
                metadata["grants"] = grants
            await self.audit(conn, "repository.create", actor, namespace=namespace, repository=name, metadata=metadata)

    async def set_visibility(self, name: str, public: bool, *, actor: Actor) -> None:
        visibility = "public" if public else "private"
        async with self.db.write() as conn:
            old = await conn.scalar(
                select(repositories.c.visibility).where(repositories.c.name == name, repositories.c.state == "normal")
            )
            if old is None:
                raise NotFound(f"no repository {name}")
            await conn.execute(
                update(repositories)
                .where(repositories.c.name == name, repositories.c.state == "normal")
                .values(visibility=visibility)
            )
            await self.audit(
                conn,
                "repository.visibility",
                actor,
                namespace=name.split("/", 1)[0],
                repository=name,
                metadata={"old": old, "new": visibility},
            )

    async def _subject(
        self, conn: AsyncConnection, subject: str, namespace: str | None = None
    ) -> tuple[int | None, int | None]:
        """(account_id, team_id) of `user`, `ns+robot` or `org/team`; with `namespace`, a robot
        or team must be of that namespace (InvalidRequest otherwise)."""
        if "/" in subject:
            org, _, team = subject.partition("/")
            team_id = await self._team_id(conn, org, team)
            if namespace is not None:
                _same_namespace(subject, namespace)
            return None, team_id
        account_id = await self._account_id(conn, subject)
        if namespace is not None:
            _same_namespace(subject, namespace)
        return account_id, None

    @staticmethod
    async def _held_role(
        conn: AsyncConnection, repo_id: int, account_id: int | None, team_id: int | None
    ) -> str | None:
        role = await conn.scalar(
            select(repository_permissions.c.role).where(
                repository_permissions.c.repository_id == repo_id,
                _subject_clause(repository_permissions, account_id, team_id),
            )
        )
        return None if role is None else str(role)

    async def grant(self, repository: str, subject: str, role: Role, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_id = await conn.scalar(select(repositories.c.id).where(repositories.c.name == repository))
            if repo_id is None:
                raise NotFound(f"no repository {repository}")
            account_id, team_id = await self._subject(conn, subject, repository.split("/", 1)[0])
            old = await self._held_role(conn, int(repo_id), account_id, team_id)
            await _set_permission(conn, int(repo_id), account_id, team_id, role)
            await self.audit(
                conn,
                "permission.grant",
                actor,
                namespace=repository.split("/", 1)[0],
                repository=repository,
                metadata={"subject": subject, "old": old, "new": role.label},
            )

    async def revoke(self, repository: str, subject: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_id = await conn.scalar(select(repositories.c.id).where(repositories.c.name == repository))
            if repo_id is None:
                raise NotFound(f"no repository {repository}")
            account_id, team_id = await self._subject(conn, subject)
            old = await self._held_role(conn, int(repo_id), account_id, team_id)
            result = await conn.execute(
                delete(repository_permissions).where(
                    repository_permissions.c.repository_id == repo_id,
                    _subject_clause(repository_permissions, account_id, team_id),
                )
            )
            if not result.rowcount:
                raise NotFound(f"{subject} holds no permission on {repository}")
            await self.audit(
                conn,
                "permission.revoke",
                actor,
                namespace=repository.split("/", 1)[0],
                repository=repository,
                metadata={"subject": subject, "old": old},
            )

    async def add_default_permission(
        self, org: str, subject: str, role: Role, creator: str | None, *, actor: Actor
    ) -> int:
        """Give `subject` `role` on every new repository `creator` (None: anyone) creates in `org`,
        replacing the rule for the same subject and creator; return the rule's id."""
        async with self.db.write() as conn:
            namespace_id, kind = await self._namespace(conn, org)
            if kind != "org":
                raise InvalidRequest(f"{org!r} is not an organization")
            account_id, team_id = await self._subject(conn, subject, org)
            creator_id = None if creator is None else await self._account_id(conn, creator)
            same_rule = and_(
                default_permissions.c.namespace_id == namespace_id,
                _same_nullable(default_permissions.c.creator_account_id, creator_id),
                _subject_clause(default_permissions, account_id, team_id),
            )
            old = await conn.scalar(select(default_permissions.c.role).where(same_rule))
            await conn.execute(delete(default_permissions).where(same_rule))
            rule_id = (
                await conn.execute(
                    insert(default_permissions)
                    .values(
                        namespace_id=namespace_id,
                        creator_account_id=creator_id,
                        account_id=account_id,
                        team_id=team_id,
                        role=role.label,
                        created_at=now_ms(),
                    )
                    .returning(default_permissions.c.id)
                )
            ).scalar_one()
            await self.audit(
                conn,
                "default_permission.add",
                actor,
                namespace=org,
                # `old`: the role of the rule this one replaced.
                metadata={"subject": subject, "role": role.label, "creator": creator, **({"old": old} if old else {})},
            )
            return int(rule_id)

    async def access_facts(self, account_id: int | None, repository: str, namespace: str) -> AccessFacts:
        async with self.db.read() as conn:
            ns = (
                await conn.execute(select(namespaces.c.id, namespaces.c.kind).where(namespaces.c.name == namespace))
            ).first()
            repo = (
                await conn.execute(
                    select(repositories.c.id, repositories.c.visibility).where(
                        repositories.c.name == repository, repositories.c.state == "normal"
                    )
                )
            ).first()
            owns = False
            team_role: TeamRole | None = None
            granted: Role | None = None
            if account_id is not None and ns is not None:
                account_ns = await conn.scalar(
                    select(accounts.c.namespace_id).where(accounts.c.id == account_id, accounts.c.kind == "user")
                )
                owns = account_ns == ns.id
                if ns.kind == "org":
                    team_role = strongest_team_role(
                        await conn.scalars(
                            select(teams.c.role)
                            .join(team_members, team_members.c.team_id == teams.c.id)
                            .where(teams.c.namespace_id == ns.id, team_members.c.account_id == account_id)
                        )
                    )
            if account_id is not None and repo is not None:
                my_teams = select(team_members.c.team_id).where(team_members.c.account_id == account_id)
                rows = await conn.scalars(
                    select(repository_permissions.c.role).where(
                        repository_permissions.c.repository_id == repo.id,
                        or_(
                            repository_permissions.c.account_id == account_id,
                            repository_permissions.c.team_id.in_(my_teams),
                        ),
                    )
                )
                for value in rows:
                    role_value = Role.parse(value)
                    granted = role_value if granted is None else max(granted, role_value)
        return AccessFacts(
            repository_exists=repo is not None,
            public=repo is not None and repo.visibility == "public",
            namespace_exists=ns is not None,
            owns_namespace=owns,
            org_team_role=team_role,
            granted=granted,
        )

    # -- app tokens ----------------------------------------------------------------------------

    async def create_app_token(
        self, user: str, title: str, token_hash: str, expires_at: int | None, *, scopes: str, actor: Actor
    ) -> int:
        async with self.db.write() as conn:
            account_id = await conn.scalar(
                select(accounts.c.id).where(accounts.c.name == user, accounts.c.kind == "user")
            )
            if account_id is None:
                raise NotFound(f"no user {user!r}")
            token_id = int(
                (
                    await conn.execute(
                        insert(app_tokens)
                        .values(
                            account_id=account_id,
                            title=title,
                            token_hash=token_hash,
                            created_at=now_ms(),
                            expires_at=expires_at,
                            scopes=scopes,
                        )
                        .returning(app_tokens.c.id)
                    )
                ).scalar_one()
            )
            await self.audit(
                conn,
                "app_token.create",
                actor,
                namespace=user,
                metadata={
                    "user": user,
                    "token_id": token_id,
                    "title": title,
                    "expires_at": expires_at,
                    "scopes": scopes,
                },
            )
            return token_id

    async def app_token_by_hash(self, token_hash: str) -> AppToken | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(app_tokens).where(app_tokens.c.token_hash == token_hash))).first()
        return None if row is None else app_token_of(row)

    async def app_tokens_of(self, user: str) -> list[AppToken]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(app_tokens)
                .join(accounts, accounts.c.id == app_tokens.c.account_id)
                .where(accounts.c.name == user)
                .order_by(app_tokens.c.id)
            )
            return [app_token_of(row) for row in rows]

    async def revoke_app_token(self, user: str, token_id: int, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            owner = select(accounts.c.id).where(accounts.c.name == user).scalar_subquery()
            result = await conn.execute(
                update(app_tokens)
                .where(app_tokens.c.id == token_id, app_tokens.c.account_id == owner, app_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
            if not result.rowcount:
                raise NotFound(f"{user} has no active app token {token_id}")
            await self.audit(
                conn, "app_token.revoke", actor, namespace=user, metadata={"user": user, "token_id": token_id}
            )

    async def touch_app_token(self, token_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(app_tokens).where(app_tokens.c.id == token_id).values(last_used_at=now_ms()))

    async def credential_state(self, account_id: int, app_token_id: int | None) -> tuple[bool, int] | None:
        """(enabled, epoch) of a live account, None when it (or its app token) no longer holds."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(accounts.c.enabled, accounts.c.credential_epoch).where(accounts.c.id == account_id)
                )
            ).first()
            if row is None:
                return None
            if app_token_id is not None:
                token = (
                    await conn.execute(
                        select(app_tokens.c.revoked_at, app_tokens.c.expires_at).where(app_tokens.c.id == app_token_id)
                    )
                ).first()
                if token is None or token.revoked_at is not None:
                    return None
                if token.expires_at is not None and token.expires_at <= now_ms():
                    return None
        return bool(row.enabled), int(row.credential_epoch)

    # -- keys and secrets ----------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKey]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
            return [SigningKey(r.kid, r.private_pem, r.public_pem, int(r.created_at), r.retired_at) for r in rows]

    async def add_signing_key(
        self, kid: str, private_pem: str, public_pem: str, *, retire_others: bool, actor: Actor | None = None
    ) -> None:
        """Add a signing key (retiring the others: a rotation, audited when `actor` is given)."""
        now = now_ms()
        async with self.db.write() as conn:
            if retire_others:
                await conn.execute(
                    update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=now)
                )
            await conn.execute(
                insert(signing_keys).values(kid=kid, private_pem=private_pem, public_pem=public_pem, created_at=now)
            )
            if actor is not None:
                await self.audit(conn, "signing_key.rotate", actor, metadata={"kid": kid}, now=now)

    async def secret(self, name: str, generate: str) -> str:
        """The shared secret `name`, created with value `generate` if absent (first writer wins)."""
        async with self.db.write() as conn:
            value = await conn.scalar(select(server_secrets.c.value).where(server_secrets.c.name == name))
            if value is None:
                await conn.execute(insert(server_secrets).values(name=name, value=generate, created_at=now_ms()))
                value = generate
            return str(value)

    # -- failed logins -------------------------------------------------------------------------

    async def failures(self, keys: list[str], window_ms: int) -> int:
        """The highest failure count among `keys` within the current window."""
        since = now_ms() - window_ms
        async with self.db.read() as conn:
            counts = await conn.scalars(
                select(login_failures.c.count).where(
                    login_failures.c.key.in_(keys), login_failures.c.window_start > since
                )
            )
            return max(counts, default=0)

    async def record_failure(
        self, keys: list[str], window_ms: int, *, actor: Actor | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Count a failed login against `keys`; with `actor`, audit it (kind `login.failure`)."""
        now = now_ms()
        async with self.db.write() as conn:
            if actor is not None:
                await self.audit(conn, "login.failure", actor, metadata=metadata, now=now)
            for key in keys:
                row = (await conn.execute(select(login_failures).where(login_failures.c.key == key))).first()
                if row is None:
                    await conn.execute(insert(login_failures).values(key=key, window_start=now, count=1))
                elif row.window_start <= now - window_ms:
                    await conn.execute(
                        update(login_failures).where(login_failures.c.key == key).values(window_start=now, count=1)
                    )
                else:
                    await conn.execute(
                        update(login_failures)
                        .where(login_failures.c.key == key)
                        .values(count=login_failures.c.count + 1)
                    )

    async def clear_failures(self, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(login_failures).where(login_failures.c.key == key))

    async def record_login(self, actor: Actor, metadata: dict[str, Any]) -> None:
        """Audit a successful login (kind `login`); it changes nothing, so it has its own transaction."""
        if self.audit.enabled:
            async with self.db.write() as conn:
                namespace = _home(actor.performer) if actor.performer else None
                await self.audit(conn, "login", actor, namespace=namespace, metadata=metadata)


def app_token_of(row: Any) -> AppToken:
    return AppToken(
        id=int(row.id),
        account_id=int(row.account_id),
        title=row.title,
        created_at=int(row.created_at),
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        scopes=row.scopes,
    )


def _same_namespace(subject: str, namespace: str) -> None:
    """InvalidRequest unless robot `NS+NAME` or team `ORG/TEAM` is of `namespace` (users are of none)."""
    for separator in ("/", "+"):
        home, found, _ = subject.partition(separator)
        if found and home != namespace:
            kind = "team" if separator == "/" else "robot"
            raise InvalidRequest(f"{kind} {subject} is not of {namespace}: only its own namespace may use it")


def _same_nullable(column: Any, value: int | None) -> Any:
    return column.is_(None) if value is None else column == value


def _subject_clause(table: Any, account_id: int | None, team_id: int | None) -> Any:
    return and_(_same_nullable(table.c.account_id, account_id), _same_nullable(table.c.team_id, team_id))


async def _set_permission(
    conn: AsyncConnection, repo_id: int, account_id: int | None, team_id: int | None, role: Role
) -> None:
    await conn.execute(
        delete(repository_permissions).where(
            repository_permissions.c.repository_id == repo_id,
            _subject_clause(repository_permissions, account_id, team_id),
        )
    )
    await conn.execute(
        insert(repository_permissions).values(
            repository_id=repo_id, account_id=account_id, team_id=team_id, role=role.label, created_at=now_ms()
        )
    )


def readable_by(viewer: int | None, organization: str | None = None) -> Any:
    """The SQL condition of a repository account `viewer` (None: anonymous) may read: public, in
    the viewer's own namespace, in an organization where a team of the viewer is admin, or granted
    to the viewer or a team of the viewer. The same rule as `auth.AccessPolicy`, for listings.

    `organization` adds every repository of that organization: an OAuth application acting for
    itself administers its own organization."""
    readable: Any = repositories.c.visibility == "public"
    if organization is not None:
        readable = or_(
            readable,
            repositories.c.namespace_id.in_(
                select(namespaces.c.id).where(namespaces.c.name == organization, namespaces.c.kind == "org")
            ),
        )
    if viewer is None:
        return readable
    my_teams = select(team_members.c.team_id).where(team_members.c.account_id == viewer)
    return or_(
        readable,
        repositories.c.namespace_id.in_(
            select(accounts.c.namespace_id).where(accounts.c.id == viewer, accounts.c.kind == "user")
        ),
        repositories.c.namespace_id.in_(
            select(teams.c.namespace_id).where(teams.c.id.in_(my_teams), teams.c.role == TeamRole.ADMIN.value)
        ),
        repositories.c.id.in_(
            select(repository_permissions.c.repository_id).where(
                or_(repository_permissions.c.account_id == viewer, repository_permissions.c.team_id.in_(my_teams))
            )
        ),
    )


async def apply_creation_rules(
    conn: AsyncConnection, repo_id: int, namespace_id: int, creator_id: int | None
) -> dict[str, str]:
    """Grants for a new repository: the org's default permissions, and admin for its creator.

    For each subject, a rule naming the creator wins over the rule for anyone. Returns the roles
    given, by subject name (`user`, `ns+robot`, `org/team`), for the audit entry of the creation.
    """
    kind = await conn.scalar(select(namespaces.c.kind).where(namespaces.c.id == namespace_id))
    if kind != "org":
        return {}
    # The subjects' names come with the rules, for the audit entry: one query, not one per grant.
    team_namespace = namespaces.alias("team_namespace")
    rules = await conn.execute(
        select(
            default_permissions.c.account_id,
            default_permissions.c.team_id,
            default_permissions.c.creator_account_id,
            default_permissions.c.role,
            func.coalesce(accounts.c.name, team_namespace.c.name + "/" + teams.c.name).label("subject"),
        )
        .select_from(
            default_permissions.outerjoin(accounts, accounts.c.id == default_permissions.c.account_id)
            .outerjoin(teams, teams.c.id == default_permissions.c.team_id)
            .outerjoin(team_namespace, team_namespace.c.id == teams.c.namespace_id)
        )
        .where(
            default_permissions.c.namespace_id == namespace_id,
            or_(
                default_permissions.c.creator_account_id.is_(None),
                default_permissions.c.creator_account_id == creator_id,
            ),
        )
    )
    chosen: dict[tuple[int | None, int | None], tuple[bool, Role, str]] = {}
    for rule in rules:
        subject = (rule.account_id, rule.team_id)
        specific = rule.creator_account_id is not None
        if subject not in chosen or (specific and not chosen[subject][0]):
            chosen[subject] = (specific, Role.parse(rule.role), str(rule.subject))
    if creator_id is not None:
        creator = (await conn.execute(select(accounts.c.name).where(accounts.c.id == creator_id))).scalar_one()
        chosen[(creator_id, None)] = (True, Role.ADMIN, str(creator))
    for (account_id, team_id), (_, role, _) in chosen.items():
        await _set_permission(conn, repo_id, account_id, team_id, role)
    return {name: role.label for _, role, name in sorted(chosen.values(), key=lambda rule: rule[2])}
