"""Blob pull: GET/HEAD, range reads, unknown blobs, delete."""

from __future__ import annotations

import pytest

from .helpers import (
    assert_error,
    assert_status,
    describe,
    digest_of,
    push_blob,
    random_bytes,
)

pytestmark = pytest.mark.integration

SIZE = 10_000


@pytest.fixture
def blob(client, repo):
    data = random_bytes(SIZE)
    return data, push_blob(client, repo, data)


def test_get_blob(client, repo, blob):
    data, d = blob
    r = client.get(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    assert r.content == data
    assert r.headers.get("docker-content-digest") == d, describe(r)
    assert int(r.headers.get("content-length", -1)) == SIZE, describe(r)


def test_head_blob(client, repo, blob):
    _, d = blob
    r = client.head(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    assert r.content == b""
    assert r.headers.get("docker-content-digest") == d, describe(r)
    assert int(r.headers.get("content-length", -1)) == SIZE, describe(r)
    assert r.headers.get("accept-ranges") == "bytes", describe(r)


def test_get_blob_advertises_ranges(client, repo, blob):
    _, d = blob
    r = client.get(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    assert r.headers.get("accept-ranges") == "bytes", describe(r)


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=9000-20000", 9000, SIZE - 1),  # end beyond size is clamped
        ("bytes=0-0", 0, 0),
    ],
)
def test_range_read(client, repo, blob, spec, start, end):
    data, d = blob
    r = client.get(f"/v2/{repo}/blobs/{d}", headers={"Range": spec})
    assert_status(r, 206)
    assert r.content == data[start : end + 1]
    assert r.headers.get("content-range") == f"bytes {start}-{end}/{SIZE}", describe(r)
    assert int(r.headers["content-length"]) == end - start + 1, describe(r)


@pytest.mark.parametrize("spec", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range_is_416(client, repo, blob, spec):
    _, d = blob
    r = client.get(f"/v2/{repo}/blobs/{d}", headers={"Range": spec})
    assert_status(r, 416)
    cr = r.headers.get("content-range")
    assert cr in (None, f"bytes */{SIZE}"), describe(r)


@pytest.mark.parametrize("spec", ["bytes=500-100", "bytes=abc", "pages=0-10", "bytes=--5"])
def test_malformed_range(client, repo, blob, spec):
    # RFC 9110 lets a server ignore an invalid Range (200 full body) or refuse it (416).
    data, d = blob
    r = client.get(f"/v2/{repo}/blobs/{d}", headers={"Range": spec})
    assert r.status_code in (200, 416), describe(r)
    if r.status_code == 200:
        assert r.content == data


def test_unknown_blob(client, repo, blob):
    unknown = digest_of(b"never pushed " + random_bytes(8))
    r = client.get(f"/v2/{repo}/blobs/{unknown}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    r = client.head(f"/v2/{repo}/blobs/{unknown}")
    assert_status(r, 404)
    assert r.content == b""


def test_blob_in_unknown_repository(client, new_repo):
    r = client.get(f"/v2/{new_repo()}/blobs/{digest_of(b'x')}")
    assert_error(r, 404, "BLOB_UNKNOWN", "NAME_UNKNOWN")


def test_blob_is_scoped_to_repository(client, new_repo):
    a, b = new_repo("a"), new_repo("b")
    data = random_bytes(100)
    d = push_blob(client, a, data)
    push_blob(client, b, b"something " + random_bytes(4))
    r = client.get(f"/v2/{b}/blobs/{d}")
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_invalid_digest_in_blob_url(client, repo, blob):
    r = client.get(f"/v2/{repo}/blobs/sha256:nothex")
    assert r.status_code in (400, 404), describe(r)
    assert_error(r, r.status_code, "DIGEST_INVALID", "BLOB_UNKNOWN", "NAME_INVALID")


def test_delete_blob(client, repo, blob):
    data, d = blob
    r = client.delete(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 202)
    assert_status(client.head(f"/v2/{repo}/blobs/{d}"), 404)
    assert_error(client.get(f"/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/blobs/{d}"), 404, "BLOB_UNKNOWN")
    # the content can be pushed again afterwards
    assert push_blob(client, repo, data) == d
    assert client.get(f"/v2/{repo}/blobs/{d}").content == data


def test_delete_blob_in_one_repo_keeps_it_in_another(client, new_repo):
    a, b = new_repo("a"), new_repo("b")
    data = random_bytes(300)
    d = push_blob(client, a, data)
    push_blob(client, b, data)
    assert_status(client.delete(f"/v2/{a}/blobs/{d}"), 202)
    assert_status(client.head(f"/v2/{a}/blobs/{d}"), 404)
    r = client.get(f"/v2/{b}/blobs/{d}")
    assert_status(r, 200)
    assert r.content == data


def test_delete_unknown_blob(client, repo, blob):
    r = client.delete(f"/v2/{repo}/blobs/{digest_of(b'unknown ' + random_bytes(4))}")
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_large_blob_streams(client, repo):
    data = random_bytes(8 * 1024 * 1024 + 17)
    d = push_blob(client, repo, data)
    with client.stream("GET", f"/v2/{repo}/blobs/{d}") as r:
        assert r.status_code == 200
        got = b"".join(r.iter_bytes())
    assert got == data
    r = client.get(f"/v2/{repo}/blobs/{d}", headers={"Range": "bytes=8388600-"})
    assert_status(r, 206)
    assert r.content == data[8388600:]
