"""Dockyard on an S3 location (a real SeaweedFS), driven by skopeo and plain HTTP.

Each of the two parametrizations runs its own SeaweedFS (tests/storage/servers/seaweedfs.py) and
its own Dockyard (`dockyard serve --config` with one `s3` location, SQLite embedded database):

- `redirect`: `storage.redirect: true`, the driver's default part size (16 MiB). A blob GET
  answers 307 to a presigned URL on the SeaweedFS endpoint; skopeo follows it.
- `proxied`: `storage.redirect: false`, `part_size` 5 MiB (S3's minimum), so the chunked upload
  below crosses part boundaries inside PATCH requests. Dockyard streams the bytes itself.

The image pushed has a layer of more than 16 MiB, so its upload is an S3 multipart upload of
several parts in both cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.storage.servers import seaweedfs

from . import helpers
from .helpers import MiB, RegistryServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Files of random content per layer: a small layer and one well above the 16 MiB part size.
IMAGE_LAYERS = (
    {"data/a.bin": 2 * MiB, "data/b.bin": 512 * 1024},
    {"big/c.bin": 20 * MiB},
)
#: PATCH chunk sizes of the chunked upload.
CHUNKS = (6 * MiB, 1 * MiB, 7 * MiB)


@dataclasses.dataclass
class S3Dockyard:
    """A Dockyard on an S3 location, restartable on the same configuration and data."""

    mode: str  # "redirect" or "proxied"
    workdir: Path
    config: Path
    s3: dict[str, Any]  # the location options as written to the configuration
    weed_log: Path
    server: RegistryServer

    @property
    def redirect(self) -> bool:
        return self.mode == "redirect"

    def restart(self) -> None:
        credentials = self.server.credentials
        crashed = self.server.proc.poll()
        self.server.stop()
        assert crashed is None, f"dockyard exited with {crashed} before the restart\n{self.server.stderr_text()}"
        self.server = _start(self.workdir, self.config, port=self.server.port)
        self.server.credentials = credentials

    def diagnostics(self) -> str:
        try:
            weed = self.weed_log.read_text(errors="replace")[-3000:]
        except OSError as exc:
            weed = f"(no log: {exc})"
        return f"--- dockyard stderr ---\n{self.server.stderr_text()}\n--- weed log (tail) ---\n{weed}"


def _start(workdir: Path, config: Path, *, port: int | None = None) -> RegistryServer:
    try:
        return helpers.start_configured_dockyard(workdir, config, workers=2, port=port)
    except RuntimeError as exc:
        pytest.fail(f"dockyard on S3 failed to start:\n{exc}", pytrace=False)


@pytest.fixture(scope="module", params=["redirect", "proxied"])
def s3_dockyard(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, e2e_tools: None
) -> Iterator[S3Dockyard]:
    mode: str = request.param
    if helpers.use_reference():
        pytest.skip("S3 locations are a Dockyard feature (DOCKYARD_E2E_REFERENCE is set)")
    root = tmp_path_factory.mktemp(f"s3-{mode}")
    weed_dir = root / "weed"
    with contextlib.ExitStack() as stack:
        try:
            options = stack.enter_context(seaweedfs.server(weed_dir))
        except RuntimeError as exc:
            pytest.fail(f"SeaweedFS failed to start:\n{exc}", pytrace=False)
        location = {k: options[k] for k in ("driver", "bucket", "endpoint_url", "access_key", "secret_key")}
        location |= {"path_style": True, "region": options["region"]}
        if mode == "proxied":
            location["part_size"] = 5 * MiB
        settings = {"storage": {"locations": {"s3": location}, "preference": ["s3"], "redirect": mode == "redirect"}}
        config = root / "dockyard.yaml"
        config.write_text(yaml.safe_dump(settings))
        workdir = root / "dockyard"
        server = _start(workdir, config)
        deployment = S3Dockyard(mode, workdir, config, location, weed_dir / "weed.log", server)
        try:
            args = ["user", "create", helpers.TEST_USER, "--superuser", "--password-stdin", "--config", str(config)]
            helpers.dockyard_cli(server, *args, stdin=helpers.TEST_PASSWORD)
        except helpers.CommandFailed as exc:
            server.stop()
            pytest.fail(f"cannot create the test superuser:\n{exc}\n{server.stderr_text()}", pytrace=False)
        server.credentials = (helpers.TEST_USER, helpers.TEST_PASSWORD)
        yield deployment
        crashed = deployment.server.proc.poll()
        deployment.server.stop()
        if crashed is not None:
            pytest.fail(f"dockyard exited with {crashed} during the tests\n{deployment.diagnostics()}", pytrace=False)
    # Keep the logs (dockyard server-*.std*, weed.log) for a look after a failure; drop the bulk.
    for bulk in [*weed_dir.glob("data-*"), workdir / "data"]:
        shutil.rmtree(bulk, ignore_errors=True)


@pytest.fixture
def registry(s3_dockyard: S3Dockyard) -> RegistryServer:
    """Overrides the session registry of conftest: `client_env` logs in here, and a failing test's
    report carries this server's stderr."""
    return s3_dockyard.server


