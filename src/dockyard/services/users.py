"""User accounts through the REST API: what users do to their own account (password, app tokens,
the encrypted CLI password, starred repositories) and what superusers do to anyone's.

Creation, password changes and token changes go through the account store's methods, so the API
and the command line record the same audit entries.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from dockyard.auth import secrets as sec
from dockyard.config.settings import AuthSettings
from dockyard.db.accounts_store import AccountsStore, AppToken
from dockyard.db.users_store import UsersStore
from dockyard.domain.access import ALL_SCOPES, Scope, effective_scopes, scopes_text
from dockyard.domain.audit import Actor
from dockyard.domain.errors import Conflict, InvalidRequest, NotFound, ScopeDenied, TooManyRequests
from dockyard.domain.names import validate_repository_name
from dockyard.domain.users import StarredRepository, UserChanges, UserInfo
from dockyard.services.accounts import MIN_PASSWORD, AccountService
from dockyard.services.durations import parse_duration

#: Failed-login key of wrong current passwords: a password change cannot be used to guess the
#: password faster than logins can, and its failures never lock the user out of logging in.
_PASSWORD_CHANGE_KEY = "password-change:"  # noqa: S105 - a key prefix, not a secret


MAX_TOKEN_LIFETIME_MS = 100 * 366 * 86_400_000


@dataclass(frozen=True, slots=True)
class NewAppToken:
    token: AppToken
    secret: str
    """Shown once: only its hash is stored."""


class UserService:
    def __init__(
        self, store: UsersStore, accounts_store: AccountsStore, accounts: AccountService, settings: AuthSettings
    ) -> None:
        self.store = store
        self.accounts_store = accounts_store
        self.accounts = accounts
        self.settings = settings

    # -- the calling user ----------------------------------------------------------------------

    async def change_password(self, name: str, current: str, new: str, *, actor: Actor) -> None:
        """Replace the user's password after checking the current one. Every credential issued
        with the old one (cached logins, registry tokens, the encrypted CLI password) ends."""
        _check_password(new)
        account = await self.accounts.user(name)
        keys = [f"{_PASSWORD_CHANGE_KEY}{name}"[:400]]
        window = self.settings.failed_login_window_seconds * 1000
        if await self.accounts_store.failures(keys, window) >= self.settings.max_failed_logins:
            raise TooManyRequests("too many wrong current passwords; try again later")
        if account.password_hash is None or not await sec.verify_password(account.password_hash, current):
            await self.accounts_store.record_failure(
                keys, window, actor=actor, metadata={"username": name, "endpoint": "password_change"}
            )
            raise InvalidRequest("the current password is wrong", detail={"field": "current_password"})
        await self.accounts_store.clear_failures(keys[0])
        await self.accounts.set_password(name, new, actor=actor)

    async def cli_password(self, name: str) -> str:
        return await self.accounts.cli_password(name)

    async def app_tokens(self, user: str, *, after: int | None, limit: int) -> list[AppToken]:
        return await self.store.app_tokens(user, after=after, limit=limit)

    async def app_token(self, user: str, token_id: int) -> AppToken:
        token = await self.store.app_token(user, token_id)
        if token is None:
            raise NotFound(f"{user} has no active app token {token_id}")
        return token

    async def create_app_token(
        self,
        user: str,
        title: str,
        *,
        expires_in: str | None,
        expires_at: int | None,
        scopes: frozenset[Scope] | None,
        cap: frozenset[Scope] | None,
        actor: Actor,
    ) -> NewAppToken:
        """Create an app token of `user` with `scopes` (None: all of `cap`, every scope without a
        cap). `cap` is the scopes of the credential asking, if it has any: a token never creates a
        token that could do more than itself."""
        if not title.strip():
            raise InvalidRequest("an app token needs a title")
        now = int(time.time() * 1000)
        if expires_in is not None:
            expires_at = now + parse_duration(expires_in) * 1000
        if expires_at is not None and not now < expires_at <= now + MAX_TOKEN_LIFETIME_MS:
            raise InvalidRequest("the expiry must lie in the future, within 100 years")
        held = ALL_SCOPES if cap is None else effective_scopes(cap)
        wanted = cap if scopes is None and cap is not None else scopes or ALL_SCOPES
        beyond = [scope for scope in Scope if scope in effective_scopes(wanted) and scope not in held]
        if beyond:
            raise ScopeDenied(
                f"a token cannot create a token with scopes beyond its own ({beyond[0].value})",
                detail={"scope": beyond[0].value},
            )
        secret = sec.new_token(sec.APP_TOKEN_PREFIX)
        token_id = await self.accounts_store.create_app_token(
            user, title.strip(), sec.token_hash(secret), expires_at, scopes=scopes_text(wanted), actor=actor
        )
        return NewAppToken(await self.app_token(user, token_id), secret)

    async def revoke_app_token(self, user: str, token_id: int, *, actor: Actor) -> None:
        await self.accounts.revoke_app_token(user, token_id, actor=actor)

    # -- starred repositories ------------------------------------------------------------------

    async def star(self, account_id: int, repository: str, *, actor: Actor) -> None:
        await self.store.star(account_id, validate_repository_name(repository), actor=actor)

    async def unstar(self, account_id: int, repository: str, *, actor: Actor) -> None:
        await self.store.unstar(account_id, validate_repository_name(repository), actor=actor)

    async def starred(
        self, account_id: int, *, everything: bool, after: str | None, limit: int
    ) -> list[StarredRepository]:
        return await self.store.starred(account_id, everything=everything, after=after, limit=limit)

    # -- user administration (superusers) ------------------------------------------------------

    async def users(self, *, prefix: str | None, after: str | None, limit: int) -> list[UserInfo]:
        if prefix is not None and "\0" in prefix:
            raise InvalidRequest("the prefix holds a NUL character")
        return await self.store.users(prefix=prefix, after=after, limit=limit)

    async def user(self, name: str) -> UserInfo:
        found = await self.store.user(name)
        if found is None:
            raise NotFound(f"no user {name!r}")
        return found

    async def create_user(
        self, name: str, *, email: str | None, password: str | None, superuser: bool, actor: Actor
    ) -> tuple[UserInfo, str | None]:
        """Create a user; without `password` one is generated and returned (shown once)."""
        generated: str | None = None
        if password is None:
            password = generated = secrets.token_urlsafe(18)
        await self.accounts.create_user(name, password, email=email, superuser=superuser, actor=actor)
        return await self.user(name), generated

    async def update_user(
        self,
        name: str,
        *,
        email: str | None = None,
        clear_email: bool = False,
        enabled: bool | None = None,
        superuser: bool | None = None,
        password: str | None = None,
        actor: Actor,
    ) -> UserInfo:
        """Change a user in one transaction. A superuser may neither disable itself nor remove its
        own superuser flag (Conflict): the registry would be left without the one who asked."""
        if password is not None:
            _check_password(password)
        target = await self.user(name)
        if target.id == actor.performer_id:
            if enabled is False:
                raise Conflict("you cannot disable your own account", detail={"field": "enabled"})
            if superuser is False and target.superuser:
                raise Conflict("you cannot remove your own superuser flag", detail={"field": "superuser"})
        changes = UserChanges(
            email=email,
            clear_email=clear_email,
            enabled=enabled,
            superuser=superuser,
            password_hash=None if password is None else await sec.hash_password(password),
        )
        return await self.store.update_user(name, changes, actor=actor)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"passwords need at least {MIN_PASSWORD} characters", detail={"field": "password"})
