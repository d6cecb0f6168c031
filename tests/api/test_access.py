"""For every endpoint: each principal without the right gets 401/403 problem JSON and no data.

Principals (tests/api/support.py `seed`): anonymous; bob (another user); robot acme+ci (no
permission); robot acme+reader (read on acme/private); alice's tokens scoped repo:read, repo:write
and user:read (alice administers acme, so only the scope stops them); and admin's token without
`super:user` (a superuser acting as an ordinary user, with no role in acme: refused for the
missing scope).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from . import access_identity, access_oauth, access_user
from .support import PROBLEM, World

pytestmark = pytest.mark.integration

REPO = "/api/v1/repositories/acme/private"
UNAUTHORIZED = (401, "UNAUTHORIZED")
DENIED = (403, "DENIED")
SCOPE = (403, "INSUFFICIENT_SCOPE")

#: Refused on any repository endpoint of acme/private, whatever it needs.
_NO_ACCESS = {
    "anonymous": UNAUTHORIZED,
    "bob": DENIED,
    "robot": DENIED,
    "alice_user": SCOPE,
    # Its roles as a superuser would allow everything: the missing scope is super:user.
    "admin_no_su": SCOPE,
}
REFUSED: dict[str, dict[str, tuple[int, str]]] = {
    "read": _NO_ACCESS,
    "write": {**_NO_ACCESS, "robot_reader": DENIED, "alice_read": SCOPE},
    "admin": {**_NO_ACCESS, "robot_reader": DENIED, "alice_read": SCOPE, "alice_write": SCOPE},
    "create": {**_NO_ACCESS, "robot_reader": DENIED, "alice_read": SCOPE, "alice_write": SCOPE},
    "user": {"anonymous": UNAUTHORIZED, "robot": DENIED, "robot_reader": DENIED, "alice_read": SCOPE},
    "catalog": {"alice_user": SCOPE},
    **access_identity.REFUSED,
    **access_user.REFUSED,
    **access_oauth.REFUSED,
}


def endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    """(needs, method, OpenAPI path, concrete path, JSON body) of every endpoint with a right."""
    return (
        _repository_endpoints(world)
        + access_identity.endpoints(world)
        + access_user.endpoints(world)
        + access_oauth.endpoints(world)
    )


def _repository_endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    image = world.image
    return [
        ("catalog", "GET", "/repositories", "/api/v1/repositories", None),
        ("create", "POST", "/repositories", "/api/v1/repositories", {"name": "acme/new"}),
        ("user", "GET", "/user", "/api/v1/user", None),
        ("read", "GET", "/repositories/{repository}", REPO, None),
        ("admin", "PATCH", "/repositories/{repository}", REPO, {"description": "mine"}),
        ("admin", "DELETE", "/repositories/{repository}", REPO, None),
        ("read", "GET", "/repositories/{repository}/-/tags", f"{REPO}/-/tags", None),
        ("read", "GET", "/repositories/{repository}/-/tags/{tag}", f"{REPO}/-/tags/v1", None),
        ("write", "PUT", "/repositories/{repository}/-/tags/{tag}", f"{REPO}/-/tags/v2", {"digest": image}),
        ("write", "DELETE", "/repositories/{repository}/-/tags/{tag}", f"{REPO}/-/tags/v1", None),
        ("admin", "PATCH", "/repositories/{repository}/-/tags/{tag}", f"{REPO}/-/tags/v1", {"immutable": True}),
        ("read", "GET", "/repositories/{repository}/-/tags/{tag}/history", f"{REPO}/-/tags/v1/history", None),
        (
            "write",
            "POST",
            "/repositories/{repository}/-/tags/{tag}/restore",
            f"{REPO}/-/tags/v1/restore",
            {"digest": image},
        ),
        (
            "write",
            "PUT",
            "/repositories/{repository}/-/tags/{tag}/expiry",
            f"{REPO}/-/tags/v1/expiry",
            {"expires_in": "30d"},
        ),
        ("write", "DELETE", "/repositories/{repository}/-/tags/{tag}/expiry", f"{REPO}/-/tags/v1/expiry", None),
        ("read", "GET", "/repositories/{repository}/-/immutability-rules", f"{REPO}/-/immutability-rules", None),
        (
            "admin",
            "POST",
            "/repositories/{repository}/-/immutability-rules",
            f"{REPO}/-/immutability-rules",
            {"pattern": "v*"},
        ),
        (
            "admin",
            "DELETE",
            "/repositories/{repository}/-/immutability-rules/{pattern}",
            f"{REPO}/-/immutability-rules/v%2A",
            None,
        ),
        ("read", "GET", "/repositories/{repository}/-/manifests/{digest}", f"{REPO}/-/manifests/{image}", None),
        (
            "read",
            "GET",
            "/repositories/{repository}/-/manifests/{digest}/referrers",
            f"{REPO}/-/manifests/{image}/referrers",
            None,
        ),
    ]


def _assert_refused(response: httpx.Response, expected: tuple[int, str]) -> None:
    status, code = expected
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    # Nothing but the problem: no item, name, digest or tag leaks.
    assert set(body) <= {"type", "title", "status", "detail", "code", "context"}
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_every_endpoint_refuses_principals_without_the_right(world: World) -> None:
    checked = 0
    for needs, method, _, path, body in endpoints(world):
        for who, expected in REFUSED[needs].items():
            with world.as_(who) as client:
                response = client.request(method, path, json=body)
            try:
                _assert_refused(response, expected)
            except AssertionError as exc:
                raise AssertionError(f"{who} on {method} {path}: {exc}") from None
            checked += 1
    assert checked > 100


def test_the_access_table_covers_every_operation(world: World) -> None:
    with world.as_("anonymous") as client:
        document = client.get("/api/v1/openapi.json").json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    covered = {(method, path) for _, method, path, _, _ in endpoints(world)}
    open_to_all = {("GET", "/registry")} | access_user.OPEN_TO_ALL | access_oauth.OPEN_TO_ALL
    assert operations - open_to_all == covered


def test_the_listing_shows_anonymous_callers_and_outsiders_public_repositories_only(world: World) -> None:
    for who in ("anonymous", "bob", "robot"):
        with world.as_(who) as client:
            names = [item["name"] for item in client.get("/api/v1/repositories").json()["items"]]
        assert "acme/public" in names, who
        assert "acme/private" not in names, who
    with world.as_("robot_reader") as client:
        names = [item["name"] for item in client.get("/api/v1/repositories?namespace=acme").json()["items"]]
    assert "acme/private" in names


def test_bad_credentials_are_refused_everywhere(world: World) -> None:
    for headers in (
        {"Authorization": "Bearer dya_not-a-token"},
        {"Authorization": "Bearer dyr_not-a-token"},
        {"Authorization": "Bearer eyJhbGciOi.not.a-jwt"},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Negotiate abc"},
    ):
        with world.as_("anonymous") as client:
            for path in ("/api/v1/registry", "/api/v1/repositories", f"{REPO}/-/tags"):
                _assert_refused(client.get(path, headers=headers), UNAUTHORIZED)


def test_a_revoked_token_stops_working_at_once(world: World) -> None:
    server = world.server
    token = server.cli("token", "create", "bob", "--title", "short-lived").strip()
    with server.client(token=token) as client:
        assert client.get("/api/v1/user").status_code == 200
        token_id = next(
            line.split("\t")[0] for line in server.cli("token", "list", "bob").splitlines() if "\tshort-lived\t" in line
        )
        server.cli("token", "revoke", "bob", token_id)
        _assert_refused(client.get("/api/v1/user"), UNAUTHORIZED)
