"""Prune policies: tag retention rules per namespace or repository, and the tags they expire.

A policy either keeps the N most recent tags or expires tags older than a duration; either may
be limited to tags matching a glob. A namespace policy covers every repository of the namespace.
Pruning only expires tags (`expires_at` on the live row): the history stays, so a pruned tag can
be restored within the time-machine window, and garbage collection reclaims whatever nothing
references any more.

- Only live tags count. "Most recent" orders by the live row's start_at, newest first, ties by
  name. An immutable tag (its own flag or a repository rule) counts towards the N kept but is
  never expired.
- A tag goes when any policy says so; the decision names the first such policy (lowest id).
- `apply` re-evaluates each repository inside its write transaction and expires a tag only when
  the same policy still expires the same manifest there (still live, still mutable, policy
  still present), and audits each expiry in that transaction.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, false, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import immutability_rules, manifests, namespaces, prune_policies, repositories, tags
from dockyard.db.tags_store import live
from dockyard.domain.audit import Actor, system_actor
from dockyard.domain.errors import InvalidRequest, NotFound

PERFORMER = "prune-policy"
ACTOR = system_actor(PERFORMER)
EXPIRE_EVENT = "tag.expire"
_BATCH = 500  # expiries per write transaction


@dataclass(frozen=True, slots=True)
class PrunePolicy:
    id: int
    namespace: str
    repository: str | None  # None: every repository of the namespace
    keep_count: int | None
    older_than_seconds: int | None
    tag_pattern: str | None
    created_at: int

    @property
    def rule(self) -> str:
        """The policy in words, e.g. "keep 3 most recent tags matching 'v*'"."""
        matching = "" if self.tag_pattern is None else f" matching {self.tag_pattern!r}"
        if self.keep_count is not None:
            return f"keep {self.keep_count} most recent tags{matching}"
        return f"expire tags{matching} older than {format_duration(self.older_than_seconds or 0)}"


@dataclass(frozen=True, slots=True)
class PruneDecision:
    """One tag a policy expires, and why."""

    repository: str
    tag: str
    digest: str
    policy_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Scoped:
    """A policy with the ids that say where it applies."""

    namespace_id: int
    repository_id: int | None
    policy: PrunePolicy

    def covers(self, namespace_id: int, repository_id: int) -> bool:
        if self.repository_id is None:
            return self.namespace_id == namespace_id
        return self.repository_id == repository_id


@dataclass(frozen=True, slots=True)
class _LiveTag:
    row_id: int
    name: str
    digest: str
    start_at: int
    immutable: bool


def format_duration(seconds: int) -> str:
    """`seconds` in the largest unit that divides it exactly (30d, 12h, 90s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decide(
    policy: PrunePolicy, current: Iterable[_LiveTag], rules: Sequence[str], now: int
) -> list[tuple[_LiveTag, str]]:
    """The live tags `policy` expires among `current`, each with the reason; never an immutable one."""
    pattern = policy.tag_pattern
    matching = [tag for tag in current if pattern is None or fnmatch.fnmatchcase(tag.name, pattern)]
    chosen: list[tuple[_LiveTag, str]]
    if policy.keep_count is not None:
        ranked = sorted(matching, key=lambda tag: (-tag.start_at, tag.name))
        chosen = [
            (tag, f"{policy.rule}: this is #{rank}")
            for rank, tag in enumerate(ranked, start=1)
            if rank > policy.keep_count
        ]
    else:
        seconds = policy.older_than_seconds or 0
        cutoff = now - seconds * 1000
        scope = "" if pattern is None else f" (tags matching {pattern!r})"
        chosen = [
            (tag, f"older than {format_duration(seconds)}{scope}: pushed {_when(tag.start_at)}")
            for tag in matching
            if tag.start_at < cutoff
        ]
    return [
        (tag, reason)
        for tag, reason in chosen
        if not tag.immutable and not any(fnmatch.fnmatchcase(tag.name, rule) for rule in rules)
    ]


def _policy(row: Any) -> _Scoped:
    return _Scoped(
        int(row.namespace_id),
        None if row.repository_id is None else int(row.repository_id),
        PrunePolicy(
            id=int(row.id),
            namespace=row.namespace_name,
            repository=row.repository_name,
            keep_count=row.keep_count,
            older_than_seconds=None if row.older_than_seconds is None else int(row.older_than_seconds),
            tag_pattern=row.tag_pattern,
            created_at=int(row.created_at),
        ),
    )


async def _policies(conn: AsyncConnection, *where: Any) -> list[_Scoped]:
    query = (
        select(
            prune_policies,
            namespaces.c.name.label("namespace_name"),
            repositories.c.name.label("repository_name"),
        )
        .join(namespaces, namespaces.c.id == prune_policies.c.namespace_id)
        .outerjoin(repositories, repositories.c.id == prune_policies.c.repository_id)
        .where(*where)
        .order_by(prune_policies.c.id)
    )
    return [_policy(row) for row in await conn.execute(query)]


async def _current(conn: AsyncConnection, repository_id: int, now: int) -> tuple[list[_LiveTag], list[str]]:
    """The live tags of a repository and its immutability rules."""
    rows = await conn.execute(
        select(tags.c.id, tags.c.name, tags.c.start_at, tags.c.immutable, manifests.c.digest)
        .join(manifests, manifests.c.id == tags.c.manifest_id)
        .where(tags.c.repository_id == repository_id, live(now))
    )
    current = [_LiveTag(int(r.id), r.name, r.digest, int(r.start_at), bool(r.immutable)) for r in rows]
    rules = list(
        await conn.scalars(
            select(immutability_rules.c.pattern).where(immutability_rules.c.repository_id == repository_id)
        )
    )
    return current, rules


class PruneStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    async def add(
        self,
        namespace: str,
        repository: str | None,
        *,
        keep_count: int | None,
        older_than_seconds: int | None,
        tag_pattern: str | None,
        actor: Actor,
    ) -> PrunePolicy:
        """Add a policy on `namespace` (every repository) or on one of its repositories."""
        if (keep_count is None) == (older_than_seconds is None):
            raise InvalidRequest("a prune policy has exactly one of a keep count or an age")
        now = now_ms()
        async with self.db.write() as conn:
            namespace_id = await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == namespace))
            if namespace_id is None:
                raise NotFound(f"no namespace {namespace!r}")
            repository_id = None
            if repository is not None:
                repository_id = await conn.scalar(
                    select(repositories.c.id).where(
                        repositories.c.name == repository,
                        repositories.c.namespace_id == namespace_id,
                        repositories.c.state == "normal",
                    )
                )
                if repository_id is None:
                    raise NotFound(f"no repository {repository} in namespace {namespace!r}")
            policy_id = await conn.scalar(
                insert(prune_policies)
                .values(
                    namespace_id=namespace_id,
                    repository_id=repository_id,
                    keep_count=keep_count,
                    older_than_seconds=older_than_seconds,
                    tag_pattern=tag_pattern,
                    created_at=now,
                )
                .returning(prune_policies.c.id)
            )
            added = PrunePolicy(int(policy_id), namespace, repository, keep_count, older_than_seconds, tag_pattern, now)
            await self.audit(
                conn,
                "prune_policy.add",
                actor,
                namespace=namespace,
                repository=repository,
                metadata={"policy": added.id, "rule": added.rule},
                now=now,
            )
        return added

    async def policies(self, namespace: str) -> list[PrunePolicy]:
        """The policies on `namespace` and on its repositories, oldest first."""
        async with self.db.read() as conn:
            namespace_id = await conn.scalar(select(namespaces.c.id).where(namespaces.c.name == namespace))
            if namespace_id is None:
                raise NotFound(f"no namespace {namespace!r}")
            return [scoped.policy for scoped in await _policies(conn, prune_policies.c.namespace_id == namespace_id)]

    async def remove(self, policy_id: int, *, actor: Actor) -> None:
        async with self.db.write() as conn:
            found = await _policies(conn, prune_policies.c.id == policy_id)
            result = await conn.execute(delete(prune_policies).where(prune_policies.c.id == policy_id))
            if not result.rowcount or not found:
                raise NotFound(f"no prune policy {policy_id}")
            removed = found[0].policy
            await self.audit(
                conn,
                "prune_policy.remove",
                actor,
                namespace=removed.namespace,
                repository=removed.repository,
                metadata={"policy": policy_id, "rule": removed.rule},
            )

    async def plan(self, now: int) -> list[PruneDecision]:
        """What every policy would expire at `now`, by repository and tag; changes nothing."""
        async with self.db.read() as conn:
            scoped = await _policies(conn)
            if not scoped:
                return []
            whole = {s.namespace_id for s in scoped if s.repository_id is None}
            single = {s.repository_id for s in scoped if s.repository_id is not None}
            targets = (
                await conn.execute(
                    select(repositories.c.id, repositories.c.name, repositories.c.namespace_id)
                    .where(
                        repositories.c.state == "normal",
                        or_(repositories.c.namespace_id.in_(whole), repositories.c.id.in_(single)),
                    )
                    .order_by(repositories.c.name)
                )
            ).all()
        decisions: list[PruneDecision] = []
        for target in targets:
            covering = [s.policy for s in scoped if s.covers(int(target.namespace_id), int(target.id))]
            async with self.db.read() as conn:  # one short read per repository
                current, rules = await _current(conn, int(target.id), now)
            decided: dict[str, PruneDecision] = {}
            for policy in covering:
                for tag, reason in _decide(policy, current, rules, now):
                    decided.setdefault(tag.name, PruneDecision(target.name, tag.name, tag.digest, policy.id, reason))
            decisions.extend(decided[name] for name in sorted(decided))
        return decisions

    async def apply(self, decisions: Sequence[PruneDecision], now: int) -> list[PruneDecision]:
        """Expire the decided tags still decided the same way at `now`; return those expired.

        One write transaction per repository (per batch of a large one); each expiry is audited
        in the transaction that makes it, with the reason as re-evaluated there.
        """
        by_repository: dict[str, list[PruneDecision]] = {}
        for decision in decisions:
            by_repository.setdefault(decision.repository, []).append(decision)
        expired: list[PruneDecision] = []
        for repository, items in sorted(by_repository.items()):
            for start in range(0, len(items), _BATCH):
                expired.extend(await self._apply_batch(repository, items[start : start + _BATCH], now))
        return expired

    async def _apply_batch(self, repository: str, batch: Sequence[PruneDecision], now: int) -> list[PruneDecision]:
        async with self.db.write() as conn:
            target = (
                await conn.execute(
                    select(repositories.c.id, repositories.c.namespace_id, namespaces.c.name.label("namespace"))
                    .join(namespaces, namespaces.c.id == repositories.c.namespace_id)
                    .where(repositories.c.name == repository, repositories.c.state == "normal")
                )
            ).first()
            if target is None:
                return []
            repository_id, namespace_id = int(target.id), int(target.namespace_id)
            scoped = await _policies(conn, prune_policies.c.id.in_({d.policy_id for d in batch}))
            current, rules = await _current(conn, repository_id, now)
            fresh: dict[tuple[int, str], tuple[_LiveTag, str]] = {}
            for s in scoped:
                if s.covers(namespace_id, repository_id):
                    for tag, reason in _decide(s.policy, current, rules, now):
                        fresh[(s.policy.id, tag.name)] = (tag, reason)
            expired: list[PruneDecision] = []
            for decision in batch:
                found = fresh.get((decision.policy_id, decision.tag))
                if found is None or found[0].digest != decision.digest:
                    continue  # moved, deleted, pinned or no longer selected since the plan
                tag, reason = found
                result = await conn.execute(
                    update(tags)
                    .where(tags.c.id == tag.row_id, live(now), tags.c.immutable == false())
                    .values(expires_at=now)
                )
                if not result.rowcount:
                    continue  # a duplicate decision expired it already
                await self.audit(
                    conn,
                    EXPIRE_EVENT,
                    ACTOR,
                    namespace=target.namespace,
                    repository=repository,
                    metadata={"tag": tag.name, "digest": tag.digest, "policy": decision.policy_id, "reason": reason},
                    now=now,
                )
                expired.append(PruneDecision(repository, tag.name, tag.digest, decision.policy_id, reason))
            return expired
