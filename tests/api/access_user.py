"""The access table of the calling user's own resources, user administration, search and logs: merged into
`test_access.py`, which checks that every principal listed under an endpoint's need is refused.

Needs: `user` (reading one's own account, `user:read`, as in test_access.py), `own-account`
(changing one's own account, `user:admin`), `star` (`user:admin` and read access to acme/private),
`users-admin` (a superuser, `super:user`), `namespace-logs` (administration of acme, `org:admin`),
`admin` (administration of acme/private, `repo:admin`, as in test_access.py). Search is open to all.
"""

from __future__ import annotations

from typing import Any

from .support import World

UNAUTHORIZED = (401, "UNAUTHORIZED")
DENIED = (403, "DENIED")
SCOPE = (403, "INSUFFICIENT_SCOPE")

_NOT_A_USER = {"anonymous": UNAUTHORIZED, "robot": DENIED, "robot_reader": DENIED}
#: Tokens without user:admin (admin_no_su has user:read only).
_NO_USER_ADMIN = {"alice_read": SCOPE, "alice_user": SCOPE, "alice_write": SCOPE, "admin_no_su": SCOPE}

#: need -> {principal: (status, code)}, for the needs these endpoints add.
REFUSED: dict[str, dict[str, tuple[int, str]]] = {
    "own-account": {**_NOT_A_USER, **_NO_USER_ADMIN},
    # bob may star, but cannot read acme/private.
    "star": {**_NOT_A_USER, **_NO_USER_ADMIN, "bob": DENIED},
    "users-admin": {
        "anonymous": UNAUTHORIZED,
        "bob": DENIED,
        "robot": DENIED,
        "robot_reader": DENIED,
        "alice": DENIED,
        "alice_all": DENIED,
        # Scopes never add a right: alice is no superuser whatever her token holds.
        "alice_read": DENIED,
        # A superuser whose token lacks super:user.
        "admin_no_su": SCOPE,
    },
    "namespace-logs": {
        "anonymous": UNAUTHORIZED,
        "bob": DENIED,
        "robot": DENIED,
        "robot_reader": DENIED,
        "alice_read": SCOPE,
        "alice_user": SCOPE,
        "alice_write": SCOPE,
        "admin_no_su": SCOPE,
    },
}
#: (method, OpenAPI path) of operations that need no right at all.
OPEN_TO_ALL: set[tuple[str, str]] = {("GET", "/search")}

API = "/api/v1"


def endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    """(need, method, OpenAPI path, concrete path, JSON body), as in `test_access.endpoints`."""
    del world
    token = f"{API}/user/tokens/1"
    star = f"{API}/user/starred/acme/private"
    logs = [
        ("user", ""),
        ("user", "?performer=alice"),
        ("users-admin", "?performer=nobody"),
        ("namespace-logs", "?namespace=acme"),
        ("admin", "?repository=acme/private"),
    ]
    return [
        (
            "own-account",
            "PUT",
            "/user/password",
            f"{API}/user/password",
            {"current_password": "x", "new_password": "y" * 8},
        ),
        ("own-account", "GET", "/user/cli-password", f"{API}/user/cli-password", None),
        ("user", "GET", "/user/tokens", f"{API}/user/tokens", None),
        ("own-account", "POST", "/user/tokens", f"{API}/user/tokens", {"title": "refused"}),
        ("user", "GET", "/user/tokens/{token_id}", token, None),
        ("own-account", "DELETE", "/user/tokens/{token_id}", token, None),
        ("user", "GET", "/user/starred", f"{API}/user/starred", None),
        ("star", "PUT", "/user/starred/{repository}", star, None),
        ("own-account", "DELETE", "/user/starred/{repository}", star, None),
        ("users-admin", "GET", "/users", f"{API}/users", None),
        ("users-admin", "POST", "/users", f"{API}/users", {"name": "refused"}),
        ("users-admin", "GET", "/users/{name}", f"{API}/users/bob", None),
        ("users-admin", "PATCH", "/users/{name}", f"{API}/users/bob", {"enabled": False}),
        *[
            (need, "GET", path, f"{API}{path}{query}", None)
            for path in ("/logs", "/logs/counts", "/logs/export")
            for need, query in logs
        ],
    ]
