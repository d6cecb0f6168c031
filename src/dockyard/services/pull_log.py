"""Pulls in the audit log, recorded without making a pull wait.

A pull is a manifest GET that answered 200 (by tag or by digest); blob GETs are not pulls. The
handler hands each pull to `record`, which only appends to this process's bounded buffer. A
background task writes the buffer every `interval` seconds, or as soon as `batch` entries wait,
with one multi-row INSERT per batch. When the buffer is full (the database is slow or down), a
pull is not recorded rather than delayed: it is counted as dropped. `stop` (server shutdown)
writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.db.audit import AuditRow, AuditStore, row_of
from dockyard.db.clock import now_ms
from dockyard.domain.audit import Actor
from dockyard.domain.names import namespace_of

log = logging.getLogger("dockyard.audit")

Counter = Callable[[int], None]


def _ignore(_count: int) -> None:
    return None


@functools.lru_cache(maxsize=4096)
def _metadata(digest: str, tag: str | None, app_token_id: int | None) -> str:
    """A pull's metadata as JSON; the same few manifests are pulled over and over."""
    value: dict[str, object] = {"digest": digest, "tag": tag}
    if app_token_id is not None:
        value["app_token_id"] = app_token_id
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PullCounters:
    """Where the log reports what it did (the composition root points these at metrics)."""

    written: Counter = _ignore
    dropped: Counter = _ignore
    flushes: Counter = _ignore


class PullLog:
    def __init__(
        self,
        store: AuditStore,
        *,
        enabled: bool = True,
        capacity: int = 10_000,
        batch: int = 500,
        interval: float = 1.0,
        counters: PullCounters | None = None,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.counters = counters or PullCounters()
        self._buffer: deque[AuditRow] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def record(self, actor: Actor, repository: str, *, digest: str, tag: str | None) -> None:
        """Queue one pull; never waits, never fails (a full buffer drops it and counts it)."""
        if not self.enabled:
            return
        if len(self._buffer) >= self.capacity:
            self.counters.dropped(1)
            return
        metadata = _metadata(digest, tag, actor.app_token_id)
        self._buffer.append(row_of("pull", actor, namespace_of(repository), repository, metadata, now_ms()))
        if len(self._buffer) >= self.batch:
            self._wake.set()

    def start(self) -> None:
        """Start the writer task (in the serving event loop)."""
        if self.enabled and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="audit-pull-log")

    async def stop(self, wait_seconds: float = 10.0) -> None:
        """Stop the writer after writing everything buffered (waiting at most `wait_seconds`)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, wait_seconds)
            except TimeoutError:
                log.warning("audit: %d buffered pulls not written at shutdown", len(self._buffer))
                self.counters.dropped(len(self._buffer))
                self._buffer.clear()

    async def flush(self) -> int:
        """Write what is buffered now, in batches; return how many entries were written.

        Entries arriving meanwhile wait for the next flush: chasing them would turn a busy
        server's writes into a stream of small INSERTs.
        """
        written = 0
        left = len(self._buffer)
        while left and self._buffer:
            count = min(self.batch, left, len(self._buffer))
            left -= count
            rows = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.store.insert_rows(rows)
            except Exception as exc:
                log.warning("audit: writing %d pulls failed, they are dropped: %s", count, exc)
                self.counters.dropped(count)
                return written
            written += count
            self.counters.written(count)
            self.counters.flushes(1)
        return written

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # Until a batch is full, or `interval` after the last write.
            deadline = loop.time() + self.interval
            while not self._stopping and len(self._buffer) < self.batch and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                self._wake.clear()
            await self.flush()
        while self._buffer:
            if not await self.flush():
                break
