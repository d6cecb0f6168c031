"""Manifests, tags, the catalog and referrers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dockyard.db.registry_store import RegistryStore
from dockyard.domain.audit import Actor
from dockyard.domain.digest import Digest, looks_like_digest
from dockyard.domain.errors import (
    DigestInvalid,
    InvalidRequest,
    ManifestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
)
from dockyard.domain.models import Descriptor, ManifestRecord, Page
from dockyard.domain.names import validate_tag
from dockyard.oci import mediatypes as mt
from dockyard.oci.manifest import ParsedManifest, descriptor_json, parse_manifest
from dockyard.services.durations import parse_duration

#: Image labels that set a tag's expiry at push.
EXPIRY_LABEL = "dockyard.expires-after"
QUAY_EXPIRY_LABEL = "quay.expires-after"
_CONFIG_LIMIT = 4 * 1024 * 1024

#: (digest, size limit) -> the blob's bytes, None when absent or too large.
ConfigReader = Callable[[str, int], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    subject: str | None


def _acceptable(media_type: str, accept: list[str]) -> bool:
    if not accept:
        return True
    for item in accept:
        value = item.split(";", 1)[0].strip()
        if value in ("*/*", media_type, "application/*") or value == media_type.split("/", 1)[0] + "/*":
            return True
    return False


class ManifestService:
    def __init__(
        self,
        store: RegistryStore,
        *,
        max_bytes: int,
        default_page: int,
        max_page: int,
        replicate: bool = False,
        config_reader: ConfigReader | None = None,
    ) -> None:
        self.store = store
        self.replicate = replicate
        self.config_reader = config_reader
        self.max_bytes = max_bytes
        self.default_page = default_page
        self.max_page = max_page

    async def read_body(self, body: AsyncIterator[bytes], declared: int | None) -> bytes:
        if declared is not None and declared > self.max_bytes:
            raise ManifestTooLarge(f"manifest of {declared} bytes exceeds the limit of {self.max_bytes}")
        parts: list[bytes] = []
        total = 0
        async for chunk in body:
            total += len(chunk)
            if total > self.max_bytes:
                raise ManifestTooLarge(f"manifest exceeds the limit of {self.max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def put(
        self,
        repository: str,
        reference: str,
        content_type: str | None,
        content: bytes,
        *,
        creator: int | None,
        actor: Actor,
    ) -> PutResult:
        tag: str | None = None
        if looks_like_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(content, expected.algorithm)
            if digest != expected:
                raise DigestInvalid(f"manifest has digest {digest}, not {expected}", detail={"digest": reference})
        else:
            tag = validate_tag(reference)
            digest = Digest.of(content)
        parsed = parse_manifest(content, content_type)
        subject = parsed.subject.digest if parsed.subject else None
        expires_at = await self._expiry_from_labels(parsed) if tag is not None else None
        await self.store.put_manifest(
            repository,
            str(digest),
            parsed.media_type,
            content,
            artifact_type=parsed.artifact_type,
            subject=subject,
            blob_digests=[d.digest for d in parsed.blobs],
            child_digests=[d.digest for d in parsed.children],
            tag=tag,
            creator=creator,
            replicate=self.replicate,
            expires_at=expires_at,
            actor=actor,
        )
        return PutResult(digest=str(digest), subject=subject)

    async def _expiry_from_labels(self, parsed: ParsedManifest) -> int | None:
        """`dockyard.expires-after` (or `quay.expires-after`) in the image config sets the tag's expiry."""
        if self.config_reader is None or parsed.config_media_type not in mt.IMAGE_CONFIGS or not parsed.blobs:
            return None
        raw = await self.config_reader(parsed.blobs[0].digest, _CONFIG_LIMIT)
        if raw is None:
            return None
        try:
            labels = (json.loads(raw).get("config") or {}).get("Labels") or {}
        except (ValueError, AttributeError):
            return None
        value = labels.get(EXPIRY_LABEL) or labels.get(QUAY_EXPIRY_LABEL) if isinstance(labels, dict) else None
        if not isinstance(value, str):
            return None
        try:
            seconds = parse_duration(value)
        except InvalidRequest:
            raise ManifestInvalid(f"label {EXPIRY_LABEL}={value!r} is not a duration like 12h, 30d, 2w") from None
        return int((time.time() + seconds) * 1000)

    async def get(self, repository: str, reference: str, accept: list[str]) -> ManifestRecord:
        if looks_like_digest(reference):
            Digest.parse(reference)
            record = await self.store.manifest_by_digest(repository, reference)
        else:
            validate_tag(reference)
            record = await self.store.manifest_by_tag(repository, reference)
        if record is None:
            raise ManifestUnknown(f"manifest {reference} is not in {repository}", detail={"reference": reference})
        if not _acceptable(record.media_type, accept):
            raise ManifestUnknown(
                f"manifest {reference} is a {record.media_type}, which the client does not accept",
                detail={"reference": reference, "mediaType": record.media_type},
            )
        return record

    async def delete(self, repository: str, reference: str, *, actor: Actor) -> None:
        if looks_like_digest(reference):
            Digest.parse(reference)
            found = await self.store.delete_manifest(repository, reference, actor=actor)
        else:
            found = await self.store.delete_tag(repository, validate_tag(reference), actor=actor)
        if not found:
            raise ManifestUnknown(f"manifest {reference} is not in {repository}", detail={"reference": reference})

    def page_size(self, n: int | None) -> int:
        return self.default_page if n is None else min(max(n, 0), self.max_page)

    async def tags(self, repository: str, n: int | None, last: str | None) -> Page:
        page = await self.store.list_tags(repository, last, self.page_size(n))
        if page is None:
            raise NameUnknown(f"repository {repository} is not known", detail={"name": repository})
        return page

    async def catalog(self, n: int | None, last: str | None, *, viewer: int | None, everything: bool) -> Page:
        return await self.store.catalog(last, self.page_size(n), viewer=viewer, everything=everything)

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> bytes:
        """The OCI image index listing manifests whose subject is `subject`."""
        Digest.parse(subject)
        records = await self.store.referrers(repository, subject) or []
        descriptors = [_referrer(record) for record in records]
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.artifact_type == artifact_type]
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [descriptor_json(d) for d in descriptors],
        }
        return json.dumps(index, separators=(",", ":")).encode()

    async def details(self, repository: str, digest: str) -> ManifestDetails:
        """Manifest `digest` with its config, layers or children, labels and sizes."""
        return await manifest_details(self, repository, digest)


