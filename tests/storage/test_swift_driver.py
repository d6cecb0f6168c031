"""The Swift driver against a real SAIO, with tempauth and with Keystone v3 (temporary: until
tests/storage/test_conformance.py runs it)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dockyard.config.settings import SwiftStorage
from dockyard.storage.protocol import AccessRefused, ObjectMissing, Part, StorageError
from dockyard.storage.swift import SwiftStore

from .servers import swift, swift_keystone

pytestmark = pytest.mark.integration

T = TypeVar("T")
MiB = 1024 * 1024
SEGMENT = swift.SEGMENT_SIZE


@pytest.fixture(scope="module", params=["tempauth", "keystone"])
def options(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    module = swift if request.param == "tempauth" else swift_keystone
    with module.server(tmp_path_factory.mktemp(f"swift-{request.param}")) as opts:
        opts["_module"] = module
        yield opts


def run(options: dict[str, Any], body: Callable[[SwiftStore], Awaitable[T]], **extra: Any) -> T:
    """Run `body(store)` on a fresh event loop, closing the store's HTTP client before it ends."""
    settings = {k: v for k, v in {**options, **extra}.items() if not k.startswith("_")}

    async def main() -> T:
        store = SwiftStore("sw", SwiftStorage.model_validate(settings))
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def key() -> str:
    return f"t/{secrets.token_hex(6)}"


async def raw_names(store: SwiftStore, prefix: str) -> list[str]:
    return [name async for name in store._list(prefix)]


