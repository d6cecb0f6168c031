"""GcsStore against a real fake-gcs-server (temporary: until the shared conformance suite runs it)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dockyard.config.settings import GcsStorage
from dockyard.storage import AccessRefused, ObjectMissing, Part, StorageError, upload_key
from dockyard.storage.gcs import GcsStore, _translate
from tests.storage.servers import fake_gcs

pytestmark = pytest.mark.integration

T = TypeVar("T")
MiB = 1024 * 1024


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating bytes (so misplaced ranges show)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


async def stream(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def collect(iterator: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in iterator])


async def all_keys(store: GcsStore, prefix: str) -> set[str]:
    return {key async for key in store.keys(prefix)}


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with fake_gcs.server(tmp_path_factory.mktemp("gcs")) as opts:
        yield opts


def make(options: dict[str, Any], **extra: Any) -> GcsStore:
    return GcsStore("gcs", GcsStorage(**{**options, **extra}), retry_timeout=2)


@pytest.fixture
def store(options: dict[str, Any], request: pytest.FixtureRequest) -> GcsStore:
    return make(options, prefix=f"t/{request.node.name}")


def test_put_read_size_delete_keys(store: GcsStore) -> None:
    async def main() -> None:
        await store.put("blobs/a", b"hello")
        await store.put("blobs/sub/b", b"")
        await store.put("other/c", b"x")
        assert await collect(store.read("blobs/a")) == b"hello"
        assert await collect(store.read("blobs/sub/b")) == b""
        assert await store.size("blobs/a") == 5
        assert await store.size("blobs/sub/b") == 0
        assert await all_keys(store, "blobs/") == {"blobs/a", "blobs/sub/b"}
        assert await all_keys(store, "") == {"blobs/a", "blobs/sub/b", "other/c"}
        await store.delete("blobs/a")
        await store.delete("blobs/a")  # absent: no error
        assert await store.size("blobs/a") is None
        assert await all_keys(store, "blobs/") == {"blobs/sub/b"}
        assert store.local_path("blobs/sub/b") is None

    run(main())


def test_ranges(store: GcsStore) -> None:
    data = pattern(3 * MiB + 17)

    async def main() -> None:
        await store.write("r", stream(data))
        assert await collect(store.read("r", 0, 1)) == data[:1]
        assert await collect(store.read("r", 1000, 5000)) == data[1000:6000]
        assert await collect(store.read("r", 2 * MiB)) == data[2 * MiB :]
        assert await collect(store.read("r", len(data) - 1)) == data[-1:]
        assert await collect(store.read("r", len(data))) == b""
        assert await collect(store.read("r", 5, 0)) == b""
        chunks = [chunk async for chunk in store.read("r")]
        assert b"".join(chunks) == data
        assert max(len(chunk) for chunk in chunks) <= store.read_chunk
        assert len(chunks) >= 3  # streamed, not one buffer
        with pytest.raises(StorageError):
            await collect(store.read("r", len(data) - 10, 20))

    run(main())


def test_missing(store: GcsStore) -> None:
    async def main() -> None:
        with pytest.raises(ObjectMissing):
            await collect(store.read("nope"))
        with pytest.raises(ObjectMissing):
            await collect(store.read("nope", 10, 10))
        with pytest.raises(ObjectMissing):
            await collect(store.read("nope", 0, 0))
        with pytest.raises(ObjectMissing):
            await store.copy("nope", "target")
        assert await store.size("nope") is None
        await store.delete("nope")
        assert await all_keys(store, "nope") == set()

    run(main())


def test_copy(store: GcsStore) -> None:
    data = pattern(2 * MiB + 3, seed=1)

    async def main() -> None:
        await store.write("src", stream(data))
        await store.copy("src", "dst/copied")
        assert await collect(store.read("dst/copied")) == data
        assert await collect(store.read("src")) == data

    run(main())


def test_streamed_write_20_mib(store: GcsStore) -> None:
    data = pattern(20 * MiB + 12345, seed=2)

    async def main() -> None:
        assert await store.write("big", stream(data, 256 * 1024)) == len(data)
        assert await store.size("big") == len(data)
        assert hashlib.sha256(await collect(store.read("big"))).digest() == hashlib.sha256(data).digest()

    run(main())


def test_write_memory_is_bounded(options: dict[str, Any]) -> None:
    """With 1 MiB chunks, streaming 20 MiB keeps a few MiB in memory, never the object."""
    store = make(options, prefix="t/memory")
    store.upload_chunk_size = MiB
    piece = pattern(64 * 1024, seed=3)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(320):  # 20 MiB
            yield piece

    async def main() -> int:
        return await store.write("m", body())

    tracemalloc.start()
    try:
        size = run(main())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 20 * MiB
    assert peak < 8 * MiB, peak
    assert run(store.size("m")) == 20 * MiB


def test_write_of_exact_chunk_multiple(options: dict[str, Any]) -> None:
    store = make(options, prefix="t/exact")
    store.upload_chunk_size = 256 * 1024
    data = pattern(4 * 256 * 1024, seed=4)

    async def main() -> None:
        assert await store.write("e", stream(data, 100_000)) == len(data)
        assert await collect(store.read("e")) == data
        assert await store.write("e1", stream(data[: 256 * 1024])) == 256 * 1024
        assert await collect(store.read("e1")) == data[: 256 * 1024]

    run(main())


def test_interrupted_write_leaves_nothing(options: dict[str, Any]) -> None:
    store = make(options, prefix="t/interrupted")
    store.upload_chunk_size = 256 * 1024

    async def failing(size: int) -> AsyncIterator[bytes]:
        async for chunk in stream(pattern(size)):
            yield chunk
        raise ConnectionResetError("client went away")

    async def main() -> None:
        await store.put("gone", b"old")
        for size in (100, 3 * MiB):
            with pytest.raises(ConnectionResetError):
                await store.write("gone", failing(size))
            assert await collect(store.read("gone")) == b"old"
            with pytest.raises(ConnectionResetError):
                await store.write(f"never-{size}", failing(size))
            assert await store.size(f"never-{size}") is None

    run(main())


async def body_of(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in stream(data):
        yield chunk


def test_upload_parts_of_odd_sizes(store: GcsStore) -> None:
    sizes = [1, 100 * 1024, 7 * MiB, 0, 5]
    pieces = [pattern(size, seed=10 + i) for i, size in enumerate(sizes)]
    upload_id = "0e6b3c1a-5b1f-4c55-9d0e-2c8d6d9f0001"

    async def main() -> None:
        handle = await store.begin_upload(upload_id)
        parts: list[Part] = []
        for index, piece in enumerate(pieces):
            if index == 2:
                # A request whose result is never recorded (the client went away, the offset did
                # not advance): its component is scrap, not part of the upload.
                await store.write_part(upload_id, handle, parts, body_of(pattern(4321, seed=99)))
            parts = await store.write_part(upload_id, handle, parts, body_of(piece))
        assert [p.size for p in parts] == sizes
        assert [p.number for p in parts] == [1, 2, 3, 4, 5]
        assert all(p.token.startswith(upload_key(upload_id) + "/") for p in parts if p.size)
        expected = b"".join(pieces)
        stream_back = store.read_upload(upload_id, handle, parts)
        assert stream_back is not None
        assert await collect(stream_back) == expected
        key = await store.complete_upload(upload_id, handle, parts, "blobs/sha256/ab/abcdef")
        assert key == "blobs/sha256/ab/abcdef"
        assert await store.size(key) == len(expected)
        assert await collect(store.read(key)) == expected
        assert await all_keys(store, "uploads/") == set()

    run(main())


def test_upload_with_many_parts_composes_in_rounds(store: GcsStore) -> None:
    upload_id = "0e6b3c1a-5b1f-4c55-9d0e-2c8d6d9f0002"
    pieces = [pattern(1 + (i * 37) % 300, seed=i) for i in range(1100 // 10)]  # 110 parts: 3 rounds

    async def main() -> None:
        handle = await store.begin_upload(upload_id)
        parts: list[Part] = []
        for piece in pieces:
            parts = await store.write_part(upload_id, handle, parts, body_of(piece))
        key = await store.complete_upload(upload_id, handle, parts, "blobs/many")
        assert await collect(store.read(key)) == b"".join(pieces)
        assert await all_keys(store, "uploads/") == set()

    run(main())


def test_empty_upload(store: GcsStore) -> None:
    upload_id = "0e6b3c1a-5b1f-4c55-9d0e-2c8d6d9f0003"

    async def main() -> None:
        handle = await store.begin_upload(upload_id)
        stream_back = store.read_upload(upload_id, handle, [])
        assert stream_back is not None
        assert await collect(stream_back) == b""
        assert await store.complete_upload(upload_id, handle, [], "blobs/empty") == "blobs/empty"
        assert await store.size("blobs/empty") == 0
        parts = await store.write_part(upload_id, handle, [], body_of(b""))
        assert parts == [Part(1, 0, "")]
        assert await store.complete_upload(upload_id, handle, parts, "blobs/empty2") == "blobs/empty2"
        assert await store.size("blobs/empty2") == 0

    run(main())


def test_abort(store: GcsStore) -> None:
    upload_id = "0e6b3c1a-5b1f-4c55-9d0e-2c8d6d9f0004"

    async def main() -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], body_of(b"abc"))
        await store.write_part(upload_id, handle, parts, body_of(b"scrap"))
        parts = await store.write_part(upload_id, handle, parts, body_of(b"def"))
        assert len(await all_keys(store, upload_key(upload_id) + "/")) == 3
        await store.abort_upload(upload_id, handle, parts)
        assert await all_keys(store, "uploads/") == set()
        await store.abort_upload(upload_id, handle, parts)  # again: nothing left, no error

    run(main())


def test_lost_component_is_missing(store: GcsStore) -> None:
    upload_id = "0e6b3c1a-5b1f-4c55-9d0e-2c8d6d9f0005"

    async def main() -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], body_of(b"abc"))
        await store.delete(parts[0].token)
        stream_back = store.read_upload(upload_id, handle, parts)
        assert stream_back is not None
        with pytest.raises(ObjectMissing):
            await collect(stream_back)
        with pytest.raises(ObjectMissing):
            await store.complete_upload(upload_id, handle, parts, "blobs/lost")
        assert await store.size("blobs/lost") is None
        with pytest.raises(StorageError):  # a token naming another upload's component
            await store.complete_upload(upload_id, handle, [Part(1, 3, "uploads/other/part-1-x")], "blobs/x")

    run(main())


def test_prefix_isolates_keys(options: dict[str, Any]) -> None:
    bare = make(options)
    prefixed = make(options, prefix="/iso/lated/")

    async def main() -> None:
        await prefixed.put("blobs/k", b"v")
        assert await bare.size("iso/lated/blobs/k") == 1
        assert await all_keys(prefixed, "") == {"blobs/k"}
        assert "iso/lated/blobs/k" in await all_keys(bare, "iso/")

    run(main())


def test_signed_url(options: dict[str, Any], tmp_path: Path) -> None:
    anonymous = {**options, "anonymous": True, "credentials_file": None}
    assert run(make(anonymous).signed_url("x", expires_in=60)) is None  # anonymous: cannot sign

    key_file = _service_account_file(tmp_path, token_uri="http://127.0.0.1:9/token")
    signing = make({**options, "anonymous": False, "credentials_file": key_file, "project": "p"})
    url = run(signing.signed_url("blobs/signed", expires_in=300))
    assert url is not None
    assert url.startswith(f"{options['endpoint_url']}/{options['bucket']}/blobs/signed?")
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in url
    assert "X-Goog-Expires=300" in url
    run(make(options).put("blobs/signed", b"signed bytes"))
    assert httpx.get(url).content == b"signed bytes"  # the emulator ignores the signature


def test_refused_credentials(options: dict[str, Any], tmp_path: Path) -> None:
    """fake-gcs-server accepts any token, so the refusal comes from a local token endpoint."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    token_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=token_server.serve_forever, daemon=True)
    thread.start()
    try:
        token_uri = f"http://127.0.0.1:{token_server.server_address[1]}/token"
        key_file = _service_account_file(tmp_path, token_uri=token_uri)
        store = make({**options, "anonymous": False, "credentials_file": key_file, "project": "p"})

        async def main() -> None:
            with pytest.raises(AccessRefused):
                await store.size("x")
            with pytest.raises(AccessRefused):
                await collect(store.read("x"))
            with pytest.raises(AccessRefused):
                await store.put("x", b"1")
            with pytest.raises(AccessRefused):
                await all_keys(store, "")

        run(main())
    finally:
        token_server.shutdown()
        token_server.server_close()
        thread.join()


