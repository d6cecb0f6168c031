"""The audit log as people read it: queries with cursor paging, counts per day and kind, exports,
and retention (old days moved to storage as compressed archives that stay exportable).

Entries are written by the stores in the transactions of the changes they describe, and pulls by
`PullLog` (services/pull_log.py). This module only reads, archives and deletes them.

Archives: one object per UTC day, `audit/YYYY/MM/DD.jsonl.gz` in the archive location, gzip-
compressed JSON Lines ordered by (created_at, id), the same records `export` writes. A day is
archived once it ended more than `retention_days` ago: its rows (merged with the day's existing
archive, if an earlier run left one) are written, read back and verified, recorded in
`audit_archives`, and only then deleted from the database in batches. A crash at any point leaves
every entry in the archive, the database, or both, never neither.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from dockyard.db.audit import ArchiveRecord, AuditStore
from dockyard.db.clock import now_ms
from dockyard.domain.audit import (
    DAY_MS,
    AuditEntry,
    AuditFilter,
    AuditPage,
    KindCount,
    day_label,
    day_of,
    kind_matches,
)
from dockyard.domain.errors import InvalidRequest, StorageUnavailable
from dockyard.storage import BlobStore, StorageError

log = logging.getLogger("dockyard.audit")

#: Job kind of the retention pass.
RETENTION = "audit-retention"
MAX_PAGE = 1000
_READ_PAGE = 1000
_DELETE_BATCH = 1000
_CHUNK = 256 * 1024


def archive_key(day: int) -> str:
    return dt.datetime.fromtimestamp(day / 1000, tz=dt.UTC).strftime("audit/%Y/%m/%d.jsonl.gz")


def encode_cursor(entry: AuditEntry) -> str:
    raw = json.dumps([entry.created_at, entry.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        created_at, entry_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(created_at), int(entry_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None


@dataclass(slots=True)
class _Digest:
    """What was written to an archive, to compare with what reading it back gives."""

    entries: int = 0
    max_id: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    counts: dict[str, int] = field(default_factory=dict)


class AuditService:
    kind = RETENTION

    def __init__(
        self,
        store: AuditStore,
        locations: dict[str, BlobStore],
        *,
        archive_location: str,
        retention_days: int,
        interval_seconds: int = 3600,
        enabled: bool = True,
    ) -> None:
        self.store = store
        self.locations = locations
        self.archive_location = archive_location
        self.retention_days = retention_days
        self.interval_ms = interval_seconds * 1000
        self.enabled = enabled

    # -- queries -------------------------------------------------------------------------------

    async def query(self, wanted: AuditFilter, *, cursor: str | None = None, limit: int = 100) -> AuditPage:
        """Entries still in the database matching `wanted`, newest first, one page at a time.

        The cursor is stable: entries recorded meanwhile never shift later pages.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        before = None if cursor is None else decode_cursor(cursor)
        entries = await self.store.newest_first(wanted, before, limit + 1)
        if len(entries) > limit:
            entries = entries[:limit]
            return AuditPage(entries, encode_cursor(entries[-1]))
        return AuditPage(entries, None)

    async def newest_first(
        self, wanted: AuditFilter, *, before: tuple[int, int] | None, limit: int
    ) -> list[AuditEntry]:
        """Up to `limit` entries still in the database matching `wanted`, newest first, older than
        `before` (created_at, id): `query` for callers that keep their own cursors (the REST API)."""
        if not 1 <= limit <= MAX_PAGE + 1:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        return await self.store.newest_first(wanted, before, limit)

    async def counts(self, wanted: AuditFilter) -> list[KindCount]:
        """Entries per UTC day and kind (archived days included), oldest day first.

        The range is widened to whole days: `since` to the start of its day, `until` to the end.
        """
        since = None if wanted.since is None else day_of(wanted.since)
        until = None if wanted.until is None else day_of(wanted.until - 1) + DAY_MS
        wanted = replace(wanted, since=since, until=until)
        archived = {record.day: record for record in await self.store.archives(since, until)}
        totals: dict[tuple[int, str], int] = {}
        for day, kind, count in await self.store.counts(wanted):
            if day not in archived:  # an archived day's rows are leaving: its archive counts
                totals[(day, kind)] = count
        plain = wanted.namespace is None and wanted.repository is None and wanted.performer is None
        for day, record in archived.items():
            if plain:
                for kind, count in record.counts.items():
                    if wanted.kind is None or kind_matches(wanted.kind, kind):
                        totals[(day, kind)] = count
                continue
            async for entry in self._archived_entries(record, wanted):
                totals[(day, entry.kind)] = totals.get((day, entry.kind), 0) + 1
        return [KindCount(day_label(day), kind, count) for (day, kind), count in sorted(totals.items())]

    async def export(self, wanted: AuditFilter) -> AsyncIterator[bytes]:
        """Matching entries as JSON Lines, oldest first: archived days, then the database.

        Streams: at most one page of rows (or one decompressed chunk of an archive) in memory.
        """
        emitted: set[int] = set()
        for record in await self.store.archives(_day_or_none(wanted.since), wanted.until):
            async for line in self._archived_lines(record, wanted):
                yield line
            emitted.add(record.day)
        # Days archived while the archives above streamed are older than every row left: send
        # them now, so nothing a concurrent retention pass moved is missed.
        archived = {
            record.day: record for record in await self.store.archives(_day_or_none(wanted.since), wanted.until)
        }
        for day in sorted(archived.keys() - emitted):
            async for line in self._archived_lines(archived[day], wanted):
                yield line
        after: tuple[int, int] | None = None
        while True:
            page = await self.store.oldest_first(wanted, after, _READ_PAGE)
            for entry in page:
                covered = archived.get(day_of(entry.created_at))
                if covered is None or entry.id > covered.max_id:
                    yield entry.json_line()
            if len(page) < _READ_PAGE:
                return
            after = (page[-1].created_at, page[-1].id)

    # -- retention -----------------------------------------------------------------------------

    async def retain(self, now: int | None = None) -> list[ArchiveRecord]:
        """Archive every whole UTC day that ended more than `retention_days` ago; return them."""
        if self.retention_days == 0:
            return []
        limit = day_of((now_ms() if now is None else now) - self.retention_days * DAY_MS)
        done: list[ArchiveRecord] = []
        last_day = None
        while (oldest := await self.store.oldest_time(limit)) is not None:
            day = day_of(oldest)
            if day == last_day:
                log.warning("audit retention: rows of %s keep arriving; retrying next run", day_label(day))
                break
            archived = await self.archive_day(day)
            log.info("audit retention: archived %s (%d entries) to %s", day_label(day), archived.entries, archived.key)
            done.append(archived)
            last_day = day
        return done

    async def archive_day(self, day: int) -> ArchiveRecord:
        """Move one UTC day (`day` is its start, ms) to its archive; see the module docstring."""
        previous = await self.store.archive(day)
        location = self.locations[self.archive_location]
        key = archive_key(day)
        written = _Digest()
        try:
            size = await location.write(key, _compressed(self._merged(day, previous), written))
            read_back = await _read_digest(location, key)
        except StorageError as exc:
            raise StorageUnavailable(f"audit archive {key} in {location.name}: {exc}") from exc
        if (read_back.entries, read_back.sha256.hexdigest()) != (written.entries, written.sha256.hexdigest()):
            raise StorageUnavailable(f"audit archive {key} in {location.name} does not read back as written")
        archived = ArchiveRecord(
            day=day,
            location=location.name,
            key=key,
            entries=written.entries,
            max_id=max(written.max_id, previous.max_id if previous else 0),
            bytes=size,
            sha256=written.sha256.hexdigest(),
            counts=dict(sorted(written.counts.items())),
            created_at=now_ms(),
        )
        await self.store.save_archive(archived)
        if previous is not None and (previous.location, previous.key) != (archived.location, archived.key):
            old = self.locations.get(previous.location)
            if old is not None:
                await old.delete(previous.key)
        while await self.store.delete_archived(archived, _DELETE_BATCH):
            pass
        return archived

    async def _merged(self, day: int, previous: ArchiveRecord | None) -> AsyncIterator[tuple[AuditEntry, bytes]]:
        """The day's archived entries and rows, by (created_at, id), each once."""
        rows = self._day_rows(day)
        archived = self._archived_pairs(previous) if previous is not None else _nothing()
        row = await anext(rows, None)
        old = await anext(archived, None)
        while row is not None or old is not None:
            if old is None or (row is not None and (row[0].created_at, row[0].id) < (old[0].created_at, old[0].id)):
                assert row is not None
                yield row
                row = await anext(rows, None)
                continue
            if row is not None and row[0].id == old[0].id:
                row = await anext(rows, None)  # in both: the archive's copy goes
            yield old
            old = await anext(archived, None)

    async def _day_rows(self, day: int) -> AsyncIterator[tuple[AuditEntry, bytes]]:
        wanted = AuditFilter(since=day, until=day + DAY_MS)
        after: tuple[int, int] | None = None
        while True:
            page = await self.store.oldest_first(wanted, after, _READ_PAGE)
            for entry in page:
                yield entry, entry.json_line()
            if len(page) < _READ_PAGE:
                return
            after = (page[-1].created_at, page[-1].id)

    async def _archived_pairs(self, record: ArchiveRecord) -> AsyncIterator[tuple[AuditEntry, bytes]]:
        location = self.locations.get(record.location)
        if location is None:
            raise StorageUnavailable(f"audit archive {record.key} is in location {record.location!r}, not configured")
        try:
            async for line in _lines(location, record.key):
                yield AuditEntry.from_json(json.loads(line)), line
        except StorageError as exc:
            raise StorageUnavailable(f"audit archive {record.key} in {location.name}: {exc}") from exc

    async def _archived_entries(self, record: ArchiveRecord, wanted: AuditFilter) -> AsyncIterator[AuditEntry]:
        async for entry, _ in self._archived_pairs(record):
            if wanted.matches(entry):
                yield entry

    async def _archived_lines(self, record: ArchiveRecord, wanted: AuditFilter) -> AsyncIterator[bytes]:
        async for entry, line in self._archived_pairs(record):
            if wanted.matches(entry):
                yield line

    # -- the background job --------------------------------------------------------------------

    async def ensure_scheduled(self) -> None:
        """Queue the first retention pass if none is queued or running (at worker start)."""
        if self.enabled and self.retention_days:
            await self.store.schedule(RETENTION, now_ms(), unless_running=True)

    async def handle(self, payload: dict[str, Any]) -> None:
        """Job handler: one retention pass, then the next one queued after the interval."""
        try:
            await self.retain()
        finally:
            if self.enabled and self.retention_days:
                await self.store.schedule(RETENTION, now_ms() + self.interval_ms, unless_running=False)


