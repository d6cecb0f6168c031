"""The API's resources end to end: user, registry, repositories, tags, manifests; paging; errors."""

from __future__ import annotations

import datetime as dt

import pytest

from .support import PROBLEM, World, push_image

pytestmark = pytest.mark.integration

API = "/api/v1"


def test_user_profile_with_a_password_and_with_a_scoped_token(world: World) -> None:
    with world.as_("alice") as client:
        profile = client.get(f"{API}/user").json()
    assert profile == {
        "name": "alice",
        "email": None,
        "superuser": False,
        "authenticated_via": "password",
        "scopes": None,
    }
    with world.as_("alice_user") as client:
        profile = client.get(f"{API}/user").json()
    assert profile["authenticated_via"] == "app_token"
    assert profile["scopes"] == ["user:read"]
    with world.as_("alice_all") as client:
        assert len(client.get(f"{API}/user").json()["scopes"]) == 8


def test_registry_capabilities_are_open_to_anonymous_callers(world: World) -> None:
    with world.as_("anonymous") as client:
        info = client.get(f"{API}/registry").json()
    assert info["api_version"] == "v1"
    assert "referrers" in info["features"]
    assert [scope["name"] for scope in info["scopes"]][:2] == ["repo:read", "repo:write"]


def test_repository_lifecycle(world: World) -> None:
    with world.as_("alice") as client:
        created = client.post(
            f"{API}/repositories", json={"name": "acme/life", "description": "first", "visibility": "private"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{API}/repositories/acme/life"
        assert created.json()["description"] == "first"
        again = client.post(f"{API}/repositories", json={"name": "acme/life"})
        assert again.status_code == 409
        assert again.json()["code"] == "CONFLICT"
        updated = client.patch(f"{API}/repositories/acme/life", json={"visibility": "public"}).json()
        assert (updated["visibility"], updated["description"]) == ("public", "first")
        cleared = client.patch(f"{API}/repositories/acme/life", json={"description": None}).json()
        assert cleared["description"] is None
        assert client.get(f"{API}/repositories/acme/life").json()["visibility"] == "public"
        gone = client.delete(f"{API}/repositories/acme/life")
        assert gone.status_code == 204
        missing = client.get(f"{API}/repositories/acme/life")
        assert missing.status_code == 404
        assert missing.json()["code"] == "NOT_FOUND"
        # The name is free again at once.
        assert client.post(f"{API}/repositories", json={"name": "acme/life"}).status_code == 201
        assert client.delete(f"{API}/repositories/acme/life").status_code == 204
    with world.as_("bob") as client:
        own = client.post(f"{API}/repositories", json={"name": "bob/tools", "visibility": "public"})
        assert own.status_code == 201
        assert client.delete(f"{API}/repositories/bob/tools").status_code == 204


def test_listing_filters_sorts_and_pages(world: World) -> None:
    names = [f"acme/list-{index}" for index in range(5)]
    with world.as_("alice") as client:
        for name in names:
            assert client.post(f"{API}/repositories", json={"name": name, "visibility": "public"}).status_code == 201
        found = client.get(f"{API}/repositories", params={"namespace": "acme", "q": "list-"}).json()["items"]
        assert [item["name"] for item in found] == names
        newest = client.get(f"{API}/repositories", params={"q": "list-", "sort": "-created"}).json()["items"]
        assert [item["name"] for item in newest] == names[::-1]
        private = client.get(f"{API}/repositories", params={"namespace": "acme", "visibility": "private"}).json()
        assert [item["name"] for item in private["items"]] == ["acme/private"]
        for sort in ("name", "-name", "created", "-created"):
            seen: list[str] = []
            url: str | None = f"{API}/repositories?q=list-&limit=2&sort={sort}"
            while url is not None:
                response = client.get(url)
                page = response.json()
                seen += [item["name"] for item in page["items"]]
                assert len(page["items"]) <= 2
                if page["next"] is not None:
                    assert response.headers["link"] == f'<{page["next"]}>; rel="next"'
                url = page["next"]
            assert sorted(seen) == names, sort
            assert len(seen) == len(set(seen))
        first = client.get(f"{API}/repositories", params={"q": "list-", "limit": 1}).json()
        other_sort = client.get(f"{API}/repositories", params={"sort": "created", "cursor": first["next_cursor"]})
        assert other_sort.status_code == 400
        assert other_sort.json()["code"] == "PAGINATION_INVALID"
        for bad in ("%%%", "eyJsIjoxfQ", "A" * 100):
            response = client.get(f"{API}/repositories", params={"cursor": bad})
            assert response.status_code == 400, bad
            assert response.headers["content-type"] == PROBLEM
        for name in names:
            client.delete(f"{API}/repositories/{name}")


def test_tags_history_restore_and_expiry(world: World) -> None:
    repo = f"{API}/repositories/acme/tags"
    with world.as_("alice") as client:
        assert client.post(f"{API}/repositories", json={"name": "acme/tags"}).status_code == 201
        first, _ = push_image(client, "acme/tags", "v1", seed="one")
        second, _ = push_image(client, "acme/tags", "v1", seed="two")
        for index in range(3):
            push_image(client, "acme/tags", f"extra{index}", seed="x")
        tag = client.get(f"{repo}/-/tags/v1").json()
        assert (tag["digest"], tag["immutable"], tag["expires_at"]) == (second, False, None)
        listed: list[str] = []
        url: str | None = f"{repo}/-/tags?limit=2"
        while url is not None:
            page = client.get(url).json()
            listed += [item["name"] for item in page["items"]]
            url = page["next"]
        assert listed == ["extra0", "extra1", "extra2", "v1"]
        history = client.get(f"{repo}/-/tags/v1/history?limit=1").json()
        assert [entry["digest"] for entry in history["items"]] == [second]
        older = client.get(history["next"]).json()
        assert [entry["digest"] for entry in older["items"]] == [first]
        assert older["items"][0]["end"] is not None
        restored = client.post(f"{repo}/-/tags/v1/restore", json={"digest": first})
        assert restored.status_code == 200, restored.text
        assert restored.json()["digest"] == first
        unknown = client.post(f"{repo}/-/tags/v1/restore", json={"digest": "sha256:" + "0" * 64})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "MANIFEST_UNKNOWN")
        expiring = client.put(f"{repo}/-/tags/v1/expiry", json={"expires_in": "2w"}).json()
        expires = dt.datetime.fromisoformat(expiring["expires_at"])
        assert dt.timedelta(days=13) < expires - dt.datetime.now(dt.UTC) < dt.timedelta(days=15)
        moment = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
        assert client.put(f"{repo}/-/tags/v1/expiry", json={"expires_at": moment}).json()["expires_at"] is not None
        assert client.delete(f"{repo}/-/tags/v1/expiry").json()["expires_at"] is None
        past = client.put(f"{repo}/-/tags/v1/expiry", json={"expires_at": "2001-01-01T00:00:00Z"})
        assert (past.status_code, past.json()["code"]) == (400, "INVALID_REQUEST")
        both = client.put(f"{repo}/-/tags/v1/expiry", json={"expires_in": "1d", "expires_at": moment})
        assert (both.status_code, both.json()["code"]) == (422, "VALIDATION_FAILED")
        bad = client.put(f"{repo}/-/tags/v1/expiry", json={"expires_in": "soon"})
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")
        missing = client.get(f"{repo}/-/tags/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")


def test_tags_are_created_moved_and_deleted(world: World) -> None:
    repo = f"{API}/repositories/acme/tagops"
    with world.as_("alice") as client:
        assert client.post(f"{API}/repositories", json={"name": "acme/tagops"}).status_code == 201
        first, _ = push_image(client, "acme/tagops", "one", seed="one")
        second, _ = push_image(client, "acme/tagops", "two", seed="two")
        created = client.put(f"{repo}/-/tags/latest", json={"digest": first})
        assert created.status_code == 201, created.text
        assert created.json()["digest"] == first
        moved = client.put(f"{repo}/-/tags/latest", json={"digest": second})
        assert (moved.status_code, moved.json()["digest"]) == (200, second)
        again = client.put(f"{repo}/-/tags/latest", json={"digest": second})
        assert (again.status_code, again.json()["digest"]) == (200, second)
        history = client.get(f"{repo}/-/tags/latest/history").json()["items"]
        assert [entry["digest"] for entry in history] == [second, first]
        # The registry serves the moved tag.
        pulled = client.get(
            "/v2/acme/tagops/manifests/latest", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        assert pulled.headers["docker-content-digest"] == second
        unknown = client.put(f"{repo}/-/tags/latest", json={"digest": "sha256:" + "0" * 64})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "MANIFEST_UNKNOWN")
        assert client.get(f"{repo}/-/tags/latest").json()["digest"] == second
        malformed = client.put(f"{repo}/-/tags/latest", json={"digest": "latest"})
        assert (malformed.status_code, malformed.json()["code"]) == (422, "VALIDATION_FAILED")
        bad_name = client.put(f"{repo}/-/tags/-bad", json={"digest": first})
        assert bad_name.status_code in (400, 422), bad_name.text
        assert client.patch(f"{repo}/-/tags/latest", json={"immutable": True}).status_code == 200
        pinned_move = client.put(f"{repo}/-/tags/latest", json={"digest": first})
        assert (pinned_move.status_code, pinned_move.json()["code"]) == (403, "DENIED")
        pinned_delete = client.delete(f"{repo}/-/tags/latest")
        assert (pinned_delete.status_code, pinned_delete.json()["code"]) == (403, "DENIED")
        assert client.get(f"{repo}/-/tags/latest").json()["digest"] == second
        assert client.patch(f"{repo}/-/tags/latest", json={"immutable": False}).status_code == 200
        assert client.delete(f"{repo}/-/tags/latest").status_code == 204
        gone = client.get(f"{repo}/-/tags/latest")
        assert (gone.status_code, gone.json()["code"]) == (404, "NOT_FOUND")
        twice = client.delete(f"{repo}/-/tags/latest")
        assert (twice.status_code, twice.json()["code"]) == (404, "MANIFEST_UNKNOWN")
        # A deleted tag comes back by restore; its manifests never left.
        assert client.post(f"{repo}/-/tags/latest/restore", json={"digest": second}).status_code == 200
        assert client.get(f"{repo}/-/tags/one").json()["digest"] == first


def test_immutability_rules_and_pinned_tags(world: World) -> None:
    repo = f"{API}/repositories/acme/rules"
    with world.as_("alice") as client:
        assert client.post(f"{API}/repositories", json={"name": "acme/rules"}).status_code == 201
        push_image(client, "acme/rules", "v1", seed="r")
        push_image(client, "acme/rules", "dev", seed="r")
        for pattern in ("v*", "release-?.*", "zz"):
            assert client.post(f"{repo}/-/immutability-rules", json={"pattern": pattern}).status_code == 201
        duplicate = client.post(f"{repo}/-/immutability-rules", json={"pattern": "v*"})
        assert (duplicate.status_code, duplicate.json()["code"]) == (409, "CONFLICT")
        page = client.get(f"{repo}/-/immutability-rules?limit=2").json()
        rest = client.get(page["next"]).json()
        assert [rule["pattern"] for rule in page["items"] + rest["items"]] == ["release-?.*", "v*", "zz"]
        # The rule holds on the registry: v1 cannot move.
        refused = client.delete("/v2/acme/rules/manifests/v1")
        assert refused.status_code == 403
        assert client.delete(f"{repo}/-/immutability-rules/v%2A").status_code == 204
        gone = client.delete(f"{repo}/-/immutability-rules/v%2A")
        assert (gone.status_code, gone.json()["code"]) == (404, "NOT_FOUND")
        pinned = client.patch(f"{repo}/-/tags/dev", json={"immutable": True}).json()
        assert pinned["immutable"] is True
        assert client.delete("/v2/acme/rules/manifests/dev").status_code == 403
        assert client.patch(f"{repo}/-/tags/dev", json={"immutable": False}).json()["immutable"] is False
        assert client.delete("/v2/acme/rules/manifests/dev").status_code == 202


def test_manifest_details_and_referrers(world: World) -> None:
    base = f"{API}/repositories/acme/private/-/manifests/{world.image}"
    with world.as_("robot_reader") as client:
        manifest = client.get(base).json()
        referrers = client.get(f"{base}/referrers").json()
    assert manifest["digest"] == world.image
    assert manifest["size"] == world.image_size
    assert manifest["labels"] == {"team": "web"}
    assert manifest["platform"] == {"os": "linux", "architecture": "amd64"}
    assert manifest["created"] == "2026-01-02T03:04:05Z"
    assert len(manifest["layers"]) == 1
    assert manifest["total_size"] == world.image_size + manifest["config"]["size"] + manifest["layers"][0]["size"]
    assert manifest["annotations"] == {"org.opencontainers.image.title": "image base"}
    assert [item["digest"] for item in referrers["items"]] == [world.signature]
    assert referrers["items"][0]["artifact_type"] == "application/vnd.example.signature"
    with world.as_("robot_reader") as client:
        missing = client.get(f"{API}/repositories/acme/private/-/manifests/sha256:{'1' * 64}")
    assert (missing.status_code, missing.json()["code"]) == (404, "MANIFEST_UNKNOWN")


def test_errors_are_problem_json(world: World) -> None:
    with world.as_("alice") as client:
        for response, status, code in (
            (client.get(f"{API}/no-such-thing"), 404, "NOT_FOUND"),
            # A line break keeps the path from matching even the API's mount.
            (client.get(f"{API}/repositories/acme/a%0Ab/-/manifests/x%0Ay"), 404, "NOT_FOUND"),
            (client.put(f"{API}/user"), 405, "METHOD_NOT_ALLOWED"),
            (
                client.post(f"{API}/repositories", content=b"{not json", headers={"content-type": "application/json"}),
                422,
                "VALIDATION_FAILED",
            ),
            (client.post(f"{API}/repositories", json={"name": "acme/x", "colour": "red"}), 422, "VALIDATION_FAILED"),
            (client.post(f"{API}/repositories", json={"name": "Acme/X"}), 400, "NAME_INVALID"),
            (client.get(f"{API}/repositories", params={"limit": 0}), 422, "VALIDATION_FAILED"),
            (client.get(f"{API}/repositories", params={"namespace": "Not Valid"}), 400, "INVALID_REQUEST"),
        ):
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == PROBLEM
            body = response.json()
            assert (body["status"], body["code"]) == (status, code)
            assert body["type"] == "urn:dockyard:problem:" + code.lower().replace("_", "-")
            assert body["title"]
            assert body["detail"]
        outside = client.get("/no-such-thing")
        assert (outside.status_code, outside.headers["content-type"]) == (404, "text/plain; charset=utf-8")
    with world.as_("alice") as client:
        invalid = client.post(f"{API}/repositories", json={"name": 5}).json()
    assert invalid["errors"][0]["location"] == ["body", "name"]


def test_scoped_app_tokens_on_the_registry(world: World) -> None:
    """The scope caps the registry too: a repo:read token pulls but cannot push."""
    token = world.tokens["alice_read"]
    with world.server.client(auth=("$app", token)) as client:
        assert client.get(f"/v2/acme/private/manifests/{world.image}").status_code == 200
        pushed = client.post("/v2/acme/private/blobs/uploads/")
        assert pushed.status_code == 403
        issued = client.get("/v2/auth", params={"scope": "repository:acme/private:pull,push"}).json()
    with world.server.client(token=issued["token"]) as client:
        assert client.post("/v2/acme/private/blobs/uploads/").status_code == 401
    with world.server.client(token=world.tokens["alice_all"]) as client:
        assert client.get(f"{API}/repositories/acme/private/-/tags").status_code == 200


def test_token_scopes_on_the_command_line(world: World) -> None:
    server = world.server
    listing = server.cli("token", "list", "alice")
    assert any(line.endswith("scopes repo:read") for line in listing.splitlines())
    result = server.run_cli("token", "create", "alice", "--title", "bad", "--scope", "repo:everything")
    assert result.returncode != 0
    assert "unknown scope" in result.stderr