def test_status_translation() -> None:
    from google.api_core import exceptions as api_exceptions  # noqa: PLC0415

    assert isinstance(_translate(api_exceptions.Forbidden("no"), "k"), AccessRefused)
    assert isinstance(_translate(api_exceptions.Unauthorized("no"), "k"), AccessRefused)
    assert isinstance(_translate(api_exceptions.NotFound("no"), "k"), ObjectMissing)
    missing_bucket = _translate(api_exceptions.NotFound("no"), "k", missing=False)
    assert type(missing_bucket) is StorageError
    assert type(_translate(api_exceptions.ServiceUnavailable("busy"), "k")) is StorageError
    assert _translate(KeyError("bug"), "k") is None


def test_bad_credentials_hook(options: dict[str, Any]) -> None:
    assert fake_gcs.bad_credentials(options) is None


def test_stopped_server_is_a_storage_error(tmp_path: Path) -> None:
    with fake_gcs.server(tmp_path / "gcs") as opts:
        store = make(opts, prefix="stopped")
        run(store.put("k", b"v"))
        parts = run(store.write_part("u1", "", [], body_of(b"abc")))
    store = make(opts, prefix="stopped")
    store.retry_timeout = 0.5
    assert store.retry_timeout == 0.5
    operations: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.size("k"),
        lambda: collect(store.read("k")),
        lambda: store.put("k2", b"v"),
        lambda: store.write("k3", stream(pattern(20 * MiB))),
        lambda: store.delete("k"),
        lambda: store.copy("k", "k4"),
        lambda: all_keys(store, ""),
        lambda: store.write_part("u1", "", parts, body_of(b"def")),
        lambda: collect(store.read_upload("u1", "", parts)),
        lambda: store.complete_upload("u1", "", parts, "blobs/k"),
        lambda: store.abort_upload("u1", "", parts),
    ]
    for operation in operations:
        with pytest.raises(StorageError) as caught:
            run(operation())
        assert not isinstance(caught.value, ObjectMissing | AccessRefused)


def _service_account_file(directory: Path, *, token_uri: str) -> Path:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "dockyard@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = directory / "key.json"
    path.write_text(json.dumps(info))
    return path
