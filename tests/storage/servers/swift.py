"""A real single-node OpenStack Swift ("SAIO") with tempauth, for the storage tests.

Debian's `swift swift-proxy swift-account swift-container swift-object memcached` packages
provide the servers (they run on the system /usr/bin/python3, which has the `swift` package).
Everything lives under the fixture's workdir: one-device, one-replica rings built for freshly
chosen ports, the device directory, the four servers' configs (`user = root`,
`mount_check = false`, `workers = 0`: one process each) and a memcached of our own for tempauth.
The proxy pipeline carries tempurl, slo, dlo and copy, as a production proxy does.

Swift reads its cluster hash from the fixed path /etc/swift/swift.conf (the package installs one):
it is written only when absent or without a hash, never changed otherwise.

`server(workdir)` yields the `swift` location options (auth v1); `saio()` is shared with
tests/storage/servers/swift_keystone.py, which puts Keystone's authtoken + keystoneauth in front
instead. A server that does not start fails loudly with its logs: never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DRIVER = "swift"
CONTAINER = "dockyard-test"
ACCOUNT = "test"
USER = "tester"
KEY = "testing-key-0123"
TEMP_URL_KEY = "dockyard-temp-url-key"
#: Small segments so that tests cross segment boundaries with a few MiB.
SEGMENT_SIZE = 1024 * 1024
START_TIMEOUT = 60.0
SYSTEM_PYTHON = "/usr/bin/python3"
SWIFT_CONF = Path("/etc/swift/swift.conf")
PACKAGES = "swift swift-proxy swift-account swift-container swift-object memcached"
SERVERS = ("account", "container", "object")

_RINGS = """
import sys
from swift.common.ring import RingBuilder
workdir, ports = sys.argv[1], dict(zip(("account", "container", "object"), map(int, sys.argv[2:5])))
for kind, port in ports.items():
    builder = RingBuilder(4, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                     "device": "sdb1", "weight": 100.0, "meta": ""})
    builder.rebalance()
    builder.save(f"{workdir}/{kind}.builder")
    builder.get_ring().save(f"{workdir}/{kind}.ring.gz")
"""

_STORAGE_CONF = """\
[DEFAULT]
devices = {devices}
mount_check = false
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = root
swift_dir = {swift_dir}
recon_cache_path = {swift_dir}/cache
log_name = {kind}-server
log_level = INFO
disable_fallocate = true

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
"""

_PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = root
swift_dir = {swift_dir}
log_name = proxy-server
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl {auth} copy slo dlo \
proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
node_timeout = 10
conn_timeout = 2
recoverable_node_timeout = 10

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}
memcache_serialization_support = 2
memcache_max_connections = 4

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
# Swift throttles reads of many small segments by default (1 segment/s after the 10th); uploads
# in small parts are normal for a registry.
rate_limit_segments_per_sec = 0

[filter:dlo]
use = egg:swift#dlo

{auth_filters}
"""

