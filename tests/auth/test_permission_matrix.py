"""The permission matrix: principal x registry action x repository visibility.

Every cell drives the real Docker token flow with httpx:
  1. the request without credentials -> 401 + `WWW-Authenticate: Bearer realm,service,scope`
     (parsed and checked), except that a credential-less pull of a public repository may answer
     200 (that request is anonymous, and anonymous callers may read public repositories);
  2. GET <realm>?service=…&scope=<the challenge's scope> with the principal's Basic credentials
     (none for anonymous) -> a token (or 401 UNAUTHORIZED for the disabled user);
  3. the request again with `Authorization: Bearer <token>` -> allowed, or refused with 401, a
     Bearer challenge carrying the scope and an OCI error UNAUTHORIZED/DENIED;
  4. the effect (or its absence) is checked as the superuser.

Expectations come from docs/identity.md ("Permissions"):
  pull needs read; push to an existing repository, delete tag/manifest and the push side of a
  mount need write; creating a repository by push needs namespace ownership, an org team with role
  creator or admin, or superuser; public repositories give read to everyone, anonymous included;
  a disabled user cannot log in.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import httpx
import pytest

from .helpers import (
    ACCEPT_ALL,
    OCI_MANIFEST,
    REFUSAL_CODES,
    Image,
    assert_bearer_challenge,
    assert_error,
    assert_status,
    basic,
    bearer,
    describe,
    digest_of,
    rand,
)
from .world import MOUNT_SRC, PRINCIPALS, World

pytestmark = pytest.mark.integration

ALLOW = "allow"
DENY = "deny"
NO_LOGIN = "login-refused"  # /v2/auth answers 401 UNAUTHORIZED: no token at all

ACTIONS = ("pull", "push", "delete-tag", "delete-manifest", "mount", "create-repo")

#: principal -> action -> (public repository, private repository); create-repo: one outcome.
EXPECTED: dict[str, dict[str, Any]] = {
    "anonymous": {
        "pull": (ALLOW, DENY),
        "push": (DENY, DENY),
        "delete-tag": (DENY, DENY),
        "delete-manifest": (DENY, DENY),
        "mount": (DENY, DENY),
        "create-repo": DENY,
    },
    "ns_owner": {  # alice on alice/matrix-pub and alice/matrix-priv; creates alice/new-…
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": ALLOW,
    },
    "org_owner": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": ALLOW,
    },
    "org_admin": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": ALLOW,
    },
    "team_creator": {  # no grant on the existing repositories: public read only; may create
        "pull": (ALLOW, DENY),
        "push": (DENY, DENY),
        "delete-tag": (DENY, DENY),
        "delete-manifest": (DENY, DENY),
        "mount": (DENY, DENY),
        "create-repo": ALLOW,
    },
    "team_read": {
        "pull": (ALLOW, ALLOW),
        "push": (DENY, DENY),
        "delete-tag": (DENY, DENY),
        "delete-manifest": (DENY, DENY),
        "mount": (DENY, DENY),
        "create-repo": DENY,
    },
    "team_write": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": DENY,
    },
    "robot_read": {
        "pull": (ALLOW, ALLOW),
        "push": (DENY, DENY),
        "delete-tag": (DENY, DENY),
        "delete-manifest": (DENY, DENY),
        "mount": (DENY, DENY),
        "create-repo": DENY,
    },
    "robot_write": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": DENY,
    },
    "app_token": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": DENY,
    },
    "cli_password": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": DENY,
    },
    "superuser": {
        "pull": (ALLOW, ALLOW),
        "push": (ALLOW, ALLOW),
        "delete-tag": (ALLOW, ALLOW),
        "delete-manifest": (ALLOW, ALLOW),
        "mount": (ALLOW, ALLOW),
        "create-repo": ALLOW,
    },
    "disabled": {
        "pull": (NO_LOGIN, NO_LOGIN),
        "push": (NO_LOGIN, NO_LOGIN),
        "delete-tag": (NO_LOGIN, NO_LOGIN),
        "delete-manifest": (NO_LOGIN, NO_LOGIN),
        "mount": (NO_LOGIN, NO_LOGIN),
        "create-repo": NO_LOGIN,
    },
}
assert set(EXPECTED) == set(PRINCIPALS)
assert all(set(v) == set(ACTIONS) for v in EXPECTED.values())


def _cells() -> list[Any]:
    out = []
    for principal in PRINCIPALS:
        for action in ACTIONS:
            visibilities = ("new",) if action == "create-repo" else ("public", "private")
            for vis in visibilities:
                out.append(pytest.param(principal, action, vis, id=f"{principal}-{action}-{vis}"))
    return out


def expected_outcome(principal: str, action: str, visibility: str) -> str:
    e = EXPECTED[principal][action]
    if visibility == "new":
        return e
    return e[0] if visibility == "public" else e[1]


PULL = {"pull"}
PUSH = {"push"}
DELETE = {"delete", "push", "*"}  # the contract does not name the scope action for deletes


@dataclasses.dataclass
class Cell:
    world: World
    principal: str
    action: str
    visibility: str
    outcome: str

    @property
    def why(self) -> str:
        return f"[{self.principal} {self.action} {self.visibility}: expected {self.outcome}]"

    @property
    def creds(self) -> tuple[str, str] | None:
        return self.world.creds[self.principal]

    def http(self) -> httpx.Client:
        return self.world.anon

    # -- the token flow ----------------------------------------------------------
    def first_request(self, resp: httpx.Response, repository: str, need: set[str]) -> str:
        """Step 1: the credential-less request. Returns the challenge's scope."""
        w = self.world
        if resp.status_code != 401 and self.visibility == "public" and need == PULL:
            # the credential-less request is anonymous: a pull of a public repository may be served
            # without a token (anonymous callers have read there)
            assert_status(resp, 200, why=self.why)
            return f"repository:{repository}:pull"
        ch = assert_bearer_challenge(
            resp, base_url=w.url, repository=repository, need=need, service=w.service, why=self.why
        )
        assert_error(resp, 401, "UNAUTHORIZED", why=self.why)
        return ch.scope

    def get_token(self, scopes: list[str]) -> str | None:
        """Step 2: ask the realm. None when the login is (expectedly) refused."""
        w = self.world
        params = [("service", w.service)] + [("scope", s) for s in scopes]
        headers = basic(*self.creds) if self.creds else {}
        r = self.http().get(f"{w.url}/v2/auth", params=params, headers=headers)
        if self.outcome == NO_LOGIN:
            assert_error(r, 401, "UNAUTHORIZED", why=f"{self.why} /v2/auth must refuse the login")
            return None
        assert_status(r, 200, why=f"{self.why} /v2/auth")
        body = r.json()
        assert isinstance(body.get("token"), str), f"{self.why} no token" + describe(r)
        if "access_token" in body:
            assert body["access_token"] == body["token"], f"{self.why} token != access_token" + describe(r)
        return body["token"]

    def refused(self, resp: httpx.Response, repository: str, need: set[str]) -> None:
        """A refusal of a request carrying a token: 401, a Bearer challenge carrying the scope, and
        the OCI error DENIED ("UNAUTHORIZED, or DENIED when a token lacks the action")."""
        w = self.world
        assert_error(resp, 401, *REFUSAL_CODES, why=f"{self.why} must be refused")
        assert_error(resp, 401, "DENIED", why=f"{self.why} a token lacking the action:")
        assert_bearer_challenge(resp, base_url=w.url, repository=repository, need=need, service=w.service, why=self.why)

    def basic_direct_refused(self, method: str, url: str, **kw: Any) -> None:
        """The disabled user's Basic credentials sent straight to /v2/…: 401 UNAUTHORIZED."""
        assert self.creds is not None
        headers = {**kw.pop("headers", {}), **basic(*self.creds)}
        r = self.http().request(method, url, headers=headers, **kw)
        assert_error(r, 401, "UNAUTHORIZED", why=f"{self.why} Basic credentials of a disabled user")


