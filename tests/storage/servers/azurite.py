"""A real Azurite (Azure Blob emulator, npm `azurite`) for the storage tests.

`server(workdir)` starts `azurite-blob` on a free 127.0.0.1 port, creates the container and yields
the location's options; it stops the emulator (its whole process group) afterwards. Azurite is
installed from tests/storage/node (package.json + package-lock.json) with `npm ci` when its
node_modules is missing. A server that does not start fails loudly with its log: never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DRIVER = "azure"
NODE_DIR = Path(__file__).resolve().parent.parent / "node"
AZURITE = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
#: Azurite's well-known development key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "dockyard-test"
START_TIMEOUT = 60.0


def install() -> Path:
    """Install Azurite under tests/storage/node if it is not there; return the azurite-blob path."""
    if AZURITE.exists():
        return AZURITE
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to install Azurite (tests/storage/node): install Node.js 20 and npm")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not AZURITE.exists():
        raise RuntimeError(f"npm ci in {NODE_DIR} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return AZURITE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
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


def _create_container(endpoint: str) -> None:
    """Create the test container (exists already: fine)."""
    import asyncio  # noqa: PLC0415

    from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415
    from azure.storage.blob.aio import ContainerClient  # noqa: PLC0415

    async def create() -> None:
        async with ContainerClient(
            endpoint, CONTAINER, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}, retry_total=0
        ) as client:
            with contextlib.suppress(ResourceExistsError):
                await client.create_container()

    asyncio.run(create())


@contextlib.contextmanager
def server(workdir: Path, port: int | None = None) -> Iterator[dict[str, Any]]:
    """Run Azurite with its data under `workdir`; yield the `azure` location options.

    Give the `port` of an earlier run on the same `workdir` to restart that store.
    """
    binary = install()
    data = workdir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "azurite.log"
    port = port or _free_port()
    endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(data),
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_ready(process, port, log_path)
        try:
            _create_container(endpoint)
        except Exception as exc:
            raise RuntimeError(
                f"cannot create the Azurite container: {exc}\n--- azurite log ---\n{_log(log_path)}"
            ) from exc
        yield {
            "driver": DRIVER,
            "container": CONTAINER,
            "account_name": ACCOUNT,
            "account_key": ACCOUNT_KEY,
            "endpoint_url": endpoint,
        }
    finally:
        _stop(process)


def bad_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """The same location with a wrong (well-formed) account key."""
    return {**options, "account_key": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="}


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    url = f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with {process.returncode}\n--- azurite log ---\n{_log(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (unsigned requests are refused): it is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    _stop(process)
    raise RuntimeError(
        f"Azurite did not answer on port {port} in {START_TIMEOUT:.0f} s\n--- azurite log ---\n{_log(log_path)}"
    )


def _log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-8000:]
    except OSError as exc:
        return f"(no log: {exc})"
