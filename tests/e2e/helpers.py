"""Helpers for the end-to-end tests: start a registry, build OCI images, drive real clients.

Everything here talks to real programs (skopeo, podman, buildah, umoci, the registry under test)
over loopback. Every subprocess is bounded by a timeout; every failure carries the program's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ALL_MANIFEST_TYPES = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

# Debian packages providing the programs these tests drive.
DEBIAN_PACKAGES = "skopeo podman buildah umoci docker-registry debootstrap busybox-static"
REQUIRED_TOOLS = ("skopeo", "podman", "buildah", "umoci")

READY_TIMEOUT_S = 20.0
MiB = 1024 * 1024


class CommandFailed(AssertionError):
    pass


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a hard timeout; raise with its output when it fails.

    `input` is written to its stdin (otherwise stdin is /dev/null)."""
    args = [str(c) for c in cmd]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            f"timed out after {timeout}s: {' '.join(args)}\n"
            f"--- stdout ---\n{_tail(exc.stdout)}\n--- stderr ---\n{_tail(exc.stderr)}"
        ) from None
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"exit {proc.returncode}: {' '.join(args)}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
        )
    return proc


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


def missing_tools(tools: Sequence[str] = REQUIRED_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique_repo(prefix: str) -> str:
    """A fresh multi-segment repository name, so tests never share state."""
    return f"e2e/{prefix}-{secrets.token_hex(4)}"


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------- registry process


@dataclasses.dataclass
class RegistryServer:
    """A registry process (Dockyard or the reference) listening on 127.0.0.1:port."""

    kind: str  # "dockyard" or "reference"
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    stderr_path: Path
    #: (user, password) of the superuser the tests push and pull as; None for the reference (no auth).
    credentials: tuple[str, str] | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        """For httpx (`auth=registry.auth`): Basic credentials on every request, or none."""
        return self.credentials

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pgid(self) -> int:
        return self.proc.pid  # started with start_new_session=True: pid == pgid

    def stderr_text(self) -> str:
        try:
            return _tail(self.stderr_path.read_text(errors="replace"))
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.proc)


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop the process group we started (pid == pgid), TERM then KILL."""
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Workers of the group may outlive the leader: kill whatever is left in *our* group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def dockyard_binary() -> Path:
    return Path(os.environ.get("DOCKYARD_BIN", REPO_ROOT / ".venv" / "bin" / "dockyard"))


def use_reference() -> bool:
    return os.environ.get("DOCKYARD_E2E_REFERENCE", "") not in ("", "0", "false", "no")


REFERENCE_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


def _server_command(kind: str, workdir: Path, port: int, workers: int | None) -> list[str]:
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "reference":
        reference = shutil.which("docker-registry")
        if reference is None:
            raise RuntimeError("docker-registry not installed (apt-get install -y docker-registry)")
        config = workdir / "config.yml"
        config.write_text(REFERENCE_CONFIG.format(root=data_dir, port=port))
        return [reference, "serve", str(config)]
    binary = dockyard_binary()
    if not binary.exists():
        raise RuntimeError(f"dockyard executable not found at {binary} (set DOCKYARD_BIN)")
    cmd = [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd


#: Our own knobs share Dockyard's DOCKYARD_ prefix, but Dockyard reads every DOCKYARD_* variable as
#: a setting and rejects unknown ones: never pass these to the server.
TEST_ONLY_ENV = ("DOCKYARD_BIN", "DOCKYARD_TEST_CACHE")
TEST_ONLY_ENV_PREFIX = "DOCKYARD_E2E_"


def server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in TEST_ONLY_ENV and not k.startswith(TEST_ONLY_ENV_PREFIX)}


def start_registry(workdir: Path, *, kind: str | None = None, workers: int | None = None) -> RegistryServer:
    """Start a registry and wait until GET /v2/ answers (200 open, 401 asking for a login).

    Raise RuntimeError with its stderr when it does not."""
    kind = kind or ("reference" if use_reference() else "dockyard")
    workdir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(3):  # retry only when the port we picked was taken meanwhile
        port = free_port()
        cmd = _server_command(kind, workdir, port, workers)
        stderr_path = workdir / f"server-{attempt}.stderr"
        stdout_path = workdir / f"server-{attempt}.stdout"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=server_env(),
                start_new_session=True,
            )
        server = RegistryServer(kind, port, proc, workdir, stderr_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                status = httpx.get(f"{server.url}/v2/", timeout=2).status_code
                if status in (200, 401):
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        exited = proc.poll()
        server.stop()
        why = (
            f"exited with code {exited} before answering"
            if exited is not None
            else f"did not answer GET /v2/ with 200 or 401 within {READY_TIMEOUT_S:.0f}s (last status {status})"
        )
        last_error = (
            f"{kind} registry on {server.host} {why}\n"
            f"command: {' '.join(cmd)}\n--- stderr ---\n{server.stderr_text()}\n"
            f"--- stdout ---\n{_tail(stdout_path.read_text(errors='replace'))}"
        )
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(last_error)


# --------------------------------------------------------------------------- accounts and logins

#: The superuser the e2e tests push and pull as (one password per session).
TEST_USER = "tester"
TEST_PASSWORD = secrets.token_urlsafe(18)


def dockyard_cli(server: RegistryServer, *args: str, stdin: str | None = None) -> str:
    """`dockyard ARGS --data-dir D` on the (embedded SQLite) database of a running server; stdout."""
    cmd = [str(dockyard_binary()), *args, "--data-dir", str(server.data_dir)]
    full_env = server_env()
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, env=full_env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"timed out: {' '.join(cmd)}\n{_tail(exc.stdout)}\n{_tail(exc.stderr)}") from None
    if proc.returncode != 0:
        raise CommandFailed(
            f"exit {proc.returncode}: {' '.join(cmd)}\n"
            f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
        )
    return proc.stdout


def create_user(server: RegistryServer, name: str, password: str, *, superuser: bool = False) -> None:
    args = ["user", "create", name, "--password-stdin"]
    if superuser:
        args.append("--superuser")
    dockyard_cli(server, *args, stdin=password)


def create_test_superuser(server: RegistryServer) -> None:
    """Give a Dockyard server the superuser `tester` (nothing for the reference registry)."""
    if server.kind != "dockyard":
        return
    create_user(server, TEST_USER, TEST_PASSWORD, superuser=True)
    server.credentials = (TEST_USER, TEST_PASSWORD)


def login(
    tool: Sequence[str | os.PathLike[str]],
    registry: RegistryServer,
    env: Mapping[str, str],
    user: str,
    password: str,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`<tool> login --tls-verify=false -u USER --password-stdin HOST` (tool: skopeo, podman…)."""
    return run(
        [*tool, "login", "--tls-verify=false", "-u", user, "--password-stdin", registry.host],
        env=env,
        input=password,
        check=check,
        timeout=60,
    )


