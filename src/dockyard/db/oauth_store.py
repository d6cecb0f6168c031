"""OAuth2 applications of organizations, users' authorizations, authorization codes and tokens.

Every secret (client secret, code, token) is stored as its SHA-256 only. Each change is audited
in its own transaction: `oauth.app.create`, `.update`, `.delete`, `.secret`; `oauth.grant` (a
user's consent), `oauth.token` (tokens issued), `oauth.revoke` (tokens or an authorization ended).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import (
    accounts,
    namespaces,
    oauth_applications,
    oauth_authorizations,
    oauth_codes,
    oauth_tokens,
)
from dockyard.domain.audit import Actor
from dockyard.domain.errors import AlreadyExists, InvalidRequest, NotFound

#: Used codes and expired tokens are kept this long after they lapse, then deleted in passing.
_KEEP_LAPSED_MS = 86_400_000
ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class OAuthApp:
    id: int
    namespace: str
    """The organization owning the application."""
    name: str
    client_id: str
    secret_hash: str
    redirect_uris: tuple[str, ...]
    description: str | None
    scopes: str
    """Space-separated scope names the application may ask for."""
    created_at: int
    secret_reset_at: int | None


@dataclass(frozen=True, slots=True)
class CodeRecord:
    id: int
    application_id: int
    account_id: int
    redirect_uri: str
    scopes: str
    code_challenge: str
    grant_id: str
    expires_at: int
    used_at: int | None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    kind: str
    application_id: int
    client_id: str
    namespace: str
    """The organization owning the application."""
    account_id: int | None
    """The user the application acts for; None: the application itself (client credentials)."""
    grant_id: str | None
    scopes: str
    expires_at: int
    revoked_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token to store: its hash, kind, scopes and expiry."""

    token_hash: str
    kind: str
    scopes: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class AuthorizationRecord:
    id: int
    application: OAuthApp
    scopes: str
    created_at: int
    updated_at: int


_APP_COLUMNS = (*oauth_applications.c, namespaces.c.name.label("namespace"))


def _app(row: Any) -> OAuthApp:
    return OAuthApp(
        id=int(row.id),
        namespace=row.namespace,
        name=row.name,
        client_id=row.client_id,
        secret_hash=row.secret_hash,
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        description=row.description,
        scopes=row.scopes,
        created_at=int(row.created_at),
        secret_reset_at=row.secret_reset_at,
    )


def _apps() -> Any:
    return select(*_APP_COLUMNS).join(namespaces, namespaces.c.id == oauth_applications.c.namespace_id)


def _code(row: Any) -> CodeRecord:
    return CodeRecord(
        id=int(row.id),
        application_id=int(row.application_id),
        account_id=int(row.account_id),
        redirect_uri=row.redirect_uri,
        scopes=row.scopes,
        code_challenge=row.code_challenge,
        grant_id=row.grant_id,
        expires_at=int(row.expires_at),
        used_at=row.used_at,
    )


class OAuthStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    # -- applications ---------------------------------------------------------------------------

    async def create_app(
        self,
        org: str,
        name: str,
        *,
        client_id: str,
        secret_hash: str,
        redirect_uris: list[str],
        description: str | None,
        scopes: str,
        actor: Actor,
    ) -> OAuthApp:
        async with self.db.write() as conn:
            namespace = (
                await conn.execute(select(namespaces.c.id, namespaces.c.kind).where(namespaces.c.name == org))
            ).first()
            if namespace is None:
                raise NotFound(f"no organization {org!r}")
            if namespace.kind != "org":
                raise InvalidRequest(f"{org!r} is not an organization: only organizations own OAuth2 applications")
            try:
                await conn.execute(
                    insert(oauth_applications).values(
                        namespace_id=namespace.id,
                        name=name,
                        client_id=client_id,
                        secret_hash=secret_hash,
                        redirect_uris=json.dumps(redirect_uris),
                        description=description,
                        scopes=scopes,
                        created_at=now_ms(),
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"organization {org} has an application named {name!r} already") from None
            await self.audit(
                conn,
                "oauth.app.create",
                actor,
                namespace=org,
                metadata={"client_id": client_id, "name": name, "redirect_uris": redirect_uris, "scopes": scopes},
            )
            return await self._app_in(conn, org, client_id)

    async def _app_in(self, conn: AsyncConnection, org: str, client_id: str) -> OAuthApp:
        row = (
            await conn.execute(_apps().where(namespaces.c.name == org, oauth_applications.c.client_id == client_id))
        ).first()
        if row is None:
            raise NotFound(f"organization {org} has no application {client_id!r}")
        return _app(row)

    async def app(self, org: str, client_id: str) -> OAuthApp:
        """The application `client_id` of `org` (NotFound otherwise)."""
        async with self.db.read() as conn:
            return await self._app_in(conn, org, client_id)

    async def app_by_client_id(self, client_id: str) -> OAuthApp | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_apps().where(oauth_applications.c.client_id == client_id))).first()
        return None if row is None else _app(row)

    async def apps_of(self, org: str, *, after: str | None, limit: int) -> list[OAuthApp]:
        """The organization's applications by name, after `after` (NotFound for no such namespace)."""
        async with self.db.read() as conn:
            if await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == org)) is None:
                raise NotFound(f"no organization {org!r}")
            query = _apps().where(namespaces.c.name == org)
            if after is not None:
                query = query.where(oauth_applications.c.name > after)
            rows = await conn.execute(query.order_by(oauth_applications.c.name).limit(limit))
            return [_app(row) for row in rows]

    async def update_app(self, org: str, client_id: str, changes: dict[str, Any], *, actor: Actor) -> OAuthApp:
        """Change name, redirect_uris (a list), description or scopes; audit the old and new values."""
        async with self.db.write() as conn:
            old = await self._app_in(conn, org, client_id)
            values = dict(changes)
            if "redirect_uris" in values:
                values["redirect_uris"] = json.dumps(values["redirect_uris"])
            if values:
                try:
                    await conn.execute(
                        update(oauth_applications).where(oauth_applications.c.id == old.id).values(**values)
                    )
                except IntegrityError:
                    raise AlreadyExists(
                        f"organization {org} has an application named {changes.get('name')!r} already"
                    ) from None
            before = {
                "name": old.name,
                "redirect_uris": list(old.redirect_uris),
                "description": old.description,
                "scopes": old.scopes,
            }
            await self.audit(
                conn,
                "oauth.app.update",
                actor,
                namespace=org,
                metadata={
                    "client_id": client_id,
                    "old": {key: before[key] for key in changes},
                    "new": dict(changes),
                },
            )
            return await self._app_in(conn, org, client_id)

    async def delete_app(self, org: str, client_id: str, *, actor: Actor) -> None:
        """Delete the application; its codes, authorizations and tokens go with it."""
        async with self.db.write() as conn:
            app = await self._app_in(conn, org, client_id)
            await conn.execute(delete(oauth_applications).where(oauth_applications.c.id == app.id))
            await self.audit(
                conn, "oauth.app.delete", actor, namespace=org, metadata={"client_id": client_id, "name": app.name}
            )

    async def set_secret(self, org: str, client_id: str, secret_hash: str, *, actor: Actor) -> OAuthApp:
        """Replace the client secret: the old one stops working at once."""
        async with self.db.write() as conn:
            app = await self._app_in(conn, org, client_id)
            await conn.execute(
                update(oauth_applications)
                .where(oauth_applications.c.id == app.id)
                .values(secret_hash=secret_hash, secret_reset_at=now_ms())
            )
            await self.audit(
                conn, "oauth.app.secret", actor, namespace=org, metadata={"client_id": client_id, "name": app.name}
            )
            return await self._app_in(conn, org, client_id)

    # -- consent and codes ---------------------------------------------------------------------

    async def grant(
        self,
        app: OAuthApp,
        account_id: int,
        *,
        code_hash: str,
        redirect_uri: str,
        scopes: str,
        code_challenge: str,
        grant_id: str,
        expires_at: int,
        actor: Actor,
    ) -> None:
        """Record a user's consent (the authorization holds every scope ever granted) and the
        authorization code that carries it to the application."""
        now = now_ms()
        async with self.db.write() as conn:
            await conn.execute(delete(oauth_codes).where(oauth_codes.c.expires_at < now - _KEEP_LAPSED_MS))
            existing = (
                await conn.execute(
                    select(oauth_authorizations.c.id, oauth_authorizations.c.scopes).where(
                        oauth_authorizations.c.application_id == app.id,
                        oauth_authorizations.c.account_id == account_id,
                    )
                )
            ).first()
            if existing is None:
                await conn.execute(
                    insert(oauth_authorizations).values(
                        application_id=app.id, account_id=account_id, scopes=scopes, created_at=now, updated_at=now
                    )
                )
            else:
                held = " ".join(dict.fromkeys([*existing.scopes.split(), *scopes.split()]))
                await conn.execute(
                    update(oauth_authorizations)
                    .where(oauth_authorizations.c.id == existing.id)
                    .values(scopes=held, updated_at=now)
                )
            await conn.execute(
                insert(oauth_codes).values(
                    code_hash=code_hash,
                    application_id=app.id,
                    account_id=account_id,
                    redirect_uri=redirect_uri,
                    scopes=scopes,
                    code_challenge=code_challenge,
                    grant_id=grant_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            await self.audit(
                conn,
                "oauth.grant",
                actor,
                namespace=app.namespace,
                metadata={"client_id": app.client_id, "application": app.name, "scopes": scopes},
                now=now,
            )

    async def code(self, code_hash: str) -> CodeRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(oauth_codes).where(oauth_codes.c.code_hash == code_hash))).first()
        return None if row is None else _code(row)

    # -- tokens --------------------------------------------------------------------------------

    async def issue(
        self,
        app: OAuthApp,
        account_id: int | None,
        tokens: list[NewToken],
        *,
        grant_type: str,
        grant_id: str | None,
        actor: Actor,
        redeem_code: int | None = None,
        replaces: int | None = None,
    ) -> list[int] | None:
        """Store `tokens` for the application (acting for `account_id`, or itself); return their ids.

        With `redeem_code`, the code is marked used in the same transaction; with `replaces`, that
        refresh token is revoked. None, with nothing stored, when the code was used or the token
        revoked meanwhile (two requests raced: one wins).
        """
        now = now_ms()
        async with self.db.write() as conn:
            if redeem_code is not None:
                used = await conn.execute(
                    update(oauth_codes)
                    .where(oauth_codes.c.id == redeem_code, oauth_codes.c.used_at.is_(None))
                    .values(used_at=now)
                )
                if not used.rowcount:
                    return None
            if replaces is not None:
                revoked = await conn.execute(
                    update(oauth_tokens)
                    .where(oauth_tokens.c.id == replaces, oauth_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                if not revoked.rowcount:
                    return None
            await conn.execute(delete(oauth_tokens).where(oauth_tokens.c.expires_at < now - _KEEP_LAPSED_MS))
            ids = [
                int(
                    (
                        await conn.execute(
                            insert(oauth_tokens)
                            .values(
                                token_hash=token.token_hash,
                                kind=token.kind,
                                application_id=app.id,
                                account_id=account_id,
                                grant_id=grant_id,
                                scopes=token.scopes,
                                created_at=now,
                                expires_at=token.expires_at,
                            )
                            .returning(oauth_tokens.c.id)
                        )
                    ).scalar_one()
                )
                for token in tokens
            ]
            await self.audit(
                conn,
                "oauth.token",
                actor,
                namespace=app.namespace,
                metadata={
                    "client_id": app.client_id,
                    "grant_type": grant_type,
                    "scopes": tokens[0].scopes,
                    "token_id": ids[0],
                    "expires_at": tokens[0].expires_at,
                    "refresh_token": len(tokens) > 1,
                },
                now=now,
            )
            return ids

    async def token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, whatever its state (the caller checks expiry and revocation)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        oauth_tokens,
                        oauth_applications.c.client_id,
                        namespaces.c.name.label("namespace"),
                    )
                    .join(oauth_applications, oauth_applications.c.id == oauth_tokens.c.application_id)
                    .join(namespaces, namespaces.c.id == oauth_applications.c.namespace_id)
                    .where(oauth_tokens.c.token_hash == token_hash)
                )
            ).first()
        if row is None:
            return None
        return TokenRecord(
            id=int(row.id),
            kind=row.kind,
            application_id=int(row.application_id),
            client_id=row.client_id,
            namespace=row.namespace,
            account_id=row.account_id,
            grant_id=row.grant_id,
            scopes=row.scopes,
            expires_at=int(row.expires_at),
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    async def token_live(self, token_id: int) -> bool:
        """Whether the token still exists, unrevoked and unexpired."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(oauth_tokens.c.revoked_at, oauth_tokens.c.expires_at).where(oauth_tokens.c.id == token_id)
                )
            ).first()
        return row is not None and row.revoked_at is None and row.expires_at > now_ms()

    async def touch(self, token_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(oauth_tokens).where(oauth_tokens.c.id == token_id).values(last_used_at=now_ms()))

    async def revoke(
        self, app: OAuthApp, *, token_id: int | None = None, grant_id: str | None = None, reason: str, actor: Actor
    ) -> int:
        """Revoke one token and, with `grant_id`, every token of that grant; audit it when any
        was live. Return how many were."""
        conditions = []
        if token_id is not None:
            conditions.append(oauth_tokens.c.id == token_id)
        if grant_id is not None:
            conditions.append(oauth_tokens.c.grant_id == grant_id)
        if not conditions:
            return 0
        async with self.db.write() as conn:
            result = await conn.execute(
                update(oauth_tokens)
                .where(
                    oauth_tokens.c.application_id == app.id,
                    oauth_tokens.c.revoked_at.is_(None),
                    or_(*conditions),
                )
                .values(revoked_at=now_ms())
            )
            count = int(result.rowcount or 0)
            if count:
                await self.audit(
                    conn,
                    "oauth.revoke",
                    actor,
                    namespace=app.namespace,
                    metadata={"client_id": app.client_id, "reason": reason, "tokens": count, "token_id": token_id},
                )
            return count

    # -- users' authorizations -----------------------------------------------------------------

    async def authorizations_of(self, account_id: int, *, after: int | None, limit: int) -> list[AuthorizationRecord]:
        async with self.db.read() as conn:
            query = (
                select(
                    *_APP_COLUMNS,
                    oauth_authorizations.c.id.label("authorization_id"),
                    oauth_authorizations.c.scopes.label("granted"),
                    oauth_authorizations.c.created_at.label("granted_at"),
                    oauth_authorizations.c.updated_at.label("updated_at"),
                )
                .join(oauth_applications, oauth_applications.c.id == oauth_authorizations.c.application_id)
                .join(namespaces, namespaces.c.id == oauth_applications.c.namespace_id)
                .where(oauth_authorizations.c.account_id == account_id)
            )
            if after is not None:
                query = query.where(oauth_authorizations.c.id > after)
            rows = await conn.execute(query.order_by(oauth_authorizations.c.id).limit(limit))
            return [
                AuthorizationRecord(
                    id=int(row.authorization_id),
                    application=_app(row),
                    scopes=row.granted,
                    created_at=int(row.granted_at),
                    updated_at=int(row.updated_at),
                )
                for row in rows
            ]

    async def revoke_authorization(self, account_id: int, client_id: str, *, actor: Actor) -> None:
        """End a user's authorization of an application: every token it holds for the user, and
        every code not yet exchanged (NotFound when the user has not authorized it)."""
        now = now_ms()
        async with self.db.write() as conn:
            app_row = (await conn.execute(_apps().where(oauth_applications.c.client_id == client_id))).first()
            app = None if app_row is None else _app(app_row)
            removed = (
                None
                if app is None
                else await conn.execute(
                    delete(oauth_authorizations).where(
                        oauth_authorizations.c.application_id == app.id,
                        oauth_authorizations.c.account_id == account_id,
                    )
                )
            )
            if app is None or removed is None or not removed.rowcount:
                raise NotFound(f"you have not authorized an application {client_id!r}")
            mine = and_(oauth_tokens.c.application_id == app.id, oauth_tokens.c.account_id == account_id)
            result = await conn.execute(
                update(oauth_tokens).where(mine, oauth_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            await conn.execute(
                update(oauth_codes)
                .where(
                    oauth_codes.c.application_id == app.id,
                    oauth_codes.c.account_id == account_id,
                    oauth_codes.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            user = await conn.scalar(select(accounts.c.name).where(accounts.c.id == account_id))
            await self.audit(
                conn,
                "oauth.revoke",
                actor,
                namespace=app.namespace,
                metadata={
                    "client_id": client_id,
                    "reason": "authorization revoked",
                    "user": user,
                    "tokens": int(result.rowcount or 0),
                },
                now=now,
            )
