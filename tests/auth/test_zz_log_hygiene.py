"""No password, token or JWT may appear in the server's log (runs last: the log then holds the
whole session; it also drives every kind of login itself, so it is meaningful when run alone).

The shared server runs with `log.level: debug` and `log.access_log: true`.
"""

from __future__ import annotations

import base64
import re

import pytest

from .helpers import REFRESH_HOW, assert_status, basic, bearer, rand, refresh_grant, refresh_request
from .world import ORG, World, password

pytestmark = pytest.mark.integration

PRIV = f"{ORG}/matrix-priv"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def test_no_secret_in_server_log(live: World) -> None:
    w = live
    issued: list[str] = []
    scope = f"repository:{PRIV}:pull"
    # wrong and right credentials of every kind, by GET and POST, then the bearer tokens in use
    wrong = password()
    w.anon.get("/v2/auth", params={"service": w.service, "scope": scope}, headers=basic("tread", wrong))
    w.anon.get(f"/v2/{PRIV}/manifests/v1", headers=basic("tread", wrong))
    for principal in ("team_read", "robot_read", "app_token", "cli_password", "superuser", "disabled"):
        creds = w.creds[principal]
        assert creds is not None
        r = w.anon.get("/v2/auth", params={"service": w.service, "scope": scope}, headers=basic(*creds))
        if r.status_code == 200:
            issued.append(r.json()["token"])
            assert_status(w.anon.get(f"/v2/{PRIV}/manifests/v1", headers=bearer(issued[-1])), 200)
        w.anon.get(f"/v2/{PRIV}/manifests/v1", headers=basic(*creds))
        for how in REFRESH_HOW:
            r = refresh_request(w.anon, w.service, creds[0], creds[1], scope, how)
            if r.status_code != 200:
                continue
            body = r.json()
            issued += [body.get("access_token", ""), body.get("refresh_token", "")]
            if body.get("refresh_token"):
                r2 = refresh_grant(w.anon, w.service, body["refresh_token"], scope)
                if r2.status_code == 200:
                    issued.append(r2.json()["access_token"])
    bogus = "dyr_" + rand(16)
    w.anon.post("/v2/auth", data={"grant_type": "refresh_token", "refresh_token": bogus, "service": w.service})
    w.anon.get(f"/v2/{PRIV}/manifests/v1", headers={"Authorization": f"Bearer {bogus}"})

    log = w.server.logs(tail=None)
    secrets = [s for s in [*w.secrets, *issued, wrong, bogus] if s]
    for s in secrets:
        assert s not in log, f"a secret ({s[:6]}…, {len(s)} chars) appears in the server log"
        # and not as the Basic header that carried it
    for user, secret in [c for c in w.creds.values() if c] + [("tread", wrong)]:
        b64 = base64.b64encode(f"{user}:{secret}".encode()).decode()
        assert b64 not in log, f"the Basic credentials of {user} appear in the server log"
    m = JWT_RE.search(log)
    assert m is None, f"a JWT appears in the server log: {m.group(0)[:40]}…" if m else ""
