"""Account rules beyond the matrix: organization default permissions, the creator's admin role,
robot token regeneration, superusers named in the configuration, signing-key rotation.

docs/identity.md, "Accounts and namespaces" and "Permissions".
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import (
    ACCEPT_ALL,
    AuthServer,
    TokenClient,
    assert_error,
    assert_status,
    basic,
    bearer,
    db_query,
    jwt_parts,
    rand,
    repo_actions,
)
from .world import ORG, World, password

pytestmark = pytest.mark.integration

PRIV = f"{ORG}/matrix-priv"


def login(w: World, creds: tuple[str, str], *scopes: str) -> dict:
    params = [("service", w.service)] + [("scope", s) for s in scopes]
    r = w.anon.get("/v2/auth", params=params, headers=basic(*creds))
    assert_status(r, 200, why=f"login {creds[0]} for {scopes}:")
    return jwt_parts(r.json()["token"])[1]


def test_org_default_permissions_and_creator_admin(live: World) -> None:
    w = live
    org = f"beta{rand(2)}"
    names = {k: f"{k}{rand(2)}" for k in ("bowner", "bmake1", "bmake2", "bsubj", "bview")}
    pws = {n: password() for n in names.values()}
    w.secrets.extend(pws.values())
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda n: w.server.create_user(n, pws[n]), names.values()))
    srv = w.server
    srv.cli("org", "create", org, "--owner", names["bowner"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(
            pool.map(
                lambda args: srv.cli(*args),
                [
                    ("team", "create", org, "makers", "--role", "creator"),
                    ("team", "create", org, "viewers", "--role", "member"),
                ],
            )
        )
        list(
            pool.map(
                lambda args: srv.cli(*args),
                [
                    ("team", "add", org, "makers", names["bmake1"]),
                    ("team", "add", org, "makers", names["bmake2"]),
                    ("team", "add", org, "viewers", names["bview"]),
                    # anyone creating: bsubj gets write, the viewers team read
                    ("org", "default-perm", org, names["bsubj"], "write"),
                    ("org", "default-perm", org, f"{org}/viewers", "read"),
                    # bmake1 creating: bsubj gets read (the creator-specific rule wins, even though weaker)
                    ("org", "default-perm", org, names["bsubj"], "read", "--creator", names["bmake1"]),
                ],
            )
        )
    one, two = f"{org}/one-{rand()}", f"{org}/two-{rand()}"
    with TokenClient(w.url, names["bmake1"], pws[names["bmake1"]]) as c1:
        img1 = c1.push_image(one, "v1")
    with TokenClient(w.url, names["bmake2"], pws[names["bmake2"]]) as c2:
        c2.push_image(two, "v1")

    subj = (names["bsubj"], pws[names["bsubj"]])
    p = login(w, subj, f"repository:{one}:pull,push", f"repository:{two}:pull,push")
    assert repo_actions(p, one) == {"pull"}, "the rule for the specific creator must win over the rule for anyone"
    assert repo_actions(p, two) == {"pull", "push"}, "the rule for anyone applies to other creators"

    view = (names["bview"], pws[names["bview"]])
    p = login(w, view, f"repository:{one}:pull,push", f"repository:{two}:pull,push")
    assert repo_actions(p, one) == {"pull"}, "team subject of a default permission"
    assert repo_actions(p, two) == {"pull"}, "team subject of a default permission"

    # the creator gets admin on what it created; the other creator has nothing on it (private)
    m1 = (names["bmake1"], pws[names["bmake1"]])
    m2 = (names["bmake2"], pws[names["bmake2"]])
    p = login(w, m2, f"repository:{one}:pull,push")
    assert repo_actions(p, one) == set(), "another creator has no role on a repository it did not create"
    r = w.anon.get(f"/v2/{one}/manifests/v1", headers={"Accept": ACCEPT_ALL, **basic(*m2)})
    assert_error(r, 403, "DENIED", why="another creator pulling a private repository it did not create")
    r = w.anon.delete(f"/v2/{one}/manifests/{img1.digest}", headers=basic(*m1))
    assert_status(r, 202, why="the creator (admin on its repository) deletes a manifest")
    assert w.root.manifest_status(one, img1.digest) == 404
    # the org owner administers every repository of the organization
    owner = (names["bowner"], pws[names["bowner"]])
    p = login(w, owner, f"repository:{two}:pull,push")
    assert repo_actions(p, two) == {"pull", "push"}


def test_robot_regenerate_voids_old_token_and_its_tokens(live: World) -> None:
    w = live
    robot, old = w.server.create_robot(ORG, f"regen{rand(2)}")
    w.secrets.append(old)
    w.server.cli("perm", "grant", PRIV, robot, "read")
    r = w.anon.get(
        "/v2/auth", params={"service": w.service, "scope": f"repository:{PRIV}:pull"}, headers=basic(robot, old)
    )
    assert_status(r, 200)
    jwt_old = r.json()["token"]
    assert_status(w.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Accept": ACCEPT_ALL, **bearer(jwt_old)}), 200)
    out = [ln.strip() for ln in w.server.cli("robot", "regenerate", robot).stdout.splitlines() if ln.strip()]
    assert out, "robot regenerate must print the new token"
    new = out[-1]
    w.secrets.append(new)
    assert new != old
    r = w.anon.get(
        "/v2/auth", params={"service": w.service, "scope": f"repository:{PRIV}:pull"}, headers=basic(robot, old)
    )
    assert_error(r, 401, "UNAUTHORIZED", why="the old robot token after regenerate")
    r = w.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Accept": ACCEPT_ALL, **bearer(jwt_old)})
    assert_error(r, 401, "UNAUTHORIZED", "DENIED", why="a bearer token issued for the old robot token")
    r = w.anon.get(
        "/v2/auth", params={"service": w.service, "scope": f"repository:{PRIV}:pull"}, headers=basic(robot, new)
    )
    assert_status(r, 200, why="the new robot token")
    assert repo_actions(jwt_parts(r.json()["token"])[1], PRIV) == {"pull"}


# --------------------------------------------------------------------------- strict server


def strict_login(srv: AuthServer, user: str, secret: str, *scopes: str) -> httpx.Response:
    """Log in on the strict server from 127.0.0.21 (its own failed-login counter)."""
    params = [("service", srv.url.removeprefix("http://"))] + [("scope", s) for s in scopes]
    with httpx.Client(base_url=srv.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.21")) as c:
        r = c.get("/v2/auth", params=params, headers=basic(user, secret))
    assert_status(r, 200, why=f"login {user}:")
    return r


def test_superuser_named_in_configuration(limited_server: AuthServer) -> None:
    """LIMITED_CONFIG names `cfgsu` in auth.superusers; the user has no --superuser flag."""
    srv = limited_server
    owner, plain = f"o{rand(3)}", f"plain{rand(2)}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda n: srv.create_user(n, password()), [owner, "cfgsu", plain]))
    srv.cli("repo", "create", f"{owner}/private")
    scope = f"repository:{owner}/private:pull,push"
    # plain passwords are refused on this server: log in with encrypted CLI passwords
    r = strict_login(srv, "cfgsu", srv.cli_password("cfgsu"), scope)
    assert repo_actions(jwt_parts(r.json()["token"])[1], f"{owner}/private") == {"pull", "push"}
    r = strict_login(srv, plain, srv.cli_password(plain), scope)
    assert repo_actions(jwt_parts(r.json()["token"])[1], f"{owner}/private") == set(), "control: not a superuser"


@pytest.mark.slow
def test_rotate_key(limited_server: AuthServer) -> None:
    srv = limited_server
    user = f"rot{rand(3)}"
    srv.create_user(user, password())
    robot, token = srv.create_robot(user, "bot")
    old_kid = jwt_parts(strict_login(srv, robot, token).json()["token"])[0]["kid"]
    new_kid = srv.cli("auth", "rotate-key").stdout.strip().splitlines()[-1].strip()
    assert new_kid
    assert new_kid != old_kid
    rows = dict(db_query(srv.db, "SELECT kid, retired_at FROM signing_keys"))
    assert new_kid in rows, "the new key must be kept in the database"
    assert rows[new_kid] is None
    assert rows[old_kid] is not None, "rotation retires the other keys"
    deadline = time.monotonic() + 75  # instances pick a new key up within a minute
    kid, jwt = old_kid, ""
    while time.monotonic() < deadline:
        jwt = strict_login(srv, robot, token).json()["token"]
        kid = jwt_parts(jwt)[0]["kid"]
        if kid == new_kid:
            break
        time.sleep(3)
    assert kid == new_kid, "the server still signs with the retired key more than a minute after rotation"
    r = httpx.get(f"{srv.url}/v2/", headers=bearer(jwt), timeout=30)
    assert_status(r, 200, why="a token signed with the new key")
