"""The access table of organizations, members, teams, robots, default permissions, quotas and
repository permissions: merged into `test_access.py`, which checks that every principal listed under an
endpoint's need is refused.

Needs: `org-list` (an account, `org:admin`), `org-create` (a user, `user:admin`), `org-read`
(membership of acme or its administration, `org:admin`), `org-admin` (administration of acme,
`org:admin`), `own-robots` (a user for their own namespace, `org:admin`), `quota-set` (a superuser,
`super:user`); repository permissions need `admin` on acme/private, as in test_access.py.
"""

from __future__ import annotations

from typing import Any

from .support import World

UNAUTHORIZED = (401, "UNAUTHORIZED")
DENIED = (403, "DENIED")
SCOPE = (403, "INSUFFICIENT_SCOPE")

#: alice administers acme, but these tokens of hers lack org:admin; admin's token lacks super:user.
_SCOPED = {"alice_read": SCOPE, "alice_user": SCOPE, "alice_write": SCOPE, "admin_no_su": SCOPE}
_ORG_READ = {
    "anonymous": UNAUTHORIZED,
    "bob": DENIED,
    "robot": DENIED,
    "robot_reader": DENIED,
    **_SCOPED,
}

#: need -> {principal: (status, code)}, for the needs these endpoints add.
REFUSED: dict[str, dict[str, tuple[int, str]]] = {
    "org-list": {"anonymous": UNAUTHORIZED, **_SCOPED},
    "org-create": {"anonymous": UNAUTHORIZED, "robot": DENIED, "robot_reader": DENIED, **_SCOPED},
    "org-read": _ORG_READ,
    # carol ("member") is in a team of acme with the member role.
    "org-admin": {**_ORG_READ, "member": DENIED},
    "own-robots": {"anonymous": UNAUTHORIZED, "robot": DENIED, "robot_reader": DENIED, **_SCOPED},
    "quota-set": {
        "anonymous": UNAUTHORIZED,
        "bob": DENIED,
        "robot": DENIED,
        "member": DENIED,
        # alice administers acme: administrators cannot raise their own limit.
        "alice_all": DENIED,
        "admin_no_su": SCOPE,
    },
}
#: (method, OpenAPI path) of operations that need no right at all.
OPEN_TO_ALL: set[tuple[str, str]] = set()

ORG = "/api/v1/organizations/acme"
REPO = "/api/v1/repositories/acme/private"


def endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    """(need, method, OpenAPI path, concrete path, JSON body), as in `test_access.endpoints`."""
    del world
    org = "/organizations/{org}"
    team = f"{org}/teams/{{team}}"
    robot = f"{org}/robots/{{robot}}"
    permissions = "/repositories/{repository}/-/permissions"
    return [
        ("org-list", "GET", "/organizations", "/api/v1/organizations", None),
        ("org-create", "POST", "/organizations", "/api/v1/organizations", {"name": "refused-org"}),
        ("org-read", "GET", org, ORG, None),
        ("org-admin", "PATCH", org, ORG, {"email": "acme@example.com"}),
        ("org-admin", "DELETE", org, ORG, None),
        ("org-read", "GET", f"{org}/members", f"{ORG}/members", None),
        ("org-admin", "DELETE", f"{org}/members/{{member}}", f"{ORG}/members/carol", None),
        ("org-read", "GET", f"{org}/teams", f"{ORG}/teams", None),
        ("org-admin", "POST", f"{org}/teams", f"{ORG}/teams", {"name": "refused"}),
        ("org-read", "GET", team, f"{ORG}/teams/viewers", None),
        ("org-admin", "PATCH", team, f"{ORG}/teams/viewers", {"role": "admin"}),
        ("org-admin", "DELETE", team, f"{ORG}/teams/viewers", None),
        ("org-read", "GET", f"{team}/members", f"{ORG}/teams/viewers/members", None),
        ("org-admin", "PUT", f"{team}/members/{{member}}", f"{ORG}/teams/owners/members/bob", None),
        ("org-admin", "DELETE", f"{team}/members/{{member}}", f"{ORG}/teams/viewers/members/carol", None),
        ("org-admin", "GET", f"{org}/robots", f"{ORG}/robots", None),
        ("org-admin", "POST", f"{org}/robots", f"{ORG}/robots", {"name": "refused"}),
        ("org-admin", "GET", robot, f"{ORG}/robots/ci", None),
        ("org-admin", "POST", f"{robot}/regenerate", f"{ORG}/robots/ci/regenerate", None),
        ("org-admin", "DELETE", robot, f"{ORG}/robots/ci", None),
        ("org-admin", "GET", f"{org}/default-permissions", f"{ORG}/default-permissions", None),
        (
            "org-admin",
            "POST",
            f"{org}/default-permissions",
            f"{ORG}/default-permissions",
            {"subject": "bob", "role": "admin"},
        ),
        ("org-admin", "DELETE", f"{org}/default-permissions/{{rule_id}}", f"{ORG}/default-permissions/1", None),
        ("org-admin", "GET", f"{org}/quota", f"{ORG}/quota", None),
        ("quota-set", "PUT", f"{org}/quota", f"{ORG}/quota", {"limit": "1TiB"}),
        ("quota-set", "DELETE", f"{org}/quota", f"{ORG}/quota", None),
        ("own-robots", "GET", "/user/robots", "/api/v1/user/robots", None),
        ("own-robots", "POST", "/user/robots", "/api/v1/user/robots", {"name": "refused"}),
        ("own-robots", "GET", "/user/robots/{robot}", "/api/v1/user/robots/helper", None),
        ("own-robots", "POST", "/user/robots/{robot}/regenerate", "/api/v1/user/robots/helper/regenerate", None),
        ("own-robots", "DELETE", "/user/robots/{robot}", "/api/v1/user/robots/helper", None),
        ("admin", "GET", permissions, f"{REPO}/-/permissions", None),
        ("admin", "PUT", f"{permissions}/{{subject}}", f"{REPO}/-/permissions/bob", {"role": "admin"}),
        ("admin", "DELETE", f"{permissions}/{{subject}}", f"{REPO}/-/permissions/acme+reader", None),
    ]
