"""Parse and validate manifests and indexes from their exact bytes.

The bytes are never re-serialised: the digest is of what the client sent. Parsing only extracts
what the registry needs: the media type, the blobs and child manifests referenced, the subject and
the artifact type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from dockyard.domain.digest import Digest
from dockyard.domain.errors import DigestInvalid, ManifestInvalid
from dockyard.domain.models import Descriptor
from dockyard.oci import mediatypes as mt

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    """Config and layers that must be present in the repository."""
    children: tuple[Descriptor, ...] = ()
    """Manifests an index names; they must be present in the repository."""
    subject: Descriptor | None = None
    artifact_type: str | None = None
    config_media_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    config: Descriptor | None = None
    """An image manifest's config descriptor."""
    layers: tuple[Descriptor, ...] = ()
    """An image manifest's layers, non-distributable ones included."""

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    """Validate `content` as a manifest; `content_type` is the request's Content-Type."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    media_type = _media_type(document, content_type)
    if document.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    annotations = _annotations(document, "annotations")
    subject = _descriptor(document["subject"], "subject") if "subject" in document else None
    artifact_type = _optional_media_type(document, "artifactType")
    if media_type in mt.IMAGE_MANIFESTS:
        config = _descriptor(_required(document, "config"), "config")
        layers = _descriptor_list(document, "layers", required=True)
        # Non-distributable layers live elsewhere: a manifest may name them without pushing them.
        blobs = [config, *(layer for layer in layers if layer.media_type not in mt.NON_DISTRIBUTABLE)]
        return ParsedManifest(
            media_type=media_type,
            blobs=tuple(blobs),
            subject=subject,
            artifact_type=artifact_type,
            config_media_type=config.media_type,
            annotations=annotations,
            config=config,
            layers=tuple(layers),
        )
    children = _descriptor_list(document, "manifests", required=True)
    return ParsedManifest(
        media_type=media_type,
        children=tuple(children),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    header = (content_type or "").split(";", 1)[0].strip() or None
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if declared and header and declared != header:
        raise ManifestInvalid(f"mediaType {declared!r} does not match Content-Type {header!r}")
    media_type = declared or header
    if media_type is None:
        # An OCI manifest may omit mediaType; infer it from its shape as the spec allows.
        media_type = mt.OCI_INDEX if "manifests" in document else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    if media_type in mt.INDEXES and "config" in document and "manifests" not in document:
        raise ManifestInvalid("an index must list manifests")
    return media_type


def _required(document: dict[str, Any], key: str) -> Any:
    if key not in document:
        raise ManifestInvalid(f"manifest is missing {key!r}")
    return document[key]


def _optional_media_type(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _MEDIA_TYPE.match(value):
        raise ManifestInvalid(f"{key} must be a media type")
    return value


def _annotations(document: dict[str, Any], where: str) -> dict[str, str]:
    value = document.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestInvalid(f"{where} must map strings to strings")
    return value


def _descriptor_list(document: dict[str, Any], key: str, *, required: bool) -> list[Descriptor]:
    value = document.get(key)
    if value is None:
        if required:
            raise ManifestInvalid(f"manifest is missing {key!r}")
        return []
    if not isinstance(value, list):
        raise ManifestInvalid(f"{key} must be a list")
    return [_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.match(media_type):
        raise ManifestInvalid(f"{where}.mediaType must be a media type")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}.digest must be a string")
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}.digest: {exc.message}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    urls = value.get("urls")
    if urls is not None and not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise ManifestInvalid(f"{where}.urls must be a list of strings")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}.artifactType must be a string")
    platform = value.get("platform")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type,
        annotations=_annotations(value, f"{where}.annotations") or None,
        platform={k: v for k, v in platform.items() if isinstance(v, str)} if isinstance(platform, dict) else None,
    )


def descriptor_json(descriptor: Descriptor) -> dict[str, Any]:
    """The wire form of a descriptor (used by the referrers index)."""
    out: dict[str, Any] = {"mediaType": descriptor.media_type, "digest": descriptor.digest, "size": descriptor.size}
    if descriptor.artifact_type:
        out["artifactType"] = descriptor.artifact_type
    if descriptor.annotations:
        out["annotations"] = descriptor.annotations
    return out
