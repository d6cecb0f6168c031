"""Fixtures for the end-to-end tests.

The registry under test is `<repo>/.venv/bin/dockyard serve` (override the executable with
DOCKYARD_BIN). With DOCKYARD_E2E_REFERENCE=1 the same tests run against the reference registry,
Debian's `docker-registry` (CNCF Distribution 2.8), instead.

Client programs come from Debian: see helpers.DEBIAN_PACKAGES.

Dockyard refuses anonymous pushes: every Dockyard server started here gets the superuser
`tester` (created with the CLI on the server's data directory), the `client_env` auth file is
logged in with `skopeo login`, and podman/buildah from `container_tool` are logged in with their
own `login` command. The reference registry runs without authentication (no logins there).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from . import helpers
from .helpers import ContainerTool, RegistryServer


def pytest_configure(config: pytest.Config) -> None:
    # Also registered in pyproject; repeating it keeps this directory usable on its own.
    config.addinivalue_line("markers", "e2e: end-to-end tests driving real container clients")
    config.addinivalue_line("markers", "slow: long-running tests (still part of the full suite)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test fails, attach the tail of the registry's stderr to its report."""
    report = yield
    if report.when == "call" and report.failed:
        for name in ("registry", "fresh_registry"):
            server = getattr(item, "funcargs", {}).get(name)
            if isinstance(server, RegistryServer):
                alive = "running" if server.proc.poll() is None else f"exited {server.proc.returncode}"
                report.sections.append((f"{server.kind} registry stderr ({alive})", server.stderr_text() or "(empty)"))
    return report


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    missing = helpers.missing_tools()
    if missing:
        pytest.fail(
            f"missing programs {missing}; install with: apt-get install -y {helpers.DEBIAN_PACKAGES}",
            pytrace=False,
        )


def _start(workdir: Path) -> RegistryServer:
    try:
        server = helpers.start_registry(workdir)
    except RuntimeError as exc:
        pytest.fail(f"registry failed to start:\n{exc}", pytrace=False)
    try:
        helpers.create_test_superuser(server)
    except helpers.CommandFailed as exc:
        server.stop()
        pytest.fail(f"cannot create the test superuser:\n{exc}\n{server.stderr_text()}", pytrace=False)
    return server


def _stop(server: RegistryServer) -> None:
    crashed = server.proc.poll()
    server.stop()
    if crashed is not None:
        pytest.fail(
            f"{server.kind} registry exited with {crashed} during the tests\n{server.stderr_text()}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, e2e_tools: None) -> Iterator[RegistryServer]:
    """One registry for the session; tests use distinct repository names."""
    server = _start(tmp_path_factory.mktemp("registry"))
    yield server
    _stop(server)


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory, e2e_tools: None) -> Iterator[RegistryServer]:
    """A registry of its own (for measurements that must not see other tests' traffic)."""
    workdir = tmp_path_factory.mktemp("fresh-registry")
    server = _start(workdir)
    yield server
    _stop(server)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def client_env(tmp_path: Path, registry: RegistryServer) -> dict[str, str]:
    """skopeo environment (private auth file) logged in to `registry` as the test superuser."""
    env = helpers.client_env(tmp_path / "client")
    if registry.credentials:
        helpers.login(["skopeo"], registry, env, *registry.credentials)
    return env


@pytest.fixture
def container_tool(tmp_path: Path, registry: RegistryServer) -> Iterator[helpers.ToolFactory]:
    """Factory: container_tool("podman" | "buildah", name, login=True) with private storage and
    auth file, logged in to `registry` as the test superuser unless login=False."""
    made: list[ContainerTool] = []

    def make(tool: str, name: str, login: bool = True) -> ContainerTool:
        t = ContainerTool(tool, tmp_path / f"{tool}-{name}")
        made.append(t)
        if login and registry.credentials:
            t.login(registry, *registry.credentials)
        return t

    yield make
    for t in made:
        t.cleanup()


# --------------------------------------------------------------------------- base image cache


def cache_dir() -> Path:
    root = os.environ.get("DOCKYARD_TEST_CACHE") or Path.home() / ".cache" / "dockyard-tests"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


BASE_TAG = "base"


def _debian_rootfs(dest: Path) -> None:
    mirror = os.environ.get("DOCKYARD_E2E_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    if shutil.which("debootstrap") is None:
        raise helpers.CommandFailed("debootstrap is not installed")
    if os.geteuid() != 0:
        raise helpers.CommandFailed("debootstrap needs root")
    helpers.run(["debootstrap", "--variant=minbase", "bookworm", dest, mirror], timeout=300)


def _busybox_rootfs(dest: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise helpers.CommandFailed("busybox is not installed (apt-get install -y busybox-static)")
    for d in ("bin", "etc", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = helpers.run([busybox, "--list"]).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")


def build_base_layout(kind: str) -> Path:
    """An OCI layout holding a base image with a shell, built once and cached across sessions."""
    root = cache_dir()
    layout = root / f"base-{kind}-v1"
    with open(root / f".base-{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (layout / ".complete").exists():
            return layout
        work = root / f"building-{kind}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(layout, ignore_errors=True)
        try:
            rootfs = work / "rootfs"
            rootfs.mkdir(parents=True)
            (_debian_rootfs if kind == "debian" else _busybox_rootfs)(rootfs)
            tmp_layout = work / "layout"
            image = f"{tmp_layout}:{BASE_TAG}"
            helpers.run(["umoci", "init", "--layout", tmp_layout])
            helpers.run(["umoci", "new", "--image", image])
            helpers.run(["umoci", "insert", "--image", image, rootfs, "/"], timeout=300)
            helpers.run(
                [
                    "umoci",
                    "config",
                    "--image",
                    image,
                    "--os",
                    "linux",
                    "--architecture",
                    "amd64",
                    "--config.cmd",
                    "/bin/sh",
                    "--config.env",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                ]
            )
            helpers.run(["umoci", "gc", "--layout", tmp_layout])
            (tmp_layout / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            tmp_layout.rename(layout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return layout


@pytest.fixture(scope="session")
def base_image(e2e_tools: None) -> tuple[Path, str]:
    """(layout, tag) of a base image with /bin/sh: Debian bookworm minbase, or busybox.

    DOCKYARD_E2E_BASE=busybox skips debootstrap; when debootstrap fails (no mirror reachable,
    not root) the busybox image is used instead.
    """
    kind = os.environ.get("DOCKYARD_E2E_BASE", "debian")
    if kind == "debian":
        try:
            return build_base_layout("debian"), BASE_TAG
        except helpers.CommandFailed as exc:
            print(f"debootstrap base image unavailable, using busybox: {exc}", file=sys.stderr)
    return build_base_layout("busybox"), BASE_TAG
