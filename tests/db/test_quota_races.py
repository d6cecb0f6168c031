"""Namespace usage under concurrent writers, on PostgreSQL.

Pushes (`RegistryStore.record_blob`, which charges the namespace) run in many concurrent
transactions while reconcile runs in a loop and another writer keeps adding bytes to the counters
without items (drift, as a bug would). Reconcile must report exactly the injected drift -- no
charge lost, none counted twice -- and leave the counters equal to the items, with and without a
quota (charges of a namespace without one take no lock at all).

Two first pushes of one digest into one namespace, interleaved: the second's INSERT of the usage
item waits for the first's and then inserts nothing, so it must add nothing to the counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets

import pytest
from sqlalchemy import func, select, text

from dockyard.db import migrate
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database, create_serving_engine
from dockyard.db.quota_store import QuotaStore
from dockyard.db.registry_store import RegistryStore
from dockyard.db.tables import audit_log, namespace_usage, namespace_usage_items, namespaces
from dockyard.db.usage import add_usage, charge
from dockyard.domain.audit import DOCKYARD

pytestmark = pytest.mark.integration

SECONDS = 3.0
PUSHERS = 16


async def _race(url: str, namespace: str, *, limit: int | None) -> None:
    database = Database(create_serving_engine(url, pool_size=PUSHERS + 4))
    registry, quotas = RegistryStore(database), QuotaStore(database)
    try:
        await registry.record_blob(
            f"{namespace}/seed", "sha256:" + "0" * 64, 1, "local", key=None, upload_id=None, creator=None
        )
        if limit is not None:
            await quotas.set_quota(namespace, limit, actor=DOCKYARD)
        async with database.read() as conn:
            namespace_id = int(await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == namespace)) or 0)
        stop = asyncio.Event()
        injected = 0

        async def push(index: int) -> int:
            pushed = 0
            while not stop.is_set():
                digest = "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest()
                await registry.record_blob(
                    f"{namespace}/r{index % 3}",
                    digest,
                    1 + secrets.randbelow(5000),
                    "local",
                    key=None,
                    upload_id=None,
                    creator=None,
                )
                pushed += 1
            return pushed

        async def reconcile() -> list[int]:
            corrections: list[int] = []
            while not stop.is_set():
                corrections.extend(drift.correction for drift in await quotas.reconcile(namespace))
            return corrections

        async def inject() -> None:
            nonlocal injected
            while not stop.is_set():
                async with database.write() as conn:
                    await add_usage(conn, database.dialect, namespace_id, 1000)
                injected += 1000
                await asyncio.sleep(0.01)

        pushers = [asyncio.create_task(push(i)) for i in range(PUSHERS)]
        reconcilers = [asyncio.create_task(reconcile()) for _ in range(2)]
        injector = asyncio.create_task(inject())
        await asyncio.sleep(SECONDS)
        stop.set()
        pushed = sum(await asyncio.gather(*pushers))
        corrections = [c for batch in await asyncio.gather(*reconcilers) for c in batch]
        await injector
        corrections += [drift.correction for drift in await quotas.reconcile(namespace)]

        assert pushed > 100, pushed
        assert len(corrections) > 1, "reconcile must have corrected drift while pushes ran"
        assert sum(corrections) == -injected
        assert await quotas.reconcile(namespace) == []
        async with database.read() as conn:
            items = await conn.scalar(
                select(func.sum(namespace_usage_items.c.size)).where(
                    namespace_usage_items.c.namespace_id == namespace_id
                )
            )
            count = await conn.scalar(
                select(func.count())
                .select_from(namespace_usage_items)
                .where(namespace_usage_items.c.namespace_id == namespace_id)
            )
            shards = await conn.scalar(
                select(func.sum(namespace_usage.c.bytes)).where(namespace_usage.c.namespace_id == namespace_id)
            )
        assert count == pushed + 1
        assert items == shards
        assert (await quotas.show(namespace)).used == items
    finally:
        await database.dispose()


@pytest.mark.parametrize("limit", [None, 10**15], ids=["no-quota", "quota"])
def test_reconcile_is_exact_under_concurrent_pushes_and_counter_writes(postgres_url: str, limit: int | None) -> None:
    migrate.upgrade(postgres_url)
    asyncio.run(_race(postgres_url, f"race{secrets.token_hex(3)}", limit=limit))


async def _until_blocked(database: Database, racing: asyncio.Task[None]) -> None:
    """Return once a session of the database waits for a lock (the racing push: nothing else runs);
    fail if the push finished without waiting, which would not stage the race."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        assert not racing.done(), "the second push did not wait for the first: the race was not staged"
        async with database.read() as conn:
            if await conn.scalar(query):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the second push never waited for the first")


