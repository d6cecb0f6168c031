"""The storage driver contract (dockyard.storage.protocol.BlobStore): one suite every driver
passes against its real server — local disk, S3 (SeaweedFS), Azure (Azurite), GCS
(fake-gcs-server).

Cases that cannot apply to a driver are left out by explicit parametrization, never skipped:
a directory takes no credentials and cannot be "down".
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.domain.digest import Digest
from dockyard.storage import (
    AccessRefused,
    BlobStore,
    ObjectMissing,
    Part,
    PendingUpload,
    StorageError,
    blob_key,
    upload_key,
)

from .conftest import DRIVERS, Location, close_store, open_store, run_with, server_module

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * 1024
#: Drivers whose server refuses wrong credentials. Local has none; fake-gcs-server accepts any
#: token (the GCS driver's refusal is tested against a token endpoint in test_gcs_driver.py).
REFUSING = ["s3", "azure", "swift", "swift_keystone"]
#: Drivers with a server that can be stopped.
REMOTE = ["s3", "azure", "gcs", "swift", "swift_keystone"]
#: Drivers with a `prefix` option.
PREFIXED = ["s3", "azure", "gcs"]
#: Drivers that keep an unfinished upload outside the objects `keys` lists (`pending_uploads`).
NATIVE_PENDING = ["s3", "swift", "swift_keystone"]


# -- helpers ---------------------------------------------------------------------------------------


async def collect(stream: AsyncIterator[bytes] | None) -> bytes:
    assert stream is not None
    return b"".join([chunk async for chunk in stream])


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def pieces(*blocks: bytes) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


async def broken(data: bytes, size: int) -> AsyncIterator[bytes]:
    """A request body that breaks off after `data` (the client went away)."""
    async for chunk in chunks(data, size):
        yield chunk
    raise ConnectionResetError("client went away")


def payload(size: int) -> bytes:
    return os.urandom(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def keys_under(store: BlobStore, prefix: str) -> set[str]:
    return {key async for key in store.keys(prefix)}


async def upload_leftovers(store: BlobStore, upload_id: str, keep: str | None = None) -> set[str]:
    """Keys the upload left behind (besides `keep`, the object it completed into)."""
    return {key for key in await keys_under(store, upload_key(upload_id)) if key != keep}


# -- objects ---------------------------------------------------------------------------------------


def test_put_read_size_delete(location: Location, space: str) -> None:
    key = f"{space}small"

    async def body(store: BlobStore) -> None:
        await store.put(key, b"hello, storage")
        assert await collect(store.read(key)) == b"hello, storage"
        assert await store.size(key) == 14
        await store.put(key, b"replaced")  # put replaces
        assert await collect(store.read(key)) == b"replaced"
        await store.put(f"{space}empty", b"")
        assert await store.size(f"{space}empty") == 0
        assert await collect(store.read(f"{space}empty")) == b""
        await store.delete(key)
        assert await store.size(key) is None
        with pytest.raises(ObjectMissing):
            await collect(store.read(key))
        await store.delete(key)  # absent: no error

    location.run(body)


def test_missing_object(location: Location, space: str) -> None:
    key = f"{space}never-written"

    async def body(store: BlobStore) -> None:
        with pytest.raises(ObjectMissing):
            await collect(store.read(key))
        with pytest.raises(ObjectMissing):
            await collect(store.read(key, 5, 10))
        with pytest.raises(ObjectMissing):
            await collect(store.read(key, 0, 0))
        assert await store.size(key) is None
        await store.delete(key)
        with pytest.raises(ObjectMissing):
            await store.copy(key, f"{space}target")
        assert await store.size(f"{space}target") is None

    location.run(body)


def test_streamed_write_of_many_parts(location: Location, space: str) -> None:
    data = payload(3 * location.part_size + 12345)
    key = f"{space}big"

    async def body(store: BlobStore) -> None:
        assert await store.write(key, chunks(data, MiB + 7)) == len(data)
        assert await store.size(key) == len(data)
        assert sha(await collect(store.read(key))) == sha(data)

    location.run(body)


def test_streamed_write_small_and_empty(location: Location, space: str) -> None:
    async def body(store: BlobStore) -> None:
        assert await store.write(f"{space}small", pieces(b"ab", b"", b"c")) == 3
        assert await collect(store.read(f"{space}small")) == b"abc"
        assert await store.write(f"{space}empty", pieces()) == 0
        assert await store.size(f"{space}empty") == 0
        exact = payload(location.part_size)
        assert await store.write(f"{space}exact", chunks(exact, 64 * KiB)) == len(exact)
        assert sha(await collect(store.read(f"{space}exact"))) == sha(exact)

    location.run(body)


def test_interrupted_write_leaves_nothing(location: Location, space: str) -> None:
    key = f"{space}interrupted"

    async def body(store: BlobStore) -> None:
        with pytest.raises((ConnectionResetError, StorageError)):
            await store.write(key, broken(payload(location.part_size + MiB), 256 * KiB))
        assert await store.size(key) is None
        assert await keys_under(store, space) == set()

    location.run(body)


def test_range_reads(location: Location, space: str) -> None:
    data = payload(2 * MiB + 500 * KiB + 3)  # crosses the drivers' 1 MiB read chunks
    key = f"{space}ranged"

    async def body(store: BlobStore) -> None:
        await store.write(key, chunks(data, 300 * KiB))
        assert await collect(store.read(key, 0)) == data
        assert await collect(store.read(key, 1)) == data[1:]
        assert await collect(store.read(key, MiB + 17)) == data[MiB + 17 :]
        assert await collect(store.read(key, 100, 1000)) == data[100:1100]
        assert await collect(store.read(key, MiB - 5, MiB + 10)) == data[MiB - 5 : 2 * MiB + 5]
        assert await collect(store.read(key, 0, len(data))) == data
        assert await collect(store.read(key, len(data) - 1, 1)) == data[-1:]
        assert await collect(store.read(key, len(data) - 10)) == data[-10:]
        assert await collect(store.read(key, 42, 0)) == b""
        assert await collect(store.read(key, len(data))) == b""  # at the end: nothing left

    location.run(body)


def test_keys(location: Location, space: str) -> None:
    names = ["a/1", "a/2", "a/b/3", "ab", "c/4"]

    async def body(store: BlobStore) -> None:
        for name in names:
            await store.put(f"{space}{name}", name.encode())
        assert await keys_under(store, space) == {f"{space}{name}" for name in names}
        assert await keys_under(store, f"{space}a/") == {f"{space}a/1", f"{space}a/2", f"{space}a/b/3"}
        assert await keys_under(store, f"{space}a/b/") == {f"{space}a/b/3"}
        assert await keys_under(store, f"{space}nothing/") == set()
        await store.delete(f"{space}a/2")
        assert await keys_under(store, f"{space}a/") == {f"{space}a/1", f"{space}a/b/3"}

    location.run(body)


def test_copy(location: Location, space: str) -> None:
    data = payload(MiB + 3)

    async def body(store: BlobStore) -> None:
        await store.put(f"{space}source", data)
        await store.copy(f"{space}source", f"{space}target")
        assert await collect(store.read(f"{space}target")) == data
        assert await collect(store.read(f"{space}source")) == data
        await store.put(f"{space}other", b"other")
        await store.copy(f"{space}other", f"{space}target")  # replaces the target
        assert await collect(store.read(f"{space}target")) == b"other"

    location.run(body)


def test_signed_url(location: Location, space: str) -> None:
    data = payload(100 * KiB)
    key = f"{space}signed"

    async def body(store: BlobStore) -> str | None:
        await store.put(key, data)
        return await store.signed_url(key, expires_in=60)

    url = location.run(body)
    if location.driver == "local":
        assert url is None  # a directory has no URL; the server streams the file itself
        return
    assert url is not None
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data


def test_local_path_only_for_local(location: Location, space: str) -> None:
    async def body(store: BlobStore) -> Path | None:
        await store.put(f"{space}file", b"x")
        return store.local_path(f"{space}file")

    path = location.run(body)
    if location.driver == "local":
        assert path is not None
        assert path.read_bytes() == b"x"
    else:
        assert path is None


# -- uploads ---------------------------------------------------------------------------------------


def _check(parts: Sequence[Part], total: int) -> None:
    assert sum(part.size for part in parts) == total


async def _expect_upload(store: BlobStore, upload_id: str, handle: str, parts: Sequence[Part], data: bytes) -> None:
    """read_upload is None (the store cannot read it back) or exactly the recorded bytes."""
    stream = store.read_upload(upload_id, handle, parts)
    if stream is not None:
        assert sha(await collect(stream)) == sha(data)


def test_upload_of_odd_sizes(location: Location) -> None:
    upload_id = str(uuid.uuid4())
    blocks = [b"x", payload(100 * KiB), payload(7 * MiB), b"", payload(location.part_size), payload(3)]
    whole = b"".join(blocks)
    key = blob_key(Digest.of(whole))

    async def body(store: BlobStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts: list[Part] = []
        total = 0
        for block in blocks:
            parts = await store.write_part(upload_id, handle, parts, chunks(block, 64 * KiB + 1))
            total += len(block)
            _check(parts, total)
            await _expect_upload(store, upload_id, handle, parts, whole[:total])
        final = await store.complete_upload(upload_id, handle, parts, key)
        assert await store.size(final) == len(whole)
        assert sha(await collect(store.read(final))) == sha(whole)
        assert await upload_leftovers(store, upload_id, keep=final) == set()
        if store.derived_keys:
            assert final == key
        await store.delete(final)

    location.run(body)


def test_upload_resumes_after_failed_requests(location: Location) -> None:
    """Parts of a request whose result the caller did not record are scrap: the next request
    continues from the recorded parts and the upload holds exactly the recorded bytes."""
    upload_id = str(uuid.uuid4())
    first = payload(location.part_size + MiB + 5)  # a full part and a remainder
    lost_big = payload(2 * location.part_size + 3)
    lost_small = payload(10)
    lost_broken = payload(location.part_size + 77)
    second = payload(MiB + 1)
    third = payload(location.part_size - 2)
    expected = first + second + third

    async def body(store: BlobStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], chunks(first, 256 * KiB))
        _check(parts, len(first))
        # Requests whose results are discarded (the database update did not happen).
        await store.write_part(upload_id, handle, parts, chunks(lost_big, 512 * KiB))
        await store.write_part(upload_id, handle, parts, chunks(lost_small, 3))
        with pytest.raises((ConnectionResetError, StorageError)):
            await store.write_part(upload_id, handle, parts, broken(lost_broken, 256 * KiB))
        parts = await store.write_part(upload_id, handle, parts, chunks(second, 100 * KiB))
        _check(parts, len(first) + len(second))
        await store.write_part(upload_id, handle, parts, chunks(lost_small, 4))
        parts = await store.write_part(upload_id, handle, parts, chunks(third, 333 * KiB))
        _check(parts, len(expected))
        await _expect_upload(store, upload_id, handle, parts, expected)
        final = await store.complete_upload(upload_id, handle, parts, blob_key(Digest.of(expected)))
        assert await store.size(final) == len(expected)
        assert sha(await collect(store.read(final))) == sha(expected)
        assert await upload_leftovers(store, upload_id, keep=final) == set()
        await store.delete(final)

    location.run(body)


def test_upload_empty(location: Location) -> None:
    upload_id = str(uuid.uuid4())

    async def body(store: BlobStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], pieces())
        _check(parts, 0)
        parts = await store.write_part(upload_id, handle, parts, pieces(b""))
        _check(parts, 0)
        await _expect_upload(store, upload_id, handle, parts, b"")
        final = await store.complete_upload(upload_id, handle, parts, blob_key(Digest.of(b"")))
        assert await store.size(final) == 0
        assert await collect(store.read(final)) == b""
        await store.delete(final)

    location.run(body)


def test_upload_completed_into_staging_key(location: Location) -> None:
    """The caller re-reads the bytes from a staging completion when it has no running hash; the
    returned key must hold them."""
    upload_id = str(uuid.uuid4())
    data = payload(location.part_size + 4321)

    async def body(store: BlobStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], chunks(data, MiB))
        parts = await store.write_part(upload_id, handle, parts, pieces(b"tail"))
        final = await store.complete_upload(upload_id, handle, parts, f"{upload_key(upload_id)}.assembled")
        assert sha(await collect(store.read(final))) == sha(data + b"tail")
        await store.delete(final)
        assert await store.size(final) is None

    location.run(body)


def test_upload_abort_cleans_up(location: Location) -> None:
    upload_id = str(uuid.uuid4())
    empty_id = str(uuid.uuid4())

    async def body(store: BlobStore) -> None:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], chunks(payload(location.part_size + 10), MiB))
        parts = await store.write_part(upload_id, handle, parts, pieces(b"more"))
        await store.write_part(upload_id, handle, parts, chunks(payload(MiB), MiB))  # scrap
        await store.abort_upload(upload_id, handle, parts)
        assert await upload_leftovers(store, upload_id) == set()
        # An upload that never received a byte.
        empty_handle = await store.begin_upload(empty_id)
        await store.abort_upload(empty_id, empty_handle, [])
        assert await upload_leftovers(store, empty_id) == set()

    location.run(body)


def test_concurrent_uploads_stay_apart(location: Location) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    datas = [payload(location.part_size // 2 + n * 1000) for n in range(3)]

    async def one(store: BlobStore, upload_id: str, data: bytes) -> bytes:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], chunks(data[:1000], 100))
        parts = await store.write_part(upload_id, handle, parts, chunks(data[1000:], 64 * KiB))
        final = await store.complete_upload(upload_id, handle, parts, blob_key(Digest.of(data)))
        read = await collect(store.read(final))
        await store.delete(final)
        return read

    async def body(store: BlobStore) -> list[bytes]:
        return list(await asyncio.gather(*(one(store, i, d) for i, d in zip(ids, datas, strict=True))))

    assert location.run(body) == datas


async def pending_of(store: BlobStore, upload_id: str) -> list[PendingUpload]:
    return [pending async for pending in store.pending_uploads() if pending.upload_id == upload_id]


def test_pending_uploads(location: Location) -> None:
    """An unfinished upload is listed (by drivers that keep it outside `keys`) with its handle and
    start, until `abort_pending` releases it; a completed upload is never listed, and
    `abort_pending` leaves its object alone."""
    unfinished, completed = str(uuid.uuid4()), str(uuid.uuid4())
    data = payload(location.part_size + 10)

    async def body(store: BlobStore) -> None:
        before = time.time()
        handle = await store.begin_upload(unfinished)
        await store.write_part(unfinished, handle, [], chunks(data, MiB))
        listed = await pending_of(store, unfinished)
        if location.driver in NATIVE_PENDING:
            assert [(p.upload_id, p.handle) for p in listed] == [(unfinished, handle)]
            assert before - 120 < listed[0].started_at < time.time() + 120
        else:
            assert listed == []
        await store.abort_pending(unfinished, handle)
        assert await pending_of(store, unfinished) == []
        await store.abort_pending(unfinished, handle)  # already gone: no error
        await store.abort_upload(unfinished, handle, [])

        done_handle = await store.begin_upload(completed)
        parts = await store.write_part(completed, done_handle, [], chunks(data, MiB))
        final = await store.complete_upload(completed, done_handle, parts, blob_key(Digest.of(data)))
        assert await pending_of(store, completed) == []
        await store.abort_pending(completed, done_handle)
        assert sha(await collect(store.read(final))) == sha(data)
        await store.delete(final)

    location.run(body)


# -- prefix, credentials, outages ------------------------------------------------------------------


@pytest.mark.parametrize("location", PREFIXED, indirect=True)
def test_prefix_confines_keys(location: Location, space: str) -> None:
    prefix = f"pfx-{uuid.uuid4().hex[:8]}"

    async def inside(store: BlobStore) -> set[str]:
        await store.put(f"{space}k", b"v")
        assert await collect(store.read(f"{space}k")) == b"v"
        return await keys_under(store, "")

    assert location.run(inside, prefix=prefix) == {f"{space}k"}

    async def outside(store: BlobStore) -> set[str]:
        return await keys_under(store, f"{prefix}/")

    assert location.run(outside) == {f"{prefix}/{space}k"}


@pytest.mark.parametrize("location", REFUSING, indirect=True)
def test_refused_credentials(location: Location, space: str) -> None:
    key = f"{space}guarded"
    location.run(lambda store: store.put(key, b"secret"))
    bad = location.module.bad_credentials(location.options)
    assert bad is not None

    async def body(store: BlobStore) -> None:
        with pytest.raises(AccessRefused):
            await store.put(f"{space}intruder", b"x")
        with pytest.raises(AccessRefused):
            await collect(store.read(key))
        with pytest.raises(AccessRefused):
            await store.size(key)
        with pytest.raises(AccessRefused):
            await store.begin_upload(str(uuid.uuid4()))

    run_with(open_store, bad, location.data_dir, body)


@pytest.mark.parametrize("location", [d for d in DRIVERS if d not in REFUSING], indirect=True)
def test_drivers_that_cannot_refuse_say_so(location: Location) -> None:
    assert location.module.bad_credentials(location.options) is None


@pytest.mark.parametrize("driver", REMOTE)
def test_store_down_is_storage_error(driver: str, tmp_path: Path) -> None:
    """A stopped server: every call fails with StorageError (not ObjectMissing, not a raw client
    exception), so requests answer a retriable 5xx."""
    module = server_module(driver)
    with module.server(tmp_path / "server") as options:
        pass  # started, answered, stopped

    async def main() -> None:
        store = open_store(options, tmp_path / "data")
        if driver == "gcs":
            # What is proved here is the kind of error, not how long transient failures are retried
            # (20 s by default, for every call below).
            store.retry_timeout = 2.0
        try:
            calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("put", lambda: store.put("t/down", b"x")),
                ("read", lambda: collect(store.read("t/down"))),
                ("size", lambda: store.size("t/down")),
                ("keys", lambda: keys_under(store, "t/")),
            ]
            for name, call in calls:
                with pytest.raises(StorageError) as caught:
                    await asyncio.wait_for(call(), timeout=120)
                assert not isinstance(caught.value, ObjectMissing), name
            # Beginning an upload may need no call to the store; writing to it does.
            upload_id = str(uuid.uuid4())
            refusal: StorageError | None = None
            try:
                handle = await asyncio.wait_for(store.begin_upload(upload_id), timeout=120)
            except StorageError as exc:
                refusal = exc
            if refusal is None:
                with pytest.raises(StorageError) as caught:
                    await asyncio.wait_for(store.write_part(upload_id, handle, [], pieces(b"x")), timeout=120)
                refusal = caught.value
            assert not isinstance(refusal, ObjectMissing)
        finally:
            await close_store(store)

    asyncio.run(main())
