"""The access table of browser sessions and OAuth2 applications: merged into
`test_access.py`, which checks that every principal listed under an endpoint's need is refused.

Needs: `session` (a browser session: every principal of the table presents an Authorization
header or nothing, so each is refused with 401), `oauth-org-admin` (administration of acme,
`org:admin`), `user` (reading one's own account, `user:read`, as in test_access.py),
`oauth-own-account` (changing one's own account, `user:admin`). Logging in and out is open to all.
"""

from __future__ import annotations

from typing import Any

from .support import World

UNAUTHORIZED = (401, "UNAUTHORIZED")
DENIED = (403, "DENIED")
SCOPE = (403, "INSUFFICIENT_SCOPE")

_EVERYONE = (
    "anonymous",
    "bob",
    "robot",
    "robot_reader",
    "alice_read",
    "alice_user",
    "alice_write",
    "alice_all",
    "admin_no_su",
    "member",
)

#: need -> {principal: (status, code)}, for the needs these endpoints add.
REFUSED: dict[str, dict[str, tuple[int, str]]] = {
    # Credentials in a header never authenticate as a session.
    "session": dict.fromkeys(_EVERYONE, UNAUTHORIZED),
    # alice administers acme, but these tokens of hers lack org:admin; admin's token lacks
    # super:user; carol ("member") is a member of acme's team viewers only.
    "oauth-org-admin": {
        "anonymous": UNAUTHORIZED,
        "bob": DENIED,
        "robot": DENIED,
        "robot_reader": DENIED,
        "member": DENIED,
        "alice_read": SCOPE,
        "alice_user": SCOPE,
        "alice_write": SCOPE,
        "admin_no_su": SCOPE,
    },
    "oauth-own-account": {
        "anonymous": UNAUTHORIZED,
        "robot": DENIED,
        "robot_reader": DENIED,
        "alice_read": SCOPE,
        "alice_user": SCOPE,
        "alice_write": SCOPE,
        "admin_no_su": SCOPE,
    },
}
#: (method, OpenAPI path) of operations that need no right at all.
OPEN_TO_ALL: set[tuple[str, str]] = {("POST", "/session"), ("DELETE", "/session")}

APPS = "/organizations/{org}/applications"
APP = APPS + "/{client_id}"


def endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    """(need, method, OpenAPI path, concrete path, JSON body), as in `test_access.endpoints`."""
    del world
    apps = "/api/v1/organizations/acme/applications"
    app = f"{apps}/0123456789abcdef01234567"
    new_app = {"name": "access-test", "redirect_uris": ["https://app.example/cb"]}
    return [
        ("session", "GET", "/session", "/api/v1/session", None),
        ("session", "POST", "/session/reauthenticate", "/api/v1/session/reauthenticate", {"password": "x"}),
        ("oauth-org-admin", "GET", APPS, apps, None),
        ("oauth-org-admin", "POST", APPS, apps, new_app),
        ("oauth-org-admin", "GET", APP, app, None),
        ("oauth-org-admin", "PATCH", APP, app, {"description": "mine"}),
        ("oauth-org-admin", "DELETE", APP, app, None),
        ("oauth-org-admin", "POST", f"{APP}/secret", f"{app}/secret", None),
        ("user", "GET", "/user/authorizations", "/api/v1/user/authorizations", None),
        (
            "oauth-own-account",
            "DELETE",
            "/user/authorizations/{client_id}",
            "/api/v1/user/authorizations/0123456789abcdef01234567",
            None,
        ),
    ]
