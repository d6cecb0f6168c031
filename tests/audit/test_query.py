"""Reading the log back: filters, cursor paging, counts per day, streamed exports, and retention to
gzip archives on local storage (kept exportable), on SQLite and PostgreSQL; `dockyard logs`."""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dockyard.db import migrate
from dockyard.db.audit import AuditStore, AuditWriter, PendingEntry
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.jobs_store import JobsStore
from dockyard.db.tables import audit_log, jobs
from dockyard.domain.audit import DAY_MS, Actor, AuditEntry, AuditFilter, day_label
from dockyard.domain.errors import InvalidRequest, StorageUnavailable
from dockyard.queue import JobRunner
from dockyard.services.audit import AuditService, archive_key
from dockyard.storage.local import LocalStore

from .support import OS_USER, AuditServer, postgres_database

pytestmark = pytest.mark.integration

NOW = 1_795_000_000_000  # 2026-11-18T...Z
TODAY = NOW - NOW % DAY_MS
ALICE = Actor("alice", "user", "10.0.0.1", "docker/27", performer_id=1)
BOB = Actor("acme+ci", "robot", "10.0.0.2", "podman/5", performer_id=2)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dockyard.db'}"
        migrate.upgrade(url)
        yield url
        return
    with postgres_database() as url:
        migrate.upgrade(url)
        yield url


class World:
    def __init__(self, db: Database, root: Path, retention_days: int = 90) -> None:
        self.db = db
        self.store = AuditStore(db)
        self.location = LocalStore("local", root)
        self.service = AuditService(
            self.store, {"local": self.location}, archive_location="local", retention_days=retention_days
        )

    async def add(self, kind: str, actor: Actor, at: int, repository: str | None = None, **metadata: Any) -> None:
        namespace = repository.split("/")[0] if repository else None
        await self.store.insert_many([PendingEntry(kind, actor, namespace, repository, metadata, at)])

    async def export(self, wanted: AuditFilter | None = None) -> list[dict[str, Any]]:
        return [json.loads(line) async for line in self.service.export(wanted or AuditFilter())]


