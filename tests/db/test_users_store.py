"""User administration, stars and search queries on SQLite and PostgreSQL, and migration 0009
(the stars table) down and up again with data in it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import inspect, select, text

from dockyard.db import migrate
from dockyard.db.accounts_store import AccountsStore
from dockyard.db.engine import Database, create_serving_engine, create_sync_engine
from dockyard.db.search_store import SearchStore
from dockyard.db.tables import audit_log
from dockyard.db.users_store import UsersStore
from dockyard.domain.access import Role, TeamRole
from dockyard.domain.audit import USER, Actor
from dockyard.domain.errors import NotFound
from dockyard.domain.users import UserChanges

pytestmark = pytest.mark.integration

ADMIN = Actor("root", USER, "192.0.2.1", performer_id=1)


def _run(url: str, scenario: Callable[[Database, AccountsStore], Awaitable[None]]) -> None:
    migrate.upgrade(url)

    async def main() -> None:
        database = Database(create_serving_engine(url, pool_size=2))
        try:
            accounts = AccountsStore(database)
            for name in ("alice", "bob", "carol"):
                await accounts.create_user(name, email=None, password_hash=None, superuser=False, actor=ADMIN)
            await accounts.create_org("acme", "alice", actor=ADMIN)
            await accounts.create_team("acme", "viewers", TeamRole.MEMBER, description="read-only", actor=ADMIN)
            await accounts.add_team_member("acme", "viewers", "carol", actor=ADMIN)
            for name, public in (("acme/web", True), ("acme/secret", False), ("bob/tools", False)):
                await accounts.create_repository(name, name.split("/")[0], public=public, creator_id=None, actor=ADMIN)
            await scenario(database, accounts)
        finally:
            await database.dispose()

    asyncio.run(main())


async def _kinds(database: Database, namespace: str) -> list[tuple[str, str]]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(audit_log.c.kind, audit_log.c.metadata)
            .where(audit_log.c.namespace == namespace)
            .order_by(audit_log.c.id)
        )
        return [(row.kind, row.metadata) for row in rows]


def test_stars_follow_read_access(database_url: str) -> None:
    async def scenario(database: Database, accounts: AccountsStore) -> None:
        users = UsersStore(database)
        bob = await accounts.account("bob")
        assert bob is not None
        assert await users.star(bob.id, "acme/web", actor=ADMIN) is True
        assert await users.star(bob.id, "acme/web", actor=ADMIN) is False
        assert await users.star(bob.id, "bob/tools", actor=ADMIN) is True
        with pytest.raises(NotFound):
            await users.star(bob.id, "acme/missing", actor=ADMIN)
        starred = await users.starred(bob.id, everything=False, after=None, limit=10)
        assert [star.repository.name for star in starred] == ["acme/web", "bob/tools"]
        assert [
            s.repository.name for s in await users.starred(bob.id, everything=False, after="acme/web", limit=10)
        ] == ["bob/tools"]
        # A star on a repository bob can no longer read is kept but not listed.
        await accounts.set_visibility("acme/web", False, actor=ADMIN)
        assert [s.repository.name for s in await users.starred(bob.id, everything=False, after=None, limit=10)] == [
            "bob/tools"
        ]
        await accounts.grant("acme/web", "bob", Role.READ, actor=ADMIN)
        assert len(await users.starred(bob.id, everything=False, after=None, limit=10)) == 2
        await users.unstar(bob.id, "acme/web", actor=ADMIN)
        with pytest.raises(NotFound):
            await users.unstar(bob.id, "acme/web", actor=ADMIN)
        assert [kind for kind, _ in await _kinds(database, "acme") if "star" in kind] == [
            "repository.star",
            "repository.unstar",
        ]

    _run(database_url, scenario)


def test_user_changes_are_one_transaction_with_an_entry_per_field(database_url: str) -> None:
    async def scenario(database: Database, accounts: AccountsStore) -> None:
        users = UsersStore(database)
        before = await accounts.account("carol")
        assert before is not None
        changed = await users.update_user(
            "carol", UserChanges(email="c@example.com", superuser=True, enabled=True), actor=ADMIN
        )
        assert (changed.email, changed.superuser, changed.enabled) == ("c@example.com", True, True)
        after = await accounts.account("carol")
        assert after is not None
        assert after.epoch == before.epoch  # granting the flag ends no login
        await users.update_user(
            "carol", UserChanges(clear_email=True, superuser=False, password_hash="new-hash"), actor=ADMIN
        )
        again = await accounts.account("carol")
        assert again is not None
        assert (again.email, again.superuser, again.password_hash) == (None, False, "new-hash")
        assert again.epoch == before.epoch + 1  # one transaction, one new epoch
        entries = [(kind, meta) for kind, meta in await _kinds(database, "carol") if kind != "user.create"]
        assert [kind for kind, _ in entries] == [
            "user.email",
            "user.superuser",
            "user.email",
            "user.superuser",
            "user.password",
        ]
        with pytest.raises(NotFound):
            await users.update_user("acme", UserChanges(enabled=False), actor=ADMIN)
        listed = await users.users(prefix="c", after=None, limit=10)
        assert [user.name for user in listed] == ["carol"]
        assert [user.name for user in await users.users(prefix=None, after="alice", limit=1)] == ["bob"]
        # LIKE wildcards in a prefix are plain characters.
        assert await users.users(prefix="_", after=None, limit=10) == []

    _run(database_url, scenario)


def test_search_queries(database_url: str) -> None:
    async def scenario(database: Database, accounts: AccountsStore) -> None:
        search = SearchStore(database)
        carol = await accounts.account("carol")
        bob = await accounts.account("bob")
        assert carol is not None
        assert bob is not None
        anonymous = await search.repositories("acme", viewer=None, everything=False, after=None, limit=10)
        assert [hit.name for hit in anonymous] == ["acme/web"]
        everything = await search.repositories("/", viewer=None, everything=True, after=None, limit=10)
        assert [hit.name for hit in everything] == ["acme/secret", "acme/web", "bob/tools"]
        assert [
            hit.name for hit in await search.repositories("tool", viewer=bob.id, everything=False, after=None, limit=10)
        ] == ["bob/tools"]
        teams = await search.teams("acme/", member=carol.id, everything=False, after=None, limit=10)
        assert [(hit.name, hit.namespace) for hit in teams] == [("acme/owners", "acme"), ("acme/viewers", "acme")]
        assert teams[1].description == "read-only"
        assert [
            hit.name
            for hit in await search.teams("acme", member=carol.id, everything=False, after="acme/owners", limit=10)
        ] == ["acme/viewers"]
        assert await search.teams("acme", member=bob.id, everything=False, after=None, limit=10) == []
        assert await search.teams("acme", member=None, everything=False, after=None, limit=10) == []
        assert [hit.name for hit in await search.users("o", after=None, limit=10)] == ["bob", "carol"]
        assert [hit.name for hit in await search.organizations("cm", after=None, limit=10)] == ["acme"]
        assert await search.users("%", after=None, limit=10) == []

    _run(database_url, scenario)


def test_migration_0009_down_and_up_with_stars(database_url: str) -> None:
    migrate.upgrade(database_url, "0009")
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'ns', 1)"))
            conn.execute(
                text("INSERT INTO accounts (id, kind, name, namespace_id, created_at) VALUES (1, 'user', 'ns', 1, 1)")
            )
            conn.execute(
                text(
                    "INSERT INTO repositories (id, namespace_id, name, created_at) "
                    "VALUES (1, 1, 'ns/a', 1), (2, 1, 'ns/b', 1)"
                )
            )
            conn.execute(text("INSERT INTO stars (account_id, repository_id, created_at) VALUES (1, 1, 5), (1, 2, 6)"))
            # A repository's stars go with it.
            conn.execute(text("DELETE FROM repositories WHERE id = 2"))
            assert conn.execute(text("SELECT repository_id FROM stars")).scalars().all() == [1]
        migrate.downgrade(database_url, "0008")
        assert "stars" not in inspect(engine).get_table_names()
        migrate.upgrade(database_url)
        assert migrate.current_revision(database_url) == migrate.head_revision()
        with engine.begin() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM stars")).scalar() == 0
            conn.execute(text("INSERT INTO stars (account_id, repository_id, created_at) VALUES (1, 1, 7)"))
    finally:
        engine.dispose()
