from __future__ import annotations

import json

import pytest

from dockyard.domain.digest import Digest
from dockyard.domain.errors import ManifestInvalid
from dockyard.oci import mediatypes as mt
from dockyard.oci.manifest import parse_manifest

pytestmark = pytest.mark.unit

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(b"c")), "size": 1}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": str(Digest.of(b"l")), "size": 1}


def _image(**extra: object) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CONFIG, "layers": [LAYER], **extra}
    ).encode()


def test_image_manifest_lists_config_and_layers() -> None:
    parsed = parse_manifest(_image(), mt.OCI_MANIFEST)
    assert [d.digest for d in parsed.blobs] == [CONFIG["digest"], LAYER["digest"]]
    assert parsed.children == ()
    assert parsed.config_media_type == CONFIG["mediaType"]


def test_subject_and_artifact_type() -> None:
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"s")), "size": 3}
    parsed = parse_manifest(_image(subject=subject, artifactType="application/x.sig"), None)
    assert parsed.subject is not None
    assert parsed.subject.digest == subject["digest"]
    assert parsed.artifact_type == "application/x.sig"


def test_index_lists_children() -> None:
    child = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"m")), "size": 5}
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [child]}).encode()
    parsed = parse_manifest(body, mt.OCI_INDEX)
    assert parsed.is_index
    assert [d.digest for d in parsed.children] == [child["digest"]]


def test_media_type_inferred_when_absent() -> None:
    body = json.dumps({"schemaVersion": 2, "config": CONFIG, "layers": []}).encode()
    assert parse_manifest(body, None).media_type == mt.OCI_MANIFEST


def test_foreign_layers_need_not_be_present() -> None:
    foreign = {**LAYER, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "urls": ["http://x"]}
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": CONFIG, "layers": [foreign]}
    ).encode()
    assert [d.digest for d in parse_manifest(body, mt.DOCKER_MANIFEST).blobs] == [CONFIG["digest"]]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", mt.OCI_MANIFEST),
        (b"[]", mt.OCI_MANIFEST),
        (b"\xff\xfe", mt.OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "config": CONFIG, "layers": []}).encode(), mt.OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}).encode(), mt.OCI_MANIFEST),
        (_image(), mt.DOCKER_MANIFEST),
        (_image(), "application/json"),
        (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX}).encode(), mt.OCI_INDEX),
        (
            json.dumps({"schemaVersion": 2, "config": {**CONFIG, "digest": "sha256:nothex"}, "layers": []}).encode(),
            mt.OCI_MANIFEST,
        ),
        (json.dumps({"schemaVersion": 2, "config": {**CONFIG, "size": -1}, "layers": []}).encode(), mt.OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "config": CONFIG, "layers": [], "annotations": {"a": 1}}).encode(), None),
    ],
)
def test_invalid_manifests(body: bytes, content_type: str | None) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, content_type)