async def _two_first_pushes(url: str, namespace: str) -> None:
    database = Database(create_serving_engine(url, pool_size=4))
    registry, quotas = RegistryStore(database), QuotaStore(database)
    digest, size = "sha256:" + hashlib.sha256(b"one layer, pushed twice at once").hexdigest(), 398
    try:
        await registry.record_blob(
            f"{namespace}/seed", "sha256:" + "0" * 64, 1, "local", key=None, upload_id=None, creator=None
        )
        async with database.read() as conn:
            namespace_id = int(await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == namespace)) or 0)
        async with database.engine.connect() as first:
            # A first push of the layer has counted it (usage item and counter) and not committed yet.
            transaction = await first.begin()
            await charge(first, database.dialect, namespace_id, digest, size, now_ms())
            # A second push of the same layer, into another repository of the namespace: its renewal
            # finds no item (the first's is not committed), so it inserts one, and that INSERT waits
            # for the first transaction, then inserts nothing.
            racing = asyncio.create_task(
                registry.record_blob(
                    f"{namespace}/other", digest, size, "local", key=None, upload_id=None, creator=None
                )
            )
            await _until_blocked(database, racing)
            await transaction.commit()
        await asyncio.wait_for(racing, 10)

        async with database.read() as conn:
            items = await conn.scalar(
                select(func.sum(namespace_usage_items.c.size)).where(
                    namespace_usage_items.c.namespace_id == namespace_id
                )
            )
            shards = await conn.scalar(
                select(func.sum(namespace_usage.c.bytes)).where(namespace_usage.c.namespace_id == namespace_id)
            )
        assert items == 1 + size
        assert shards == items, f"the counters say {shards} bytes, the items {items}: the layer was counted twice"
        assert await quotas.reconcile(namespace) == []
    finally:
        await database.dispose()


def test_two_first_pushes_of_one_digest_count_it_once(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    asyncio.run(_two_first_pushes(postgres_url, f"twice{secrets.token_hex(3)}"))


async def _two_first_pushes_to_one_repository(url: str, name: str) -> None:
    database = Database(create_serving_engine(url, pool_size=4))
    registry = RegistryStore(database)
    try:
        async with database.engine.connect() as first:
            # A first push creates the repository and has not committed yet.
            transaction = await first.begin()
            await registry._ensure_repository(first, name, None, DOCKYARD)
            # A second first push of the same name: its INSERT waits, then inserts nothing.
            racing = asyncio.create_task(
                registry.record_blob(name, "sha256:" + "1" * 64, 1, "local", key=None, upload_id=None, creator=None)
            )
            await _until_blocked(database, racing)
            await transaction.commit()
        await asyncio.wait_for(racing, 10)
        async with database.read() as conn:
            created = await conn.scalar(
                select(func.count()).where(audit_log.c.kind == "repository.create", audit_log.c.repository == name)
            )
        assert created == 1, f"{created} repository.create entries for one repository"
    finally:
        await database.dispose()


def test_two_first_pushes_to_one_repository_create_it_once(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    asyncio.run(_two_first_pushes_to_one_repository(postgres_url, f"once{secrets.token_hex(3)}/app"))
