"""`GET /v2/` and repository-name rules (OCI Distribution Spec 1.1)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from .helpers import (
    OCI_MANIFEST,
    assert_error,
    assert_status,
    describe,
    digest_of,
    error_codes,
    get_manifest,
    push_blob,
    push_image,
    rand,
    raw_request,
)

pytestmark = pytest.mark.integration


def test_api_version_check(client):
    r = client.get("/v2/")
    assert_status(r, 200)
    assert r.headers.get("docker-distribution-api-version") == "registry/2.0"


def test_api_version_check_without_trailing_slash_is_not_an_error(client):
    # `/v2` is commonly redirected to `/v2/` or answered directly; never a 5xx.
    r = client.get("/v2")
    assert r.status_code in (200, 301, 307, 308, 404), r.status_code


def test_multi_segment_names_round_trip(client, new_repo):
    repo = new_repo() + "/b/c/d"
    m = push_image(client, repo, "latest")
    r = get_manifest(client, repo, "latest")
    assert_status(r, 200)
    assert r.content == m.body
    r = client.get(f"/v2/{repo}/tags/list")
    assert_status(r, 200)
    assert r.json() == {"name": repo, "tags": ["latest"]}


@pytest.mark.parametrize("component", ["a--b", "a__b", "a.b-c_d", "0-9"])
def test_spec_1_1_separators_are_valid_names(client, new_repo, component):
    # 1.1 grammar: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    repo = f"{new_repo()}/{component}"
    push_blob(client, repo, b"name grammar " + rand().encode())


INVALID_COMPONENTS = ["UPPER", "a..b", "-a", "a-", "a_", "_a", "a___b", ".a", "a.", "a:b", "a@b"]


@pytest.mark.parametrize("component", INVALID_COMPONENTS)
def test_invalid_name_is_rejected(registry, new_repo, component):
    repo = f"{new_repo()}/{component}"
    data = b"must not be stored"
    d = digest_of(data)
    status, _, body = raw_request(
        registry.host,
        registry.port,
        "POST",
        f"/v2/{repo}/blobs/uploads/?digest={d}",
        body=data,
        headers={"Content-Type": "application/octet-stream", **registry.auth_headers},
    )
    _assert_name_rejected(status, body, f"POST /v2/{repo}/blobs/uploads/")
    status, _, body = raw_request(
        registry.host,
        registry.port,
        "PUT",
        f"/v2/{repo}/manifests/latest",
        body=b"{}",
        headers={"Content-Type": OCI_MANIFEST, **registry.auth_headers},
    )
    _assert_name_rejected(status, body, f"PUT /v2/{repo}/manifests/latest")


def _assert_name_rejected(status: int, body: bytes, what: str) -> None:
    # Spec: NAME_INVALID (400). A router that cannot match the path at all may say 404.
    assert status in (400, 404), f"{what} -> {status} {body[:300]!r}"
    if status == 400:
        resp = httpx.Response(status, content=body, request=httpx.Request("GET", "http://x/"))
        assert "NAME_INVALID" in error_codes(resp), f"{what} -> {status} {body[:300]!r}"


def test_overly_long_name_is_rejected(client, new_repo):
    repo = new_repo() + "/" + "/".join(["a" * 60] * 5)  # > 255 characters
    assert len(repo) > 255
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code in (400, 404), describe(r)
    if r.status_code == 400:
        assert_error(r, 400, "NAME_INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "/v2//it/leading-{r}/tags/list",
        "/v2/it/trailing-{r}//tags/list",
        "/v2/it/../it/dotdot-{r}/tags/list",
        "/v2/it/%2e%2e/dotdot-{r}/tags/list",
        "/v2/./it/dot-{r}/tags/list",
    ],
)
def test_malformed_name_paths(registry, path):
    path = path.format(r=rand())
    status, headers, body = raw_request(registry.host, registry.port, "GET", path, headers=registry.auth_headers)
    if status in (301, 308):  # a router may canonicalise the path; it must not serve it as-is
        assert "location" in headers, f"GET {path} -> {status} without Location"
        return
    _assert_name_rejected(status, body, f"GET {path}")


def _snapshot(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.join(dirpath, n))
    return out


def test_path_traversal_never_escapes_storage(registry, tmp_path):
    token = rand(6)
    data = f"traversal {token}".encode()
    d = digest_of(data)
    watch = registry.data_dir.parent
    before = _snapshot(watch)
    attempts = [
        f"/v2/it/%2e%2e/%2e%2e/%2e%2e/%2e%2e/escape{token}/blobs/uploads/?digest={d}",
        f"/v2/it/..%2f..%2f..%2fescape{token}/blobs/uploads/?digest={d}",
        f"/v2/%2e%2e/%2e%2e/escape{token}/blobs/uploads/?digest={d}",
        f"/v2/it/%2E%2E/escape{token}/blobs/uploads/?digest={d}",
        f"/v2/it/..%5c..%5cescape{token}/blobs/uploads/?digest={d}",
    ]
    for path in attempts:
        status, _, body = raw_request(
            registry.host,
            registry.port,
            "POST",
            path,
            body=data,
            headers={"Content-Type": "application/octet-stream", **registry.auth_headers},
        )
        assert status in (301, 308, 400, 404), f"POST {path} -> {status} {body[:300]!r}"
        status, _, body = raw_request(
            registry.host,
            registry.port,
            "PUT",
            path.replace(f"blobs/uploads/?digest={d}", "manifests/latest"),
            body=b'{"schemaVersion":2}',
            headers={"Content-Type": OCI_MANIFEST, **registry.auth_headers},
        )
        assert status in (301, 308, 400, 404), f"PUT manifest via {path} -> {status} {body[:300]!r}"
    # Nothing named after the token anywhere near the server's directories, and nothing
    # new outside the data dir.
    after = _snapshot(watch)
    new = {p for p in after - before if not p.startswith(str(registry.data_dir) + os.sep)}
    new = {p for p in new if not p.endswith(".log")}
    assert not new, f"files created outside the data dir: {sorted(new)}"
    for root in (watch.parent, Path("/tmp"), registry.data_dir):
        for p in _snapshot(root) if root != Path("/tmp") else {str(x) for x in root.iterdir()}:
            assert f"escape{token}" not in p, f"traversal created {p}"


def test_unknown_repository_manifest_is_404(client, new_repo):
    r = get_manifest(client, new_repo(), "latest")
    assert_error(r, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")
