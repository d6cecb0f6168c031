"""A real Keystone (v3) in front of a real single-node Swift, for the storage tests.

Debian's `keystone` runs on SQLite under the workdir: `keystone-manage db_sync` (then WAL mode,
or concurrent writes fail "database is locked"), `fernet_setup`, `credential_setup`,
`bootstrap`, then `keystone-wsgi-public`. The fixture registers Swift in the catalog, and makes a
domain of its own with a project and a `member` user in it, so the driver's project and domain
options are exercised (nothing is in the Default domain but the admin). The Swift proxy
(tests/storage/servers/swift.py) runs keystonemiddleware's authtoken + Swift's keystoneauth
(Debian `python3-keystonemiddleware`).

`server(workdir)` yields the `swift` location options (auth v3). A server that does not start
fails loudly with its logs: never a skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.storage.servers import swift

DRIVER = "swift"
PACKAGES = "keystone python3-keystonemiddleware"
ADMIN_PASSWORD = "dockyard-admin-secret"
DOMAIN = "dockyard-domain"
PROJECT = "dockyard-project"
USER = "dockyard-user"
PASSWORD = "dockyard-user-secret"
REGION = "RegionOne"
START_TIMEOUT = 120.0

_KEYSTONE_CONF = """\
[DEFAULT]
use_stderr = true

[database]
connection = sqlite:///{workdir}/keystone.db

[token]
provider = fernet
expiration = 7200

[fernet_tokens]
key_repository = {workdir}/fernet-keys

[fernet_receipts]
key_repository = {workdir}/fernet-receipts

[credential]
key_repository = {workdir}/credential-keys

[cache]
# In-process: without a cache every request re-reads roles, policies and revocations.
enabled = true
backend = dogpile.cache.memory

[identity]
# The fewest bcrypt rounds: every token request hashes a password (test passwords only).
password_hash_algorithm = bcrypt
password_hash_rounds = 4
"""

_KEYSTONE_FILTERS = """\
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {keystone}/v3
auth_url = {keystone}/v3
auth_type = password
username = admin
password = {admin_password}
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = {region}
delay_auth_decision = true
memcached_servers = 127.0.0.1:{memcached}
include_service_catalog = false
service_token_roles_required = true

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
"""


#: keystone-manage's own code path (keystone.cmd.cli.main) for the four setup commands in one
#: process: four `keystone-manage` runs spend ~10 s importing Keystone four times.
_PREPARE = """
import sqlite3, sys
from keystone.cmd import cli
config, database, url, password, region = sys.argv[1:6]
commands = [
    ["db_sync"],
    ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
    ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
    ["bootstrap", "--bootstrap-password", password, "--bootstrap-username", "admin",
     "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
     "--bootstrap-service-name", "keystone", "--bootstrap-region-id", region,
     "--bootstrap-admin-url", url, "--bootstrap-internal-url", url, "--bootstrap-public-url", url],
]
for number, command in enumerate(commands):
    argv = ["keystone-manage", "--config-file", config, *command]
    print("keystone-manage", command[0], flush=True)
    if number == 0:
        cli.main(argv=argv)
        # SQLite in WAL mode, or Keystone's concurrent writes fail "database is locked".
        with sqlite3.connect(database) as db:
            db.execute("PRAGMA journal_mode=WAL")
    else:
        cli.CONF(args=argv[1:], project="keystone")
        cli.CONF.command.cmd_class.main()
"""


def _prepare(workdir: Path, url: str) -> None:
    """The database, keys and admin of a new Keystone (run beside Swift's start)."""
    swift.require("keystone-manage", PACKAGES)
    result = subprocess.run(
        [
            swift.SYSTEM_PYTHON,
            "-c",
            _PREPARE,
            str(workdir / "keystone.conf"),
            str(workdir / "keystone.db"),
            f"{url}/v3",
            ADMIN_PASSWORD,
            REGION,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (workdir / "keystone-manage.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"keystone-manage failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-8000:]}")


def _token(client: httpx.Client, url: str, user: str, password: str, domain: str, project: str) -> str:
    response = client.post(
        f"{url}/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": {"name": domain}, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": {"name": domain}}},
            }
        },
    )
    response.raise_for_status()
    return response.headers["X-Subject-Token"]


