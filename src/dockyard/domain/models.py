"""Immutable records that services hand to entry points (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int
    key: str


@dataclass(frozen=True, slots=True)
class UploadState:
    id: str
    repository: str
    offset: int
    location: str
    created_at: int
    handle: str = ""
    parts: str = "[]"
    """The storage parts recorded so far, as JSON (the storage layer's Part records)."""


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    content: bytes
    subject: str | None
    artifact_type: str | None


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, str] | None = None
    """The platform an index names for a child manifest (string fields only)."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    next_last: str | None


#: Orders of a repository listing: by name or creation time, `-` for descending.
RepositorySort = Literal["name", "-name", "created", "-created"]


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    id: int
    name: str
    namespace: str
    public: bool
    description: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A live tag and the manifest it points at."""

    name: str
    digest: str
    media_type: str
    size: int
    start_at: int
    expires_at: int | None
    immutable: bool


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One row of a tag's history."""

    id: int
    digest: str
    start_at: int
    end_at: int | None
    expires_at: int | None
    immutable: bool
