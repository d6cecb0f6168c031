"""Pulls in the audit log, recorded without making a pull wait.

A pull is a manifest GET that answered 200 (by tag or by digest); blob GETs are not pulls. The
handler hands each pull to `record`, which only appends what it was given — the principal, the
client's address and user agent, the repository, digest and tag, the time — to this process's
bounded buffer: a pull pays for no audit row. A background task turns the buffer into rows every
`interval` seconds, or as soon as `batch` entries wait, building the actor columns once per
distinct caller and the metadata once per distinct manifest in a batch, and writes each batch in
one transaction (`AuditStore.insert_values`). When the buffer is full (the database is slow or
down), a pull is not recorded rather than delayed: it is counted as dropped. `stop` (server
shutdown) writes what is left.
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

from dockyard.auth.origin import actor_of
from dockyard.auth.principal import Principal
from dockyard.db.audit import ActorColumns, AuditStore, actor_columns
from dockyard.db.clock import now_ms
from dockyard.domain.names import namespace_of

log = logging.getLogger("dockyard.audit")

Counter = Callable[[int], None]

#: A buffered pull: principal, client address, user agent, repository, digest, tag (None when
#: pulled by digest), time (ms).
Pull = tuple[Principal, str | None, str | None, str, str, str | None, int]


def _ignore(_count: int) -> None:
    return None


@functools.lru_cache(maxsize=4096)
def _metadata(digest: str, tag: str | None, app_token_id: int | None) -> str:
    """A pull's metadata as JSON; the same few manifests are pulled over and over."""
    value: dict[str, object] = {"digest": digest, "tag": tag}
    if app_token_id is not None:
        value["app_token_id"] = app_token_id
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def pull_values(pulls: list[Pull]) -> list[object]:
    """The audit rows of `pulls` as one flat list of values (`db.audit.COLUMNS`, row after row).

    Who pulled is worked out once per distinct (principal, address, user agent) of the batch — a
    principal by identity: verified tokens and logins are cached, so one caller's pulls share one
    object, and `pulls` keeps every principal alive while its id is a key — and the namespace and
    metadata once per distinct manifest and tag.
    """
    callers: dict[tuple[int, str | None, str | None], tuple[ActorColumns, int | None]] = {}
    targets: dict[tuple[str, str, str | None, int | None], tuple[str, str, str]] = {}
    values: list[object] = []
    for principal, ip, agent, repository, digest, tag, at in pulls:
        caller_key = (id(principal), ip, agent)
        caller = callers.get(caller_key)
        if caller is None:
            actor = actor_of(principal, ip, agent)
            caller = callers[caller_key] = (actor_columns("pull", actor), actor.app_token_id)
        columns, app_token_id = caller
        target_key = (repository, digest, tag, app_token_id)
        target = targets.get(target_key)
        if target is None:
            target = targets[target_key] = (namespace_of(repository), repository, _metadata(digest, tag, app_token_id))
        values += columns
        values += target
        values.append(at)
    return values


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
        batch: int = 2000,
        interval: float = 1.0,
        counters: PullCounters | None = None,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.counters = counters or PullCounters()
        self._buffer: deque[Pull] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        principal: Principal,
        ip: str | None,
        user_agent: str | None,
        repository: str,
        digest: str,
        tag: str | None,
    ) -> None:
        """Queue one pull; never waits, never fails (a full buffer drops it and counts it)."""
        if not self.enabled:
            return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self.counters.dropped(1)
            return
        buffer.append((principal, ip, user_agent, repository, digest, tag, now_ms()))
        if len(buffer) >= self.batch:
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
                return  # the write still waiting on the database keeps the store's connection
        await self.store.close()

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
            pulls = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.store.insert_values(pull_values(pulls), count)
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
