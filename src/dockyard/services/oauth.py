"""OAuth2 applications of organizations and the flows that give them tokens (RFC 6749).

- **Applications** belong to an organization; its admins register them with exact redirect
  URIs and the scopes the application may ask for. The client secret is shown once (stored as a
  SHA-256); resetting it voids the old one at once. Every application is a confidential client:
  the token and revocation endpoints always authenticate it.
- **Authorization code with PKCE** (RFC 7636, `S256` only): a logged-in user consents to the
  scopes asked for; the code is single-use, lives `oauth.code_seconds`, and is bound to the
  application, the user, the redirect URI and the code challenge. A code presented twice revokes
  every token issued for it (RFC 6749 §10.5). Its tokens act as the user, capped by the scopes.
- **Refresh tokens** come with the code's tokens; each use replaces the refresh token. A replaced
  refresh token presented again revokes every token of its grant.
- **Client credentials**: the application acts as itself, with an organization admin's roles in
  its own organization (and an anonymous caller's elsewhere), capped by the scopes it asks for —
  repository scopes and `org:admin` only, within those it was registered with. No refresh token.

Tokens are opaque (`dyo_` access, `dyf_` refresh), stored as SHA-256, and expire.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dockyard.auth import Authenticator, Principal
from dockyard.auth import secrets as sec
from dockyard.auth.origin import actor_of
from dockyard.config.settings import OAuthSettings
from dockyard.db.accounts_store import AccountsStore
from dockyard.db.oauth_store import ACCESS, REFRESH, AuthorizationRecord, NewToken, OAuthApp, OAuthStore, TokenRecord
from dockyard.domain.access import ALL_SCOPES, Scope, parse_scopes, scopes_text
from dockyard.domain.audit import Actor
from dockyard.domain.errors import InvalidRequest

__all__ = [
    "APPLICATION_SCOPES",
    "AuthorizationRecord",
    "AuthorizationRequest",
    "Client",
    "IssuedTokens",
    "OAuthApp",
    "OAuthError",
    "OAuthService",
    "check_redirect_uri",
    "s256",
]

MAX_REDIRECT_URIS = 10
MAX_URI = 2000
#: What an application acting as itself (client credentials) may hold.
APPLICATION_SCOPES = frozenset(
    {Scope.REPO_READ, Scope.REPO_WRITE, Scope.REPO_ADMIN, Scope.REPO_CREATE, Scope.ORG_ADMIN}
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOOPBACK_NAMES = ("localhost",)


class OAuthError(InvalidRequest):
    """An OAuth2 protocol error (RFC 6749 §4.1.2.1, §5.2): `error` is the protocol's code."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request: what the consent page shows and the approval stores."""

    app: OAuthApp
    redirect_uri: str
    scopes: frozenset[Scope]
    code_challenge: str
    state: str | None


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    scopes: frozenset[Scope]
    refresh_token: str | None = None


@dataclass(frozen=True, slots=True)
class Client:
    """Who calls the token endpoint: its IP and user agent (for the audit log)."""

    ip: str
    user_agent: str | None


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def check_redirect_uri(uri: str) -> str:
    """An absolute `https` URI, or `http` on a loopback address (native applications, RFC 8252);
    no fragment, no user information."""
    if len(uri) > MAX_URI or _CONTROL.search(uri) or " " in uri:
        raise InvalidRequest(f"invalid redirect URI {uri[:100]!r}")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        raise InvalidRequest(f"invalid redirect URI {uri[:100]!r}") from None
    if parts.fragment or "#" in uri:
        raise InvalidRequest(f"a redirect URI has no fragment: {uri[:100]!r}")
    if not host or parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"a redirect URI is absolute, with a host and no user information: {uri[:100]!r}")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and _loopback(host):
        return uri
    raise InvalidRequest(f"a redirect URI is https (or http on a loopback address): {uri[:100]!r}")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 255 or _CONTROL.search(cleaned):
        raise InvalidRequest("an application name is 1 to 255 printable characters")
    return cleaned


def _registered(scopes: list[str] | None) -> str:
    """The scopes an application may ask for: those given (at least one), or every scope."""
    held = ALL_SCOPES if scopes is None else _requested(scopes)
    if not held:
        raise InvalidRequest("an application may ask for at least one scope")
    return scopes_text(held)


