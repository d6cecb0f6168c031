"""Immutable records that services hand to entry points (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    next_last: str | None
