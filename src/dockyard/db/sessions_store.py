"""Browser sessions: rows keyed by the SHA-256 of the cookie's session id, never the id itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, or_, select, update

from dockyard.db.audit import AuditWriter
from dockyard.db.clock import now_ms
from dockyard.db.engine import Database
from dockyard.db.tables import sessions
from dockyard.domain.audit import Actor


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    account_id: int
    epoch: int
    """The account's credential epoch at login; a different current epoch ends the session."""
    created_at: int
    last_used_at: int
    authenticated_at: int
    """When the password was last entered (login or re-authentication)."""


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        id=int(row.id),
        account_id=int(row.account_id),
        epoch=int(row.epoch),
        created_at=int(row.created_at),
        last_used_at=int(row.last_used_at),
        authenticated_at=int(row.authenticated_at),
    )


class SessionsStore:
    def __init__(self, db: Database, audit: AuditWriter | None = None) -> None:
        self.db = db
        self.audit = audit or AuditWriter()

    async def create(
        self,
        token_hash: str,
        account_id: int,
        epoch: int,
        *,
        ip: str | None,
        user_agent: str | None,
        replaces: str | None,
        expired_before: tuple[int, int],
    ) -> SessionRecord:
        """Store a new session; delete the one it `replaces` (the browser's previous session) and,
        in passing, sessions idle since or created before `expired_before` (idle, absolute)."""
        now = now_ms()
        idle_cut, absolute_cut = expired_before
        async with self.db.write() as conn:
            await conn.execute(
                delete(sessions).where(or_(sessions.c.last_used_at < idle_cut, sessions.c.created_at < absolute_cut))
            )
            if replaces is not None:
                await conn.execute(delete(sessions).where(sessions.c.token_hash == replaces))
            session_id = (
                await conn.execute(
                    insert(sessions)
                    .values(
                        token_hash=token_hash,
                        account_id=account_id,
                        epoch=epoch,
                        created_at=now,
                        last_used_at=now,
                        authenticated_at=now,
                        ip=ip,
                        user_agent=user_agent,
                    )
                    .returning(sessions.c.id)
                )
            ).scalar_one()
        return SessionRecord(int(session_id), account_id, epoch, now, now, now)

    async def get(self, token_hash: str) -> SessionRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.token_hash == token_hash))).first()
        return None if row is None else _record(row)

    async def touch(self, session_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(last_used_at=now_ms()))

    async def reauthenticated(self, session_id: int) -> int:
        """Record a fresh password entry; return its time."""
        now = now_ms()
        async with self.db.write() as conn:
            await conn.execute(
                update(sessions).where(sessions.c.id == session_id).values(authenticated_at=now, last_used_at=now)
            )
        return now

    async def delete(self, session_id: int, *, actor: Actor | None = None) -> None:
        """End a session; with `actor`, audit it as a logout (kind `logout`)."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.id == session_id))
            if actor is not None and result.rowcount:
                await self.audit(conn, "logout", actor, namespace=actor.performer, metadata={"endpoint": "session"})
