"""podman push and pull in Docker schema 2 and OCI formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import helpers
from .helpers import DOCKER_MANIFEST, OCI_MANIFEST, RegistryServer, ToolFactory

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("fmt", "media_type"), [("v2s2", DOCKER_MANIFEST), ("oci", OCI_MANIFEST)], ids=["v2s2", "oci"])
def test_podman_push_pull(
    fmt: str, media_type: str, registry: RegistryServer, container_tool: ToolFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src_digest = helpers.umoci_image(src, "v1", tmp_path, layers=[{"app/a.bin": 400_000}, {"app/b.bin": 20_000}])
    src_manifest = json.loads(helpers.layout_blob(src, src_digest))
    diff_ids = json.loads(helpers.layout_blob(src, src_manifest["config"]["digest"]))["rootfs"]["diff_ids"]

    pusher = container_tool("podman", "push")
    pusher.import_oci(src, "v1", "localhost/dockyard-e2e/podman-src:v1")
    image_id = pusher("image", "inspect", "--format", "{{.Id}}", "localhost/dockyard-e2e/podman-src:v1").strip()
    repo = helpers.unique_repo(f"podman-{fmt}")
    ref = f"{registry.host}/{repo}:{fmt}"
    digest_file = tmp_path / "digest"
    pusher("push", "--tls-verify=false", "--format", fmt, "--digestfile", digest_file, image_id, f"docker://{ref}")
    pushed = digest_file.read_text().strip()
    assert pushed.startswith("sha256:")

    body = helpers.check_manifest(registry, repo, fmt, pushed)
    manifest = json.loads(body)
    assert manifest.get("mediaType", media_type) == media_type  # optional in OCI manifests
    content_type = helpers.get_manifest(registry, repo, fmt).headers["Content-Type"]
    assert content_type.split(";")[0].strip() == media_type
    assert len(manifest["layers"]) == 2
    helpers.check_blobs(registry, repo, manifest)
    # Layers may be recompressed on push, but their uncompressed content is the same.
    config = json.loads(helpers.get_blob_bytes(registry, repo, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == diff_ids

    # Pull into empty storage, by tag and by digest.
    puller = container_tool("podman", "pull")
    puller("pull", "--tls-verify=false", f"docker://{ref}")
    assert puller("image", "inspect", "--format", "{{.Digest}}", ref).strip() == pushed
    layers = json.loads(puller("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref))
    assert layers == diff_ids
    by_digest = f"{registry.host}/{repo}@{pushed}"
    puller("pull", "--tls-verify=false", f"docker://{by_digest}")
    assert puller("image", "inspect", "--format", "{{.Digest}}", by_digest).strip() == pushed