def auth_file_entry(env: Mapping[str, str], registry: RegistryServer) -> Any:
    """What the client's auth file (REGISTRY_AUTH_FILE) holds for the registry, or None."""
    path = Path(env["REGISTRY_AUTH_FILE"])
    if not path.exists() or not path.read_text().strip():
        return None
    auths = json.loads(path.read_text()).get("auths", {})
    for key in (registry.host, f"http://{registry.host}", f"https://{registry.host}"):
        if key in auths:
            return auths[key]
    return None


# --------------------------------------------------------------------------- RSS sampling


def process_group_rss(pgid: int) -> tuple[int, int]:
    """(sum of RSS in bytes, number of processes) over every process in the group."""
    total = 0
    count = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) != pgid:
                continue
            total += p.memory_info().rss
            count += 1
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total, count


class RssSampler:
    """Samples the process group's summed RSS every `interval` seconds in a thread."""

    def __init__(self, pgid: int, interval: float = 0.2) -> None:
        self.pgid = pgid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, n = process_group_rss(self.pgid)
            self.samples.append((time.monotonic(), rss, n))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max((s[1] for s in self.samples), default=0)


# --------------------------------------------------------------------------- OCI layouts


def random_files(root: Path, spec: Mapping[str, int]) -> None:
    """Create files of random content: {relative path: size}."""
    for rel, size in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def umoci_image(
    layout: Path,
    tag: str,
    workdir: Path,
    *,
    layers: Sequence[Mapping[str, int]] = ({"data/a.bin": 64 * 1024},),
    arch: str = "amd64",
    cmd: str = "/bin/true",
) -> str:
    """Build an image with umoci (one layer per mapping of random files); return manifest digest."""
    if not (layout / "index.json").exists():
        run(["umoci", "init", "--layout", layout])
    image = f"{layout}:{tag}"
    run(["umoci", "new", "--image", image])
    for i, files in enumerate(layers):
        src = workdir / f"{tag}-layer{i}"
        random_files(src, files)
        run(["umoci", "insert", "--image", image, src, f"/layer{i}"], timeout=300)
    config_cmd = ["umoci", "config", "--image", image, "--os", "linux", "--architecture", arch]
    config_cmd += ["--config.cmd", cmd, "--author", "dockyard-e2e"]
    run(config_cmd)
    run(["umoci", "gc", "--layout", layout])
    return str(layout_ref(layout, tag)["digest"])


