"""The Azure driver against a real Azurite (temporary: until tests/storage/test_conformance.py runs it)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import requests

from dockyard.config.settings import AzureStorage
from dockyard.storage import azure as driver
from dockyard.storage.azure import BLOCK_SIZE, AzureStore
from dockyard.storage.protocol import AccessRefused, ObjectMissing, Part, StorageError

from .servers import azurite

pytestmark = pytest.mark.integration

T = TypeVar("T")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with azurite.server(tmp_path_factory.mktemp("azurite")) as opts:
        yield opts


def run(options: dict[str, Any], body: Callable[[AzureStore], Coroutine[Any, Any, T]], **extra: Any) -> T:
    """Run `body(store)` on a fresh event loop."""

    async def main() -> T:
        store = AzureStore("az", AzureStorage.model_validate({**options, **extra}))
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


def test_put_read_range_size_delete(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
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
    async def body(store: AzureStore) -> None:
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

    async def body(store: AzureStore) -> None:
        for name in ("a/1", "a/2", "b/1"):
            await store.put(f"{base}/{name}", b"x")
        assert sorted([k async for k in store.keys(f"{base}/a/")]) == [f"{base}/a/1", f"{base}/a/2"]
        assert sorted([k async for k in store.keys(f"{base}/")]) == [f"{base}/a/1", f"{base}/a/2", f"{base}/b/1"]
        assert [k async for k in store.keys(f"{base}/zzz")] == []

    run(options, body, prefix="tenant/one/")

    async def unprefixed(store: AzureStore) -> list[str]:
        return sorted([k async for k in store.keys(f"tenant/one/{base}/a/")])

    assert run(options, unprefixed) == [f"tenant/one/{base}/a/1", f"tenant/one/{base}/a/2"]


def test_copy_server_side(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
        source, target = key(), key()
        data = os.urandom(3 * MiB + 5)
        await store.put(source, data)
        await store.copy(source, target)
        assert await collect(store.read(target)) == data
        await store.put(source, b"changed")
        assert await store.size(target) == len(data)

    run(options, body)


def test_signed_url(options: dict[str, Any]) -> None:
    k = f"blobs/sha256/ab/{secrets.token_hex(32)}"

    async def body(store: AzureStore) -> str:
        await store.put(k, b"signed bytes")
        url = await store.signed_url(k, expires_in=300)
        assert url is not None
        return url

    url = run(options, body, prefix="pfx")
    assert "sig=" in url
    assert "sp=r" in url
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"signed bytes"
    tampered = url.replace("sp=r", "sp=rw")
    assert httpx.get(tampered).status_code == 403
    assert httpx.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403


def test_streamed_write(options: dict[str, Any]) -> None:
    data = os.urandom(20 * MiB + 12345)

    async def body(store: AzureStore) -> None:
        k = key()
        tracemalloc.start()
        try:
            assert await store.write(k, pieces(data, 64 * 1024 + 7)) == len(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2.5 * BLOCK_SIZE, f"write held {peak} bytes"
        assert await store.size(k) == len(data)
        sizes: list[int] = []
        hasher = hashlib.sha256()
        async for chunk in store.read(k):
            sizes.append(len(chunk))
            hasher.update(chunk)
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
        assert max(sizes) <= 4 * MiB
        start = BLOCK_SIZE - 10
        assert await collect(store.read(k, start, 5 * MiB)) == data[start : start + 5 * MiB]
        # small and empty writes, overwriting
        assert await store.write(k, pieces(b"small", 2)) == 5
        assert await collect(store.read(k)) == b"small"
        assert await store.write(k, pieces(b"", 1)) == 0
        assert await store.size(k) == 0

    run(options, body)


def test_read_resumes_after_a_dropped_connection(options: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5 * MiB + 3)
    opened: list[int] = []
    real_get = driver._get

    def flaky_get(*args: Any) -> requests.Response:
        response = real_get(*args)
        opened.append(args[3])
        if len(opened) == 1:
            real_iter = response.iter_content

            def iter_content(size: int) -> Iterator[bytes]:
                pieces = real_iter(size)
                yield next(pieces)
                yield next(pieces)
                raise requests.exceptions.ChunkedEncodingError("connection dropped")

            response.iter_content = iter_content  # type: ignore[method-assign,assignment]
        return response

    monkeypatch.setattr(driver, "_get", flaky_get)

    async def body(store: AzureStore) -> None:
        k = key()
        await store.put(k, data)
        assert await collect(store.read(k, 7)) == data[7:]
        assert opened == [7, 7 + 2 * driver.READ_PIECE]
        # The object changes between the dropped GET and the resumed one: the read fails.
        opened.clear()
        stream = store.read(k)
        first = await anext(stream)
        await store.put(k, b"replaced")
        with pytest.raises(StorageError):
            await collect(stream)
        assert len(first) == driver.READ_PIECE

    run(options, body)


def test_read_memory_is_bounded(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
        k = key()
        await store.write(k, pieces(os.urandom(12 * MiB), MiB))
        tracemalloc.start()
        try:
            total = 0
            async for chunk in store.read(k):
                total += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert total == 12 * MiB
        assert peak < 4 * MiB, f"read held {peak} bytes"

    run(options, body)


def test_failed_write_leaves_old_object(options: dict[str, Any]) -> None:
    class Interrupted(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(BLOCK_SIZE)
        yield os.urandom(BLOCK_SIZE)
        raise Interrupted

    async def body(store: AzureStore) -> None:
        k = key()
        await store.put(k, b"old")
        with pytest.raises(Interrupted):
            await store.write(k, broken())
        assert await collect(store.read(k)) == b"old"
        with pytest.raises(Interrupted):
            await store.write(key(), broken())

    run(options, body)


def test_upload_parts(options: dict[str, Any]) -> None:
    upload_id = secrets.token_hex(16)
    bodies = [b"\x01", os.urandom(100 * 1024), os.urandom(7 * MiB), b""]

    async def body(store: AzureStore) -> None:
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
        assert final in [k async for k in store.keys("blobs/")]
        assert not [k async for k in store.keys(f"uploads/{upload_id}")]

    run(options, body)


def test_upload_empty_and_abort(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
        empty = secrets.token_hex(16)
        handle = await store.begin_upload(empty)
        final = await store.complete_upload(empty, handle, [], "x")
        assert await store.size(final) == 0

        aborted = secrets.token_hex(16)
        handle = await store.begin_upload(aborted)
        parts = await store.write_part(aborted, handle, [], pieces(b"abc", 1))
        await store.abort_upload(aborted, handle, parts)
        assert await store.size(handle) is None
        await store.abort_upload(aborted, handle, parts)  # twice: fine

    run(options, body)


def test_bad_credentials_are_refused(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
        with pytest.raises(AccessRefused):
            await store.put(key(), b"x")
        with pytest.raises(AccessRefused):
            await store.size(key())
        with pytest.raises(AccessRefused):
            await collect(store.read(key()))
        with pytest.raises(AccessRefused):
            [k async for k in store.keys("")]

    run(azurite.bad_credentials(options), body)


def test_unreachable_server_is_storage_error(tmp_path: Path) -> None:
    with azurite.server(tmp_path) as opts:
        pass  # stopped on exit

    async def body(store: AzureStore) -> None:
        for operation in (
            store.put(key(), b"x"),
            store.size(key()),
            collect(store.read(key())),
        ):
            with pytest.raises(StorageError) as caught:
                await operation
            assert type(caught.value) is StorageError

    run(opts, body)


def test_missing_container_is_storage_error(options: dict[str, Any]) -> None:
    async def body(store: AzureStore) -> None:
        for operation in (store.put(key(), b"x"), store.size(key()), collect(store.read(key()))):
            with pytest.raises(StorageError) as caught:
                await operation
            assert type(caught.value) is StorageError, caught.value
        with pytest.raises(StorageError):
            [k async for k in store.keys("")]

    run(options, body, container="no-such-container")


def test_bad_account_key_is_a_settings_error() -> None:
    options = {
        "driver": "azure",
        "container": "x",
        "account_name": "devstoreaccount1",
        "account_key": "not base64!",
    }
    with pytest.raises(ValueError, match="account_key"):
        AzureStore("az", AzureStorage.model_validate(options))
