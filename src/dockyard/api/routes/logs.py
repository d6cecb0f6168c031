"""`/logs`: the audit log — entries page by page, counts per day and kind, JSON Lines exports.

Who may read which entries (every operation the same way):

- with `repository=`: the repository's admins (`repo-admin`, `repo:admin`), its entries;
- else with `namespace=`: the namespace's admins — a user for their own namespace, an
  organization's admins (`namespace-admin`, `org:admin`) — its entries;
- else superusers (`super:user`) every entry, and any other user (`user:read`) the entries it
  performed itself (`performer=` may only name the caller).

A refusal is a 401/403 problem without any entry. Entries come from services/audit.py: listings
read the entries still in the database; counts and exports include archived days.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from dockyard.api.context import SECURITY, Caller, CallerDep
from dockyard.api.paging import Page, PagingDep
from dockyard.api.problems import PROBLEM_JSON, documented
from dockyard.api.schemas import moment
from dockyard.auth import Action, Resource
from dockyard.auth.authorize import acts_as_superuser
from dockyard.domain.access import validate_namespace_name
from dockyard.domain.audit import DAY_MS, AuditEntry, AuditFilter
from dockyard.domain.errors import InvalidRequest
from dockyard.domain.names import validate_repository_name
from dockyard.services.durations import parse_instant

router = APIRouter(tags=["logs"], dependencies=SECURITY)
_REFUSALS = (400, 401, 403, 422, 429)

JSON_LINES = "application/x-ndjson"
#: Counts cover at most this many days (their list grows with the range).
MAX_COUNT_DAYS = 400
DEFAULT_COUNT_DAYS = 30
MAX_INSTANT = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_TIME = "An ISO 8601 time (UTC unless it has an offset) or a duration ago: 2h, 30d."


class LogEntry(BaseModel):
    id: int
    time: dt.datetime
    kind: str = Field(description="What happened: push, tag.move, user.password … (docs/audit.md).")
    performer: str | None = Field(description="Account or system performer; null for an anonymous caller.")
    performer_kind: str | None = Field(description="user, robot, app-token, oauth-app, anonymous or system.")
    performer_id: int | None
    via_app: str | None = Field(description="The OAuth application acting for the user.")
    namespace: str | None
    repository: str | None
    ip: str | None = Field(description="The client's address.")
    user_agent: str | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> LogEntry:
        return cls(
            id=entry.id,
            time=moment(entry.created_at),
            kind=entry.kind,
            performer=entry.performer,
            performer_kind=entry.performer_kind,
            performer_id=entry.performer_id,
            via_app=entry.via_app,
            namespace=entry.namespace,
            repository=entry.repository,
            ip=entry.ip,
            user_agent=entry.user_agent,
            metadata=entry.metadata,
        )


class LogPage(Page[LogEntry]):
    """A page of entries, newest first."""


class LogCount(BaseModel):
    day: dt.date = Field(description="A UTC day.")
    kind: str
    count: int


class LogCounts(BaseModel):
    """Entries per UTC day and kind, oldest day first (at most 400 days)."""

    items: list[LogCount]


class JsonLinesResponse(StreamingResponse):
    media_type = JSON_LINES


NamespaceFilter = Annotated[str | None, Query(max_length=255, description="Only entries about this namespace.")]
RepositoryFilter = Annotated[
    str | None, Query(max_length=255, description="Only entries about this repository (NS/NAME).")
]
PerformerFilter = Annotated[str | None, Query(max_length=300, description="Only entries by this performer.")]
KindFilter = Annotated[
    str | None, Query(max_length=64, description="This kind and those below it (`tag`: tag.move …); `K*` a prefix.")
]
SinceFilter = Annotated[str | None, Query(max_length=64, description=f"From this time on. {_TIME}")]
UntilFilter = Annotated[str | None, Query(max_length=64, description=f"Before this time. {_TIME}")]


@dataclass(frozen=True, slots=True)
class LogQuery:
    """The filters of every `/logs` operation, as given."""

    namespace: str | None
    repository: str | None
    performer: str | None
    kind: str | None
    since: str | None
    until: str | None


def log_query(
    namespace: NamespaceFilter = None,
    repository: RepositoryFilter = None,
    performer: PerformerFilter = None,
    kind: KindFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
) -> LogQuery:
    return LogQuery(namespace, repository, performer, kind, since, until)


LogQueryDep = Annotated[LogQuery, Depends(log_query)]


async def _readable(caller: Caller, query: LogQuery, *, default_days: int | None = None) -> AuditFilter:
    """The filter of what was asked, once the caller may read it (see the module docstring)."""
    principal = caller.principal
    performer, kind = query.performer, query.kind
    if query.repository is not None:
        await caller.allow(Action.REPO_ADMIN, Resource(repository=validate_repository_name(query.repository)))
    elif query.namespace is not None:
        await caller.allow(Action.NAMESPACE_ADMIN, Resource(namespace=validate_namespace_name(query.namespace)))
    elif performer is not None and performer != principal.name:
        # Everything, or what others did: superusers only.
        await caller.allow(Action.SUPERUSER, Resource())
    elif not acts_as_superuser(principal):
        await caller.allow(Action.USER_READ, Resource(account=principal.name))
        performer = principal.name
    if kind is not None and not kind.strip("*"):
        raise InvalidRequest("kind must name a kind or a prefix")
    if any("\0" in value for value in (performer, kind) if value is not None):
        raise InvalidRequest("filters cannot hold NUL characters")
    now = int(time.time() * 1000)
    start = None if query.since is None else _instant(query.since, now)
    end = None if query.until is None else _instant(query.until, now)
    if default_days is not None and start is None:
        start = (end or now) - default_days * DAY_MS
    if start is not None and end is not None and end < start:
        raise InvalidRequest("until lies before since")
    return AuditFilter(
        namespace=query.namespace, repository=query.repository, performer=performer, kind=kind, since=start, until=end
    )


def _instant(text: str, now: int) -> int:
    """A point in time (ms) from an ISO time or a duration ago, between 1970 and the year 9999."""
    try:
        value = parse_instant(text, now)
    except (OverflowError, ValueError):
        raise InvalidRequest(f"invalid time {text!r}") from None
    if not 0 <= value <= MAX_INSTANT:
        raise InvalidRequest(f"time {text!r} lies outside 1970 to 9999")
    return value


@router.get("/logs", summary="Audit log entries, newest first", responses=documented(*_REFUSALS))
async def list_logs(caller: CallerDep, paging: PagingDep, query: LogQueryDep) -> LogPage:
    """The entries still in the database (archived days: `/logs/export`). Who reads what: see
    docs/api.md."""
    wanted = await _readable(caller, query)
    after = paging.after("logs", (int, int))
    rows = await caller.services.audit.newest_first(wanted, before=after, limit=paging.fetch)
    return paging.page(LogPage, rows, key=lambda entry: (entry.created_at, entry.id), item=LogEntry.of)


@router.get("/logs/counts", summary="Audit log entries per day and kind", responses=documented(*_REFUSALS))
async def count_logs(caller: CallerDep, query: LogQueryDep) -> LogCounts:
    """Archived days included. Without `since`: the 30 days before `until` (or now); at most 400
    days at once."""
    wanted = await _readable(caller, query, default_days=DEFAULT_COUNT_DAYS)
    assert wanted.since is not None
    if (wanted.until or int(time.time() * 1000)) - wanted.since > MAX_COUNT_DAYS * DAY_MS:
        raise InvalidRequest(f"counts cover at most {MAX_COUNT_DAYS} days at once")
    counts = await caller.services.audit.counts(wanted)
    return LogCounts(
        items=[LogCount(day=dt.date.fromisoformat(item.day), kind=item.kind, count=item.count) for item in counts]
    )


@router.get(
    "/logs/export",
    summary="Export audit log entries as JSON Lines",
    response_class=JsonLinesResponse,
    responses={
        200: {
            "description": "One entry per line, oldest first (docs/audit.md, the archive format).",
            "content": {JSON_LINES: {"schema": {"type": "string"}}},
        },
        # Spelled out: with a `model`, FastAPI would document them as JSON Lines too.
        **{
            status: {
                "description": response["description"],
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            for status, response in documented(*_REFUSALS).items()
        },
    },
)
async def export_logs(caller: CallerDep, query: LogQueryDep) -> JsonLinesResponse:
    """Every matching entry of the time range, archived days included, streamed oldest first."""
    wanted = await _readable(caller, query)
    lines = caller.services.audit.export(wanted)
    # The first line is read before answering: a failure to start (storage unavailable) is a
    # problem answer, not a cut stream.
    first = await anext(lines, None)
    return JsonLinesResponse(_prepend(first, lines), headers={"Cache-Control": "no-store"})


async def _prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield first
    async for line in rest:
        yield line
