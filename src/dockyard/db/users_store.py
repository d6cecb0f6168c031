"""Queries for the REST API's user resources: user accounts as superusers manage them, a user's
app tokens page by page, and starred repositories.

Every change writes its audit entries in its own transaction (`actor=`), one entry per field
that really changed, with the old and new values.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from dockyard.db.accounts_store import AppToken, app_token_of, readable_by
from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import accounts, app_tokens, namespaces, repositories, stars
from dockyard.domain.audit import Actor
from dockyard.domain.errors import NotFound
from dockyard.domain.models import RepositoryInfo
from dockyard.domain.names import namespace_of
from dockyard.domain.users import StarredRepository, UserChanges, UserInfo

_USER_COLUMNS = (
    accounts.c.id,
    accounts.c.name,
    accounts.c.email,
    accounts.c.enabled,
    accounts.c.superuser,
    accounts.c.created_at,
)


def _user(row: Any) -> UserInfo:
    return UserInfo(
        id=int(row.id),
        name=row.name,
        email=row.email,
        enabled=bool(row.enabled),
        superuser=bool(row.superuser),
        created_at=int(row.created_at),
    )


class UsersStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    # -- users ---------------------------------------------------------------------------------

    async def users(self, *, prefix: str | None, after: str | None, limit: int) -> list[UserInfo]:
        """User accounts (not robots) by name, those whose name starts with `prefix`."""
        query = select(*_USER_COLUMNS).where(accounts.c.kind == "user")
        if prefix:
            query = query.where(accounts.c.name.startswith(prefix, autoescape=True))
        if after is not None:
            query = query.where(accounts.c.name > after)
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(accounts.c.name).limit(limit))
            return [_user(row) for row in rows]

    async def user(self, name: str) -> UserInfo | None:
        query = select(*_USER_COLUMNS).where(accounts.c.name == name, accounts.c.kind == "user")
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _user(row)

    async def update_user(self, name: str, changes: UserChanges, *, actor: Actor) -> UserInfo:
        """Apply `changes` to user `name` in one transaction, auditing each field that changes.

        A new password, disabling and removing the superuser flag end every credential issued so
        far (the credential epoch moves on): cached logins, registry tokens, the encrypted CLI
        password. App tokens stay valid, but are refused while the user is disabled.
        """
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(*_USER_COLUMNS, accounts.c.credential_epoch).where(
                        accounts.c.name == name, accounts.c.kind == "user"
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            values: dict[str, Any] = {}
            entries: list[tuple[str, dict[str, Any]]] = []
            new_epoch = False
            if changes.email is not None or changes.clear_email:
                email = None if changes.clear_email else changes.email
                if email != row.email:
                    values["email"] = email
                    entries.append(("user.email", {"user": name, "old": row.email, "new": email}))
            if changes.enabled is not None and changes.enabled != bool(row.enabled):
                values["enabled"] = changes.enabled
                new_epoch = True
                kind = "user.enable" if changes.enabled else "user.disable"
                entries.append((kind, {"account": name, "old": bool(row.enabled), "new": changes.enabled}))
            if changes.superuser is not None and changes.superuser != bool(row.superuser):
                values["superuser"] = changes.superuser
                new_epoch = new_epoch or not changes.superuser
                entries.append(("user.superuser", {"user": name, "old": bool(row.superuser), "new": changes.superuser}))
            if changes.password_hash is not None:
                values["password_hash"] = changes.password_hash
                new_epoch = True
                entries.append(("user.password", {"user": name, "reset": True}))
            if new_epoch:
                values["credential_epoch"] = accounts.c.credential_epoch + 1
            if values:
                await conn.execute(update(accounts).where(accounts.c.id == row.id).values(**values))
            for kind, metadata in entries:
                await self.audit(conn, kind, actor, namespace=name, metadata=metadata)
            updated = (await conn.execute(select(*_USER_COLUMNS).where(accounts.c.id == row.id))).one()
            return _user(updated)

    # -- app tokens ----------------------------------------------------------------------------

    async def app_tokens(self, user: str, *, after: int | None, limit: int) -> list[AppToken]:
        """The user's app tokens not revoked (expired ones included), by id."""
        owner = select(accounts.c.id).where(accounts.c.name == user).scalar_subquery()
        query = select(app_tokens).where(app_tokens.c.account_id == owner, app_tokens.c.revoked_at.is_(None))
        if after is not None:
            query = query.where(app_tokens.c.id > after)
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(app_tokens.c.id).limit(limit))
            return [app_token_of(row) for row in rows]

    async def app_token(self, user: str, token_id: int) -> AppToken | None:
        """One of the user's app tokens that is not revoked."""
        owner = select(accounts.c.id).where(accounts.c.name == user).scalar_subquery()
        query = select(app_tokens).where(
            app_tokens.c.id == token_id, app_tokens.c.account_id == owner, app_tokens.c.revoked_at.is_(None)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else app_token_of(row)

    # -- stars ---------------------------------------------------------------------------------

    async def star(self, account_id: int, repository: str, *, actor: Actor) -> bool:
        """Star `repository` for the account; False when it was starred already (nothing changes)."""
        async with self.db.write() as conn:
            repo_id = await conn.scalar(
                select(repositories.c.id).where(repositories.c.name == repository, repositories.c.state == "normal")
            )
            if repo_id is None:
                raise NotFound(f"no repository {repository}")
            starred = await conn.scalar(
                select(stars.c.created_at).where(stars.c.account_id == account_id, stars.c.repository_id == repo_id)
            )
            if starred is not None:
                return False
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(stars).values(account_id=account_id, repository_id=repo_id, created_at=now_ms())
                    )
            except IntegrityError:  # a concurrent star of the same repository won
                return False
            await self.audit(conn, "repository.star", actor, namespace=namespace_of(repository), repository=repository)
            return True

    async def unstar(self, account_id: int, repository: str, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            repo_ids = select(repositories.c.id).where(
                repositories.c.name == repository, repositories.c.state == "normal"
            )
            result = await conn.execute(
                delete(stars).where(stars.c.account_id == account_id, stars.c.repository_id.in_(repo_ids))
            )
            if not result.rowcount:
                raise NotFound(f"{repository} is not starred")
            await self.audit(
                conn, "repository.unstar", actor, namespace=namespace_of(repository), repository=repository
            )

    async def starred(
        self, account_id: int, *, everything: bool, after: str | None, limit: int
    ) -> list[StarredRepository]:
        """The account's starred repositories it may still read (all with `everything`), by name."""
        query = (
            select(
                repositories.c.id,
                repositories.c.name,
                namespaces.c.name.label("namespace"),
                repositories.c.visibility,
                repositories.c.description,
                repositories.c.created_at,
                stars.c.created_at.label("starred_at"),
            )
            .select_from(stars)
            .join(repositories, repositories.c.id == stars.c.repository_id)
            .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
            .where(stars.c.account_id == account_id, repositories.c.state == "normal")
        )
        if not everything:
            query = query.where(readable_by(account_id))
        if after is not None:
            query = query.where(repositories.c.name > after)
        async with self.db.read() as conn:
            rows = await conn.execute(query.order_by(repositories.c.name).limit(limit))
            return [
                StarredRepository(
                    repository=RepositoryInfo(
                        id=int(row.id),
                        name=row.name,
                        namespace=row.namespace,
                        public=row.visibility == "public",
                        description=row.description,
                        created_at=int(row.created_at),
                    ),
                    starred_at=int(row.starred_at),
                )
                for row in rows
            ]
