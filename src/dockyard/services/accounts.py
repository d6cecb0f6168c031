"""Account administration: users, organizations, teams, robots, repositories, grants, app tokens."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

from dockyard.auth import Authenticator, TokenService
from dockyard.auth import secrets as sec
from dockyard.db.accounts_store import Account, AccountsStore, AppToken
from dockyard.domain.access import (
    ALL_SCOPES,
    Role,
    TeamRole,
    parse_scopes,
    robot_full_name,
    scopes_text,
    split_robot_name,
    validate_namespace_name,
    validate_team_name,
)
from dockyard.domain.audit import Actor, system_actor
from dockyard.domain.errors import InvalidRequest, NotFound
from dockyard.domain.identity import MAX_TEAM_DESCRIPTION, validate_email
from dockyard.domain.names import namespace_of, validate_repository_name
from dockyard.services.durations import parse_duration

MIN_PASSWORD = 8


class AccountService:
    def __init__(self, store: AccountsStore, authenticator: Authenticator, tokens: TokenService) -> None:
        self.store = store
        self.authenticator = authenticator
        self.tokens = tokens

    # -- users ---------------------------------------------------------------------------------

    async def create_user(self, name: str, password: str, *, email: str | None, superuser: bool, actor: Actor) -> None:
        validate_namespace_name(name)
        _check_password(password)
        await self.store.create_user(
            name, email=email, password_hash=await sec.hash_password(password), superuser=superuser, actor=actor
        )

    async def set_password(self, name: str, password: str, *, actor: Actor) -> None:
        _check_password(password)
        await self.store.set_password(name, await sec.hash_password(password), actor=actor)

    async def set_enabled(self, name: str, enabled: bool, *, actor: Actor) -> None:
        await self.store.set_enabled(name, enabled, actor=actor)

    async def user(self, name: str) -> Account:
        """A user account by name (NotFound for robots and unknown names)."""
        account = await self.store.account(name)
        if account is None or account.kind != "user":
            raise NotFound(f"no user {name!r}")
        return account

    async def cli_password(self, name: str) -> str:
        account = await self.store.account(name)
        if account is None or account.kind != "user":
            raise NotFound(f"no user {name!r}")
        return await self.authenticator.cli_password(account)

    async def ensure_initial_admin(self) -> str | None:
        """On an empty database, create superuser `admin`; return its password (else None)."""
        if await self.store.count_accounts():
            return None
        password = secrets.token_urlsafe(18)
        await self.create_user("admin", password, email=None, superuser=True, actor=system_actor("first-start"))
        return password

    # -- organizations, teams, robots ----------------------------------------------------------

    async def create_org(self, name: str, owner: str, *, email: str | None = None, actor: Actor) -> None:
        await self.store.create_org(
            validate_namespace_name(name), owner, email=None if email is None else validate_email(email), actor=actor
        )

    async def create_team(
        self, org: str, name: str, role: str, *, description: str | None = None, actor: Actor
    ) -> None:
        if description is not None and len(description) > MAX_TEAM_DESCRIPTION:
            raise InvalidRequest(f"a team description has at most {MAX_TEAM_DESCRIPTION} characters")
        await self.store.create_team(
            org, validate_team_name(name), TeamRole.parse(role), description=description or None, actor=actor
        )

    async def add_team_member(self, org: str, team: str, member: str, *, actor: Actor) -> None:
        await self.store.add_team_member(org, team, member, actor=actor)

    async def create_robot(self, namespace: str, name: str, *, actor: Actor) -> tuple[str, str]:
        """Create robot `namespace+name`; return its full name and token (shown only now)."""
        full = robot_full_name(namespace, name)
        token = sec.new_token(sec.ROBOT_TOKEN_PREFIX)
        await self.store.create_robot(namespace, full, sec.token_hash(token), actor=actor)
        return full, token

    async def regenerate_robot_token(self, full_name: str, *, actor: Actor) -> str:
        split_robot_name(full_name)
        token = sec.new_token(sec.ROBOT_TOKEN_PREFIX)
        await self.store.set_robot_token(full_name, sec.token_hash(token), actor=actor)
        return token

    async def delete_robot(self, full_name: str, *, actor: Actor) -> None:
        split_robot_name(full_name)
        await self.store.delete_robot(full_name, actor=actor)

    # -- repositories and permissions ----------------------------------------------------------

    async def create_repository(
        self,
        name: str,
        *,
        public: bool,
        creator: int | None = None,
        description: str | None = None,
        actor: Actor,
    ) -> None:
        """Create a repository; `creator` (an account id) gets admin on it in an organization."""
        validate_repository_name(name)
        if "/" not in name:
            raise InvalidRequest("repository names are NAMESPACE/NAME")
        await self.store.create_repository(
            name, namespace_of(name), public=public, creator_id=creator, description=description, actor=actor
        )

    async def set_visibility(self, name: str, *, public: bool, actor: Actor) -> None:
        await self.store.set_visibility(validate_repository_name(name), public, actor=actor)

    async def grant(self, repository: str, subject: str, role: str, *, actor: Actor) -> None:
        """Give `subject` (a user, a robot or team of the repository's namespace) `role` on it."""
        await self.store.grant(validate_repository_name(repository), subject, Role.parse(role), actor=actor)

    async def revoke(self, repository: str, subject: str, *, actor: Actor) -> None:
        await self.store.revoke(validate_repository_name(repository), subject, actor=actor)

    async def add_default_permission(
        self, org: str, subject: str, role: str, creator: str | None, *, actor: Actor
    ) -> int:
        """Add (or replace) a default permission rule of `org`; return its id."""
        return await self.store.add_default_permission(org, subject, Role.parse(role), creator, actor=actor)

    # -- app tokens and keys -------------------------------------------------------------------

    async def create_app_token(
        self, user: str, title: str, expires: str | None, scopes: Iterable[str] = (), *, actor: Actor
    ) -> tuple[int, str]:
        """Create an app token; `scopes` (names) cap what it may do, none given: every scope."""
        if not title.strip():
            raise InvalidRequest("an app token needs a title")
        expires_at = None if expires is None else int((time.time() + parse_duration(expires)) * 1000)
        held = parse_scopes(scopes) or ALL_SCOPES
        token = sec.new_token(sec.APP_TOKEN_PREFIX)
        token_id = await self.store.create_app_token(
            user, title.strip(), sec.token_hash(token), expires_at, scopes=scopes_text(held), actor=actor
        )
        return token_id, token

    async def app_tokens(self, user: str) -> list[AppToken]:
        if await self.store.account(user) is None:
            raise NotFound(f"no user {user!r}")
        return await self.store.app_tokens_of(user)

    async def revoke_app_token(self, user: str, token_id: int, *, actor: Actor) -> None:
        await self.store.revoke_app_token(user, token_id, actor=actor)

    async def rotate_signing_key(self, *, actor: Actor) -> str:
        return await self.tokens.rotate(actor)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"passwords need at least {MIN_PASSWORD} characters")