def layout_index(layout: Path) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return index


def layout_ref(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor in the layout's index.json named `tag`."""
    for desc in layout_index(layout)["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(desc)
    raise AssertionError(f"tag {tag!r} not in {layout}/index.json: {layout_index(layout)}")


def blob_path(layout: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":", 1)
    return layout / "blobs" / alg / hexpart


def layout_blob(layout: Path, digest: str) -> bytes:
    data = blob_path(layout, digest).read_bytes()
    assert sha256_bytes(data) == digest, f"blob {digest} in {layout} is corrupt"
    return data


def write_layout_blob(layout: Path, data: bytes) -> str:
    digest = sha256_bytes(data)
    path = blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def set_layout_refs(layout: Path, refs: Mapping[str, Mapping[str, Any]]) -> None:
    """Rewrite index.json so it names exactly `refs` ({tag: descriptor})."""
    manifests = []
    for tag, desc in refs.items():
        d = dict(desc)
        d["annotations"] = {**d.get("annotations", {}), "org.opencontainers.image.ref.name": tag}
        manifests.append(d)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def image_tree(layout: Path, digest: str) -> dict[str, Any]:
    """Walk a manifest or index in a layout, verifying every blob; return the digest tree.

    {"digest": d, "mediaType": mt, "config": c, "layers": [...]} for a manifest,
    {"digest": d, "mediaType": mt, "children": [tree, ...]} for an index.
    """
    raw = layout_blob(layout, digest)
    doc = json.loads(raw)
    media_type = doc.get("mediaType", "")
    if "manifests" in doc:
        return {
            "digest": digest,
            "mediaType": media_type,
            "children": [image_tree(layout, d["digest"]) for d in doc["manifests"]],
        }
    layout_blob(layout, doc["config"]["digest"])
    for layer in doc["layers"]:
        data_path = blob_path(layout, layer["digest"])
        assert sha256_file(data_path) == layer["digest"], f"layer {layer['digest']} corrupt"
        assert data_path.stat().st_size == layer["size"]
    return {
        "digest": digest,
        "mediaType": media_type,
        "config": doc["config"]["digest"],
        "layers": [layer["digest"] for layer in doc["layers"]],
    }


def write_big_tar_layer(path: Path, payload_size: int) -> tuple[str, int]:
    """Write an uncompressed tar layer with one file of random bytes; return (digest, size)."""

    class RandomReader:
        def __init__(self, n: int) -> None:
            self.left = n

        def read(self, size: int = -1) -> bytes:
            if size < 0 or size > self.left:
                size = self.left
            size = min(size, 4 * MiB)
            self.left -= size
            return os.urandom(size)

    info = tarfile.TarInfo("big/random.bin")
    info.size = payload_size
    info.mode = 0o644
    info.mtime = int(time.time())
    with (
        open(path, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=4 * MiB) as tar,
    ):
        tar.addfile(info, RandomReader(payload_size))
    return sha256_file(path), path.stat().st_size


# --------------------------------------------------------------------------- client tools


def client_env(tmp: Path) -> dict[str, str]:
    """Environment for skopeo/podman/buildah: private auth file and temp dir."""
    tmp.mkdir(parents=True, exist_ok=True)
    auth = tmp / "auth.json"
    if not auth.exists():
        auth.write_text("{}")
    return {"REGISTRY_AUTH_FILE": str(auth), "TMPDIR": str(tmp)}


def skopeo_copy(src: str, dst: str, env: Mapping[str, str], *extra: str, timeout: float = 600) -> None:
    run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, src, dst],
        env=env,
        timeout=timeout,
    )