def test_put_read_range_size_delete(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        k = key()
        assert await store.size(k) is None
        await store.put(k, b"hello world")
        assert await store.size(k) == 11
        assert await collect(store.read(k)) == b"hello world"
        assert await collect(store.read(k, 6)) == b"world"
        assert await collect(store.read(k, 2, 3)) == b"llo"
        assert await collect(store.read(k, 11)) == b""
        assert await collect(store.read(k, 3, 0)) == b""
        with pytest.raises(StorageError):
            await collect(store.read(k, 5, 100))
        await store.put(k, b"")
        assert await store.size(k) == 0
        assert await collect(store.read(k)) == b""
        await store.delete(k)
        await store.delete(k)
        assert await store.size(k) is None

    run(options, body)


def test_missing_object(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        k = key()
        for args in [(), (0, 10), (5,), (0, 0)]:
            with pytest.raises(ObjectMissing):
                await collect(store.read(k, *args))
        assert await store.size(k) is None
        await store.delete(k)
        with pytest.raises(ObjectMissing):
            await store.copy(k, key())

    run(options, body)


def test_keys_and_prefix(options: dict[str, Any]) -> None:
    base = f"p{secrets.token_hex(4)}"

    async def body(store: SwiftStore) -> None:
        for name in ("a/1", "a/2", "b/1"):
            await store.put(f"{base}/{name}", b"x")
        await store.write(f"{base}/b/large", pieces(os.urandom(SEGMENT + 5), 65536))
        assert sorted([k async for k in store.keys(f"{base}/a/")]) == [f"{base}/a/1", f"{base}/a/2"]
        assert sorted([k async for k in store.keys(f"{base}/")]) == [
            f"{base}/a/1",
            f"{base}/a/2",
            f"{base}/b/1",
            f"{base}/b/large",
        ]
        assert [k async for k in store.keys(f"{base}/zzz")] == []
        # segments are never listed, even from the root of the location
        everything = [k async for k in store.keys("")]
        assert f"{base}/b/large" in everything
        assert not [k for k in everything if ".segments" in k]

    run(options, body, prefix="tenant/one/")

    async def unprefixed(store: SwiftStore) -> list[str]:
        return sorted([k async for k in store.keys(f"tenant/one/{base}/a/")])

    assert run(options, unprefixed) == [f"tenant/one/{base}/a/1", f"tenant/one/{base}/a/2"]


def test_copy_server_side(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        source, target = key(), key()
        data = os.urandom(3 * MiB + 5)
        await store.put(source, data)
        await store.copy(source, target)
        assert await collect(store.read(target)) == data
        await store.put(source, b"changed")
        assert await store.size(target) == len(data)
        await store.copy(target, target)
        assert await store.size(target) == len(data)

    run(options, body)


def test_copy_large_object_owns_its_segments(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        source, target = key(), key()
        data = os.urandom(3 * SEGMENT + 17)
        assert await store.write(source, pieces(data, 100_000)) == len(data)
        await store.copy(source, target)
        # the copy has segments of its own: deleting the source leaves it whole
        await store.delete(source)
        assert await store.size(source) is None
        assert await collect(store.read(target)) == data
        assert await raw_names(store, f".segments/objects/{source}/") == []
        # overwriting a large object removes the segments only the old one referenced
        before = await raw_names(store, f".segments/objects/{target}/")
        assert len(before) == 4
        await store.put(target, b"small now")
        assert await raw_names(store, f".segments/objects/{target}/") == []
        await store.delete(target)

    run(options, body)


def test_nested_manifests(options: dict[str, Any]) -> None:
    """More segments than a manifest may list: nested manifests, copied and deleted whole."""

    async def body(store: SwiftStore) -> None:
        store._max_segments = 3
        source, target = key(), key()
        data = os.urandom(7 * SEGMENT + 3)
        await store.write(source, pieces(data, 300_000))
        assert await collect(store.read(source)) == data
        assert (
            await collect(store.read(source, 2 * SEGMENT - 5, SEGMENT + 10)) == data[2 * SEGMENT - 5 : 3 * SEGMENT + 5]
        )
        await store.copy(source, target)
        await store.delete(source)
        assert await raw_names(store, f".segments/objects/{source}/") == []
        assert await collect(store.read(target)) == data
        await store.delete(target)
        assert await raw_names(store, f".segments/objects/{target}/") == []

    run(options, body)


def test_signed_url(options: dict[str, Any]) -> None:
    k = f"blobs/sha256/ab/{secrets.token_hex(32)}"
    large = f"blobs/sha256/cd/{secrets.token_hex(32)}"
    data = os.urandom(2 * SEGMENT + 1)

    async def body(store: SwiftStore) -> tuple[str, str]:
        await store.put(k, b"signed bytes")
        await store.write(large, pieces(data, MiB))
        url = await store.signed_url(k, expires_in=300)
        large_url = await store.signed_url(large, expires_in=300)
        assert url is not None
        assert large_url is not None
        return url, large_url

    url, large_url = run(options, body, prefix="pfx")
    assert "temp_url_sig=" in url
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"signed bytes"
    assert httpx.get(large_url).content == data
    tampered = url.replace("temp_url_sig=", "temp_url_sig=0")
    assert httpx.get(tampered).status_code == 401
    assert httpx.put(url, content=b"x").status_code == 401
    expired = run(options, lambda store: store.signed_url(k, expires_in=-5), prefix="pfx")
    assert expired is not None
    assert httpx.get(expired).status_code == 401


def test_streamed_write(options: dict[str, Any]) -> None:
    data = os.urandom(20 * MiB + 12345)

    async def body(store: SwiftStore) -> None:
        k = key()
        tracemalloc.start()
        try:
            assert await store.write(k, pieces(data, 64 * 1024 + 7)) == len(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * MiB, f"write held {peak} bytes"
        segments = await raw_names(store, f".segments/objects/{k}/")
        assert len(segments) == 21  # 1 MiB segments
        assert await store.size(k) == len(data)
        hasher = hashlib.sha256()
        tracemalloc.start()
        try:
            async for chunk in store.read(k):
                hasher.update(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * MiB, f"read held {peak} bytes"
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
        start = SEGMENT - 10
        assert await collect(store.read(k, start, 5 * MiB)) == data[start : start + 5 * MiB]
        assert await collect(store.read(k, len(data) - 3)) == data[-3:]
        # small and empty writes, overwriting: the old segments go
        assert await store.write(k, pieces(b"small", 2)) == 5
        assert await collect(store.read(k)) == b"small"
        assert await raw_names(store, f".segments/objects/{k}/") == []
        assert await store.write(k, pieces(b"", 1)) == 0
        assert await store.size(k) == 0
        # exactly one segment's worth, and a little more
        for size in (SEGMENT, SEGMENT + 1):
            blob = os.urandom(size)
            assert await store.write(k, pieces(blob, 100_000)) == size
            assert await collect(store.read(k)) == blob
        await store.delete(k)
        assert await raw_names(store, f".segments/objects/{k}/") == []

    run(options, body)


def test_failed_write_leaves_old_object(options: dict[str, Any]) -> None:
    class Interrupted(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(SEGMENT)
        yield os.urandom(SEGMENT // 2)
        raise Interrupted

    async def body(store: SwiftStore) -> None:
        k = key()
        await store.put(k, b"old")
        with pytest.raises(Interrupted):
            await store.write(k, broken())
        assert await collect(store.read(k)) == b"old"
        assert await raw_names(store, f".segments/objects/{k}/") == []
        other = key()
        with pytest.raises(Interrupted):
            await store.write(other, broken())
        assert await store.size(other) is None
        assert await raw_names(store, f".segments/objects/{other}/") == []

    run(options, body)


def test_upload_parts(options: dict[str, Any]) -> None:
    upload_id = secrets.token_hex(16)
    bodies = [b"\x01", os.urandom(100 * 1024), os.urandom(3 * MiB), b""]

    async def body(store: SwiftStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts: list[Part] = []
        stream = store.read_upload(upload_id, handle, parts)
        assert stream is not None
        assert await collect(stream) == b""
        for index, data in enumerate(bodies):
            parts = await store.write_part(upload_id, handle, parts, pieces(data, 65536))
            if index == 1:
                # A request whose result the caller does not record: scrap.
                await store.write_part(upload_id, handle, parts, pieces(os.urandom(MiB + 3), 65536))
            stream = store.read_upload(upload_id, handle, parts)
            assert stream is not None
            assert await collect(stream) == b"".join(bodies[: index + 1])
        assert [p.size for p in parts] == [len(b) for b in bodies]
        assert [p.number for p in parts] == [1, 2, 3, 4]
        # one more discarded request right before completion
        await store.write_part(upload_id, handle, parts, pieces(b"scrap", 2))
        final = await store.complete_upload(upload_id, handle, parts, "blobs/sha256/00/whatever")
        expected = b"".join(bodies)
        assert await store.size(final) == len(expected)
        assert await collect(store.read(final)) == expected
        assert await collect(store.read(final, MiB - 1, 100 * 1024 + 2)) == expected[MiB - 1 : MiB + 100 * 1024 + 1]
        assert final in [k async for k in store.keys("blobs/")]
        assert not [k async for k in store.keys(f"uploads/{upload_id}")]
        # 1 B + 100 KiB + 3 x 1 MiB segments; the scrap is gone
        assert len(await raw_names(store, f".segments/uploads/{upload_id}/")) == 5
        # an abort after completion leaves the blob whole; completing again changes nothing
        await store.abort_upload(upload_id, handle, parts)
        assert await collect(store.read(final)) == expected
        assert await store.complete_upload(upload_id, handle, parts, "x") == final
        assert await collect(store.read(final)) == expected
        # a copy survives the deletion of the completed blob, which takes its segments along
        copied = key()
        await store.copy(final, copied)
        await store.delete(final)
        assert await raw_names(store, f".segments/uploads/{upload_id}/") == []
        assert await collect(store.read(copied)) == expected
        await store.delete(copied)

    run(options, body)


def test_upload_empty_and_abort(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        empty = secrets.token_hex(16)
        handle = await store.begin_upload(empty)
        final = await store.complete_upload(empty, handle, [], "x")
        assert await store.size(final) == 0
        assert await collect(store.read(final)) == b""
        zero = await store.write_part(empty, handle, [], pieces(b"", 1))
        assert zero == [Part(1, 0, "[]")]

        aborted = secrets.token_hex(16)
        handle = await store.begin_upload(aborted)
        parts = await store.write_part(aborted, handle, [], pieces(b"abc", 1))
        await store.write_part(aborted, handle, parts, pieces(os.urandom(SEGMENT + 1), 65536))  # scrap
        assert len(await raw_names(store, f".segments/uploads/{aborted}/")) == 3
        await store.abort_upload(aborted, handle, parts)
        assert await raw_names(store, f".segments/uploads/{aborted}/") == []
        await store.abort_upload(aborted, handle, parts)  # twice: fine

    run(options, body)


def test_expired_token_is_renewed(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        k = key()
        await store.put(k, b"abc")
        session = store._session
        assert session is not None
        # a revoked or unknown token: the next request authenticates again
        store._session = type(session)(session.storage_url, session.token + "x", session.expires)
        assert await collect(store.read(k)) == b"abc"
        store._session = type(session)(session.storage_url, session.token + "x", session.expires)
        assert await store.size(k) == 3
        await store.delete(k)

    run(options, body)


def test_bad_credentials_are_refused(options: dict[str, Any]) -> None:
    bad = options["_module"].bad_credentials(options)

    async def body(store: SwiftStore) -> None:
        with pytest.raises(AccessRefused):
            await store.size(key())
        with pytest.raises(AccessRefused):
            await collect(store.read(key()))
        with pytest.raises(AccessRefused):
            await store.write(key(), pieces(os.urandom(2 * SEGMENT), MiB))
        with pytest.raises(AccessRefused):
            await store.begin_upload(secrets.token_hex(16))

    run(bad, body)


def test_missing_container_is_storage_error(options: dict[str, Any]) -> None:
    async def body(store: SwiftStore) -> None:
        with pytest.raises(StorageError) as raised:
            await store.put(key(), b"x")
        assert not isinstance(raised.value, ObjectMissing)
        with pytest.raises(StorageError):
            [k async for k in store.keys("")]

    run(options, body, container=f"absent-{secrets.token_hex(4)}")


def test_unreachable_server_is_storage_error(tmp_path: Path) -> None:
    """A server that stopped: every operation is a StorageError (never ObjectMissing)."""
    with swift.server(tmp_path / "stopped") as opts:
        k = key()
        run(opts, lambda store: store.put(k, b"x"))
    for operation in (
        lambda store: store.size(k),
        lambda store: collect(store.read(k)),
        lambda store: store.put(k, b"y"),
        lambda store: store.write(k, pieces(os.urandom(2 * SEGMENT), MiB)),
        lambda store: store.delete(k),
        lambda store: store.begin_upload(secrets.token_hex(16)),
    ):
        with pytest.raises(StorageError) as raised:
            run(opts, operation)
        assert not isinstance(raised.value, ObjectMissing | AccessRefused)


def test_keystone_needs_a_project() -> None:
    with pytest.raises(ValueError, match="project"):
        SwiftStore(
            "sw",
            SwiftStorage.model_validate(
                {"driver": "swift", "container": "c", "auth_url": "http://127.0.0.1:1/v3", "user": "u", "key": "k"}
            ),
        )
