"""Credentials -> Principal: the one authentication step every request passes through."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from dockyard.auth import secrets as sec
from dockyard.auth.origin import actor_of
from dockyard.auth.principal import ANONYMOUS, Principal
from dockyard.auth.tokens import TokenService
from dockyard.config.settings import AuthSettings
from dockyard.db.accounts_store import Account, AccountsStore
from dockyard.db.oauth_store import ACCESS, OAuthStore
from dockyard.domain import audit
from dockyard.domain.access import Scope, parse_scopes
from dockyard.domain.errors import TooManyRequests, Unauthorized

#: (account_id, app_token_id) -> (enabled, epoch) of a live account, None when gone or revoked.
CredentialState = Callable[[int, int | None], Awaitable[tuple[bool, int] | None]]
#: ([user key, ip key], window ms) -> the highest failed-login count among them.
FailureCount = Callable[[list[str], int], Awaitable[int]]

_LOGIN_CACHE_SECONDS = 60
_LOGIN_CACHE_SIZE = 10_000
CLI_SECRET_NAME = "cli-password"  # noqa: S105 - the name of a stored secret
#: The user name that announces an OAuth2 access token as the password of Basic credentials.
OAUTH_USERNAME = "$oauthtoken"
_OAUTH_TOUCH_MS = 60_000


class Authenticator:
    """Turns an Authorization header into a Principal, or raises Unauthorized / TooManyRequests.

    Verified Basic credentials are remembered for a minute (keyed by a hash, never the secret),
    so clients sending Basic on every request do not pay argon2 each time. Whether the account
    still holds — exists, enabled, same password, app token not revoked — is checked on every
    request, cached or not: deleting a robot or disabling a user takes effect at once.
    """

    def __init__(
        self,
        store: AccountsStore,
        tokens: TokenService,
        settings: AuthSettings,
        state: CredentialState,
        failures: FailureCount | None = None,
        oauth: OAuthStore | None = None,
    ) -> None:
        self.store = store
        self.oauth = oauth
        self._failures = failures or store.failures
        self.tokens = tokens
        self.settings = settings
        self._state = state
        self._logins: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._cli_secret: str | None = None

    async def authenticate(
        self, authorization: str | None, client_ip: str, service: str, *, user_agent: str | None = None
    ) -> Principal:
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            principal = await self.tokens.verify(value.strip(), service)
            await self.check_live(principal)
            return principal
        if scheme == "basic":
            username, secret = decode_basic(value)
            return await self.login(username, secret, client_ip, user_agent=user_agent)
        raise Unauthorized(f"unsupported authorization scheme {scheme!r}")

    async def authenticate_api(
        self, authorization: str | None, client_ip: str, *, user_agent: str | None = None
    ) -> Principal:
        """The REST API's credentials: `Bearer` with an app token, a robot token or an OAuth2
        access token, or Basic as on the registry (`user:password`, `$app:TOKEN`, `NS+ROBOT:TOKEN`,
        `$oauthtoken:TOKEN` …). No credentials: anonymous.

        Registry bearer tokens (JWTs from /v2/auth) are not accepted here: their audience is the
        registry, and they carry registry actions, not API scopes.
        """
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            username, secret = decode_basic(value)
            return await self.login(username, secret, client_ip, user_agent=user_agent)
        if scheme != "bearer":
            raise Unauthorized(f"unsupported authorization scheme {scheme!r}")
        token = value.strip()
        principal: Principal | None = None
        if token.startswith(sec.APP_TOKEN_PREFIX):
            principal = await self._app_token(token)
        elif token.startswith(sec.ROBOT_TOKEN_PREFIX):
            robot = await self.store.robot_by_token_hash(sec.token_hash(token))
            if robot is not None and robot.enabled:
                principal = self._principal(robot, "robot_token")
        elif token.startswith(sec.OAUTH_ACCESS_PREFIX):
            principal = await self._oauth_token(token)
        if principal is None:
            # Tokens are 256-bit random values: guessing is hopeless, so no failed-login count.
            raise Unauthorized("invalid or expired bearer token")
        return principal

    async def _live(self, principal: Principal) -> bool:
        try:
            await self.check_live(principal)
        except Unauthorized:
            return False
        return True

    async def check_live(self, principal: Principal) -> None:
        if principal.oauth_token_id is not None and (
            self.oauth is None or not await self.oauth.token_live(principal.oauth_token_id)
        ):
            raise Unauthorized("these credentials are no longer valid")
        if principal.account_id is None:
            return
        state = await self._state(principal.account_id, principal.app_token_id)
        if state is None or not state[0] or state[1] != principal.epoch:
            raise Unauthorized("these credentials are no longer valid")

    async def login(
        self,
        username: str,
        secret: str,
        client_ip: str,
        *,
        user_agent: str | None = None,
        endpoint: str = "basic",
        record_success: bool = False,
        password_only: bool = False,
    ) -> Principal:
        """Verify a user name and secret. Every failure is audited (`login.failure`, with
        `endpoint`); a success only with `record_success` (the token endpoint), since clients
        sending Basic on every registry request would log one login per request.

        `password_only` (browser logins): only a user's own password is accepted, whatever
        `allow_password_on_cli` says, never a token; the result is not cached for Basic logins.
        """
        window = self.settings.failed_login_window_seconds * 1000
        keys = [f"user:{username}"[:400], f"ip:{client_ip}"]
        # A locked-out user or address is refused even with valid (or cached) credentials, so a
        # guessing client cannot tell right from wrong.
        if await self._failures(keys, window) >= self.settings.max_failed_logins:
            raise TooManyRequests("too many failed logins; try again later")
        cache_key = hashlib.sha256(f"{username}\0{secret}".encode()).hexdigest()
        cached = None if password_only else self._logins.get(cache_key)
        # A cached login of an account changed since (disabled, re-enabled, new epoch) is
        # verified afresh: it neither passes nor keeps failing for the rest of its minute.
        if cached is not None and cached[0] > time.monotonic() and await self._live(cached[1]):
            principal: Principal | None = cached[1]
        else:
            principal = await (
                self._verify_password(username, secret) if password_only else self._verify(username, secret)
            )
            if principal is None:
                await self.store.record_failure(
                    keys,
                    window,
                    actor=_attempted(username, client_ip, user_agent),
                    metadata={"username": username[:300], "endpoint": endpoint},
                )
                raise Unauthorized("invalid username or password")
            await self.store.clear_failures(keys[0])
            if not password_only:
                self._logins[cache_key] = (time.monotonic() + _LOGIN_CACHE_SECONDS, principal)
                while len(self._logins) > _LOGIN_CACHE_SIZE:
                    self._logins.popitem(last=False)
        assert principal is not None
        if record_success:
            await self.store.record_login(
                actor_of(principal, client_ip, user_agent), {"endpoint": endpoint, "method": principal.via}
            )
        return principal

    async def cli_password(self, account: Account) -> str:
        return sec.cli_password(await self._server_secret(), account.id, account.epoch)

    async def _server_secret(self) -> str:
        if self._cli_secret is None:
            self._cli_secret = await self.store.secret(CLI_SECRET_NAME, secrets.token_urlsafe(32))
        return self._cli_secret

    def principal_for(self, account: Account, via: str) -> Principal:
        """The unscoped principal of an account (a browser session's, for one)."""
        return self._principal(account, via)

    def _principal(
        self, account: Account, via: str, app_token_id: int | None = None, scopes: frozenset[Scope] | None = None
    ) -> Principal:
        return Principal(
            account_id=account.id,
            name=account.name,
            kind=account.kind,
            superuser=account.kind == "user" and (account.superuser or account.name in self.settings.superusers),
            epoch=account.epoch,
            app_token_id=app_token_id,
            via=via,
            scopes=scopes,
        )

    async def _verify(self, username: str, secret: str) -> Principal | None:
        if username == "$app":
            return await self._app_token(secret)
        if username == OAUTH_USERNAME:
            return await self._oauth_token(secret)
        account = await self.store.account(username)
        if account is None or not account.enabled:
            return None
        if account.kind == "robot":
            ok = account.token_hash is not None and sec.same(account.token_hash, sec.token_hash(secret))
            return self._principal(account, "robot_token") if ok else None
        if secret.startswith(sec.CLI_PASSWORD_PREFIX):
            ok = sec.same(secret, await self.cli_password(account))
            return self._principal(account, "cli_password") if ok else None
        if not self.settings.allow_password_on_cli or account.password_hash is None:
            return None
        if await sec.verify_password(account.password_hash, secret):
            return self._principal(account, "password")
        return None

    async def _verify_password(self, username: str, secret: str) -> Principal | None:
        account = await self.store.account(username)
        if account is None or not account.enabled or account.kind != "user" or account.password_hash is None:
            return None
        if await sec.verify_password(account.password_hash, secret):
            return self._principal(account, "password")
        return None

    async def _oauth_token(self, secret: str) -> Principal | None:
        """The principal of a live OAuth2 access token: the user who granted it, or (client
        credentials) the application itself; capped by the token's scopes either way."""
        if self.oauth is None or not secret.startswith(sec.OAUTH_ACCESS_PREFIX):
            return None
        token = await self.oauth.token(sec.token_hash(secret))
        now = time.time() * 1000
        if token is None or token.kind != ACCESS or token.revoked_at is not None or token.expires_at <= now:
            return None
        if token.last_used_at is None or token.last_used_at < now - _OAUTH_TOUCH_MS:
            await self.oauth.touch(token.id)
        scopes = parse_scopes([token.scopes])
        via = f"oauth:{token.client_id}"
        if token.account_id is None:
            return Principal(
                name=token.client_id,
                kind="application",
                via=via,
                scopes=scopes,
                oauth_app=token.client_id,
                oauth_token_id=token.id,
                application_namespace=token.namespace,
            )
        owner = await self.store.account_by_id(token.account_id)
        if owner is None or not owner.enabled:
            return None
        return dataclasses.replace(
            self._principal(owner, via, scopes=scopes), oauth_app=token.client_id, oauth_token_id=token.id
        )

    async def _app_token(self, secret: str) -> Principal | None:
        token = await self.store.app_token_by_hash(sec.token_hash(secret))
        if token is None or token.revoked_at is not None:
            return None
        if token.expires_at is not None and token.expires_at <= time.time() * 1000:
            return None
        owner = await self.store.account_by_id(token.account_id)
        if owner is None or not owner.enabled:
            return None
        await self.store.touch_app_token(token.id)
        return self._principal(owner, "app_token", token.id, parse_scopes([token.scopes]))


def _attempted(username: str, client_ip: str, user_agent: str | None) -> audit.Actor:
    """The actor of a failed login: the name tried (unverified), its kind read from its form."""
    if username == "$app":
        return audit.Actor(None, audit.APP_TOKEN, client_ip, user_agent[:512] if user_agent else None)
    if username == OAUTH_USERNAME:
        return audit.Actor(None, audit.OAUTH_APP, client_ip, user_agent[:512] if user_agent else None)
    kind = audit.ROBOT if "+" in username else audit.USER
    return audit.Actor(username[:300], kind, client_ip, user_agent[:512] if user_agent else None)


def decode_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    username, colon, secret = decoded.partition(":")
    if not colon or not username:
        raise Unauthorized("malformed Basic credentials")
    return username, secret
