"""The audit log's vocabulary: who acted (`Actor`), what was recorded (`AuditEntry`), how to ask.

An `Actor` is built once per request by the entry point (from the authenticated principal and
the client's address) or once per command (`cli`), and handed down through the services to the
store method whose transaction makes the change; the entry is written in that transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

#: Performer kinds.
USER = "user"
ROBOT = "robot"
APP_TOKEN = "app-token"  # noqa: S105 - a performer kind, not a secret
OAUTH_APP = "oauth-app"
ANONYMOUS = "anonymous"
SYSTEM = "system"
PERFORMER_KINDS = (USER, ROBOT, APP_TOKEN, OAUTH_APP, ANONYMOUS, SYSTEM)

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an action, and from where.

    `performer` is the account name (None for an anonymous caller), `performer_kind` one of
    PERFORMER_KINDS, `via_app` the OAuth application acting for the user, `performer_id` the
    account id and `app_token_id` the app token used, when there is one.
    """

    performer: str | None
    performer_kind: str
    ip: str | None = None
    user_agent: str | None = None
    via_app: str | None = None
    performer_id: int | None = None
    app_token_id: int | None = None


def system_actor(name: str) -> Actor:
    """Dockyard itself acting (garbage collection, prune policies, first start)."""
    return Actor(performer=name, performer_kind=SYSTEM)


#: Changes made by Dockyard's own background work with no more specific name.
DOCKYARD = system_actor("dockyard")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    kind: str
    performer: str | None
    performer_kind: str | None
    performer_id: int | None
    via_app: str | None
    namespace: str | None
    repository: str | None
    ip: str | None
    user_agent: str | None
    created_at: int
    """Milliseconds since the epoch."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The entry as one JSON Lines record (the export and archive format)."""
        return {
            "id": self.id,
            "time": iso_time(self.created_at),
            "created_at": self.created_at,
            "kind": self.kind,
            "performer": self.performer,
            "performer_kind": self.performer_kind,
            "performer_id": self.performer_id,
            "via_app": self.via_app,
            "namespace": self.namespace,
            "repository": self.repository,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "metadata": self.metadata,
        }

    def json_line(self) -> bytes:
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> AuditEntry:
        return cls(
            id=int(record["id"]),
            kind=record["kind"],
            performer=record.get("performer"),
            performer_kind=record.get("performer_kind"),
            performer_id=record.get("performer_id"),
            via_app=record.get("via_app"),
            namespace=record.get("namespace"),
            repository=record.get("repository"),
            ip=record.get("ip"),
            user_agent=record.get("user_agent"),
            created_at=int(record["created_at"]),
            metadata=record.get("metadata") or {},
        )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to read. Every field given must match; `since` inclusive, `until` exclusive.

    `kind` matches that kind and every kind below it (`tag` matches `tag.move`, `tag.delete` …);
    a trailing `*` makes it a plain prefix (`tag.ex*`).
    """

    namespace: str | None = None
    repository: str | None = None
    performer: str | None = None
    kind: str | None = None
    since: int | None = None
    until: int | None = None

    def matches(self, entry: AuditEntry) -> bool:
        """The same test the database query makes, for entries read from archives."""
        if self.namespace is not None and entry.namespace != self.namespace:
            return False
        if self.repository is not None and entry.repository != self.repository:
            return False
        if self.performer is not None and entry.performer != self.performer:
            return False
        if self.since is not None and entry.created_at < self.since:
            return False
        if self.until is not None and entry.created_at >= self.until:
            return False
        return self.kind is None or kind_matches(self.kind, entry.kind)


def kind_matches(pattern: str, kind: str) -> bool:
    if pattern.endswith("*"):
        return kind.startswith(pattern[:-1])
    return kind == pattern or kind.startswith(pattern + ".")


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None
    """Pass it back for the next (older) page; None on the last page."""


@dataclass(frozen=True, slots=True)
class KindCount:
    day: str
    """UTC day, `YYYY-MM-DD`."""
    kind: str
    count: int


def iso_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_of(ms: int) -> int:
    """The start (ms) of the UTC day holding `ms`."""
    return ms - ms % DAY_MS


def day_label(day_start: int) -> str:
    return dt.datetime.fromtimestamp(day_start / 1000, tz=dt.UTC).strftime("%Y-%m-%d")
