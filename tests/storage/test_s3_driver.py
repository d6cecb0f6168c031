"""What the conformance suite cannot see of the S3 driver: the shape of its multipart uploads
(full-size parts, tail objects, nothing left behind), multipart copies, resumed reads, error
mapping and the credential chain — against the session's SeaweedFS."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ResponseStreamingError

from dockyard.config.settings import S3Storage
from dockyard.storage import ObjectMissing, Part, StorageError, upload_key
from dockyard.storage.s3 import TAIL, S3Store

from .conftest import Location
from .test_conformance import chunks, collect, payload, pieces, sha

MiB = 1024 * 1024

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("location", ["s3"], indirect=True)]


def raw(options: dict[str, Any]) -> Any:
    """A plain boto3 client on the same bucket, to look behind the driver."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["access_key"],
        aws_secret_access_key=options["secret_key"],
        region_name=options["region"],
        config=Config(s3={"addressing_style": "path"}),
    )


def store_of(options: dict[str, Any], **overrides: Any) -> S3Store:
    return S3Store("s3", S3Storage.model_validate({**options, **overrides}))


def pending(options: dict[str, Any], upload_id: str) -> list[str]:
    """Unfinished multipart uploads of `upload_id`."""
    client = raw(options)
    listing = client.list_multipart_uploads(Bucket=options["bucket"], Prefix=f"{upload_key(upload_id)}/")
    return [item["UploadId"] for item in listing.get("Uploads", [])]


def tails(parts: list[Part]) -> list[Part]:
    return [part for part in parts if part.token.startswith(TAIL)]


def test_parts_are_full_size_and_the_remainder_is_a_tail(location: Location) -> None:
    store = store_of(location.options)
    size = store.part_size
    upload_id = str(uuid.uuid4())
    first, second = payload(size + 10), payload(2 * size - 10 + 7)

    async def body() -> tuple[list[Part], list[Part], set[str], str]:
        handle = await store.begin_upload(upload_id)
        one = await store.write_part(upload_id, handle, [], chunks(first, MiB))
        two = await store.write_part(upload_id, handle, one, chunks(second, 3 * MiB))
        left = {key async for key in store.keys(f"{upload_key(upload_id)}/")}
        final = await store.complete_upload(upload_id, handle, two, "ignored")
        assert sha(await collect(store.read(final))) == sha(first + second)
        return one, two, left, final

    one, two, left, final = asyncio.run(body())
    assert [(p.number, p.size) for p in one] == [(1, size), (2, 10)]
    assert one[1].token.startswith(TAIL)
    # The tail went in front of the next request: three full parts and a 7-byte tail.
    assert [(p.number, p.size) for p in two] == [(1, size), (2, size), (3, size), (4, 7)]
    assert len(tails(two)) == 1
    # The consumed tail stays until the caller has recorded the new list; nothing else does.
    assert left == {f"{upload_key(upload_id)}/{p.token[len(TAIL) :]}" for p in tails(one) + tails(two)}
    assert final == f"{upload_key(upload_id)}/data"
    assert pending(location.options, upload_id) == []
    names = set(_keys(location.options, f"{upload_key(upload_id)}/"))
    assert names == {final}


def _keys(options: dict[str, Any], prefix: str) -> list[str]:
    listing = raw(options).list_objects_v2(Bucket=options["bucket"], Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_stale_tails_are_removed_by_the_next_request(location: Location) -> None:
    store = store_of(location.options)
    upload_id = str(uuid.uuid4())

    async def body() -> set[str]:
        handle = await store.begin_upload(upload_id)
        parts: list[Part] = []
        for n in range(6):
            parts = await store.write_part(upload_id, handle, parts, pieces(bytes([n]) * 1000))
        left = {key async for key in store.keys(f"{upload_key(upload_id)}/")}
        await store.abort_upload(upload_id, handle, parts)
        return left

    left = asyncio.run(body())
    assert len(left) == 2  # the tail the last request consumed, and its own
    assert pending(location.options, upload_id) == []
    assert _keys(location.options, f"{upload_key(upload_id)}/") == []


def test_small_upload_needs_no_multipart_part(location: Location) -> None:
    store = store_of(location.options)
    upload_id = str(uuid.uuid4())

    async def body() -> bytes:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], pieces(b"config", b"-json"))
        final = await store.complete_upload(upload_id, handle, parts, "ignored")
        again = await store.complete_upload(upload_id, handle, parts, "ignored")  # answer lost: repeat
        assert again == final
        return await collect(store.read(final))

    assert asyncio.run(body()) == b"config-json"
    assert pending(location.options, upload_id) == []