# --------------------------------------------------------------------------- runners


def run_pull(c: Cell) -> None:
    w, http = c.world, c.http()
    repo = w.target(c.principal, c.visibility)
    img = w.images[repo]
    url = f"/v2/{repo}/manifests/v1"
    scope = c.first_request(http.get(url, headers={"Accept": ACCEPT_ALL}), repo, PULL)
    token = c.get_token([scope])
    if token is None:
        c.basic_direct_refused("GET", url, headers={"Accept": ACCEPT_ALL})
        return
    r = http.get(url, headers={"Accept": ACCEPT_ALL, **bearer(token)})
    rb = http.get(f"/v2/{repo}/blobs/{img.layer_digest}", headers=bearer(token))
    if c.outcome == ALLOW:
        assert_status(r, 200, why=c.why)
        assert r.content == img.manifest, f"{c.why} manifest bytes" + describe(r)
        assert_status(rb, 200, why=c.why)
        assert rb.content == img.layer, f"{c.why} blob bytes" + describe(rb)
    else:
        c.refused(r, repo, PULL)
        c.refused(rb, repo, PULL)
        assert img.layer not in rb.content


def run_push(c: Cell) -> None:
    w, http = c.world, c.http()
    repo = w.target(c.principal, c.visibility)
    img, tag = Image.make(), f"push-{rand()}"
    scope = c.first_request(http.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}), repo, PUSH)
    token = c.get_token([scope])
    cfg_url = f"/v2/{repo}/blobs/uploads/?digest={img.config_digest}"
    octet = {"Content-Type": "application/octet-stream"}
    if token is None:
        c.basic_direct_refused("POST", cfg_url, content=img.config, headers=octet)
    elif c.outcome == ALLOW:
        for data in (img.config, img.layer):
            r = http.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": digest_of(data)},
                content=data,
                headers={**octet, **bearer(token)},
            )
            assert_status(r, 201, why=c.why)
        r = http.put(
            f"/v2/{repo}/manifests/{tag}", content=img.manifest, headers={"Content-Type": OCI_MANIFEST, **bearer(token)}
        )
        assert_status(r, 201, why=c.why)
        assert w.root.tag_digest(repo, tag) == img.digest, f"{c.why} pushed tag not visible"
        assert w.root.blob_status(repo, img.layer_digest) == 200, f"{c.why} pushed layer not visible"
        return
    else:
        r = http.post(cfg_url, content=img.config, headers={**octet, **bearer(token)})
        c.refused(r, repo, PUSH)
        r = http.put(
            f"/v2/{repo}/manifests/{tag}", content=img.manifest, headers={"Content-Type": OCI_MANIFEST, **bearer(token)}
        )
        c.refused(r, repo, PUSH)
    # nothing changed
    assert w.root.blob_status(repo, img.config_digest) == 404, f"{c.why} refused upload created the blob"
    assert w.root.tag_digest(repo, tag) is None, f"{c.why} refused push created the tag"