def _wait_keystone(processes: swift.Processes, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            processes.check()
            try:
                client.get(f"{url}/v3").raise_for_status()
                return
            except httpx.HTTPError as exc:
                last = exc
                time.sleep(0.2)
    raise RuntimeError(f"Keystone did not answer in {START_TIMEOUT:.0f} s ({last!r})\n{processes.report()}")


def _populate(url: str, proxy_url: str) -> None:
    """Swift in the catalog; a domain with a project and a member user of it."""
    with httpx.Client(timeout=30) as client:
        headers = {"X-Auth-Token": _token(client, url, "admin", ADMIN_PASSWORD, "Default", "admin")}

        def create(path: str, kind: str, body: dict[str, Any]) -> str:
            response = client.post(f"{url}/v3/{path}", headers=headers, json={kind: body})
            response.raise_for_status()
            return str(response.json()[kind]["id"])

        service = create("services", "service", {"type": "object-store", "name": "swift"})
        for interface in ("public", "internal"):
            create(
                "endpoints",
                "endpoint",
                {
                    "service_id": service,
                    "interface": interface,
                    "region_id": REGION,
                    "url": f"{proxy_url}/v1/AUTH_$(project_id)s",
                },
            )
        domain = create("domains", "domain", {"name": DOMAIN})
        project = create("projects", "project", {"name": PROJECT, "domain_id": domain})
        user = create("users", "user", {"name": USER, "domain_id": domain, "password": PASSWORD})
        roles = client.get(f"{url}/v3/roles", headers=headers, params={"name": "member"})
        roles.raise_for_status()
        role = roles.json()["roles"][0]["id"]
        client.put(f"{url}/v3/projects/{project}/users/{user}/roles/{role}", headers=headers).raise_for_status()


def _authenticate(url: str) -> Any:
    def authenticate(client: httpx.Client) -> tuple[str, str]:
        token = _token(client, url, USER, PASSWORD, DOMAIN, PROJECT)
        response = client.get(f"{url}/v3/auth/catalog", headers={"X-Auth-Token": token})
        response.raise_for_status()
        for service in response.json()["catalog"]:
            if service["type"] == "object-store":
                for endpoint in service["endpoints"]:
                    if endpoint["interface"] == "public":
                        return str(endpoint["url"]), token
        raise KeyError("no object-store endpoint in the catalog")

    return authenticate


@contextlib.contextmanager
def server(workdir: Path) -> Iterator[dict[str, Any]]:
    """Run Keystone and a Keystone-authenticated SAIO under `workdir`; yield the `swift` options (v3)."""
    workdir.mkdir(parents=True, exist_ok=True)
    keystone_dir = workdir / "keystone"
    keystone_dir.mkdir(exist_ok=True)
    port = swift.free_port()
    url = f"http://127.0.0.1:{port}"
    (keystone_dir / "keystone.conf").write_text(_KEYSTONE_CONF.format(workdir=keystone_dir))
    # keystone-manage takes ~15 s: it runs while the Swift servers start.
    failure: list[BaseException] = []

    def prepare() -> None:
        try:
            _prepare(keystone_dir, url)
        except BaseException as exc:  # reported by the fixture's thread
            failure.append(exc)

    preparing = threading.Thread(target=prepare, name="keystone-prepare", daemon=True)
    preparing.start()
    memcached_port = swift.free_port()
    filters = _KEYSTONE_FILTERS.format(
        keystone=url, admin_password=ADMIN_PASSWORD, region=REGION, memcached=memcached_port
    )
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(
                swift.saio(workdir, auth="authtoken keystoneauth", auth_filters=filters, memcached_port=memcached_port)
            )
        finally:
            preparing.join(timeout=START_TIMEOUT * 2)
        if preparing.is_alive():
            raise RuntimeError("keystone-manage did not finish")
        if failure:
            raise failure[0]
        env = {**os.environ, "OS_KEYSTONE_CONFIG_FILES": str(keystone_dir / "keystone.conf")}
        cluster.processes.start(
            "keystone",
            [swift.require("keystone-wsgi-public", PACKAGES), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
        )
        _wait_keystone(cluster.processes, url)
        try:
            _populate(url, cluster.proxy_url)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot populate Keystone: {exc!r}\n{cluster.processes.report()}") from exc
        swift.wait_ready(cluster, _authenticate(url))
        yield {
            "driver": DRIVER,
            "container": swift.CONTAINER,
            "auth_url": f"{url}/v3",
            "auth_version": "3",
            "user": USER,
            "key": PASSWORD,
            "project": PROJECT,
            "user_domain": DOMAIN,
            "project_domain": DOMAIN,
            "region": REGION,
            "temp_url_key": swift.TEMP_URL_KEY,
            "segment_size": swift.SEGMENT_SIZE,
        }


def bad_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """The same location with a wrong password for the existing user."""
    return {**options, "key": "wrong-" + str(options["key"])}
