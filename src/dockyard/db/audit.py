"""The audit log: who did what, when and from where, one row per event.

`record` writes in the caller's transaction, so an event is logged exactly when the change it
describes commits. `AuditStore` reads entries back, newest first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import audit_log


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    kind: str
    performer: str | None
    namespace: str | None
    repository: str | None
    ip: str | None
    user_agent: str | None
    created_at: int
    metadata: dict[str, Any]


async def record(
    conn: AsyncConnection,
    kind: str,
    *,
    performer: str | None = None,
    namespace: str | None = None,
    repository: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    metadata: dict[str, Any] | None = None,
    now: int | None = None,
) -> None:
    """Write one audit entry in `conn`'s transaction (it commits or rolls back with the change)."""
    await conn.execute(
        insert(audit_log).values(
            kind=kind,
            performer=performer,
            namespace=namespace,
            repository=repository,
            ip=ip,
            user_agent=user_agent,
            created_at=now_ms() if now is None else now,
            metadata=json.dumps(metadata or {}, sort_keys=True, separators=(",", ":")),
        )
    )


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(
        self,
        *,
        namespace: str | None = None,
        repository: str | None = None,
        kind: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every filter given, newest first."""
        query = select(audit_log)
        if namespace is not None:
            query = query.where(audit_log.c.namespace == namespace)
        if repository is not None:
            query = query.where(audit_log.c.repository == repository)
        if kind is not None:
            query = query.where(audit_log.c.kind == kind)
        if since_ms is not None:
            query = query.where(audit_log.c.created_at >= since_ms)
        query = query.order_by(audit_log.c.created_at.desc(), audit_log.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AuditEntry(
                id=int(row["id"]),
                kind=row["kind"],
                performer=row["performer"],
                namespace=row["namespace"],
                repository=row["repository"],
                ip=row["ip"],
                user_agent=row["user_agent"],
                created_at=int(row["created_at"]),
                metadata=json.loads(row["metadata"]),
            )
            for row in rows
        ]
