"""buildah bud (a Dockerfile with a RUN step) pushed to the registry and pulled back."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from . import helpers
from .helpers import RegistryServer, ToolFactory

pytestmark = pytest.mark.e2e


def test_buildah_bud_push_pull(
    registry: RegistryServer, base_image: tuple[Path, str], container_tool: ToolFactory, tmp_path: Path
) -> None:
    layout, tag = base_image
    base_manifest = json.loads(helpers.layout_blob(layout, helpers.layout_ref(layout, tag)["digest"]))
    builder = container_tool("buildah", "build")
    builder.import_oci(layout, tag, "localhost/dockyard-e2e/base:latest")
    token = secrets.token_hex(16)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "payload.txt").write_text(f"copied {token}\n")
    (ctx / "Dockerfile").write_text(
        "FROM localhost/dockyard-e2e/base:latest\n"
        f"COPY payload.txt /payload.txt\n"
        f"RUN echo {token} > /dockyard-e2e.txt && cat /payload.txt >> /dockyard-e2e.txt\n"
        f'CMD ["/bin/sh"]\n'
    )
    local = "localhost/e2e/built:v1"
    builder(
        "bud",
        "--isolation",
        "chroot",
        "--layers=false",
        "-f",
        ctx / "Dockerfile",
        "--pull=never",
        "-t",
        local,
        ctx,
        timeout=900,
    )

    repo = helpers.unique_repo("buildah")
    ref = f"{registry.host}/{repo}:v1"
    digest_file = tmp_path / "digest"
    builder("push", "--tls-verify=false", "--digestfile", digest_file, local, f"docker://{ref}", timeout=900)
    pushed = digest_file.read_text().strip()

    body = helpers.check_manifest(registry, repo, "v1", pushed)
    manifest = json.loads(body)
    assert len(manifest["layers"]) == len(base_manifest["layers"]) + 1
    helpers.check_blobs(registry, repo, manifest)

    # Pull into empty storage and run the built image's content.
    puller = container_tool("buildah", "pull")
    puller("pull", "--tls-verify=false", f"docker://{ref}", timeout=900)
    assert puller("inspect", "--type", "image", "--format", "{{.FromImageDigest}}", ref).strip() == pushed
    container = puller("from", "--pull=never", ref).strip()
    out = puller("run", "--isolation", "chroot", container, "--", "cat", "/dockyard-e2e.txt")
    assert out.split() == [token, "copied", token]
