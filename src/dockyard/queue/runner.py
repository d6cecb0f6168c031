"""Worker loop over the job table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dockyard.db.jobs_store import JobsStore

log = logging.getLogger("dockyard.queue")

Handler = Callable[[dict[str, Any]], Awaitable[None]]

_MAX_BACKOFF_MS = 5 * 60 * 1000


class JobRunner:
    def __init__(
        self,
        store: JobsStore,
        handlers: dict[str, Handler],
        *,
        lease_seconds: int = 300,
        poll_seconds: float = 1.0,
        batch: int = 8,
        max_attempts: int = 0,
        base_backoff_ms: int = 1000,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.lease_ms = lease_seconds * 1000
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.max_attempts = max_attempts  # 0: retry until it succeeds (replication must converge)
        self.base_backoff_ms = base_backoff_ms
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs; return how many ran."""
        claimed = await self.store.claim(list(self.handlers), self.owner, self.lease_ms, self.batch)
        for job in claimed:
            try:
                await self.handlers[job.kind](job.payload)
            except Exception as exc:
                delay = min(self.base_backoff_ms * 2 ** (job.attempts - 1), _MAX_BACKOFF_MS)
                give_up = self.max_attempts > 0 and job.attempts >= self.max_attempts
                log.warning("job %s (%s) failed on attempt %d: %s", job.id, job.kind, job.attempts, exc)
                await self.store.retry(job.id, self.owner, f"{type(exc).__name__}: {exc}", delay, give_up=give_up)
            else:
                await self.store.finish(job.id, self.owner)
        return len(claimed)

    async def drain(self, *, limit: int = 10_000) -> int:
        """Run due jobs until none is left (or `limit`); return how many ran."""
        total = 0
        while total < limit:
            ran = await self.run_once()
            if not ran:
                break
            total += ran
        return total

    async def forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ran = await self.run_once()
            except Exception:
                log.exception("job runner failed; retrying")
                ran = 0
            if not ran:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