def scenario(database_url: str, root: Path, body: Callable[[World], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        db = Database(create_serving_engine(database_url, pool_size=2))
        try:
            await body(World(db, root, **options))
        finally:
            await db.dispose()

    asyncio.run(main())


async def _seed_days(world: World, days: list[int], per_day: int) -> None:
    """`per_day` entries on each day `days` before TODAY (alternating kinds, performers, repos)."""
    for back in days:
        start = TODAY - back * DAY_MS
        entries = []
        for i in range(per_day):
            actor = ALICE if i % 2 == 0 else BOB
            kind = ("push", "pull", "tag.move")[i % 3]
            namespace, repository = ("acme", "acme/web") if i % 4 else ("other", "other/api")
            entries.append(PendingEntry(kind, actor, namespace, repository, {"i": i, "day": back}, start + i * 1000))
        await world.store.insert_many(entries)


# -- queries ---------------------------------------------------------------------------------------


def test_filters_by_namespace_repository_performer_kind_and_time(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await world.add("push", ALICE, NOW, "acme/web", tag="v1")
        await world.add("tag.move", ALICE, NOW + 1, "acme/web", tag="v1")
        await world.add("tag.expire", BOB, NOW + 2, "acme/api", tag="old")
        await world.add("tag_x", BOB, NOW + 3, "other/x")  # `tag_` must not match the prefix `tag.`
        await world.add("login", ALICE, NOW + 4)

        async def kinds(**wanted: Any) -> list[str]:
            page = await world.service.query(AuditFilter(**wanted), limit=100)
            return [entry.kind for entry in page.entries]

        assert await kinds() == ["login", "tag_x", "tag.expire", "tag.move", "push"]
        assert await kinds(namespace="acme") == ["tag.expire", "tag.move", "push"]
        assert await kinds(repository="acme/web") == ["tag.move", "push"]
        assert await kinds(performer="acme+ci") == ["tag_x", "tag.expire"]
        assert await kinds(kind="tag") == ["tag.expire", "tag.move"]
        assert await kinds(kind="tag.move") == ["tag.move"]
        assert await kinds(kind="tag*") == ["tag_x", "tag.expire", "tag.move"]
        assert await kinds(kind="tag.ex*") == ["tag.expire"]
        assert await kinds(since=NOW + 1, until=NOW + 3) == ["tag.expire", "tag.move"]
        assert await kinds(namespace="acme", performer="alice", kind="tag") == ["tag.move"]
        (entry,) = (await world.service.query(AuditFilter(kind="login"))).entries
        assert (entry.performer, entry.performer_kind, entry.performer_id, entry.ip, entry.user_agent) == (
            "alice",
            "user",
            1,
            "10.0.0.1",
            "docker/27",
        )

    scenario(database_url, tmp_path, body)


def test_cursor_paging_is_stable_while_entries_arrive(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        # 25 entries, several sharing a millisecond: the cursor breaks ties by id.
        await world.store.insert_many(
            [PendingEntry("push", ALICE, "acme", "acme/web", {"n": n}, NOW + n // 3) for n in range(25)]
        )
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = await world.service.query(AuditFilter(namespace="acme"), cursor=cursor, limit=10)
            seen.extend(entry.metadata["n"] for entry in page.entries)
            pages += 1
            # New entries arriving meanwhile never shift the pages still to come.
            await world.add("push", ALICE, NOW + 100 + pages, "acme/web", n=100 + pages)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == list(range(24, -1, -1))
        assert pages == 3
        with pytest.raises(InvalidRequest):
            await world.service.query(AuditFilter(), cursor="not-a-cursor")
        with pytest.raises(InvalidRequest):
            await world.service.query(AuditFilter(), limit=0)

    scenario(database_url, tmp_path, body)


def test_counts_per_day_and_kind(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await _seed_days(world, [2, 1, 0], per_day=6)
        counts = await world.service.counts(AuditFilter(since=TODAY - 2 * DAY_MS + 5, until=TODAY + 1))
        # The range widens to whole days: the first day counts in full.
        assert [(c.day, c.kind, c.count) for c in counts] == [
            (day_label(TODAY - back * DAY_MS), kind, 2) for back in (2, 1, 0) for kind in ("pull", "push", "tag.move")
        ]
        only = await world.service.counts(AuditFilter(kind="tag", repository="acme/web", since=TODAY))
        assert [(c.day, c.kind, c.count) for c in only] == [(day_label(TODAY), "tag.move", 2)]

    scenario(database_url, tmp_path, body)


# -- export and retention --------------------------------------------------------------------------


def test_retention_archives_old_days_and_they_stay_exportable(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await _seed_days(world, [93, 92, 91, 0], per_day=7)
        before = await world.export()
        assert len(before) == 28
        counts_before = await world.service.counts(AuditFilter())

        archived = await world.service.retain(NOW)
        assert [(a.day, a.key, a.entries) for a in archived] == [
            (TODAY - back * DAY_MS, archive_key(TODAY - back * DAY_MS), 7) for back in (93, 92, 91)
        ]
        # One gzip JSON Lines object per day, at audit/YYYY/MM/DD.jsonl.gz.
        day = TODAY - 93 * DAY_MS
        path = tmp_path / archive_key(day)
        assert archive_key(day) == f"audit/{day_label(day).replace('-', '/')}.jsonl.gz"
        lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
        assert lines == before[:7]
        assert archived[0].counts == {"pull": 2, "push": 3, "tag.move": 2}
        # Only today's rows remain in the database; queries see them, exports see everything.
        remaining = await world.service.query(AuditFilter(), limit=1000)
        assert {entry.created_at // DAY_MS for entry in remaining.entries} == {TODAY // DAY_MS}
        assert await world.export() == before
        assert await world.service.counts(AuditFilter()) == counts_before
        # Filters apply to archived entries too.
        wanted = AuditFilter(repository="other/api", since=TODAY - 92 * DAY_MS, until=TODAY - 91 * DAY_MS + 5000)
        assert await world.export(wanted) == [e for e in before if _matches(wanted, e)]
        assert len(await world.export(wanted)) == 4
        counted = await world.service.counts(AuditFilter(performer="alice", since=TODAY - 93 * DAY_MS))
        assert sum(c.count for c in counted) == sum(1 for e in before if e["performer"] == "alice")
        assert await world.service.retain(NOW) == []  # nothing more is due

    scenario(database_url, tmp_path, body)


def _matches(wanted: AuditFilter, record: dict[str, Any]) -> bool:
    return wanted.matches(AuditEntry.from_json(record))


def test_an_interrupted_archive_loses_nothing_and_is_completed_later(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await _seed_days(world, [95], per_day=5)
        before = await world.export()
        day = TODAY - 95 * DAY_MS

        # The archive is written and recorded, then the process dies before deleting the rows.
        async def crash(*_args: Any) -> int:
            raise RuntimeError("killed")

        real_delete = world.store.delete_archived
        world.store.delete_archived = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await world.service.retain(NOW)
        world.store.delete_archived = real_delete  # type: ignore[method-assign]
        assert await world.export() == before  # archive and rows: each entry once

        # A late row for that day (an id above the archive's) is exported, then merged in.
        await world.add("push", ALICE, day + 50_000, "acme/late")
        late = await world.export()
        assert len(late) == 6
        (merged,) = await world.service.retain(NOW)
        assert merged.entries == 6
        assert await world.export() == late
        assert (await world.service.query(AuditFilter())).entries == []

    scenario(database_url, tmp_path, body)


class _Corrupting(LocalStore):
    async def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in super().read(key, offset, length):
            yield chunk[:-8]


def test_an_archive_that_does_not_read_back_deletes_nothing(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await _seed_days(world, [100], per_day=4)
        world.service.locations["local"] = _Corrupting("local", tmp_path)
        with pytest.raises(StorageUnavailable):
            await world.service.retain(NOW)
        assert len((await world.service.query(AuditFilter())).entries) == 4
        assert await world.store.archives() == []

    scenario(database_url, tmp_path, body)


def test_export_streams_page_by_page(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await world.store.insert_many(
            [PendingEntry("pull", ALICE, "acme", "acme/web", {"n": n}, NOW + n) for n in range(2500)]
        )
        reads: list[int] = []
        real = world.store.oldest_first

        async def counted(*args: Any) -> list[AuditEntry]:
            page = await real(*args)
            reads.append(len(page))
            return page

        world.store.oldest_first = counted  # type: ignore[method-assign]
        lines = world.service.export(AuditFilter(since=NOW))
        first = json.loads(await anext(lines))
        assert first["metadata"] == {"n": 0}
        assert reads == [1000]  # the first line comes after one page, not the whole range
        rest = [json.loads(line) async for line in lines]
        assert [r["metadata"]["n"] for r in rest] == list(range(1, 2500))
        assert reads == [1000, 1000, 500]

    scenario(database_url, tmp_path, body)


def test_retention_is_a_job_that_reschedules_itself(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await _seed_days(world, [120], per_day=3)
        await world.service.ensure_scheduled()
        await world.service.ensure_scheduled()  # idempotent
        runner = JobRunner(JobsStore(world.db), {world.service.kind: world.service.handle})
        assert await runner.run_once() == 1
        assert len(await world.store.archives()) == 1
        assert await runner.run_once() == 0  # the next pass is queued an interval later
        async with world.db.read() as conn:
            pending = await conn.scalar(
                select(func.count()).where(jobs.c.kind == world.service.kind, jobs.c.state == "pending")
            )
        assert pending == 1

    scenario(database_url, tmp_path, body)


def test_writer_is_silent_when_disabled(database_url: str, tmp_path: Path) -> None:
    async def body(world: World) -> None:
        async with world.db.write() as conn:
            await AuditWriter(enabled=False)(conn, "push", ALICE, repository="acme/web")
            await AuditWriter()(conn, "push", BOB, repository="acme/web")
        async with world.db.read() as conn:
            rows = (await conn.execute(audit_log.select())).all()
        assert [row.performer for row in rows] == ["acme+ci"]

    scenario(database_url, tmp_path, body)


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    srv = AuditServer.create("sqlite", tmp_path_factory.mktemp("logs-cli"), {"jobs": {"run_in_server": False}}, None)
    try:
        yield srv
    finally:
        srv.stop()


def test_logs_command_filters_pages_exports_and_archives(cli_server: AuditServer, tmp_path: Path) -> None:
    srv = cli_server
    org = f"cli{secrets.token_hex(3)}"
    srv.cli("org", "create", org, "--owner", "admin")
    for name in ("a", "b", "c"):
        srv.cli("repo", "create", f"{org}/{name}")
    old = TODAY - 200 * DAY_MS

    async def seed(db: Database) -> None:
        await AuditStore(db).insert_many(
            [PendingEntry("push", ALICE, org, f"{org}/a", {"old": n}, old + n) for n in range(3)]
        )

    srv.in_process(seed)

    shown = srv.cli("logs", "--namespace", org, "--kind", "repository", "--limit", "2")
    lines = shown.stdout.splitlines()
    assert [line.split("\t")[4] for line in lines] == [f"{org}/c", f"{org}/b"]
    assert lines[0].split("\t")[1:4] == ["repository.create", f"{OS_USER} (system)", "-"]
    cursor = shown.stderr.split("--cursor ")[1].split()[0]
    rest = srv.cli("logs", "--namespace", org, "--kind", "repository", "--limit", "2", "--cursor", cursor)
    assert [line.split("\t")[4] for line in rest.stdout.splitlines()] == [f"{org}/a"]
    assert "--cursor" not in rest.stderr

    as_json = [json.loads(line) for line in srv.cli("logs", "--repo", f"{org}/b", "--json").stdout.splitlines()]
    assert [(e["kind"], e["performer_kind"], e["repository"]) for e in as_json] == [
        ("repository.create", "system", f"{org}/b")
    ]
    recent = srv.cli("logs", "--namespace", org, "--since", "1h", "--json").stdout.splitlines()
    assert len(recent) == 4  # the organization and its three repositories, not the old pushes

    archived = srv.cli("logs", "archive").stdout
    assert archive_key(old) in archived
    assert (srv.data_dir / "storage" / archive_key(old)).exists()

    exported = tmp_path / "export.jsonl"
    since = day_label(old)
    result = srv.cli("logs", "export", "--namespace", org, "--since", since, "--until", "2100-01-01")
    exported.write_text(result.stdout)
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["push", "push", "push", "organization.create"] + ["repository.create"] * 3
    assert [r["metadata"].get("old") for r in records[:3]] == [0, 1, 2]
    assert "exported 7 entries" in result.stderr

    counts = srv.cli("logs", "counts", "--namespace", org, "--since", since).stdout.splitlines()
    assert counts[0] == f"{since}\tpush\t3"
    bad = srv.cli("logs", "--since", "yesterday-ish", ok=False)
    assert bad.returncode != 0
    assert "invalid time" in bad.stderr