_TEMPAUTH = """\
[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_{account}_{user} = {key} .admin
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, size: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError as exc:
        return f"(no log: {exc})"


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one server started by these fixtures (its whole process group)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Processes:
    """Servers started by one fixture, their logs, and stopping them all."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def check(self) -> None:
        """Fail with the logs when a server has exited."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.report()}")

    def report(self) -> str:
        return "\n".join(f"--- {name} log ---\n{log_tail(self.logs / f'{name}.log')}" for name in self.running)

    def stop_all(self) -> None:
        for process in reversed(self.running.values()):
            stop(process)


def require(binary: str, packages: str = PACKAGES) -> str:
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"`{binary}` is missing: apt-get install {packages} (scripts/test-deps)")
    return found


def ensure_swift_conf() -> None:
    """Swift reads its hash prefix/suffix from /etc/swift/swift.conf; write them only if absent."""
    text = SWIFT_CONF.read_text() if SWIFT_CONF.exists() else ""
    has_hash = any(
        line.split("=", 1)[0].strip() in {"swift_hash_path_suffix", "swift_hash_path_prefix"}
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith(("#", ";"))
    )
    if has_hash:
        return
    SWIFT_CONF.parent.mkdir(parents=True, exist_ok=True)
    addition = "[swift-hash]\nswift_hash_path_suffix = dockyard-tests\nswift_hash_path_prefix = dockyard-tests\n"
    if "[swift-hash]" in text:  # a section without values: add them right after its header
        text = text.replace("[swift-hash]\n", addition, 1)
    else:
        text = (text + "\n" if text else "") + addition
    SWIFT_CONF.write_text(text)


@dataclass
class Saio:
    processes: Processes
    proxy_url: str
    swift_dir: Path


@contextlib.contextmanager
def saio(workdir: Path, *, auth: str, auth_filters: str, memcached_port: int | None = None) -> Iterator[Saio]:
    """Rings, devices, memcached and the four Swift servers under `workdir`; the proxy runs the
    `auth` filters (their config sections in `auth_filters`). Readiness is the caller's to check
    (it needs credentials); every server has been started when this yields."""
    for binary in ("swift-proxy-server", "swift-account-server", "swift-container-server", "swift-object-server"):
        require(binary)
    memcached = require("memcached")
    ensure_swift_conf()
    swift_dir = workdir / "swift"
    devices = swift_dir / "devices"
    (devices / "sdb1").mkdir(parents=True, exist_ok=True)
    (swift_dir / "cache").mkdir(exist_ok=True)
    ports = {kind: free_port() for kind in (*SERVERS, "proxy")}
    ports["memcached"] = memcached_port or free_port()
    built = subprocess.run(
        [SYSTEM_PYTHON, "-c", _RINGS, str(swift_dir), *(str(ports[kind]) for kind in SERVERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building the Swift rings failed:\n{built.stdout}\n{built.stderr}")
    for kind in SERVERS:
        (swift_dir / f"{kind}-server.conf").write_text(
            _STORAGE_CONF.format(devices=devices, port=ports[kind], swift_dir=swift_dir, kind=kind)
        )
    (swift_dir / "proxy-server.conf").write_text(
        _PROXY_CONF.format(
            port=ports["proxy"], swift_dir=swift_dir, memcached=ports["memcached"], auth=auth, auth_filters=auth_filters
        )
    )
    processes = Processes(workdir / "logs")
    try:
        processes.start(
            "memcached",
            [
                memcached,
                "-l",
                "127.0.0.1",
                "-p",
                str(ports["memcached"]),
                "-U",
                "0",
                "-m",
                "32",
                "-t",
                "1",
                "-u",
                "root",
            ],
        )
        for kind in SERVERS:
            processes.start(kind, [f"swift-{kind}-server", str(swift_dir / f"{kind}-server.conf"), "-v"])
        processes.start("proxy", ["swift-proxy-server", str(swift_dir / "proxy-server.conf"), "-v"])
        yield Saio(processes, f"http://127.0.0.1:{ports['proxy']}", swift_dir)
    finally:
        processes.stop_all()


def wait_ready(saio: Saio, authenticate: Any) -> tuple[str, str]:
    """Until the proxy authenticates (`authenticate(client) -> (storage_url, token)`), creates the
    test container and stores and deletes an object; return the storage URL and token."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            saio.processes.check()
            try:
                client.get(f"{saio.proxy_url}/healthcheck").raise_for_status()
                storage_url, token = authenticate(client)
                headers = {"X-Auth-Token": token}
                client.put(f"{storage_url}/{CONTAINER}", headers=headers).raise_for_status()
                client.put(f"{storage_url}/{CONTAINER}/_ready", headers=headers, content=b"ready").raise_for_status()
                client.delete(f"{storage_url}/{CONTAINER}/_ready", headers=headers).raise_for_status()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                last = exc
                time.sleep(0.2)
                continue
            return storage_url, token
    raise RuntimeError(
        f"Swift did not become ready in {START_TIMEOUT:.0f} s (last error: {last!r})\n{saio.processes.report()}"
    )


def _tempauth(proxy_url: str) -> Any:
    def authenticate(client: httpx.Client) -> tuple[str, str]:
        response = client.get(f"{proxy_url}/auth/v1.0", headers={"X-Auth-User": f"{ACCOUNT}:{USER}", "X-Auth-Key": KEY})
        response.raise_for_status()
        return response.headers["X-Storage-Url"], response.headers["X-Auth-Token"]

    return authenticate


@contextlib.contextmanager
def server(workdir: Path) -> Iterator[dict[str, Any]]:
    """Run a tempauth SAIO under `workdir`; yield the `swift` location options (auth v1)."""
    workdir.mkdir(parents=True, exist_ok=True)
    auth_filters = _TEMPAUTH.format(account=ACCOUNT, user=USER, key=KEY)
    with saio(workdir, auth="tempauth", auth_filters=auth_filters) as cluster:
        wait_ready(cluster, _tempauth(cluster.proxy_url))
        yield {
            "driver": DRIVER,
            "container": CONTAINER,
            "auth_url": f"{cluster.proxy_url}/auth/v1.0",
            "auth_version": "1",
            "user": f"{ACCOUNT}:{USER}",
            "key": KEY,
            "temp_url_key": TEMP_URL_KEY,
            "segment_size": SEGMENT_SIZE,
        }


def bad_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """The same location with a wrong key for the existing user."""
    return {**options, "key": "wrong-" + str(options["key"])}


if __name__ == "__main__":  # manual check: start, print the options, stop on Enter
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as opts:
        sys.stdout.write(json.dumps(opts, indent=2) + "\n")
        sys.stdin.readline()
