"""skopeo copy of single-arch images and multi-arch indexes, both ways, digests compared."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from . import helpers
from .helpers import OCI_INDEX, OCI_MANIFEST, RegistryServer

pytestmark = pytest.mark.e2e


def test_skopeo_single_arch_roundtrip(registry: RegistryServer, client_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    digest = helpers.umoci_image(
        src,
        "v1",
        tmp_path,
        layers=[
            {"data/a.bin": 300_000, "data/sub/b.bin": 4_000},
            {"data/c.bin": 1_500_000},
        ],
    )
    src_tree = helpers.image_tree(src, digest)
    assert len(src_tree["layers"]) == 2
    repo = helpers.unique_repo("skopeo-single")
    remote = f"docker://{registry.host}/{repo}"

    helpers.skopeo_copy(f"oci:{src}:v1", f"{remote}:v1", client_env, "--preserve-digests")

    # The registry serves exactly the bytes that were pushed.
    raw = helpers.skopeo_raw(f"{remote}:v1", client_env)
    assert raw == helpers.layout_blob(src, digest)
    body = helpers.check_manifest(registry, repo, "v1", digest)
    manifest = json.loads(body)
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST
    assert [layer["digest"] for layer in manifest["layers"]] == src_tree["layers"]
    helpers.check_blobs(registry, repo, manifest)

    tags = httpx.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30, auth=registry.auth)
    assert tags.status_code == 200
    assert tags.json() == {"name": repo, "tags": ["v1"]}

    # Pull back by tag and by digest into new layouts: same manifest, same blobs.
    dst = tmp_path / "dst"
    helpers.skopeo_copy(f"{remote}:v1", f"oci:{dst}:v1", client_env, "--preserve-digests")
    assert helpers.layout_ref(dst, "v1")["digest"] == digest
    assert helpers.image_tree(dst, digest) == src_tree
    assert helpers.layout_blob(dst, digest) == raw

    by_digest = tmp_path / "by-digest"
    helpers.skopeo_copy(f"{remote}@{digest}", f"oci:{by_digest}:pulled", client_env, "--preserve-digests")
    assert helpers.layout_ref(by_digest, "pulled")["digest"] == digest
    assert helpers.image_tree(by_digest, digest) == src_tree


def _multi_arch_layout(src: Path, workdir: Path) -> tuple[str, bytes]:
    """Two single-arch images built with umoci, tied together by a hand-written OCI index."""
    amd64 = helpers.umoci_image(
        src, "amd64", workdir, layers=[{"amd/a.bin": 200_000}, {"amd/b.bin": 50_000}], arch="amd64"
    )
    arm64 = helpers.umoci_image(src, "arm64", workdir, layers=[{"arm/a.bin": 250_000}], arch="arm64")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd64,
                "size": helpers.blob_path(src, amd64).stat().st_size,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": arm64,
                "size": helpers.blob_path(src, arm64).stat().st_size,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
        "annotations": {"org.opencontainers.image.description": "dockyard e2e multi-arch"},
    }
    # Indented, key order as written: not canonical JSON, so any re-serialisation shows.
    raw = json.dumps(index, indent=3).encode() + b"\n"
    index_digest = helpers.write_layout_blob(src, raw)
    helpers.set_layout_refs(src, {"multi": {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(raw)}})
    return index_digest, raw


def test_skopeo_multi_arch_index_roundtrip(
    registry: RegistryServer, client_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    index_digest, index_raw = _multi_arch_layout(src, tmp_path)
    src_tree = helpers.image_tree(src, index_digest)
    assert len(src_tree["children"]) == 2
    repo = helpers.unique_repo("skopeo-multi")
    remote = f"docker://{registry.host}/{repo}"

    helpers.skopeo_copy(f"oci:{src}:multi", f"{remote}:multi", client_env, "--all", "--preserve-digests")

    # The index is stored and served byte for byte.
    assert helpers.skopeo_raw(f"{remote}:multi", client_env) == index_raw
    served = helpers.check_manifest(registry, repo, "multi", index_digest)
    assert served == index_raw
    for child in src_tree["children"]:
        body = helpers.check_manifest(registry, repo, child["digest"], child["digest"])
        manifest = json.loads(body)
        assert [layer["digest"] for layer in manifest["layers"]] == child["layers"]
        assert manifest["config"]["digest"] == child["config"]
        helpers.check_blobs(registry, repo, manifest)

    # The arm64 child really is arm64 (config pulled through the registry).
    arm = json.loads(helpers.layout_blob(src, src_tree["children"][1]["config"]))
    assert arm["architecture"] == "arm64"

    # Back into a new layout, every image of the index included.
    dst = tmp_path / "dst"
    helpers.skopeo_copy(f"{remote}:multi", f"oci:{dst}:multi", client_env, "--all", "--preserve-digests")
    assert helpers.layout_ref(dst, "multi")["digest"] == index_digest
    assert helpers.layout_blob(dst, index_digest) == index_raw
    assert helpers.image_tree(dst, index_digest) == src_tree

    # A single platform resolved through the index.
    arm_dst = tmp_path / "arm-only"
    helpers.skopeo_copy(
        f"{remote}:multi", f"oci:{arm_dst}:arm", client_env, "--override-arch", "arm64", "--override-variant", "v8"
    )
    assert helpers.layout_ref(arm_dst, "arm")["digest"] == src_tree["children"][1]["digest"]
