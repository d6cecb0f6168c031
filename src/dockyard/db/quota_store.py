"""Namespace quotas: their settings, usage reports, and the reconcile job's recomputation.

The registry's write transactions keep usage current through `db.usage.charge`; this module
reads it and checks it against the truth. The truth of a namespace is the set of digests its
repositories reference -- blobs linked in `repository_blobs` (any repository state) and the
digests of its manifests (deleted ones included: their rows stay until garbage collection) --
each counted once at its size.

Reconcile, per namespace, in one short write transaction:

1. Count every referenced digest that has no usage item (insert it with
   `ON CONFLICT DO NOTHING`; a concurrent charge that counts it first wins, and is not drift).
2. On PostgreSQL, take the namespace's quota lock (`pg_advisory_xact_lock`, the key of
   `usage._lock_key`), so that a charge of a quota'd namespace decides against the corrected total.
3. Read the sum of the items and the sum of the counter shards in ONE statement, hence one
   snapshot: every committed transaction changed both by the same amount, so their difference is
   exactly the drift, whatever commits around it.
4. Apply the difference as a delta: the shards are deleted (`DELETE ... RETURNING` returns the
   latest committed value of each, after waiting for any writer that holds one) and one shard row
   holding their sum plus the correction replaces them.

Why deltas and not "write the recomputed total": at READ COMMITTED, a total read in one statement
and written in a later one loses every change committed in between -- charges of namespaces
without a quota take no lock, and garbage collection decrements counters too. A delta commutes with
those changes, so reconcile is exact for every namespace, with or without a quota, and takes no
lock that a non-quota charge would wait for. On SQLite write transactions are serialised
(`BEGIN IMMEDIATE`), so all of this is trivially exact there.

Lock order is the one `charge` uses -- usage items, then the quota lock, then counter shards -- so
reconcile cannot deadlock with a push. Before those it holds the namespace row FOR KEY SHARE (as
the foreign key check of any item insert would), which keeps a namespace purge from deleting the
namespace under it; a purge that already holds the namespace's counters can deadlock with a
reconcile that corrects that namespace at the same moment, and PostgreSQL then aborts one of them
(the job retries). Unreferenced items are never deleted here: garbage collection removes them
after its grace period; `show` reports them as pending collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, delete, exists, func, literal, select, text, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import (
    blobs,
    manifests,
    namespace_usage,
    namespace_usage_items,
    namespaces,
    repositories,
    repository_blobs,
)
from dockyard.db.usage import Quota, _insert, _lock_key
from dockyard.domain.audit import Actor
from dockyard.domain.errors import InvalidRequest, NotFound

DEFAULT_WARN_PERCENT = 80
DEFAULT_REJECT_PERCENT = 100

OK, WARNING, OVER = "ok", "warning", "over"

#: Drift kinds: the counters disagreed with the items; referenced digests had no item.
COUNTERS, UNCOUNTED = "counters", "uncounted"


@dataclass(frozen=True, slots=True)
class QuotaReport:
    namespace: str
    limit: int | None
    warn_percent: int
    reject_percent: int
    warn_bytes: int | None
    reject_bytes: int | None
    #: Bytes counted (sum of the counter shards).
    used: int
    #: Distinct digests counted.
    items: int
    #: Counted digests nothing in the namespace references any more; GC removes them.
    pending_collection: int
    #: ok, warning (at or past the warn threshold) or over (past the reject threshold: the
    #: limit was lowered below the usage; new bytes are refused).
    state: str


@dataclass(frozen=True, slots=True)
class Drift:
    """One correction reconcile made to a namespace's usage."""

    namespace: str
    kind: str
    #: Bytes added to the namespace's usage (negative: removed).
    correction: int
    #: UNCOUNTED: how many digests were counted now.
    items: int
    #: The counters' total before and after the correction.
    before: int
    after: int

    def __str__(self) -> str:
        if self.kind == UNCOUNTED:
            return (
                f"{self.namespace}: {self.items} referenced digests ({self.correction} bytes) were not counted; "
                f"counted them"
            )
        return (
            f"{self.namespace}: counters said {self.before} bytes, the counted items {self.after}; "
            f"corrected by {self.correction:+d} bytes"
        )


def validate_quota(limit: int | None, warn_percent: int, reject_percent: int) -> None:
    if limit is not None and limit <= 0:
        raise InvalidRequest(f"quota limit must be positive, not {limit}")
    for name, value in (("warn", warn_percent), ("reject", reject_percent)):
        if not 1 <= value <= 100:
            raise InvalidRequest(f"{name} threshold must be a percentage from 1 to 100, not {value}")
    if warn_percent > reject_percent:
        raise InvalidRequest(f"warn threshold {warn_percent}% is above the reject threshold {reject_percent}%")