def skopeo_raw(ref: str, env: Mapping[str, str]) -> bytes:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", ref],
        capture_output=True,
        timeout=120,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise CommandFailed(f"skopeo inspect --raw {ref} failed:\n{_tail(proc.stderr)}")
    return proc.stdout


class ContainerTool:
    """podman or buildah with private storage under `base`."""

    def __init__(self, tool: str, base: Path) -> None:
        self.tool = tool
        self.base = base
        self.env = client_env(base / "tmp")
        # podman refuses a runroot longer than 50 characters: keep it short, under /tmp.
        self.runroot = Path(tempfile.mkdtemp(prefix=f"dy-{tool[:3]}-", dir="/tmp"))
        self.prefix = [
            tool,
            "--root",
            str(base / "root"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
        ]
        if tool == "podman":
            self.prefix += ["--events-backend", "file", "--cgroup-manager", "cgroupfs"]

    def __call__(self, *args: str | os.PathLike[str], timeout: float = 600) -> str:
        return run([*self.prefix, *args], env=self.env, timeout=timeout).stdout

    def import_oci(self, layout: Path, tag: str, name: str) -> None:
        """Copy an OCI layout image into this storage under `name` (e.g. localhost/x/y:tag).

        `podman pull oci:PATH` names the image after PATH, which fails for paths that are not
        valid references (e.g. ~/.cache): skopeo writes to the storage with an explicit name.
        """
        store = f"containers-storage:[vfs@{self.base / 'root'}+{self.runroot}]{name}"
        run(["skopeo", "copy", f"oci:{layout}:{tag}", store], env=self.env, timeout=600)

    def login(self, registry: RegistryServer, user: str, password: str, *, check: bool = True) -> str:
        """`podman|buildah login` into this tool's own auth file (REGISTRY_AUTH_FILE)."""
        return login(self.prefix, registry, self.env, user, password, check=check).stdout

    def cleanup(self) -> None:
        if self.tool == "buildah":
            run([*self.prefix, "rm", "--all"], env=self.env, timeout=120, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


class ToolFactory(Protocol):
    def __call__(self, tool: str, name: str, login: bool = True) -> ContainerTool: ...


# --------------------------------------------------------------------------- HTTP checks


def get_manifest(registry: RegistryServer, repo: str, ref: str) -> httpx.Response:
    r = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": ALL_MANIFEST_TYPES},
        timeout=30,
        auth=registry.auth,
    )
    assert r.status_code == 200, f"GET manifest {repo}:{ref} -> {r.status_code} {r.text[:500]}"
    return r


def check_manifest(registry: RegistryServer, repo: str, ref: str, expected_digest: str) -> bytes:
    """GET by tag and by digest; the bytes must hash to the digest the server states."""
    by_ref = get_manifest(registry, repo, ref)
    body = by_ref.content
    assert sha256_bytes(body) == expected_digest, (
        f"{repo}:{ref} served bytes hashing to {sha256_bytes(body)}, expected {expected_digest}"
    )
    header = by_ref.headers.get("Docker-Content-Digest")
    assert header in (None, expected_digest), f"Docker-Content-Digest {header} != {expected_digest}"
    media_type = json.loads(body).get("mediaType")
    if media_type:
        assert by_ref.headers.get("Content-Type", "").split(";")[0].strip() == media_type
    by_digest = get_manifest(registry, repo, expected_digest)
    assert by_digest.content == body
    return body


def stream_blob_digest(registry: RegistryServer, repo: str, digest: str, *, timeout: float = 600) -> tuple[str, int]:
    """GET a blob (following redirects), hashing while streaming; return (digest, size)."""
    h = hashlib.sha256()
    size = 0
    with httpx.stream(
        "GET",
        f"{registry.url}/v2/{repo}/blobs/{digest}",
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=10),
        auth=registry.auth,
    ) as r:
        assert r.status_code == 200, f"GET blob {digest} -> {r.status_code}"
        for chunk in r.iter_raw(MiB):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def check_blobs(registry: RegistryServer, repo: str, manifest: Mapping[str, Any]) -> None:
    """Every blob a manifest names is served with matching digest and size."""
    for desc in [manifest["config"], *manifest["layers"]]:
        got, size = stream_blob_digest(registry, repo, desc["digest"])
        assert got == desc["digest"], f"blob {desc['digest']} served content hashing to {got}"
        assert size == desc["size"], f"blob {desc['digest']} served {size} bytes, expected {desc['size']}"


