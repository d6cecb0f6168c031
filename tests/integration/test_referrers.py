"""OCI 1.1 referrers API and the `subject` field."""

from __future__ import annotations

import pytest

from .helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    REFERENCE,
    assert_error,
    assert_status,
    describe,
    digest_of,
    index_obj,
    push_artifact,
    push_blob,
    push_image,
    push_manifest,
    random_bytes,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REFERENCE, reason="Distribution 2.8 has no referrers API"),
]

SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"
SIG_CONFIG = "application/vnd.example.sig.config.v1+json"
BUNDLE = "application/vnd.example.bundle.v1"


def _referrers(client, repo, digest, **params):
    r = client.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert_status(r, 200)
    assert r.headers.get("content-type", "").split(";")[0].strip() == OCI_INDEX, describe(r)
    body = r.json()
    assert body.get("schemaVersion") == 2, describe(r)
    assert body.get("mediaType") == OCI_INDEX, describe(r)
    assert isinstance(body.get("manifests"), list), describe(r)
    return r, {m["digest"]: m for m in body["manifests"]}


@pytest.fixture
def graph(client, repo):
    subject = push_image(client, repo, "app")
    sbom = push_artifact(
        client,
        repo,
        artifact_type=SBOM,
        subject=subject.desc,
        annotations={"org.example.format": "spdx", "created": "2024"},
    )
    # No artifactType: the descriptor's artifactType is the config's mediaType.
    sig_cfg = b'{"sig":"config"}'
    push_blob(client, repo, sig_cfg)
    sig = push_artifact(
        client,
        repo,
        artifact_type=None,
        subject=subject.desc,
        config={"mediaType": SIG_CONFIG, "digest": digest_of(sig_cfg), "size": len(sig_cfg)},
    )
    # An index can be a referrer too.
    child = push_image(client, repo)
    bundle = push_manifest(
        client,
        repo,
        index_obj([child.desc], artifactType=BUNDLE, subject=subject.desc, annotations={"org.example.bundle": "yes"}),
        OCI_INDEX,
    )
    # Unrelated manifest in the same repo (no subject) must not be listed.
    push_image(client, repo, "unrelated")
    return {"subject": subject, "sbom": sbom, "sig": sig, "bundle": bundle}


def test_referrers_list(client, repo, graph):
    r, found = _referrers(client, repo, graph["subject"].digest)
    assert "oci-filters-applied" not in r.headers, describe(r)
    assert set(found) == {graph["sbom"].digest, graph["sig"].digest, graph["bundle"].digest}, describe(r)
    sbom = found[graph["sbom"].digest]
    assert sbom["mediaType"] == OCI_MANIFEST
    assert sbom["size"] == len(graph["sbom"].body)
    assert sbom["artifactType"] == SBOM
    assert sbom["annotations"] == {"org.example.format": "spdx", "created": "2024"}
    sig = found[graph["sig"].digest]
    assert sig["artifactType"] == SIG_CONFIG, describe(r)
    assert sig["size"] == len(graph["sig"].body)
    assert not sig.get("annotations")
    bundle = found[graph["bundle"].digest]
    assert bundle["mediaType"] == OCI_INDEX
    assert bundle["artifactType"] == BUNDLE
    assert bundle["annotations"] == {"org.example.bundle": "yes"}


def test_referrers_filter(client, repo, graph):
    r, found = _referrers(client, repo, graph["subject"].digest, artifactType=SBOM)
    assert r.headers.get("oci-filters-applied") == "artifactType", describe(r)
    assert set(found) == {graph["sbom"].digest}
    r, found = _referrers(client, repo, graph["subject"].digest, artifactType="application/none")
    assert r.headers.get("oci-filters-applied") == "artifactType", describe(r)
    assert found == {}


def test_referrers_empty_for_digest_without_referrers(client, repo, graph):
    # a manifest that exists but has no referrers
    _, found = _referrers(client, repo, graph["sbom"].digest)
    assert found == {}
    # a digest that is not in the registry at all
    _, found = _referrers(client, repo, digest_of(random_bytes(16)))
    assert found == {}


def test_referrers_invalid_digest(client, repo, graph):
    # 1.1: "If the request is invalid, such as a <digest> with invalid syntax, a 400 Bad
    # Request MUST be returned."
    r = client.get(f"/v2/{repo}/referrers/sha256:nothex")
    assert_status(r, 400)
    assert_error(r, 400, "DIGEST_INVALID", "MANIFEST_INVALID", "UNSUPPORTED")


def test_referrers_follow_subject_before_it_is_pushed(client, repo):
    # A referrer may be pushed before its subject; it is listed either way.
    cfg = b'{"architecture":"amd64","os":"linux","x":"' + random_bytes(4).hex().encode() + b'"}'
    ghost = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"subject later " + cfg), "size": 123}
    art = push_artifact(client, repo, artifact_type=SIG, subject=ghost)
    _, found = _referrers(client, repo, ghost["digest"])
    assert set(found) == {art.digest}


def test_referrers_scoped_to_repository(client, new_repo):
    a, b = new_repo("a"), new_repo("b")
    subj = push_image(client, a, "t")
    # same subject bytes in b, referrer only in a
    push_image(client, b, "t")
    push_artifact(client, a, artifact_type=SBOM, subject=subj.desc)
    r = client.get(f"/v2/{b}/referrers/{subj.digest}")
    assert_status(r, 200)
    assert r.json()["manifests"] == []


def test_deleted_referrer_disappears(client, repo, graph):
    r = client.delete(f"/v2/{repo}/manifests/{graph['sbom'].digest}")
    assert_status(r, 202)
    _, found = _referrers(client, repo, graph["subject"].digest)
    assert graph["sbom"].digest not in found
    assert graph["sig"].digest in found


def test_referrers_of_sha512_subject(client, repo):
    subj_body_holder = push_image(client, repo)  # a normal image
    subj = push_manifest(
        client, repo, subj_body_holder.obj, OCI_MANIFEST, body=subj_body_holder.body + b"\n", alg="sha512"
    )
    art = push_artifact(client, repo, artifact_type=SBOM, subject=subj.desc)
    _, found = _referrers(client, repo, subj.digest)
    assert set(found) == {art.digest}
