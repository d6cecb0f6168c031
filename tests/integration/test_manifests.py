"""Manifests: push/pull/head/delete for Docker and OCI types, byte exactness, validation."""

from __future__ import annotations

import json

import pytest

from .helpers import (
    ACCEPT_ALL,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_EMPTY_DIGEST,
    OCI_INDEX,
    OCI_MANIFEST,
    REFERENCE,
    absolute,
    assert_error,
    assert_status,
    compact,
    describe,
    digest_of,
    docker_manifest_obj,
    get_manifest,
    image_parts,
    index_obj,
    oci_manifest_obj,
    odd_bytes,
    push_artifact,
    push_blob,
    push_empty_config,
    push_image,
    push_manifest,
    put_manifest,
    rand,
    random_bytes,
)

pytestmark = pytest.mark.integration


def _check_pull(client, repo, ref, body, media_type, digest):
    r = get_manifest(client, repo, ref)
    assert_status(r, 200)
    assert r.content == body, "GET must return the exact pushed bytes" + describe(r)
    assert r.headers.get("docker-content-digest") == digest, describe(r)
    assert r.headers.get("content-type", "").split(";")[0].strip() == media_type, describe(r)
    h = get_manifest(client, repo, ref, method="HEAD")
    assert_status(h, 200)
    assert h.content == b""
    assert h.headers.get("docker-content-digest") == digest, describe(h)
    assert int(h.headers.get("content-length", -1)) == len(body), describe(h)
    assert h.headers.get("content-type", "").split(";")[0].strip() == media_type, describe(h)


def _put_and_check(client, repo, tag, body, media_type):
    d = digest_of(body)
    r = put_manifest(client, repo, tag, body, media_type)
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    loc = r.headers.get("location")
    assert loc, describe(r)
    lr = client.get(absolute(client, loc), headers={"Accept": ACCEPT_ALL})
    assert_status(lr, 200)
    assert lr.content == body
    _check_pull(client, repo, tag, body, media_type, d)
    _check_pull(client, repo, d, body, media_type, d)
    return d


@pytest.mark.parametrize("style", ["compact", "odd"])
def test_oci_image_manifest(client, repo, style):
    cfg, layers = image_parts(client, repo, layers=2)
    obj = oci_manifest_obj(cfg, layers, annotations={"org.example.k": "v"})
    body = compact(obj) if style == "compact" else odd_bytes(obj)
    _put_and_check(client, repo, "v1", body, OCI_MANIFEST)


@pytest.mark.parametrize("style", ["compact", "odd"])
def test_docker_schema2_manifest(client, repo, style):
    cfg, layers = image_parts(client, repo, docker=True, layers=2)
    obj = docker_manifest_obj(cfg, layers)
    body = compact(obj) if style == "compact" else odd_bytes(obj)
    _put_and_check(client, repo, "latest", body, DOCKER_MANIFEST)


def test_docker_manifest_list(client, repo):
    children = [push_image(client, repo, docker=True) for _ in range(2)]
    obj = index_obj([c.desc for c in children], media_type=DOCKER_LIST)
    _put_and_check(client, repo, "multi", odd_bytes(obj), DOCKER_LIST)


def test_oci_image_index(client, repo):
    children = [push_image(client, repo) for _ in range(3)]
    obj = index_obj([c.desc for c in children], annotations={"org.example.idx": "1"})
    d = _put_and_check(client, repo, "index", odd_bytes(obj), OCI_INDEX)
    # children stay pullable by digest
    for c in children:
        _check_pull(client, repo, c.digest, c.body, OCI_MANIFEST, c.digest)
    assert d


def test_oci_index_of_indexes(client, repo):
    child = push_image(client, repo)
    inner = push_manifest(client, repo, index_obj([child.desc]), OCI_INDEX)
    outer = index_obj([{"mediaType": OCI_INDEX, "digest": inner.digest, "size": len(inner.body)}])
    _put_and_check(client, repo, "nested", compact(outer), OCI_INDEX)


def test_oci_artifact_with_empty_config(client, repo):
    cfg = push_empty_config(client, repo)
    assert cfg == {"mediaType": OCI_EMPTY, "digest": OCI_EMPTY_DIGEST, "size": 2}
    r = client.get(f"/v2/{repo}/blobs/{OCI_EMPTY_DIGEST}")
    assert_status(r, 200)
    assert r.content == b"{}"
    payload = b"helm chart bytes " + random_bytes(32)
    push_blob(client, repo, payload)
    obj = oci_manifest_obj(
        cfg,
        [
            {
                "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                "digest": digest_of(payload),
                "size": len(payload),
            }
        ],
        artifactType="application/vnd.cncf.helm.config.v1+json",
        annotations={"org.opencontainers.image.title": "chart"},
    )
    _put_and_check(client, repo, "0.1.0", odd_bytes(obj), OCI_MANIFEST)