def iter_file(path: Path, chunk: int = MiB) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(chunk):
            yield data


def _upload_url(base: str, location: str, digest: str) -> httpx.URL:
    url = httpx.URL(base).join(location)
    return url.copy_merge_params({"digest": digest})


def start_upload(client: httpx.Client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, f"POST upload -> {r.status_code} {r.text[:500]}"
    location = r.headers.get("Location")
    assert location, "upload POST without Location"
    return str(location)


def push_blob_monolithic(client: httpx.Client, repo: str, data: bytes) -> str:
    """POST + PUT with the whole body; returns the digest."""
    digest = sha256_bytes(data)
    location = start_upload(client, repo)
    r = client.put(
        _upload_url(str(client.base_url), location, digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, f"PUT blob {digest} -> {r.status_code} {r.text[:500]}"
    return digest


def push_blob_streamed(client: httpx.Client, repo: str, chunks: Iterator[bytes], digest: str) -> None:
    """POST, one PATCH with a chunked (streamed) body, then PUT ?digest= (what skopeo does)."""
    location = start_upload(client, repo)
    r = client.patch(
        httpx.URL(str(client.base_url)).join(location),
        content=chunks,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 202, f"PATCH upload -> {r.status_code} {r.text[:500]}"
    location = r.headers.get("Location") or location
    r = client.put(_upload_url(str(client.base_url), location, digest))
    assert r.status_code == 201, f"PUT ?digest={digest} -> {r.status_code} {r.text[:500]}"
    assert r.headers.get("Docker-Content-Digest") in (None, digest)


def put_manifest(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str) -> str:
    r = client.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
    assert r.status_code == 201, f"PUT manifest {repo}:{ref} -> {r.status_code} {r.text[:500]}"
    digest = sha256_bytes(body)
    assert r.headers.get("Docker-Content-Digest") in (None, digest)
    return digest


def get_blob_bytes(registry: RegistryServer, repo: str, digest: str) -> bytes:
    """GET a small blob and check its digest."""
    r = httpx.get(f"{registry.url}/v2/{repo}/blobs/{digest}", follow_redirects=True, timeout=60, auth=registry.auth)
    assert r.status_code == 200, f"GET blob {digest} -> {r.status_code}"
    assert sha256_bytes(r.content) == digest
    return r.content


# --------------------------------------------------------------------------- Dockyard with a configuration file


def start_configured_dockyard(
    workdir: Path, config: Path, *, workers: int | None = None, port: int | None = None
) -> RegistryServer:
    """`dockyard serve --config CONFIG --data-dir WORKDIR/data` on 127.0.0.1; wait until GET /v2/ answers.

    `port`: listen there (a restart on the port clients already know); when it is taken, or not
    given, a free port. Raise RuntimeError with the server's output when it does not come up."""
    binary = dockyard_binary()
    if not binary.exists():
        raise RuntimeError(f"dockyard executable not found at {binary} (set DOCKYARD_BIN)")
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(3):
        chosen = port if (port is not None and attempt == 0) else free_port()
        cmd = [str(binary), "serve", "--host", "127.0.0.1", "--port", str(chosen)]
        cmd += ["--config", str(config), "--data-dir", str(data_dir)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        stamp = f"{int(time.time() * 1000)}-{attempt}"
        stderr_path = workdir / f"server-{stamp}.stderr"
        stdout_path = workdir / f"server-{stamp}.stdout"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=server_env(),
                start_new_session=True,
            )
        server = RegistryServer("dockyard", chosen, proc, workdir, stderr_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{server.url}/v2/", timeout=2).status_code
                if status in (200, 401):
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        exited = proc.poll()
        server.stop()
        why = f"exited with code {exited}" if exited is not None else f"no 200/401 on GET /v2/ (last {status})"
        last_error = (
            f"dockyard on {server.host} {why}\ncommand: {' '.join(cmd)}\n--- stderr ---\n{server.stderr_text()}\n"
            f"--- stdout ---\n{_tail(stdout_path.read_text(errors='replace'))}"
        )
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(last_error)