def run_delete_tag(c: Cell) -> None:
    w, http = c.world, c.http()
    repo = w.target(c.principal, c.visibility)
    tag = f"dt-{rand()}"
    img = w.root.push_image(repo, tag)
    url = f"/v2/{repo}/manifests/{tag}"
    scope = c.first_request(http.delete(url), repo, DELETE)
    token = c.get_token([scope])
    if token is None:
        c.basic_direct_refused("DELETE", url)
    else:
        r = http.delete(url, headers=bearer(token))
        if c.outcome == ALLOW:
            assert_status(r, 202, why=c.why)
            assert w.root.tag_digest(repo, tag) is None, f"{c.why} tag still there after 202"
            return
        c.refused(r, repo, DELETE)
    assert w.root.tag_digest(repo, tag) == img.digest, f"{c.why} refused delete removed the tag"


def run_delete_manifest(c: Cell) -> None:
    w, http = c.world, c.http()
    repo = w.target(c.principal, c.visibility)
    tag = f"dm-{rand()}"
    img = w.root.push_image(repo, tag)
    url = f"/v2/{repo}/manifests/{img.digest}"
    scope = c.first_request(http.delete(url), repo, DELETE)
    token = c.get_token([scope])
    if token is None:
        c.basic_direct_refused("DELETE", url)
    else:
        r = http.delete(url, headers=bearer(token))
        if c.outcome == ALLOW:
            assert_status(r, 202, why=c.why)
            assert w.root.manifest_status(repo, img.digest) == 404, f"{c.why} manifest still there after 202"
            assert w.root.tag_digest(repo, tag) is None, f"{c.why} tag of a deleted manifest still there"
            return
        c.refused(r, repo, DELETE)
    assert w.root.manifest_status(repo, img.digest) == 200, f"{c.why} refused delete removed the manifest"
    assert w.root.tag_digest(repo, tag) == img.digest, f"{c.why} refused delete removed the tag"


