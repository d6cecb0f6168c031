"""The durable job queue's table operations.

Jobs are enqueued inside the transaction of the change that causes them (outbox): `enqueue`
takes the caller's connection. Workers claim due jobs under a lease; a worker that dies loses its
lease and the job runs again elsewhere, so every handler must be idempotent. A job that keeps
failing is retried with exponential backoff and stays visible with its last error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import jobs

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


async def enqueue(
    conn: AsyncConnection,
    dialect: str,
    kind: str,
    payload: dict[str, Any],
    *,
    dedupe_key: str | None = None,
    run_after: int | None = None,
) -> None:
    """Add a job in the caller's transaction. With `dedupe_key`, a pending job of that key absorbs it."""
    now = now_ms()
    values = {
        "kind": kind,
        "payload": json.dumps(payload, separators=(",", ":")),
        "dedupe_key": dedupe_key,
        "state": PENDING,
        "attempts": 0,
        "run_after": now if run_after is None else run_after,
        "created_at": now,
        "updated_at": now,
    }
    if dedupe_key is None:
        await conn.execute(jobs.insert().values(values))
        return
    existing = (await conn.execute(select(jobs.c.id, jobs.c.state).where(jobs.c.dedupe_key == dedupe_key))).first()
    if existing is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await conn.execute(insert(jobs).values(values).on_conflict_do_nothing(index_elements=["dedupe_key"]))
    elif existing.state in (DONE, FAILED):
        # Finished before: run it again (the work it checks may have changed).
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == existing.id)
            .values(
                state=PENDING,
                attempts=0,
                run_after=values["run_after"],
                payload=values["payload"],
                updated_at=now,
                last_error=None,
            )
        )


class JobsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, kinds: list[str], owner: str, lease_ms: int, limit: int) -> list[Job]:
        """Lease up to `limit` due jobs of `kinds`: pending ones, or running ones whose lease lapsed."""
        now = now_ms()
        due = and_(
            jobs.c.kind.in_(kinds),
            or_(
                and_(jobs.c.state == PENDING, jobs.c.run_after <= now),
                and_(jobs.c.state == RUNNING, jobs.c.lease_until < now),
            ),
        )
        async with self.db.write() as conn:
            query = select(jobs.c.id).where(due).order_by(jobs.c.run_after, jobs.c.id).limit(limit)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list((await conn.scalars(query)).all())
            if not ids:
                return []
            await conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids))
                .values(
                    state=RUNNING,
                    lease_owner=owner,
                    lease_until=now + lease_ms,
                    attempts=jobs.c.attempts + 1,
                    updated_at=now,
                )
            )
            rows = await conn.execute(
                select(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts).where(jobs.c.id.in_(ids))
            )
            return [Job(int(r.id), r.kind, json.loads(r.payload), int(r.attempts)) for r in rows]

    async def finish(self, job_id: int, owner: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(state=DONE, lease_until=None, updated_at=now_ms(), last_error=None)
            )

    async def retry(self, job_id: int, owner: str, error: str, delay_ms: int, *, give_up: bool) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(
                    state=FAILED if give_up else PENDING,
                    run_after=now_ms() + delay_ms,
                    lease_until=None,
                    last_error=error[:4000],
                    updated_at=now_ms(),
                )
            )

    async def schedule(self, kind: str, payload: dict[str, Any], *, dedupe_key: str, delay_ms: int) -> None:
        """Queue a job due after `delay_ms`, unless one of `dedupe_key` is pending already."""
        async with self.db.write() as conn:
            await enqueue(conn, self.db.dialect, kind, payload, dedupe_key=dedupe_key, run_after=now_ms() + delay_ms)

    async def backlog(self, kind: str) -> tuple[int, int | None, int]:
        """(pending or running jobs, created_at of the oldest, failed jobs) of `kind`."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(jobs.c.created_at)).where(
                        jobs.c.kind == kind, jobs.c.state.in_((PENDING, RUNNING))
                    )
                )
            ).first()
            failed = await conn.scalar(select(func.count()).where(jobs.c.kind == kind, jobs.c.state == FAILED))
        assert row is not None
        return int(row[0]), row[1], int(failed or 0)
