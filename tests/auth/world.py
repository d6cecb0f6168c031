"""The seeded world the access-control tests share: one server, its principals and repositories.

Principals (built with the `dockyard` CLI, as docs/identity.md describes):

| key          | who                                                    | credential            |
|--------------|--------------------------------------------------------|-----------------------|
| anonymous    | nobody                                                 | none                  |
| ns_owner     | user `alice`, acting on `alice/…` repositories          | password              |
| org_owner    | user `acmeowner`, `--owner` of org `acme` (owners team) | password              |
| org_admin    | user `orgadm` in team `acme/admins` (role admin)        | password              |
| team_creator | user `tcreator` in team `acme/creators` (role creator)  | password              |
| team_read    | user `tread` in team `acme/readers` (member), team read | password              |
| team_write   | user `twrite` in team `acme/writers` (member), team write| password             |
| robot_read   | robot `acme+robread`, granted read                      | robot token           |
| robot_write  | robot `acme+robwrite`, granted write                    | robot token           |
| app_token    | user `wapp`, granted write                              | `$app:` + app token   |
| cli_password | user `wcli`, granted write                              | encrypted CLI password|
| superuser    | user `root` (`--superuser`)                             | password              |
| disabled     | user `wdis`, granted write, then `user disable`         | password              |

Repositories: `acme/matrix-pub` (public) and `acme/matrix-priv` (private) carry the grants above;
`alice/matrix-pub` / `alice/matrix-priv` are alice's; `acme/mount-src` (public) is the source of
mounts; `acme/secret` (private, nobody but superusers) holds blobs nobody else may read.
Every target repository holds an image tagged `v1`.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .helpers import AuthServer, Image, TokenClient, parse_challenge

ORG = "acme"
OWNER_NS = "alice"
MOUNT_SRC = f"{ORG}/mount-src"
SECRET_REPO = f"{ORG}/secret"

PRINCIPALS = (
    "anonymous",
    "ns_owner",
    "org_owner",
    "org_admin",
    "team_creator",
    "team_read",
    "team_write",
    "robot_read",
    "robot_write",
    "app_token",
    "cli_password",
    "superuser",
    "disabled",
)

#: Settings of the shared server besides the database: a failed-login limit high enough for the
#: disabled-user cells; debug logging and the access log on, so the log-hygiene test sees the most.
MAIN_CONFIG = {
    "auth": {"max_failed_logins": 100000},
    "log": {"level": "debug", "access_log": True},
}


def password() -> str:
    return "pw-" + secrets.token_urlsafe(18)


@dataclasses.dataclass
class World:
    server: AuthServer
    service: str
    #: principal key -> (basic user, basic secret); None for anonymous
    creds: dict[str, tuple[str, str] | None]
    #: every secret handed out (passwords, tokens); the log must hold none of them
    secrets: list[str]
    #: user name -> password for every user created
    passwords: dict[str, str]
    root: TokenClient
    anon: httpx.Client
    images: dict[str, Image]

    @property
    def url(self) -> str:
        return self.server.url

    def target(self, principal: str, visibility: str) -> str:
        ns = OWNER_NS if principal == "ns_owner" else ORG
        return f"{ns}/matrix-{'pub' if visibility == 'public' else 'priv'}"

    def namespace_for_create(self, principal: str) -> str:
        return OWNER_NS if principal == "ns_owner" else ORG

    def new_user(self, prefix: str, *, superuser: bool = False) -> tuple[str, str]:
        """A fresh user (for tests that change it)."""
        name = f"{prefix}{secrets.token_hex(3)}"
        pw = password()
        self.server.create_user(name, pw, superuser=superuser)
        self.passwords[name] = pw
        self.secrets.append(pw)
        return name, pw

    def client(self, principal: str) -> TokenClient:
        c = self.creds[principal]
        return TokenClient(self.url, *(c if c else (None, None)))

    def close(self) -> None:
        self.root.close()
        self.anon.close()


def build_world(base: Path) -> World:
    srv = AuthServer.create(base, MAIN_CONFIG)
    try:
        return _populate(srv)
    except BaseException:
        srv.close()
        raise


def _parallel(calls: list[Callable[[], object]]) -> list[object]:
    """Run independent CLI calls two at a time (each is a ~1-2 s process start)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def _populate(srv: AuthServer) -> World:
    users = ("root", "alice", "acmeowner", "orgadm", "tcreator", "tread", "twrite", "wapp", "wcli", "wdis")
    passwords = {name: password() for name in users}
    teams = (
        ("admins", "admin", "orgadm"),
        ("creators", "creator", "tcreator"),
        ("readers", "member", "tread"),
        ("writers", "member", "twrite"),
    )
    repos = (
        (f"{ORG}/matrix-pub", True),
        (f"{ORG}/matrix-priv", False),
        (f"{OWNER_NS}/matrix-pub", True),
        (f"{OWNER_NS}/matrix-priv", False),
        (MOUNT_SRC, True),
        (SECRET_REPO, False),
    )

    # phase 1: users; phase 2: the org and everything hanging off users/org; phase 3: memberships and grants
    _parallel([lambda n=name: srv.create_user(n, passwords[n], superuser=n == "root") for name in users])
    srv.cli("org", "create", ORG, "--owner", "acmeowner")
    phase2: list[Callable[[], object]] = [
        lambda: srv.create_robot(ORG, "robread"),
        lambda: srv.create_robot(ORG, "robwrite"),
        lambda: srv.app_token("wapp", "matrix"),
        lambda: srv.cli_password("wcli"),
    ]
    phase2 += [lambda t=team, r=role: srv.cli("team", "create", ORG, t, "--role", r) for team, role, _ in teams]
    phase2 += [lambda n=name, p=pub: srv.cli("repo", "create", n, *(["--public"] if p else [])) for name, pub in repos]
    results = _parallel(phase2)
    (robread, robread_token), (robwrite, robwrite_token) = results[0], results[1]  # type: ignore[misc]
    app, cli_pw = str(results[2]), str(results[3])
    all_secrets: list[str] = [*passwords.values(), robread_token, robwrite_token, app, cli_pw]

    phase3: list[Callable[[], object]] = [
        lambda t=team, m=member: srv.cli("team", "add", ORG, t, m) for team, _, member in teams
    ]
    for repo in (f"{ORG}/matrix-pub", f"{ORG}/matrix-priv"):
        for subject, role in (
            (f"{ORG}/readers", "read"),
            (f"{ORG}/writers", "write"),
            (robread, "read"),
            (robwrite, "write"),
            ("wapp", "write"),
            ("wcli", "write"),
            ("wdis", "write"),
        ):
            phase3.append(lambda r=repo, s=subject, ro=role: srv.cli("perm", "grant", r, s, ro))
    _parallel(phase3)
    srv.cli("user", "disable", "wdis")

    creds: dict[str, tuple[str, str] | None] = {
        "anonymous": None,
        "ns_owner": ("alice", passwords["alice"]),
        "org_owner": ("acmeowner", passwords["acmeowner"]),
        "org_admin": ("orgadm", passwords["orgadm"]),
        "team_creator": ("tcreator", passwords["tcreator"]),
        "team_read": ("tread", passwords["tread"]),
        "team_write": ("twrite", passwords["twrite"]),
        "robot_read": (robread, robread_token),
        "robot_write": (robwrite, robwrite_token),
        "app_token": ("$app", app),
        "cli_password": ("wcli", cli_pw),
        "superuser": ("root", passwords["root"]),
        "disabled": ("wdis", passwords["wdis"]),
    }
    assert set(creds) == set(PRINCIPALS)

    anon = httpx.Client(base_url=srv.url, timeout=60, follow_redirects=False)
    r = anon.get(f"/v2/{ORG}/matrix-priv/manifests/v1")
    assert r.status_code == 401, f"anonymous GET of a private repository must be 401, got {r.status_code}"
    service = parse_challenge(r.headers.get("www-authenticate")).service
    assert service, f"challenge without service: {r.headers.get('www-authenticate')!r}"

    root = TokenClient(srv.url, "root", passwords["root"])
    images = {}
    for repo in (f"{ORG}/matrix-pub", f"{ORG}/matrix-priv", f"{OWNER_NS}/matrix-pub", f"{OWNER_NS}/matrix-priv"):
        images[repo] = root.push_image(repo, "v1")
    return World(srv, service, creds, all_secrets, passwords, root, anon, images)