def test_completion_is_repeatable(location: Location) -> None:
    store = store_of(location.options)
    upload_id = str(uuid.uuid4())
    data = payload(store.part_size + 5)

    async def body() -> bytes:
        handle = await store.begin_upload(upload_id)
        parts = await store.write_part(upload_id, handle, [], chunks(data, MiB))
        first = await store.complete_upload(upload_id, handle, parts, "ignored")
        assert await store.complete_upload(upload_id, handle, parts, "ignored") == first
        return await collect(store.read(first))

    assert asyncio.run(body()) == data


def test_pending_uploads_are_listed_page_by_page(location: Location) -> None:
    """Every unfinished upload under `uploads/`, however the store pages its listing (SeaweedFS
    gives only NextUploadIdMarker), and nothing begun at any other key."""
    store = store_of(location.options, prefix=f"pending-{uuid.uuid4().hex[:8]}")
    listing = store._client.list_multipart_uploads
    store._client.list_multipart_uploads = functools.partial(listing, MaxUploads=1)  # type: ignore[method-assign]
    ids = sorted(str(uuid.uuid4()) for _ in range(3))

    async def body() -> list[tuple[str, str]]:
        handles = [await store.begin_upload(upload_id) for upload_id in ids]
        # A multipart upload at a key no upload begins: not listed.
        other = store._key(f"{upload_key(ids[0])}/other")
        stray = store._client.create_multipart_upload(Bucket=store.bucket, Key=other)
        found = sorted([(p.upload_id, p.handle) async for p in store.pending_uploads()])
        assert found == sorted(zip(ids, handles, strict=True))
        for upload_id, handle in found:
            await store.abort_pending(upload_id, handle)
        store._client.abort_multipart_upload(Bucket=store.bucket, Key=other, UploadId=stray["UploadId"])
        return [(p.upload_id, p.handle) async for p in store.pending_uploads()]

    assert asyncio.run(body()) == []


def test_copy_above_the_single_request_limit_goes_part_by_part(location: Location) -> None:
    store = store_of(location.options)
    store.copy_limit, store.copy_part = 6 * MiB, 5 * MiB
    data = payload(11 * MiB + 3)
    key = f"t/{uuid.uuid4().hex}"

    async def body() -> bytes:
        await store.put(f"{key}/source", data)
        await store.copy(f"{key}/source", f"{key}/target")
        return await collect(store.read(f"{key}/target"))

    assert sha(asyncio.run(body())) == sha(data)
    head = raw(location.options).head_object(Bucket=location.options["bucket"], Key=f"{key}/target")
    assert head["ETag"].endswith('-3"')  # three parts


def test_read_resumes_when_the_connection_breaks(location: Location) -> None:
    store = store_of(location.options)
    data = payload(3 * MiB + 11)
    key = f"t/{uuid.uuid4().hex}"
    asyncio.run(store.put(key, data))
    original = store._client.get_object
    broken: list[int] = []

    def get_object(**request: Any) -> Any:
        response = original(**request)
        if not broken:
            body = response["Body"]
            read = body.read

            def failing(amount: int | None = None) -> bytes:
                if broken:
                    raise ResponseStreamingError(error="connection reset")
                broken.append(1)
                return read(amount)

            body.read = failing
        return response

    store._client.get_object = get_object  # type: ignore[method-assign]
    assert sha(asyncio.run(collect(store.read(key, 5, 3 * MiB)))) == sha(data[5 : 3 * MiB + 5])
    assert broken == [1]


def test_credential_chain_when_no_keys_are_configured(location: Location, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", location.options["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", location.options["secret_key"])
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    store = store_of(location.options, access_key=None, secret_key=None)
    key = f"t/{uuid.uuid4().hex}"

    async def body() -> bytes:
        await store.put(key, b"from the chain")
        return await collect(store.read(key))

    assert asyncio.run(body()) == b"from the chain"


def test_prefix_is_a_directory(location: Location) -> None:
    name = uuid.uuid4().hex[:8]
    store = store_of(location.options, prefix=f"/{name}/inner")
    asyncio.run(store.put("k", b"v"))
    assert _keys(location.options, f"{name}/") == [f"{name}/inner/k"]


def test_missing_bucket_is_not_a_missing_object(location: Location) -> None:
    store = store_of(location.options, bucket=f"absent-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageError) as caught:
        asyncio.run(collect(store.read("k")))
    assert not isinstance(caught.value, ObjectMissing)


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    """An HTTP server answering every request 503, like an overloaded store."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            body = b"<Error><Code>SlowDown</Code><Message>overloaded</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _fail

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_server_errors_are_storage_errors(location: Location, failing_endpoint: str) -> None:
    store = store_of(location.options, endpoint_url=failing_endpoint)

    async def body() -> None:
        for call in (
            lambda: store.put("k", b"v"),
            lambda: collect(store.read("k")),
            lambda: store.size("k"),
            lambda: store.begin_upload("u"),
        ):
            with pytest.raises(StorageError) as caught:
                await call()
            assert not isinstance(caught.value, ObjectMissing)

    asyncio.run(body())