@pytest.fixture(scope="module")
def s3_image(tmp_path_factory: pytest.TempPathFactory, e2e_tools: None) -> tuple[Path, str, str]:
    """(layout, tag, manifest digest) of a umoci image with a small and a 20 MiB layer (built once)."""
    work = tmp_path_factory.mktemp("s3-image")
    layout = work / "layout"
    digest = helpers.umoci_image(layout, "v1", work, layers=IMAGE_LAYERS)
    for i in range(len(IMAGE_LAYERS)):
        shutil.rmtree(work / f"v1-layer{i}", ignore_errors=True)
    return layout, "v1", digest


def _manifest(layout: Path, digest: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(helpers.layout_blob(layout, digest))
    return doc


def _biggest_layer(manifest: dict[str, Any]) -> dict[str, Any]:
    layer: dict[str, Any] = max(manifest["layers"], key=lambda d: d["size"])
    return layer


def _stream_digest(response: httpx.Response) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in response.iter_raw(MiB):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port


def check_blob_get(deployment: S3Dockyard, repo: str, desc: dict[str, Any]) -> None:
    """redirect: 307 to a URL on the SeaweedFS endpoint serving the bytes (fetched without our
    credentials); proxied: 200 with the bytes, from Dockyard itself."""
    server = deployment.server
    url = f"{server.url}/v2/{repo}/blobs/{desc['digest']}"
    with httpx.stream("GET", url, auth=server.auth, follow_redirects=False, timeout=120) as r:
        if deployment.redirect:
            body = r.read()
            assert r.status_code == 307, f"GET {url} -> {r.status_code} {body[:300]!r}, expected 307"
            location = r.headers.get("Location", "")
            assert _origin(location) == _origin(deployment.s3["endpoint_url"]), (
                f"redirect to {location!r}, not to the SeaweedFS endpoint {deployment.s3['endpoint_url']}"
            )
            assert r.headers.get("Docker-Content-Digest") in (None, desc["digest"])
        else:
            assert r.status_code == 200, f"GET {url} -> {r.status_code} {r.read()[:300]!r}, expected 200"
            assert "Location" not in r.headers, f"proxied GET carries Location {r.headers['Location']}"
            assert r.headers.get("Docker-Content-Digest") in (None, desc["digest"])
            assert int(r.headers["Content-Length"]) == desc["size"]
            got = _stream_digest(r)
            assert got == (desc["digest"], desc["size"]), f"Dockyard served {got}, expected {desc}"
    if deployment.redirect:
        # The presigned URL alone (no Authorization header) must serve exactly the blob.
        with httpx.stream("GET", location, timeout=120) as s:
            assert s.status_code == 200, f"GET {location} -> {s.status_code} {s.read()[:500]!r}"
            got = _stream_digest(s)
        assert got == (desc["digest"], desc["size"]), f"SeaweedFS served {got} for {desc}"
    # HEAD is answered by Dockyard in both modes (no redirect for metadata).
    head = httpx.head(url, auth=server.auth, timeout=30)
    assert head.status_code == 200, f"HEAD {url} -> {head.status_code}"
    assert int(head.headers["Content-Length"]) == desc["size"]


def _push_pull(
    layout: Path, tag: str, expected: str, server: RegistryServer, repo: str, env: dict[str, str], pulled: Path
) -> None:
    remote = f"docker://{server.host}/{repo}:{tag}"
    helpers.skopeo_copy(f"oci:{layout}:{tag}", remote, env, timeout=300)
    assert helpers.layout_ref(layout, tag)["digest"] == expected
    helpers.check_manifest(server, repo, tag, expected)
    _pull_and_compare(layout, tag, expected, server, repo, env, pulled)


def _pull_and_compare(
    layout: Path, tag: str, expected: str, server: RegistryServer, repo: str, env: dict[str, str], pulled: Path
) -> None:
    helpers.skopeo_copy(f"docker://{server.host}/{repo}:{tag}", f"oci:{pulled}:{tag}", env, timeout=300)
    got = helpers.layout_ref(pulled, tag)["digest"]
    assert got == expected, f"pulled manifest {got}, pushed {expected}"
    assert helpers.image_tree(pulled, got) == helpers.image_tree(layout, expected)


@pytest.mark.timeout(600)
def test_skopeo_round_trip(
    s3_dockyard: S3Dockyard, s3_image: tuple[Path, str, str], client_env: dict[str, str], tmp_path: Path
) -> None:
    layout, tag, digest = s3_image
    server = s3_dockyard.server
    repo = helpers.unique_repo(f"s3-{s3_dockyard.mode}")
    _push_pull(layout, tag, digest, server, repo, client_env, tmp_path / "pulled")
    manifest = _manifest(layout, digest)
    big = _biggest_layer(manifest)
    assert big["size"] > 16 * MiB, f"the big layer is only {big['size']} bytes: no multipart upload"
    for desc in [manifest["config"], *manifest["layers"]]:
        check_blob_get(s3_dockyard, repo, desc)
    helpers.check_blobs(server, repo, manifest)  # following redirects, as a client does


@pytest.mark.timeout(300)
def test_chunked_upload(s3_dockyard: S3Dockyard) -> None:
    """POST, PATCH 6 MiB, 1 MiB, 7 MiB (Content-Range), PUT ?digest=: the blob has the digest and is
    readable. With 5 MiB parts (proxied) the chunks end inside parts and cross part boundaries."""
    server = s3_dockyard.server
    repo = helpers.unique_repo(f"s3-chunks-{s3_dockyard.mode}")
    chunks = [os.urandom(n) for n in CHUNKS]
    data = b"".join(chunks)
    digest = helpers.sha256_bytes(data)
    # No keep-alive: every request may reach another worker process, as requests of one session
    # reach any instance behind a load balancer (the session is continued from the database).
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, auth=server.auth, timeout=120, limits=limits) as client:
        location = helpers.start_upload(client, repo)
        offset = 0
        for chunk in chunks:
            end = offset + len(chunk) - 1
            r = client.patch(
                httpx.URL(server.url).join(location),
                content=chunk,
                headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}"},
            )
            assert r.status_code == 202, (
                f"PATCH {offset}-{end} -> {r.status_code} {r.text[:500]}\n{s3_dockyard.diagnostics()}"
            )
            assert r.headers.get("Range") == f"0-{end}", f"after PATCH {offset}-{end}: Range {r.headers.get('Range')}"
            location = r.headers.get("Location") or location
            offset = end + 1
            status = client.get(httpx.URL(server.url).join(location))
            assert status.status_code == 204, f"GET upload status -> {status.status_code} {status.text[:300]}"
            assert status.headers.get("Range") == f"0-{end}"
        url = httpx.URL(server.url).join(location).copy_merge_params({"digest": digest})
        r = client.put(url)
        assert r.status_code == 201, (
            f"PUT ?digest={digest} -> {r.status_code} {r.text[:500]}\n{s3_dockyard.diagnostics()}"
        )
        assert r.headers.get("Docker-Content-Digest") in (None, digest)
        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == len(data)
    got = helpers.stream_blob_digest(server, repo, digest, timeout=120)
    assert got == (digest, len(data)), f"blob served as {got}, uploaded {digest} ({len(data)} bytes)"
    check_blob_get(s3_dockyard, repo, {"digest": digest, "size": len(data)})


@pytest.mark.timeout(600)
def test_pull_after_restart(s3_dockyard: S3Dockyard, client_env: dict[str, str], tmp_path: Path) -> None:
    """Content pushed before a restart is pulled from S3 after it (nothing held in memory)."""
    layout = tmp_path / "layout"
    tag = "restart"
    digest = helpers.umoci_image(layout, tag, tmp_path, layers=({"data/r.bin": 17 * MiB},))
    repo = helpers.unique_repo(f"s3-restart-{s3_dockyard.mode}")
    _push_pull(layout, tag, digest, s3_dockyard.server, repo, client_env, tmp_path / "pulled-before")
    s3_dockyard.restart()
    server = s3_dockyard.server
    if helpers.auth_file_entry(client_env, server) is None:  # restarted on another port
        assert server.credentials is not None
        helpers.login(["skopeo"], server, client_env, *server.credentials)
    _pull_and_compare(layout, tag, digest, server, repo, client_env, tmp_path / "pulled-after")
    manifest = _manifest(layout, digest)
    for desc in [manifest["config"], *manifest["layers"]]:
        check_blob_get(s3_dockyard, repo, desc)