def _requested(texts: list[str] | str | None) -> frozenset[Scope]:
    if texts is None:
        return frozenset()
    return parse_scopes([texts] if isinstance(texts, str) else texts)


class OAuthService:
    def __init__(
        self, store: OAuthStore, accounts: AccountsStore, authenticator: Authenticator, settings: OAuthSettings
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.authenticator = authenticator
        self.settings = settings

    # -- applications ---------------------------------------------------------------------------

    async def create_app(
        self,
        org: str,
        name: str,
        *,
        redirect_uris: list[str],
        description: str | None,
        scopes: list[str] | None,
        actor: Actor,
    ) -> tuple[OAuthApp, str]:
        """Register an application; return it and its client secret (shown only now). Without
        `scopes` it may ask for every scope."""
        secret = sec.new_token(sec.OAUTH_SECRET_PREFIX)
        app = await self.store.create_app(
            org,
            _name(name),
            client_id=secrets.token_hex(12),
            secret_hash=sec.token_hash(secret),
            redirect_uris=self._redirect_uris(redirect_uris),
            description=description,
            scopes=_registered(scopes),
            actor=actor,
        )
        return app, secret

    @staticmethod
    def _redirect_uris(uris: list[str]) -> list[str]:
        if not uris or len(uris) > MAX_REDIRECT_URIS:
            raise InvalidRequest(f"an application has 1 to {MAX_REDIRECT_URIS} redirect URIs")
        return list(dict.fromkeys(check_redirect_uri(uri) for uri in uris))

    async def apps(self, org: str, *, after: str | None, limit: int) -> list[OAuthApp]:
        return await self.store.apps_of(org, after=after, limit=limit)

    async def app(self, org: str, client_id: str) -> OAuthApp:
        return await self.store.app(org, client_id)

    async def update_app(self, org: str, client_id: str, changes: dict[str, Any], *, actor: Actor) -> OAuthApp:
        """Change `name`, `redirect_uris`, `description` (None removes it) or `scopes` (tokens
        issued already keep theirs)."""
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = _name(changes["name"])
        if "redirect_uris" in changes:
            values["redirect_uris"] = self._redirect_uris(changes["redirect_uris"])
        if "description" in changes:
            values["description"] = changes["description"]
        if "scopes" in changes:
            values["scopes"] = _registered(changes["scopes"])
        return await self.store.update_app(org, client_id, values, actor=actor)

    async def delete_app(self, org: str, client_id: str, *, actor: Actor) -> None:
        await self.store.delete_app(org, client_id, actor=actor)

    async def reset_secret(self, org: str, client_id: str, *, actor: Actor) -> tuple[OAuthApp, str]:
        secret = sec.new_token(sec.OAUTH_SECRET_PREFIX)
        app = await self.store.set_secret(org, client_id, sec.token_hash(secret), actor=actor)
        return app, secret

    # -- authorization endpoint ----------------------------------------------------------------

    async def client_and_redirect(self, client_id: str | None, redirect_uri: str | None) -> tuple[OAuthApp, str]:
        """The application and the redirect URI to answer at. InvalidRequest (never a redirect)
        when the client is unknown or the URI is not one it registered (RFC 6749 §4.1.2.1)."""
        app = None if not client_id or len(client_id) > 64 else await self.store.app_by_client_id(client_id)
        if app is None:
            raise InvalidRequest("unknown client_id")
        if not redirect_uri:
            raise InvalidRequest("redirect_uri is required")
        if redirect_uri not in app.redirect_uris:
            raise InvalidRequest("redirect_uri is not registered for this application")
        return app, redirect_uri

    def check_request(
        self,
        app: OAuthApp,
        redirect_uri: str,
        params: dict[str, str],
    ) -> AuthorizationRequest:
        """The rest of an authorization request; OAuthError (answered by a redirect) when wrong."""
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        challenge = params.get("code_challenge")
        if not challenge:
            raise OAuthError("invalid_request", "PKCE is required: code_challenge and code_challenge_method=S256")
        if params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is refused)")
        if not _CHALLENGE.fullmatch(challenge):
            raise OAuthError("invalid_request", "code_challenge must be BASE64URL(SHA-256(verifier)), 43 characters")
        allowed = parse_scopes([app.scopes])
        try:
            wanted = _requested(params.get("scope")) or allowed
        except InvalidRequest as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        if not wanted or not wanted <= allowed:
            raise OAuthError("invalid_scope", f"this application may ask for {scopes_text(allowed) or 'no scope'}")
        state = params.get("state")
        if state is not None and len(state) > 1024:
            raise OAuthError("invalid_request", "state is too long")
        return AuthorizationRequest(app, redirect_uri, wanted, challenge, state)

    async def approve(self, request: AuthorizationRequest, principal: Principal, *, actor: Actor) -> str:
        """The user consented: record it and return a fresh authorization code."""
        if principal.kind != "user" or principal.account_id is None:
            raise InvalidRequest("only users authorize applications")
        code = sec.new_token(sec.OAUTH_CODE_PREFIX)
        await self.store.grant(
            request.app,
            principal.account_id,
            code_hash=sec.token_hash(code),
            redirect_uri=request.redirect_uri,
            scopes=scopes_text(request.scopes),
            code_challenge=request.code_challenge,
            grant_id=secrets.token_hex(16),
            expires_at=_ms() + self.settings.code_seconds * 1000,
            actor=actor,
        )
        return code

    # -- token endpoint ------------------------------------------------------------------------

    async def authenticate_client(self, client_id: str | None, secret: str | None) -> OAuthApp:
        app = None if not client_id or len(client_id) > 64 else await self.store.app_by_client_id(client_id)
        if app is None or not secret or not sec.same(app.secret_hash, sec.token_hash(secret)):
            raise OAuthError("invalid_client", "unknown client or wrong client secret", status=401)
        return app

    async def exchange_code(
        self, app: OAuthApp, code: str | None, redirect_uri: str | None, verifier: str | None, client: Client
    ) -> IssuedTokens:
        record = None if not code or len(code) > 128 else await self.store.code(sec.token_hash(code))
        if record is None or record.application_id != app.id:
            raise OAuthError("invalid_grant", "unknown authorization code")
        user = await self._user_principal(record.account_id, app)
        if record.used_at is not None:
            # A replayed code: whoever holds it, the tokens issued for it are no longer safe.
            await self.store.revoke(
                app, grant_id=record.grant_id, reason="authorization code reused", actor=self._actor(user, app, client)
            )
            raise OAuthError("invalid_grant", "the authorization code was used already")
        if record.expires_at <= _ms():
            raise OAuthError("invalid_grant", "the authorization code expired")
        if redirect_uri != record.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        if not verifier or not _VERIFIER.fullmatch(verifier) or not sec.same(s256(verifier), record.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code challenge")
        scopes = parse_scopes([record.scopes])
        issued = await self._issue(
            app,
            user,
            scopes,
            grant_type="authorization_code",
            grant_id=record.grant_id,
            client=client,
            redeem_code=record.id,
        )
        if issued is None:
            raise OAuthError("invalid_grant", "the authorization code was used already")
        return issued

    async def refresh(self, app: OAuthApp, token: str | None, scope: str | None, client: Client) -> IssuedTokens:
        record = None if not token or len(token) > 128 else await self.store.token(sec.token_hash(token))
        if record is None or record.kind != REFRESH or record.application_id != app.id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if record.account_id is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        user = await self._user_principal(record.account_id, app)
        if record.revoked_at is not None:
            # A replaced refresh token used again: someone else holds a copy. End the grant.
            await self.store.revoke(
                app, grant_id=record.grant_id, reason="refresh token reused", actor=self._actor(user, app, client)
            )
            raise OAuthError("invalid_grant", "the refresh token was revoked")
        if record.expires_at <= _ms():
            raise OAuthError("invalid_grant", "the refresh token expired")
        held = parse_scopes([record.scopes])
        try:
            wanted = _requested(scope) or held
        except InvalidRequest as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        if not wanted <= held:
            raise OAuthError("invalid_scope", f"the refresh token holds {scopes_text(held)}")
        issued = await self._issue(
            app,
            user,
            wanted,
            grant_type="refresh_token",
            grant_id=record.grant_id,
            client=client,
            replaces=record.id,
            refresh_scopes=held,
        )
        if issued is None:
            raise OAuthError("invalid_grant", "the refresh token was used already")
        return issued

    async def client_credentials(self, app: OAuthApp, scope: str | None, client: Client) -> IssuedTokens:
        usable = parse_scopes([app.scopes]) & APPLICATION_SCOPES
        try:
            wanted = _requested(scope) or usable
        except InvalidRequest as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        if not wanted or not wanted <= usable:
            raise OAuthError(
                "invalid_scope",
                f"an application acting as itself may hold {scopes_text(usable) or 'no scope'} "
                "(repository scopes and org:admin it was registered with)",
            )
        principal = self.application_principal(app, wanted)
        issued = await self._issue(
            app, principal, wanted, grant_type="client_credentials", grant_id=None, client=client, refresh=False
        )
        assert issued is not None
        return issued

    async def revoke_token(self, app: OAuthApp, token: str | None, client: Client) -> None:
        """RFC 7009: end the token if it is this application's (a refresh token ends its whole
        grant); anything else is silently ignored."""
        record = None if not token or len(token) > 128 else await self.store.token(sec.token_hash(token))
        if record is None or record.application_id != app.id or record.revoked_at is not None:
            return
        principal = await self._holder(record, app)
        grant = record.grant_id if record.kind == REFRESH else None
        actor = self._actor(principal, app, client)
        await self.store.revoke(
            app, token_id=record.id, grant_id=grant, reason="revoked by the application", actor=actor
        )

    def application_principal(self, app: OAuthApp, scopes: frozenset[Scope]) -> Principal:
        """The application acting as itself (client credentials)."""
        return Principal(
            name=app.client_id,
            kind="application",
            via=f"oauth:{app.client_id}",
            scopes=scopes,
            oauth_app=app.client_id,
            application_namespace=app.namespace,
        )

    async def _holder(self, record: TokenRecord, app: OAuthApp) -> Principal:
        if record.account_id is None:
            return self.application_principal(app, parse_scopes([record.scopes]))
        account = await self.accounts.account_by_id(record.account_id)
        if account is None:
            return self.application_principal(app, frozenset())
        return self.authenticator.principal_for(account, f"oauth:{app.client_id}")

    async def _user_principal(self, account_id: int, app: OAuthApp) -> Principal:
        account = await self.accounts.account_by_id(account_id)
        if account is None or not account.enabled:
            raise OAuthError("invalid_grant", "the user who authorized this is gone or disabled")
        return self.authenticator.principal_for(account, f"oauth:{app.client_id}")

    @staticmethod
    def _actor(principal: Principal, app: OAuthApp, client: Client) -> Actor:
        return actor_of(principal, client.ip, client.user_agent, via_app=app.client_id)

    async def _issue(
        self,
        app: OAuthApp,
        principal: Principal,
        scopes: frozenset[Scope],
        *,
        grant_type: str,
        grant_id: str | None,
        client: Client,
        refresh: bool = True,
        redeem_code: int | None = None,
        replaces: int | None = None,
        refresh_scopes: frozenset[Scope] | None = None,
    ) -> IssuedTokens | None:
        now = _ms()
        access = sec.new_token(sec.OAUTH_ACCESS_PREFIX)
        lifetime = self.settings.access_token_seconds
        tokens = [NewToken(sec.token_hash(access), ACCESS, scopes_text(scopes), now + lifetime * 1000)]
        refresh_token = None
        if refresh:
            refresh_token = sec.new_token(sec.OAUTH_REFRESH_PREFIX)
            tokens.append(
                NewToken(
                    sec.token_hash(refresh_token),
                    REFRESH,
                    scopes_text(refresh_scopes or scopes),
                    now + self.settings.refresh_token_seconds * 1000,
                )
            )
        ids = await self.store.issue(
            app,
            principal.account_id,
            tokens,
            grant_type=grant_type,
            grant_id=grant_id,
            actor=self._actor(principal, app, client),
            redeem_code=redeem_code,
            replaces=replaces,
        )
        if ids is None:
            return None
        return IssuedTokens(access, lifetime, scopes, refresh_token)

    # -- users' authorizations -----------------------------------------------------------------

    async def authorizations(self, account_id: int, *, after: int | None, limit: int) -> list[AuthorizationRecord]:
        return await self.store.authorizations_of(account_id, after=after, limit=limit)

    async def revoke_authorization(self, account_id: int, client_id: str, *, actor: Actor) -> None:
        await self.store.revoke_authorization(account_id, client_id, actor=actor)


def _ms() -> int:
    return time.time_ns() // 1_000_000