def run_mount(c: Cell) -> None:
    """Mount from the public `acme/mount-src` (readable by all): the push side on the target decides."""
    w, http = c.world, c.http()
    repo = w.target(c.principal, c.visibility)
    blob = os.urandom(700)
    d = w.root.push_blob(MOUNT_SRC, blob)
    assert w.root.blob_status(repo, d) == 404
    params = {"mount": d, "from": MOUNT_SRC}
    url = f"/v2/{repo}/blobs/uploads/"
    scope = c.first_request(http.post(url, params=params, headers={"Content-Length": "0"}), repo, PUSH)
    token = c.get_token([scope, f"repository:{MOUNT_SRC}:pull"])
    if token is None:
        c.basic_direct_refused("POST", url, params=params, headers={"Content-Length": "0"})
    else:
        r = http.post(url, params=params, headers={"Content-Length": "0", **bearer(token)})
        if c.outcome == ALLOW:
            assert_status(r, 201, why=f"{c.why} mount")
            assert r.headers.get("location"), describe(r)
            assert w.root.blob_status(repo, d) == 200, f"{c.why} mounted blob not in target"
            rb = http.get(f"/v2/{repo}/blobs/{d}", headers=bearer(token))
            assert_status(rb, 200, why=f"{c.why} mounted blob readable with the same token")
            assert rb.content == blob
            return
        c.refused(r, repo, PUSH)
    assert w.root.blob_status(repo, d) == 404, f"{c.why} refused mount linked the blob into {repo}"


def run_create_repo(c: Cell) -> None:
    w, http = c.world, c.http()
    repo = f"{w.namespace_for_create(c.principal)}/new-{rand()}"
    img = Image.make()
    scope = c.first_request(http.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}), repo, PUSH)
    token = c.get_token([scope])
    octet = {"Content-Type": "application/octet-stream"}
    cfg_url = f"/v2/{repo}/blobs/uploads/?digest={img.config_digest}"
    if token is None:
        c.basic_direct_refused("POST", cfg_url, content=img.config, headers=octet)
    elif c.outcome == ALLOW:
        for data in (img.config, img.layer):
            r = http.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": digest_of(data)},
                content=data,
                headers={**octet, **bearer(token)},
            )
            assert_status(r, 201, why=c.why)
        r = http.put(
            f"/v2/{repo}/manifests/v1", content=img.manifest, headers={"Content-Type": OCI_MANIFEST, **bearer(token)}
        )
        assert_status(r, 201, why=c.why)
        assert w.root.tag_digest(repo, "v1") == img.digest, f"{c.why} created repository not visible"
        # the creator can read what it created (creator gets admin on a repository it creates in an org)
        r = http.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT_ALL, **bearer(token)})
        assert_status(r, 200, why=f"{c.why} creator pulls its new repository")
        return
    else:
        r = http.post(cfg_url, content=img.config, headers={**octet, **bearer(token)})
        c.refused(r, repo, PUSH)
        r = http.put(
            f"/v2/{repo}/manifests/v1", content=img.manifest, headers={"Content-Type": OCI_MANIFEST, **bearer(token)}
        )
        c.refused(r, repo, PUSH)
    assert not w.root.repo_exists(repo), f"{c.why} refused push created repository {repo}"


RUNNERS = {
    "pull": run_pull,
    "push": run_push,
    "delete-tag": run_delete_tag,
    "delete-manifest": run_delete_manifest,
    "mount": run_mount,
    "create-repo": run_create_repo,
}


@pytest.mark.parametrize(("principal", "action", "visibility"), _cells())
def test_matrix(live: World, principal: str, action: str, visibility: str) -> None:
    cell = Cell(live, principal, action, visibility, expected_outcome(principal, action, visibility))
    RUNNERS[action](cell)


def test_matrix_is_complete() -> None:
    cells = _cells()
    assert len(cells) == len(PRINCIPALS) * (2 * (len(ACTIONS) - 1) + 1)
    outcomes = {expected_outcome(*p.values) for p in cells}
    assert outcomes == {ALLOW, DENY, NO_LOGIN}
