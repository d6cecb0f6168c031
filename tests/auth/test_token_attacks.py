"""Attacks on registry bearer tokens and on cross-repository mounts.

docs/identity.md: tokens are ES256 JWTs (`kid` header, keys in the database) whose `access`
claim holds only the actions the principal really has; a disabled user cannot log in or use any
token; deleting a robot revokes its access at once, including tokens it already holds; a mount
without read on the source is an ordinary upload (202).

Where a claim (expiry, audience) is under test, the token is signed with the server's *real*
signing key (read from the throwaway database), so the only defect is that claim; a control
re-signs an untouched token with the same key and must be accepted, which proves the harness.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from .helpers import (
    ACCEPT_ALL,
    REFUSAL_CODES,
    alg_none,
    assert_bearer_challenge,
    assert_error,
    assert_status,
    basic,
    bearer,
    db_query,
    describe,
    digest_of,
    es256_sign,
    es256_verify,
    hs256_sign,
    jwt_encode_unsigned,
    jwt_parts,
    load_private_pem,
    new_ec_key,
    rand,
    refresh_grant,
    refresh_token_for,
    repo_actions,
)
from .world import ORG, SECRET_REPO, World

pytestmark = pytest.mark.integration

PUB = f"{ORG}/matrix-pub"
PRIV = f"{ORG}/matrix-priv"


def token_for(w: World, creds: tuple[str, str] | None, *scopes: str) -> str:
    params = [("service", w.service)] + [("scope", s) for s in scopes]
    r = w.anon.get("/v2/auth", params=params, headers=basic(*creds) if creds else {})
    assert_status(r, 200, why=f"token for {scopes}:")
    return r.json()["token"]


def pull_manifest(w: World, repo: str, token: str) -> Any:
    return w.anon.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT_ALL, **bearer(token)})


def assert_refused(w: World, resp: Any, repo: str, why: str) -> None:
    assert_error(resp, 401, *REFUSAL_CODES, why=why)
    assert_bearer_challenge(resp, base_url=w.url, repository=repo, need=None, service=w.service, why=why)
    assert w.images[repo].manifest not in resp.content


def server_key(w: World, kid: str) -> Any:
    rows = db_query(w.server.db, "SELECT private_pem FROM signing_keys WHERE kid = %s", (kid,))
    assert rows, f"no signing key {kid!r} in the database (keys are kept in the database, per the contract)"
    return load_private_pem(rows[0][0])


# --------------------------------------------------------------------------- scope confinement


@pytest.mark.parametrize("principal", ["superuser", "team_write"])
def test_token_for_repo_a_is_useless_on_repo_b(live: World, principal: str) -> None:
    w = live
    token = token_for(w, w.creds[principal], f"repository:{PUB}:pull,push")
    assert repo_actions(jwt_parts(token)[1], PUB) == {"pull", "push"}
    assert_status(pull_manifest(w, PUB, token), 200, why="control: the token works on A")
    # pull B (private; the principal may read it, but the token does not say so)
    assert_refused(w, pull_manifest(w, PRIV, token), PRIV, f"{principal} token for {PUB} used to pull {PRIV}")
    # push to B
    data = os.urandom(300)
    d = digest_of(data)
    r = w.anon.post(
        f"/v2/{PRIV}/blobs/uploads/",
        params={"digest": d},
        content=data,
        headers={"Content-Type": "application/octet-stream", **bearer(token)},
    )
    assert_refused(w, r, PRIV, f"{principal} token for {PUB} used to push to {PRIV}")
    assert w.root.blob_status(PRIV, d) == 404, "a refused upload created the blob"
    r = w.anon.post(f"/v2/{PRIV}/blobs/uploads/", headers={"Content-Length": "0", **bearer(token)})
    assert_refused(w, r, PRIV, f"{principal} token for {PUB} used to open an upload in {PRIV}")


# --------------------------------------------------------------------------- forgeries


@pytest.fixture
def reader_token(live: World) -> str:
    """A genuine token of the team reader: pull on the private repository."""
    token = token_for(live, live.creds["team_read"], f"repository:{PRIV}:pull")
    assert repo_actions(jwt_parts(token)[1], PRIV) == {"pull"}
    assert_status(pull_manifest(live, PRIV, token), 200, why="control: genuine token")
    return token


def test_token_is_es256_with_kid_and_a_key_from_the_database(live: World, reader_token: str) -> None:
    header, payload, sig = jwt_parts(reader_token)
    assert header.get("alg") == "ES256", header
    assert isinstance(header.get("kid"), str), header
    assert header["kid"], header
    assert len(sig) == 64, "ES256 signatures are 64 raw bytes (r||s)"
    key = server_key(live, header["kid"])
    assert es256_verify(reader_token, key.public_key()), "token does not verify with the database key of its kid"
    assert payload.get("aud") == live.service, payload


def test_resigned_with_server_key_is_accepted_control(live: World, reader_token: str) -> None:
    """Control for the forgeries below: an untouched payload re-signed with the real key works."""
    header, payload, _ = jwt_parts(reader_token)
    token = es256_sign(header, payload, server_key(live, header["kid"]))
    assert_status(pull_manifest(live, PRIV, token), 200, why="re-signed with the server's own key")


def test_payload_edited_signature_kept(live: World) -> None:
    w = live
    # anonymous asks for pull,push on the private repository: granted nothing there
    token = token_for(w, None, f"repository:{PUB}:pull", f"repository:{PRIV}:pull,push")
    header, payload, _ = jwt_parts(token)
    assert repo_actions(payload, PRIV) == set()
    forged_payload = {
        **payload,
        "access": [
            {"type": "repository", "name": PRIV, "actions": ["pull", "push", "delete"]},
            {"type": "repository", "name": PUB, "actions": ["pull"]},
        ],
    }
    sig = token.split(".")[2]
    forged = f"{jwt_encode_unsigned(header, forged_payload)}.{sig}"
    assert_refused(w, pull_manifest(w, PRIV, forged), PRIV, "payload edited, signature kept")
    # and claiming to be the superuser
    forged2 = f"{jwt_encode_unsigned(header, {**forged_payload, 'sub': 'root'})}.{sig}"
    assert_refused(w, pull_manifest(w, PRIV, forged2), PRIV, "sub edited to root, signature kept")
    r = w.anon.delete(f"/v2/{PRIV}/manifests/v1", headers=bearer(forged2))
    assert_refused(w, r, PRIV, "forged token deleting a tag")
    assert w.root.tag_digest(PRIV, "v1") == w.images[PRIV].digest


def test_signed_with_another_key_same_kid(live: World, reader_token: str) -> None:
    header, payload, _ = jwt_parts(reader_token)
    forged = es256_sign(header, payload, new_ec_key())
    assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, "signed with a foreign EC key, same kid")
    # also with a widened access claim
    wide = {**payload, "access": [{"type": "repository", "name": PRIV, "actions": ["pull", "push", "delete"]}]}
    r = live.anon.delete(f"/v2/{PRIV}/manifests/v1", headers=bearer(es256_sign(header, wide, new_ec_key())))
    assert_refused(live, r, PRIV, "foreign key, widened access, delete")
    assert live.root.tag_digest(PRIV, "v1") == live.images[PRIV].digest


def test_expired_token_own_key(live: World, reader_token: str) -> None:
    header, payload, _ = jwt_parts(reader_token)
    now = int(time.time())
    expired = {**payload, "iat": now - 3600, "nbf": now - 3600, "exp": now - 1800}
    forged = es256_sign(header, expired, new_ec_key())
    assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, "expired token signed with a foreign key")


def test_expired_token_exp_tampered(live: World, reader_token: str) -> None:
    header, payload, _ = jwt_parts(reader_token)
    sig = reader_token.split(".")[2]
    for exp in (int(time.time()) - 60, int(time.time()) + 10 * 365 * 86400):
        forged = f"{jwt_encode_unsigned(header, {**payload, 'exp': exp})}.{sig}"
        assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, f"exp tampered to {exp}, signature kept")


def test_expired_token_server_key(live: World, reader_token: str) -> None:
    """Correctly signed, only the expiry is wrong."""
    header, payload, _ = jwt_parts(reader_token)
    key = server_key(live, header["kid"])
    now = int(time.time())
    expired = {**payload, "iat": now - 3600, "nbf": now - 3600, "exp": now - 120}
    assert_refused(live, pull_manifest(live, PRIV, es256_sign(header, expired, key)), PRIV, "expired, real key")
    no_exp = {k: v for k, v in payload.items() if k != "exp"}
    assert_refused(live, pull_manifest(live, PRIV, es256_sign(header, no_exp, key)), PRIV, "no exp, real key")


def test_wrong_audience(live: World, reader_token: str) -> None:
    header, payload, _ = jwt_parts(reader_token)
    key = server_key(live, header["kid"])
    for aud in ("registry.example.com", f"{live.service}.evil", ""):
        forged = es256_sign(header, {**payload, "aud": aud}, key)
        assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, f"aud={aud!r}, real key")
    forged = es256_sign(header, {**payload, "aud": "registry.example.com"}, new_ec_key())
    assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, "wrong aud, foreign key")


def test_alg_none_and_hs256_confusion(live: World, reader_token: str) -> None:
    header, payload, _ = jwt_parts(reader_token)
    for hdr in (header, {k: v for k, v in header.items() if k != "kid"}):
        assert_refused(live, pull_manifest(live, PRIV, alg_none(hdr, payload)), PRIV, "alg none")
        assert_refused(live, pull_manifest(live, PRIV, alg_none(hdr, payload)[:-1]), PRIV, "alg none, no trailing dot")
    public_pem = db_query(live.server.db, "SELECT public_pem FROM signing_keys WHERE kid = %s", (header["kid"],))[0][0]
    forged = hs256_sign(header, payload, public_pem.encode())
    assert_refused(live, pull_manifest(live, PRIV, forged), PRIV, "HS256 keyed with the public key")


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.", "Basic"])
def test_garbage_bearer(live: World, garbage: str) -> None:
    value = f"Bearer {garbage}" if garbage else "Bearer"
    r = live.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Accept": ACCEPT_ALL, "Authorization": value})
    assert_refused(live, r, PRIV, f"garbage bearer {garbage!r}")


def test_refresh_token_is_not_an_access_token(live: World) -> None:
    user, pw = live.creds["team_read"]  # type: ignore[misc]
    refresh = refresh_token_for(live.anon, live.service, user, pw, f"repository:{PRIV}:pull")
    assert_refused(live, pull_manifest(live, PRIV, refresh), PRIV, "refresh token used as a bearer token")


# --------------------------------------------------------------------------- revocation


def test_robot_token_rejected_after_robot_delete(live: World) -> None:
    w = live
    short = f"tmp{rand(3)}"
    robot, secret = w.server.create_robot(ORG, short)
    w.secrets.append(secret)
    w.server.cli("perm", "grant", PRIV, robot, "write")
    token = token_for(w, (robot, secret), f"repository:{PRIV}:pull,push")
    assert repo_actions(jwt_parts(token)[1], PRIV) == {"pull", "push"}
    assert_status(pull_manifest(w, PRIV, token), 200, why="robot token before delete")
    w.server.cli("robot", "delete", robot)
    assert_refused(w, pull_manifest(w, PRIV, token), PRIV, "token of a deleted robot")
    data = os.urandom(200)
    r = w.anon.post(
        f"/v2/{PRIV}/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers={"Content-Type": "application/octet-stream", **bearer(token)},
    )
    assert_refused(w, r, PRIV, "push with the token of a deleted robot")
    assert w.root.blob_status(PRIV, digest_of(data)) == 404
    r = w.anon.get(
        "/v2/auth", params={"service": w.service, "scope": f"repository:{PRIV}:pull"}, headers=basic(robot, secret)
    )
    assert_error(r, 401, "UNAUTHORIZED", why="login of a deleted robot")
    r = w.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Accept": ACCEPT_ALL, **basic(robot, secret)})
    assert_error(r, 401, "UNAUTHORIZED", why="Basic credentials of a deleted robot")


def test_user_token_rejected_after_disable(live: World) -> None:
    w = live
    user, pw = w.new_user("gone")
    w.server.cli("perm", "grant", PRIV, user, "write")
    token = token_for(w, (user, pw), f"repository:{PRIV}:pull,push")
    assert_status(pull_manifest(w, PRIV, token), 200, why="user token before disable")
    w.server.cli("user", "disable", user)
    assert_refused(w, pull_manifest(w, PRIV, token), PRIV, "token of a disabled user")
    r = w.anon.delete(f"/v2/{PRIV}/manifests/v1", headers=bearer(token))
    assert_refused(w, r, PRIV, "delete with the token of a disabled user")
    assert w.root.tag_digest(PRIV, "v1") == w.images[PRIV].digest
    r = w.anon.get(
        "/v2/auth", params={"service": w.service, "scope": f"repository:{PRIV}:pull"}, headers=basic(user, pw)
    )
    assert_error(r, 401, "UNAUTHORIZED", why="login of a disabled user")
    r = w.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Accept": ACCEPT_ALL, **basic(user, pw)})
    assert_error(r, 401, "UNAUTHORIZED", why="Basic credentials of a disabled user")


def test_refresh_token_rejected_after_disable(live: World) -> None:
    w = live
    user, pw = w.new_user("gonerefresh")
    w.server.cli("perm", "grant", PRIV, user, "read")
    refresh = refresh_token_for(w.anon, w.service, user, pw, f"repository:{PRIV}:pull")
    assert_status(refresh_grant(w.anon, w.service, refresh, f"repository:{PRIV}:pull"), 200, why="before disable")
    w.server.cli("user", "disable", user)
    r = refresh_grant(w.anon, w.service, refresh, f"repository:{PRIV}:pull")
    assert_error(r, 401, "UNAUTHORIZED", why="refresh token of a disabled user")


def test_refresh_token_rejected_after_robot_delete(live: World) -> None:
    w = live
    robot, secret = w.server.create_robot(ORG, f"tmpr{rand(2)}")
    w.secrets.append(secret)
    w.server.cli("perm", "grant", PRIV, robot, "read")
    refresh = refresh_token_for(w.anon, w.service, robot, secret, f"repository:{PRIV}:pull")
    w.server.cli("robot", "delete", robot)
    r = refresh_grant(w.anon, w.service, refresh, f"repository:{PRIV}:pull")
    assert_error(r, 401, "UNAUTHORIZED", why="refresh token of a deleted robot")


# --------------------------------------------------------------------------- mounts


def _secret_blob(w: World) -> tuple[bytes, str]:
    data = os.urandom(900)
    d = w.root.push_blob(SECRET_REPO, data)
    assert w.root.blob_status(PRIV, d) == 404
    return data, d


def test_mount_from_unreadable_repo_is_a_plain_upload(live: World) -> None:
    w = live
    data, d = _secret_blob(w)
    token = token_for(w, w.creds["team_write"], f"repository:{PRIV}:pull,push", f"repository:{SECRET_REPO}:pull")
    payload = jwt_parts(token)[1]
    assert repo_actions(payload, PRIV) == {"pull", "push"}
    assert repo_actions(payload, SECRET_REPO) == set(), "no read on the source: pull must be dropped"
    r = w.anon.post(
        f"/v2/{PRIV}/blobs/uploads/",
        params={"mount": d, "from": SECRET_REPO},
        headers={"Content-Length": "0", **bearer(token)},
    )
    assert_status(r, 202, why="mount without read on the source must open an ordinary upload")
    assert r.headers.get("location"), describe(r)
    assert w.root.blob_status(PRIV, d) == 404, "the blob was linked into the target"
    rb = w.anon.get(f"/v2/{PRIV}/blobs/{d}", headers=bearer(token))
    assert_status(rb, 404, why="the caller must not read the mounted blob in the target")
    assert data not in rb.content
    rs = w.anon.get(f"/v2/{SECRET_REPO}/blobs/{d}", headers=bearer(token))
    assert_refused_blob(w, rs, SECRET_REPO, data)


def test_mount_without_from_of_an_unreadable_blob(live: World) -> None:
    """`?mount=D` without `from` must not link a blob the caller can read nowhere."""
    w = live
    data, d = _secret_blob(w)
    token = token_for(w, w.creds["team_write"], f"repository:{PRIV}:pull,push")
    r = w.anon.post(f"/v2/{PRIV}/blobs/uploads/", params={"mount": d}, headers={"Content-Length": "0", **bearer(token)})
    linked = w.root.blob_status(PRIV, d) == 200
    rb = w.anon.get(f"/v2/{PRIV}/blobs/{d}", headers=bearer(token))
    leaked = rb.status_code == 200 and rb.content == data
    assert_status(
        r,
        202,
        why="mount of a blob only in an unreadable repository must be an ordinary upload "
        f"(linked into the target: {linked}; the caller then reads the secret bytes: {leaked})",
    )
    assert not linked, "the blob was linked into the target"
    assert_status(rb, 404)
    assert data not in rb.content


def test_mount_from_readable_repo_control(live: World) -> None:
    """Control: the same caller mounting from a repository it can read gets 201."""
    w = live
    data = os.urandom(900)
    d = w.root.push_blob(PUB, data)
    target = f"{ORG}/matrix-priv"
    token = token_for(w, w.creds["team_write"], f"repository:{target}:pull,push", f"repository:{PUB}:pull")
    r = w.anon.post(
        f"/v2/{target}/blobs/uploads/",
        params={"mount": d, "from": PUB},
        headers={"Content-Length": "0", **bearer(token)},
    )
    assert_status(r, 201)
    rb = w.anon.get(f"/v2/{target}/blobs/{d}", headers=bearer(token))
    assert_status(rb, 200)
    assert rb.content == data


def assert_refused_blob(w: World, resp: Any, repo: str, data: bytes) -> None:
    assert_error(resp, 401, *REFUSAL_CODES, why=f"blob of {repo}")
    assert_bearer_challenge(resp, base_url=w.url, repository=repo, need=None, service=w.service)
    assert data not in resp.content