def test_oci_artifact_without_layers(client, repo):
    cfg = push_empty_config(client, repo)
    obj = oci_manifest_obj(cfg, [], artifactType="application/vnd.example.thing")
    _put_and_check(client, repo, "nolayers", compact(obj), OCI_MANIFEST)


def test_put_by_digest(client, repo):
    cfg, layers = image_parts(client, repo)
    body = odd_bytes(oci_manifest_obj(cfg, layers))
    d = digest_of(body)
    r = put_manifest(client, repo, d, body, OCI_MANIFEST)
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    _check_pull(client, repo, d, body, OCI_MANIFEST, d)


def test_put_by_sha512_digest(client, repo):
    cfg, layers = image_parts(client, repo)
    body = compact(oci_manifest_obj(cfg, layers))
    d = digest_of(body, "sha512")
    r = put_manifest(client, repo, d, body, OCI_MANIFEST)
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    r = get_manifest(client, repo, d)
    assert_status(r, 200)
    assert r.content == body
    assert r.headers.get("docker-content-digest") == d, describe(r)
    assert_status(get_manifest(client, repo, d, method="HEAD"), 200)
    # DELETE by the sha512 digest works too
    assert_status(client.delete(f"/v2/{repo}/manifests/{d}"), 202)
    assert_error(get_manifest(client, repo, d), 404, "MANIFEST_UNKNOWN")


def test_put_by_mismatching_digest(client, repo):
    cfg, layers = image_parts(client, repo)
    body = compact(oci_manifest_obj(cfg, layers))
    wrong = digest_of(body + b" ")
    r = put_manifest(client, repo, wrong, body, OCI_MANIFEST)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(get_manifest(client, repo, wrong), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, digest_of(body)), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_retag_and_overwrite(client, repo):
    a = push_image(client, repo, "t")
    b = push_image(client, repo, "t")
    _check_pull(client, repo, "t", b.body, OCI_MANIFEST, b.digest)
    # the previous manifest is still there by digest
    _check_pull(client, repo, a.digest, a.body, OCI_MANIFEST, a.digest)
    # pushing identical bytes again is idempotent
    r = put_manifest(client, repo, "t", b.body, OCI_MANIFEST)
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == b.digest


def test_manifest_referencing_missing_blob(client, repo):
    cfg, layers = image_parts(client, repo)
    missing = random_bytes(64)
    layers.append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(missing), "size": len(missing)}
    )
    body = compact(oci_manifest_obj(cfg, layers))
    r = put_manifest(client, repo, "broken", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN")
    assert_error(get_manifest(client, repo, "broken"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, digest_of(body)), 404, "MANIFEST_UNKNOWN")


def test_manifest_with_missing_config_blob(client, repo):
    _, layers = image_parts(client, repo)
    cfg_bytes = b'{"architecture":"amd64","os":"linux","missing":"' + rand().encode() + b'"}'
    cfg = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest_of(cfg_bytes),
        "size": len(cfg_bytes),
    }
    r = put_manifest(client, repo, "nocfg", compact(oci_manifest_obj(cfg, layers)), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN")


def test_index_referencing_missing_manifest(client, repo):
    child = push_image(client, repo)
    ghost = compact({"schemaVersion": 2, "ghost": rand()})
    descs = [child.desc, {"mediaType": OCI_MANIFEST, "digest": digest_of(ghost), "size": len(ghost)}]
    body = compact(index_obj(descs))
    r = put_manifest(client, repo, "idx", body, OCI_INDEX)
    # Spec 1.1: a manifest rejected for a missing reference MUST give MANIFEST_BLOB_UNKNOWN;
    # MANIFEST_UNKNOWN is accepted as the older, also common, answer.
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, "idx"), 404, "MANIFEST_UNKNOWN")