@dataclass(frozen=True, slots=True)
class ManifestDetails:
    """A manifest as a person browses it: what it is made of and what its image says about itself."""

    record: ManifestRecord
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    """An image's layers, in order (empty for an index)."""
    manifests: tuple[Descriptor, ...]
    """An index's child manifests, with their platforms (empty for an image)."""
    annotations: dict[str, str]
    labels: dict[str, str]
    """The image config's labels (empty when it has none or is not an image config)."""
    platform: dict[str, str] | None
    """os, architecture and variant from the image config."""
    created: str | None
    """The image config's creation time as written there."""

    @property
    def total_size(self) -> int:
        """The manifest, its config and its layers (an index: itself and its children's manifests)."""
        parts = [*self.layers, *self.manifests, *([self.config] if self.config else [])]
        return self.record.size + sum(part.size for part in parts)


async def manifest_details(service: ManifestService, repository: str, digest: str) -> ManifestDetails:
    """The details of manifest `digest` in `repository` (ManifestUnknown when absent)."""
    Digest.parse(digest)
    record = await service.get(repository, digest, [])
    parsed = parse_manifest(record.content, record.media_type)
    labels: dict[str, str] = {}
    platform: dict[str, str] | None = None
    created: str | None = None
    config = parsed.config
    if config is not None and config.media_type in mt.IMAGE_CONFIGS and service.config_reader is not None:
        document = _json_object(await service.config_reader(config.digest, _CONFIG_LIMIT))
        raw_labels = (document.get("config") or {}).get("Labels") if isinstance(document.get("config"), dict) else None
        if isinstance(raw_labels, dict):
            labels = {str(k): str(v) for k, v in raw_labels.items()}
        platform = {
            key: document[key] for key in ("os", "architecture", "variant") if isinstance(document.get(key), str)
        }
        created = document["created"] if isinstance(document.get("created"), str) else None
    return ManifestDetails(
        record=record,
        config=config,
        layers=parsed.layers,
        manifests=parsed.children,
        annotations=parsed.annotations,
        labels=labels,
        platform=platform or None,
        created=created,
    )


def _json_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def referrer_descriptor(record: ManifestRecord) -> Descriptor:
    """The descriptor of a referrer as the referrers API lists it."""
    return _referrer(record)


def _referrer(record: ManifestRecord) -> Descriptor:
    parsed = parse_manifest(record.content, record.media_type)
    return Descriptor(
        media_type=record.media_type,
        digest=record.digest,
        size=record.size,
        artifact_type=record.artifact_type or parsed.config_media_type,
        annotations=parsed.annotations or None,
    )