def _day_or_none(ms: int | None) -> int | None:
    return None if ms is None else day_of(ms)


async def _nothing() -> AsyncIterator[tuple[AuditEntry, bytes]]:
    nothing: tuple[tuple[AuditEntry, bytes], ...] = ()
    for item in nothing:
        yield item


async def _compressed(lines: AsyncIterator[tuple[AuditEntry, bytes]], written: _Digest) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    pending: list[bytes] = []
    size = 0
    async for entry, line in lines:
        written.entries += 1
        written.max_id = max(written.max_id, entry.id)
        written.sha256.update(line)
        written.counts[entry.kind] = written.counts.get(entry.kind, 0) + 1
        chunk = compressor.compress(line)
        if chunk:
            pending.append(chunk)
            size += len(chunk)
        if size >= _CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(compressor.flush())
    yield b"".join(pending)


async def _lines(location: BlobStore, key: str) -> AsyncIterator[bytes]:
    """The lines of a gzip JSON Lines object, streamed."""
    decompressor = zlib.decompressobj(31)
    rest = b""
    try:
        async for chunk in location.read(key):
            rest += decompressor.decompress(chunk)
            *complete, rest = rest.split(b"\n")
            for line in complete:
                yield line + b"\n"
        rest += decompressor.flush()
    except zlib.error as exc:
        raise StorageError(f"{key} is not a valid gzip stream: {exc}") from exc
    if not decompressor.eof:
        raise StorageError(f"{key} is a truncated gzip stream")
    if rest:
        yield rest


async def _read_digest(location: BlobStore, key: str) -> _Digest:
    found = _Digest()
    async for line in _lines(location, key):
        found.entries += 1
        found.sha256.update(line)
    return found
