"""Namespace storage usage and quotas, inside the caller's transaction.

Usage counts each digest (blob or manifest) once per namespace: an item row per (namespace,
digest), whose insertion adds its size to one of a few counter shards picked at random, so that
concurrent pushes to one namespace do not queue on one counter row. The sum of the shards equals
the sum of the items by construction (both change in one transaction); the reconcile job checks.

A namespace with a quota must not pass its reject threshold, even under concurrent pushes: the
transactions that add new bytes to such a namespace take a transaction-scoped lock on it
(PostgreSQL advisory lock; SQLite writers are serialised already) before they read the total.
Transactions that add nothing new (a re-push, a mount of a blob the namespace holds) take no lock.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.tables import namespace_usage, namespace_usage_items, namespaces
from dockyard.domain.errors import QuotaExceeded

SHARDS = 8


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int | None
    warn_percent: int
    reject_percent: int

    @property
    def reject_bytes(self) -> int | None:
        return None if self.limit is None else self.limit * self.reject_percent // 100

    @property
    def warn_bytes(self) -> int | None:
        return None if self.limit is None else self.limit * self.warn_percent // 100


def _insert(dialect: str, table: Any) -> Any:
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


def _lock_key(namespace_id: int) -> int:
    return int.from_bytes(hashlib.sha256(f"quota:{namespace_id}".encode()).digest()[:8], "big", signed=True)


async def quota_of(conn: AsyncConnection, namespace_id: int) -> Quota:
    row = (
        await conn.execute(
            select(namespaces.c.quota_bytes, namespaces.c.quota_warn_percent, namespaces.c.quota_reject_percent).where(
                namespaces.c.id == namespace_id
            )
        )
    ).first()
    if row is None:
        return Quota(None, 80, 100)
    return Quota(row.quota_bytes, row.quota_warn_percent or 80, row.quota_reject_percent or 100)


async def used_bytes(conn: AsyncConnection, namespace_id: int) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(namespace_usage.c.bytes), 0)).where(
            namespace_usage.c.namespace_id == namespace_id
        )
    )
    return int(total or 0)


async def add_usage(conn: AsyncConnection, dialect: str, namespace_id: int, delta: int) -> None:
    shard = random.randrange(SHARDS)  # noqa: S311 - spreading writes, not a secret
    statement = _insert(dialect, namespace_usage).values(namespace_id=namespace_id, shard=shard, bytes=delta)
    statement = statement.on_conflict_do_update(
        index_elements=["namespace_id", "shard"], set_={"bytes": namespace_usage.c.bytes + delta}
    )
    await conn.execute(statement)


async def charge(conn: AsyncConnection, dialect: str, namespace_id: int, digest: str, size: int, now: int) -> None:
    """Count `digest` in the namespace once; QuotaExceeded when that passes the reject threshold.

    An item the namespace holds already only has its touch time renewed, which keeps garbage
    collection from dropping it under this transaction.
    """
    renewed = await conn.execute(
        update(namespace_usage_items)
        .where(namespace_usage_items.c.namespace_id == namespace_id, namespace_usage_items.c.digest == digest)
        .values(touched_at=now)
    )
    if renewed.rowcount:
        return
    # Whether the row went in is read from RETURNING, not rowcount: for an INSERT the async
    # psycopg driver reports -1 (SQLAlchemy keeps the count only for UPDATE and DELETE), which
    # would count a digest a concurrent transaction inserted first a second time.
    inserted = await conn.scalar(
        _insert(dialect, namespace_usage_items)
        .values(namespace_id=namespace_id, digest=digest, size=size, touched_at=now)
        .on_conflict_do_nothing(index_elements=["namespace_id", "digest"])
        .returning(namespace_usage_items.c.size)
    )
    if inserted is None:
        return  # a concurrent transaction counted it first
    quota = await quota_of(conn, namespace_id)
    if quota.limit is not None and dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(namespace_id)})
    await add_usage(conn, dialect, namespace_id, size)
    limit = quota.reject_bytes
    if limit is not None:
        used = await used_bytes(conn, namespace_id)
        if used > limit:
            raise QuotaExceeded(
                f"storage quota exceeded: the namespace uses {used - size} bytes, this push adds {size}, "
                f"its limit is {quota.limit} bytes (refused above {quota.reject_percent}%: {limit} bytes)",
                detail={"used": used - size, "needed": size, "limit": quota.limit, "reject_at": limit},
            )