def _state(quota: Quota, used: int) -> str:
    if quota.reject_bytes is not None and used > quota.reject_bytes:
        return OVER
    if quota.warn_bytes is not None and used > 0 and used >= quota.warn_bytes:
        return WARNING
    return OK


def _referenced(namespace_id: int) -> Any:
    """(digest, size) of every digest the namespace's repositories reference, each once."""
    linked = (
        select(blobs.c.digest, blobs.c.size)
        .select_from(
            repository_blobs.join(blobs, blobs.c.id == repository_blobs.c.blob_id).join(
                repositories, repositories.c.id == repository_blobs.c.repository_id
            )
        )
        .where(repositories.c.namespace_id == namespace_id)
    )
    stored = (
        select(manifests.c.digest, manifests.c.size.cast(BigInteger).label("size"))
        .join(repositories, repositories.c.id == manifests.c.repository_id)
        .where(repositories.c.namespace_id == namespace_id)
    )
    both = union(linked, stored).subquery()
    return select(both.c.digest, func.max(both.c.size).label("size")).group_by(both.c.digest).subquery()


def _unreferenced(namespace_id: int) -> Any:
    """The condition of a usage item of `namespace_id` that nothing in the namespace references."""
    linked = exists().where(
        blobs.c.digest == namespace_usage_items.c.digest,
        repository_blobs.c.blob_id == blobs.c.id,
        repositories.c.id == repository_blobs.c.repository_id,
        repositories.c.namespace_id == namespace_id,
    )
    stored = exists().where(
        manifests.c.digest == namespace_usage_items.c.digest,
        repositories.c.id == manifests.c.repository_id,
        repositories.c.namespace_id == namespace_id,
    )
    return (namespace_usage_items.c.namespace_id == namespace_id) & ~linked & ~stored


def _sums(namespace_id: int) -> Any:
    """(sum of item sizes, sum of counter shards, item count) in one statement: one snapshot."""
    items = (
        select(func.coalesce(func.sum(namespace_usage_items.c.size), 0))
        .where(namespace_usage_items.c.namespace_id == namespace_id)
        .scalar_subquery()
    )
    count = (
        select(func.count())
        .select_from(namespace_usage_items)
        .where(namespace_usage_items.c.namespace_id == namespace_id)
        .scalar_subquery()
    )
    shards = (
        select(func.coalesce(func.sum(namespace_usage.c.bytes), 0))
        .where(namespace_usage.c.namespace_id == namespace_id)
        .scalar_subquery()
    )
    return select(items.label("item_bytes"), shards.label("shard_bytes"), count.label("item_count"))


class QuotaStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    async def set_quota(
        self,
        namespace: str,
        limit: int | None,
        warn_percent: int | None = None,
        reject_percent: int | None = None,
        *,
        actor: Actor,
    ) -> None:
        """Set the namespace's quota; a None percent keeps the current one (default 80 / 100).

        `limit` None clears the quota (and its thresholds). NotFound for an unknown namespace,
        InvalidRequest for bad values; either way nothing changes.
        """
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(
                        namespaces.c.id,
                        namespaces.c.quota_bytes,
                        namespaces.c.quota_warn_percent,
                        namespaces.c.quota_reject_percent,
                    ).where(namespaces.c.name == namespace)
                )
            ).first()
            if row is None:
                raise NotFound(f"no namespace {namespace!r}")
            if limit is None:
                if warn_percent is not None or reject_percent is not None:
                    raise InvalidRequest("thresholds need a limit")
                values: dict[str, int | None] = {
                    "quota_bytes": None,
                    "quota_warn_percent": None,
                    "quota_reject_percent": None,
                }
            else:
                warn = warn_percent if warn_percent is not None else row.quota_warn_percent or DEFAULT_WARN_PERCENT
                reject = (
                    reject_percent if reject_percent is not None else row.quota_reject_percent or DEFAULT_REJECT_PERCENT
                )
                validate_quota(limit, warn, reject)
                values = {"quota_bytes": limit, "quota_warn_percent": warn, "quota_reject_percent": reject}
            await conn.execute(update(namespaces).where(namespaces.c.id == row.id).values(**values))
            old = {
                "quota_bytes": row.quota_bytes,
                "quota_warn_percent": row.quota_warn_percent,
                "quota_reject_percent": row.quota_reject_percent,
            }
            kind = "quota.clear" if limit is None else "quota.set"
            await self.audit(conn, kind, actor, namespace=namespace, metadata={"old": old, "new": values})

    async def show(self, namespace: str) -> QuotaReport:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        namespaces.c.id,
                        namespaces.c.quota_bytes,
                        namespaces.c.quota_warn_percent,
                        namespaces.c.quota_reject_percent,
                    ).where(namespaces.c.name == namespace)
                )
            ).first()
            if row is None:
                raise NotFound(f"no namespace {namespace!r}")
            quota = Quota(
                None if row.quota_bytes is None else int(row.quota_bytes),
                row.quota_warn_percent or DEFAULT_WARN_PERCENT,
                row.quota_reject_percent or DEFAULT_REJECT_PERCENT,
            )
            sums = (await conn.execute(_sums(row.id))).one()
            pending = await conn.scalar(
                select(func.count()).select_from(namespace_usage_items).where(_unreferenced(row.id))
            )
        used = int(sums.shard_bytes)
        return QuotaReport(
            namespace=namespace,
            limit=quota.limit,
            warn_percent=quota.warn_percent,
            reject_percent=quota.reject_percent,
            warn_bytes=quota.warn_bytes,
            reject_bytes=quota.reject_bytes,
            used=used,
            items=int(sums.item_count),
            pending_collection=int(pending or 0),
            state=_state(quota, used),
        )

    async def reconcile(self, namespace: str | None = None) -> list[Drift]:
        """Recompute usage from the references of one namespace (or all); return the corrections.

        See the module docstring for why this is exact under concurrent pushes and collection.
        """
        async with self.db.read() as conn:
            query = select(namespaces.c.id, namespaces.c.name).order_by(namespaces.c.name)
            if namespace is not None:
                query = query.where(namespaces.c.name == namespace)
            targets = [(int(row.id), str(row.name)) for row in await conn.execute(query)]
        if namespace is not None and not targets:
            raise NotFound(f"no namespace {namespace!r}")
        drifts: list[Drift] = []
        for namespace_id, name in targets:
            drifts.extend(await self._reconcile_one(namespace_id, name))
        return drifts

    async def _reconcile_one(self, namespace_id: int, name: str) -> list[Drift]:
        dialect = self.db.dialect
        async with self.db.write() as conn:
            # Keeps the namespace from being deleted under this transaction (FOR KEY SHARE does not
            # conflict with quota updates or with the inserts of pushes).
            alive = await conn.scalar(
                select(namespaces.c.id)
                .where(namespaces.c.id == namespace_id)
                .with_for_update(read=True, key_share=True)
            )
            if alive is None:
                return []
            uncounted = await self._count_uncounted(conn, namespace_id)
            if dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(namespace_id)})
            sums = (await conn.execute(_sums(namespace_id))).one()
            items, shards = int(sums.item_bytes), int(sums.shard_bytes)
            # `items` includes what step 1 inserted (this transaction's own rows); `shards` not yet.
            added = sum(uncounted)
            delta = items - shards
            if delta:
                deleted = await conn.execute(
                    delete(namespace_usage)
                    .where(namespace_usage.c.namespace_id == namespace_id)
                    .returning(namespace_usage.c.bytes)
                )
                total = sum(int(value) for value in deleted.scalars()) + delta
                await conn.execute(
                    _insert(dialect, namespace_usage)
                    .values(namespace_id=namespace_id, shard=0, bytes=total)
                    .on_conflict_do_update(
                        index_elements=["namespace_id", "shard"], set_={"bytes": namespace_usage.c.bytes + total}
                    )
                )
        drifts: list[Drift] = []
        before = shards
        if delta != added:
            drifts.append(Drift(name, COUNTERS, delta - added, 0, before, before + delta - added))
            before += delta - added
        if uncounted:
            drifts.append(Drift(name, UNCOUNTED, added, len(uncounted), before, before + added))
        return drifts

    async def _count_uncounted(self, conn: AsyncConnection, namespace_id: int) -> list[int]:
        """Insert an item for every referenced digest the namespace does not count; their sizes."""
        referenced = _referenced(namespace_id)
        missing = select(
            literal(namespace_id, Integer), referenced.c.digest, referenced.c.size, literal(now_ms(), BigInteger)
        ).where(
            ~exists().where(
                namespace_usage_items.c.namespace_id == namespace_id,
                namespace_usage_items.c.digest == referenced.c.digest,
            )
        )
        inserted = await conn.execute(
            _insert(self.db.dialect, namespace_usage_items)
            .from_select(["namespace_id", "digest", "size", "touched_at"], missing)
            .on_conflict_do_nothing(index_elements=["namespace_id", "digest"])
            .returning(namespace_usage_items.c.size)
        )
        return [int(size) for size in inserted.scalars()]
