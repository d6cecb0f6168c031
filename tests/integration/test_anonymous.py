"""Anonymous callers are refused: the suites must not silently depend on an open registry.

Every other test authenticates as the superuser the pool creates (Basic credentials on each
request). These check the other side: without credentials Dockyard answers 401 with a Bearer
challenge naming its token endpoint, and stores nothing. The reference registry runs without
authentication, so they are skipped there. Access control proper lives in tests/auth/.
"""

from __future__ import annotations

import re

import httpx
import pytest

from .helpers import (
    REFERENCE,
    assert_error,
    assert_status,
    blob_visible,
    describe,
    digest_of,
    get_manifest,
    push_image,
    raw_request,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REFERENCE, reason="the reference registry runs without authentication"),
]


def _challenge(resp: httpx.Response, registry) -> dict[str, str]:
    """Parse `WWW-Authenticate: Bearer realm="…",service="…"[,scope="…"]`."""
    value = resp.headers.get("www-authenticate")
    assert value, "401 without WWW-Authenticate" + describe(resp)
    assert value.startswith("Bearer "), "challenge must be Bearer" + describe(resp)
    params = dict(re.findall(r'(\w+)="([^"]*)"', value))
    assert params.get("realm") == f"{registry.url}/v2/auth", describe(resp)
    assert params.get("service"), describe(resp)
    return params


def test_anonymous_base_check_is_challenged(registry, anon_client):
    r = anon_client.get("/v2/")
    assert_error(r, 401, "UNAUTHORIZED")
    _challenge(r, registry)


def test_anonymous_push_is_refused_and_stores_nothing(registry, anon_client, client, repo):
    data = b"anonymous push " + repo.encode()
    d = digest_of(data)
    r = anon_client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": d},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert_error(r, 401, "UNAUTHORIZED")
    scope = _challenge(r, registry).get("scope", "")
    assert scope.startswith(f"repository:{repo}:"), describe(r)
    assert "push" in scope.split(":")[-1].split(","), describe(r)
    r = anon_client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert_error(r, 401, "UNAUTHORIZED")
    assert not blob_visible(client, repo, d)
    # the same push with credentials works
    r = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": d},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert_status(r, 201)


def test_anonymous_pull_of_private_repository_is_refused(registry, anon_client, client, repo):
    img = push_image(client, repo, "v1")
    r = get_manifest(anon_client, repo, "v1")
    assert_error(r, 401, "UNAUTHORIZED")
    scope = _challenge(r, registry).get("scope", "")
    assert scope.startswith(f"repository:{repo}:"), describe(r)
    assert "pull" in scope.split(":")[-1].split(","), describe(r)
    for path in (f"/v2/{repo}/blobs/{img.obj['layers'][0]['digest']}", f"/v2/{repo}/tags/list"):
        status, headers, body = raw_request(registry.host, registry.port, "GET", path)
        assert status == 401, f"anonymous GET {path} -> {status} {body[:300]!r}"
        assert headers.get("www-authenticate", "").startswith("Bearer realm="), headers
    r = get_manifest(client, repo, "v1")
    assert_status(r, 200)
    assert r.content == img.body


def test_wrong_password_is_refused(registry):
    # One attempt only: failed logins are rate-limited per user and client IP, and the rest of
    # the session logs in as this user from this address.
    user = registry.credentials[0]
    with httpx.Client(base_url=registry.url, timeout=60, auth=(user, "not-the-password")) as c:
        r = c.get("/v2/")
    assert_error(r, 401, "UNAUTHORIZED")


def test_bearer_token_from_token_endpoint_pulls(registry, client, anon_client, repo):
    """The Docker token flow the clients use: /v2/auth with Basic, then Bearer on /v2/."""
    img = push_image(client, repo, "v1")
    challenge = _challenge(anon_client.get(f"/v2/{repo}/manifests/v1"), registry)
    r = client.get("/v2/auth", params={"service": challenge["service"], "scope": f"repository:{repo}:pull"})
    assert_status(r, 200)
    body = r.json()
    token = body.get("token") or body.get("access_token")
    assert token, describe(r)
    with httpx.Client(base_url=registry.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as bearer:
        r = get_manifest(bearer, repo, "v1")
    assert_status(r, 200)
    assert r.content == img.body
