"""The audit log's indexes (migration 0012), on SQLite and PostgreSQL: the upgrade and the downgrade
keep every entry, every query answers the same before and after, and the queries can use the
indexes meant for them — a kind filter the kind index that leaves pulls out, a performer filter the
performer index that leaves anonymous entries out, a page of everything the time index without a
sort.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects import postgresql, sqlite

from dockyard.db import migrate
from dockyard.db.audit import AuditStore, PendingEntry, _filtered
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.tables import audit_log
from dockyard.domain.audit import Actor, AuditFilter

from .support import postgres_database

pytestmark = pytest.mark.integration

BEFORE = "0011"
NOW = 1_795_000_000_000
ALICE = Actor("alice", "user", "10.0.0.1", "docker/27", performer_id=1)
ROBOT = Actor("acme+ci", "robot", "10.0.0.2", "podman/5", performer_id=2)
NOBODY = Actor(None, "anonymous", "10.0.0.3", "containerd/1.7")

FILTERS = {
    "everything": AuditFilter(),
    "namespace": AuditFilter(namespace="acme"),
    "repository": AuditFilter(repository="acme/web"),
    "performer": AuditFilter(performer="alice"),
    "kind tag": AuditFilter(kind="tag"),
    "kind tag.move": AuditFilter(kind="tag.move"),
    "kind login.failure": AuditFilter(kind="login.failure"),
    "kind pull": AuditFilter(kind="pull"),
    "kind p*": AuditFilter(kind="p*"),
    "kind pu*": AuditFilter(kind="pu*"),
    "kind pul*": AuditFilter(kind="pul*"),
    "kind pull*": AuditFilter(kind="pull*"),
    "kind tag*": AuditFilter(kind="tag*"),
    "performer and kind": AuditFilter(performer="alice", kind="pull"),
    "since": AuditFilter(since=NOW + 50_000),
}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dockyard.db'}"
        return
    with postgres_database() as url:
        yield url


def _entries() -> list[PendingEntry]:
    kinds = ["pull", "push", "pull", "tag.move", "pull", "login.failure", "pull", "tag_x", "pull", "tag.expire"]
    actors = [ALICE, ROBOT, NOBODY]
    places = [("acme", "acme/web"), ("acme", "acme/api"), ("other", "other/x"), (None, None)]
    return [
        PendingEntry(kinds[i % 10], actors[i % 3], *places[i % 4], {"i": i}, NOW + (i // 2) * 1000) for i in range(240)
    ]


def _answers(url: str) -> dict[str, Any]:
    """What every filter reads (ids, newest first) and the counts per day and kind."""

    async def read() -> dict[str, Any]:
        db = Database(create_serving_engine(url, pool_size=1))
        try:
            store = AuditStore(db)
            found: dict[str, Any] = {}
            for name, wanted in FILTERS.items():
                found[name] = [entry.id for entry in await store.newest_first(wanted, None, 1000)]
                found[f"{name} counts"] = await store.counts(wanted)
            return found
        finally:
            await db.dispose()

    return asyncio.run(read())


def _indexes(url: str) -> dict[str, str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log'"
            else:
                query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_log'"
            return {name: definition or "" for name, definition in conn.execute(text(query))}
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_keep_every_entry_and_every_answer(database_url: str) -> None:
    migrate.upgrade(database_url, BEFORE)

    async def seed() -> None:
        db = Database(create_serving_engine(database_url, pool_size=1))
        try:
            await AuditStore(db).insert_many(_entries())
        finally:
            await db.dispose()

    asyncio.run(seed())
    before = _answers(database_url)
    assert len(before["everything"]) == 240
    assert len(before["kind pull"]) == len(before["kind pul*"]) == len(before["kind pull*"]) == 120
    assert len(before["kind p*"]) == len(before["kind pu*"]) == 120 + 24  # and push
    for name in ("kind tag", "kind login.failure", "performer", "performer and kind"):
        assert before[name], name

    migrate.upgrade(database_url)
    assert _answers(database_url) == before
    indexes = _indexes(database_url)
    assert "ix_audit_log_created_at" not in indexes
    assert "ix_audit_log_created_at_id_kind" in indexes
    assert "kind <> 'pull'" in indexes["ix_audit_log_kind_created_at"].replace("::text", "").replace("(kind)", "kind")
    assert "performer IS NOT NULL" in indexes["ix_audit_log_performer_created_at"]

    migrate.downgrade(database_url, BEFORE)
    assert _answers(database_url) == before
    assert "WHERE" not in _indexes(database_url)["ix_audit_log_kind_created_at"]
    migrate.upgrade(database_url)
    assert _answers(database_url) == before


def _page_query(wanted: AuditFilter) -> Any:
    c = audit_log.c
    return _filtered(select(audit_log), wanted).order_by(c.created_at.desc(), c.id.desc()).limit(50)


def _sqlite_plan(url: str, wanted: AuditFilter) -> str:
    sql = str(_page_query(wanted).compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return " | ".join(row[3] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    finally:
        engine.dispose()


def _postgres_plan(url: str, wanted: AuditFilter, *settings: str) -> str:
    sql = str(_page_query(wanted).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with psycopg.connect(url) as conn:
        for setting in settings:
            conn.execute(setting)
        return "\n".join(row[0] for row in conn.execute(sql.replace("%%", "%").join(["EXPLAIN ", ""])))


def test_the_queries_can_use_the_indexes_meant_for_them(database_url: str) -> None:
    migrate.upgrade(database_url)
    if database_url.startswith("sqlite"):
        everything = _sqlite_plan(database_url, AuditFilter())
        assert "ix_audit_log_created_at_id_kind" in everything
        assert "TEMP B-TREE" not in everything  # pages come in (created_at, id) order
        assert "ix_audit_log_performer_created_at" in _sqlite_plan(database_url, AuditFilter(performer="alice"))
        assert "ix_audit_log_repository_created_at" in _sqlite_plan(database_url, AuditFilter(repository="a/b"))
        return
    # PostgreSQL weighs the indexes by their statistics; with every other way made dear, a plan
    # using a partial index proves the query's conditions imply the index's.
    dear = ("SET enable_seqscan = off", "SET enable_indexscan = off")
    assert "ix_audit_log_kind_created_at" in _postgres_plan(database_url, AuditFilter(kind="tag.move"), *dear)
    assert "ix_audit_log_kind_created_at" in _postgres_plan(database_url, AuditFilter(kind="tag"), *dear)
    assert "ix_audit_log_performer_created_at" in _postgres_plan(database_url, AuditFilter(performer="x"), *dear)
    everything = _postgres_plan(database_url, AuditFilter(), "SET enable_seqscan = off")
    assert "ix_audit_log_created_at_id_kind" in everything
    assert "Sort" not in everything