def test_docker_list_referencing_missing_manifest(client, repo):
    ghost = compact({"schemaVersion": 2, "ghost": rand()})
    body = compact(
        index_obj(
            [{"mediaType": DOCKER_MANIFEST, "digest": digest_of(ghost), "size": len(ghost)}], media_type=DOCKER_LIST
        )
    )
    r = put_manifest(client, repo, "list", body, DOCKER_LIST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'"string"', b"\xff\xfe{}", b'{"schemaVersion": 2, "config": '],
    ids=["garbage", "empty", "array", "string", "bad-utf8", "cut"],
)
def test_invalid_json(client, repo, body):
    r = put_manifest(client, repo, "bad", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(get_manifest(client, repo, "bad"), 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_schema_missing_config(client, repo):
    _, layers = image_parts(client, repo)
    obj = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers}
    r = put_manifest(client, repo, "nocfg", compact(obj), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(get_manifest(client, repo, "nocfg"), 404, "MANIFEST_UNKNOWN")


def test_schema_wrong_schema_version(client, repo):
    cfg, layers = image_parts(client, repo)
    obj = oci_manifest_obj(cfg, layers)
    obj["schemaVersion"] = 1
    r = put_manifest(client, repo, "v1", compact(obj), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_schema_bad_descriptor_digest(client, repo):
    cfg, layers = image_parts(client, repo)
    layers[0] = dict(layers[0], digest="sha256:not-a-digest")
    r = put_manifest(client, repo, "bad", compact(oci_manifest_obj(cfg, layers)), OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID", "DIGEST_INVALID")


def test_media_type_field_disagrees_with_content_type(client, repo):
    cfg, layers = image_parts(client, repo)
    body = compact(oci_manifest_obj(cfg, layers))  # mediaType: OCI manifest
    r = put_manifest(client, repo, "mismatch", body, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_INVALID")
    r = put_manifest(client, repo, "mismatch", body, DOCKER_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(get_manifest(client, repo, "mismatch"), 404, "MANIFEST_UNKNOWN")


def test_index_with_manifest_content_type(client, repo):
    child = push_image(client, repo)
    body = compact(index_obj([child.desc]))
    r = put_manifest(client, repo, "mismatch", body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")


def test_manifest_larger_than_4mib(client, repo):
    cfg, layers = image_parts(client, repo)
    obj = oci_manifest_obj(cfg, layers, annotations={"pad": "x" * (4 * 1024 * 1024 + 100)})
    body = compact(obj)
    assert len(body) > 4 * 1024 * 1024
    r = put_manifest(client, repo, "huge", body, OCI_MANIFEST)
    assert r.status_code >= 400, describe(r)
    assert r.status_code in (400, 413), describe(r)
    assert_error(r, (400, 413), "MANIFEST_INVALID", "SIZE_INVALID")
    assert_error(get_manifest(client, repo, "huge"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, digest_of(body)), 404, "MANIFEST_UNKNOWN")


def test_manifest_with_subject_returns_oci_subject(client, repo):
    subject = push_image(client, repo, "base")
    art = push_artifact(client, repo, artifact_type="application/vnd.example.sig", subject=subject.desc)
    # push_artifact asserted 201; check the header on a re-put of the same bytes
    r = put_manifest(client, repo, art.digest, art.body, OCI_MANIFEST)
    assert_status(r, 201)
    if not REFERENCE:
        assert r.headers.get("oci-subject") == subject.digest, describe(r)


def test_manifest_with_missing_subject_is_accepted(client, repo):
    # 1.1: the subject need not exist in the registry.
    ghost = compact({"ghost": rand()})
    subject = {"mediaType": OCI_MANIFEST, "digest": digest_of(ghost), "size": len(ghost)}
    cfg = push_empty_config(client, repo)
    payload = b"sig " + random_bytes(8)
    push_blob(client, repo, payload)
    obj = oci_manifest_obj(
        cfg,
        [{"mediaType": "application/octet-stream", "digest": digest_of(payload), "size": len(payload)}],
        artifactType="application/vnd.example.sig",
        subject=subject,
    )
    body = compact(obj)
    r = put_manifest(client, repo, digest_of(body), body, OCI_MANIFEST)
    assert_status(r, 201)
    if not REFERENCE:
        assert r.headers.get("oci-subject") == subject["digest"], describe(r)


def test_unknown_manifest(client, repo):
    push_image(client, repo, "exists")
    assert_error(get_manifest(client, repo, "nope"), 404, "MANIFEST_UNKNOWN")
    assert_status(get_manifest(client, repo, "nope", method="HEAD"), 404)
    unknown = digest_of(random_bytes(16))
    assert_error(get_manifest(client, repo, unknown), 404, "MANIFEST_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/manifests/{unknown}"), 404, "MANIFEST_UNKNOWN")


def test_invalid_reference(client, repo):
    push_image(client, repo, "exists")
    for ref in ("-bad", "a" * 129, "sha256:short", "bad:tag"):
        r = get_manifest(client, repo, ref)
        assert r.status_code in (400, 404), describe(r)
        assert_error(
            r, r.status_code, "MANIFEST_UNKNOWN", "MANIFEST_INVALID", "DIGEST_INVALID", "NAME_INVALID", "TAG_INVALID"
        )


def test_put_invalid_tag_is_rejected(client, repo):
    m = push_image(client, repo)
    for tag in ("-bad", "a" * 129, ".dot"):
        r = put_manifest(client, repo, tag, m.body, OCI_MANIFEST)
        assert r.status_code in (400, 404), describe(r)
    r = client.get(f"/v2/{repo}/tags/list")
    assert_status(r, 200)
    assert not r.json().get("tags"), describe(r)


def test_delete_by_tag_removes_only_the_tag(client, repo):
    m = push_image(client, repo, "gone")
    r = put_manifest(client, repo, "kept", m.body, OCI_MANIFEST)
    assert_status(r, 201)
    r = client.delete(f"/v2/{repo}/manifests/gone")
    if REFERENCE:  # Distribution 2.8 does not delete tags through this endpoint
        assert r.status_code in (202, 400, 405), describe(r)
        return
    assert_status(r, 202)
    assert_error(get_manifest(client, repo, "gone"), 404, "MANIFEST_UNKNOWN")
    _check_pull(client, repo, m.digest, m.body, OCI_MANIFEST, m.digest)
    _check_pull(client, repo, "kept", m.body, OCI_MANIFEST, m.digest)
    r = client.get(f"/v2/{repo}/tags/list")
    assert_status(r, 200)
    assert r.json()["tags"] == ["kept"]
    assert_error(client.delete(f"/v2/{repo}/manifests/gone"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_removes_manifest_and_tags(client, repo):
    m = push_image(client, repo, "one")
    assert_status(put_manifest(client, repo, "two", m.body, OCI_MANIFEST), 201)
    keep = push_image(client, repo, "other")
    r = client.delete(f"/v2/{repo}/manifests/{m.digest}")
    assert_status(r, 202)
    assert_error(get_manifest(client, repo, m.digest), 404, "MANIFEST_UNKNOWN")
    assert_status(get_manifest(client, repo, m.digest, method="HEAD"), 404)
    assert_error(get_manifest(client, repo, "one"), 404, "MANIFEST_UNKNOWN")
    assert_error(get_manifest(client, repo, "two"), 404, "MANIFEST_UNKNOWN")
    r = client.get(f"/v2/{repo}/tags/list")
    assert_status(r, 200)
    assert r.json()["tags"] == ["other"]
    _check_pull(client, repo, "other", keep.body, OCI_MANIFEST, keep.digest)
    assert_error(client.delete(f"/v2/{repo}/manifests/{m.digest}"), 404, "MANIFEST_UNKNOWN")
    # re-pushing the same bytes brings it back
    r = put_manifest(client, repo, "one", m.body, OCI_MANIFEST)
    assert_status(r, 201)
    _check_pull(client, repo, "one", m.body, OCI_MANIFEST, m.digest)


def test_manifest_is_scoped_to_repository(client, new_repo):
    a, b = new_repo("a"), new_repo("b")
    m = push_image(client, a, "t")
    push_image(client, b, "t")
    r = get_manifest(client, b, m.digest)
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_get_manifest_honours_media_type_even_with_narrow_accept(client, repo):
    m = push_image(client, repo, "t")
    r = client.get(f"/v2/{repo}/manifests/{m.digest}", headers={"Accept": OCI_MANIFEST})
    assert_status(r, 200)
    assert r.content == m.body
    idx = push_manifest(client, repo, index_obj([m.desc]), OCI_INDEX, "i")
    r = client.get(f"/v2/{repo}/manifests/i", headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    assert_status(r, 200)
    assert r.content == idx.body
    assert r.headers["content-type"].split(";")[0] == OCI_INDEX


def test_manifest_body_is_json_with_layers_round_trip(client, repo):
    m = push_image(client, repo, "j", layers=3)
    r = get_manifest(client, repo, "j")
    assert json.loads(r.content) == m.obj
