"""Blob uploads: monolithic, chunked, streamed, sessions, mounts, digests."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from .helpers import (
    REFERENCE,
    absolute,
    assert_error,
    assert_status,
    blob_visible,
    chunked_push,
    describe,
    digest_of,
    parse_range,
    patch_chunk,
    push_blob,
    random_bytes,
    send_truncated,
    start_upload,
    with_query,
)

pytestmark = pytest.mark.integration

OCTET = {"Content-Type": "application/octet-stream"}


def _assert_blob(client, repo, data, digest):
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert_status(r, 200)
    assert r.content == data
    assert r.headers.get("docker-content-digest") == digest, describe(r)


def test_monolithic_post_with_digest(client, repo):
    data = random_bytes(5000)
    d = digest_of(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d}, content=data, headers=OCTET)
    assert_status(r, 201)
    assert r.headers.get("location"), describe(r)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    # Location is a pullable blob URL.
    r2 = client.get(absolute(client, r.headers["location"]))
    assert_status(r2, 200)
    assert r2.content == data
    _assert_blob(client, repo, data, d)


def test_post_opens_session(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert_status(r, 202)
    assert r.headers.get("location"), describe(r)
    assert r.headers.get("docker-upload-uuid"), describe(r)
    assert r.headers["docker-upload-uuid"] in r.headers["location"], describe(r)
    # An empty session: no Range, or the conventional "0-0".
    assert r.headers.get("range") in (None, "0-0"), describe(r)
    # The session answers GET with 204 + Location.
    s = client.get(absolute(client, r.headers["location"]))
    assert_status(s, 204)
    assert s.headers.get("location"), describe(s)
    assert s.headers.get("range") in (None, "0-0"), describe(s)


def test_post_then_put_monolithic(client, repo):
    data = random_bytes(3333)
    loc = start_upload(client, repo)
    d = digest_of(data)
    r = client.put(with_query(loc, digest=d), content=data, headers=OCTET)
    assert_status(r, 201)
    assert r.headers.get("location"), describe(r)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    _assert_blob(client, repo, data, d)


def test_chunked_upload_with_content_range(client, repo):
    data = random_bytes(10_000)
    loc = start_upload(client, repo)
    off = 0
    for size in (4096, 4096, 1808):
        r = patch_chunk(client, loc, data[off : off + size], off)
        assert_status(r, 202)
        off += size
        assert r.headers.get("range") == f"0-{off - 1}", describe(r)
        assert r.headers.get("location"), describe(r)
        assert r.headers.get("docker-upload-uuid"), describe(r)
        loc = absolute(client, r.headers["location"])
        s = client.get(loc)
        assert_status(s, 204)
        assert s.headers.get("range") == f"0-{off - 1}", describe(s)
        assert s.headers.get("location"), describe(s)
    d = digest_of(data)
    r = client.put(with_query(loc, digest=d))
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    assert r.headers.get("location"), describe(r)
    _assert_blob(client, repo, data, d)


def test_chunked_upload_final_chunk_in_put(client, repo):
    data = random_bytes(9000)
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data[:6000], 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    d = digest_of(data)
    r = client.put(
        with_query(loc, digest=d), content=data[6000:], headers={**OCTET, "Content-Range": f"6000-{len(data) - 1}"}
    )
    assert_status(r, 201)
    _assert_blob(client, repo, data, d)


def test_chunked_upload_final_chunk_in_put_without_content_range(client, repo):
    data = random_bytes(7000)
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data[:1000], 0)
    assert_status(r, 202)
    d = digest_of(data)
    r = client.put(with_query(absolute(client, r.headers["location"]), digest=d), content=data[1000:], headers=OCTET)
    assert_status(r, 201)
    _assert_blob(client, repo, data, d)


def test_streamed_patch_without_content_range(client, repo):
    data = random_bytes(200_000)
    loc = start_upload(client, repo)

    def gen():
        for i in range(0, len(data), 16_384):
            yield data[i : i + 16_384]

    r = client.patch(loc, content=gen(), headers=OCTET)  # chunked transfer encoding
    assert_status(r, 202)
    assert r.headers.get("range") == f"0-{len(data) - 1}", describe(r)
    loc = absolute(client, r.headers["location"])
    # A second streamed PATCH appends.
    more = random_bytes(1234)
    r = client.patch(loc, content=more, headers=OCTET)
    assert_status(r, 202)
    assert parse_range(r.headers.get("range")) == len(data) + len(more), describe(r)
    full = data + more
    d = digest_of(full)
    r = client.put(with_query(absolute(client, r.headers["location"]), digest=d))
    assert_status(r, 201)
    _assert_blob(client, repo, full, d)


def test_out_of_order_chunk_is_416_and_session_survives(client, repo):
    data = random_bytes(3000)
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data[:1000], 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    # gap
    r = patch_chunk(client, loc, data[2000:], 2000)
    assert_status(r, 416)
    if not REFERENCE:
        assert r.headers.get("range") == "0-999", describe(r)
        assert r.headers.get("location"), describe(r)
    # overlap / restart from zero
    r = patch_chunk(client, loc, data[:1000], 0)
    assert_status(r, 416)
    # the session still says 0-999 and can be completed
    s = client.get(loc)
    assert_status(s, 204)
    assert s.headers.get("range") == "0-999", describe(s)
    r = patch_chunk(client, loc, data[1000:], 1000)
    assert_status(r, 202)
    d = digest_of(data)
    r = client.put(with_query(absolute(client, r.headers["location"]), digest=d))
    assert_status(r, 201)
    _assert_blob(client, repo, data, d)


def test_first_chunk_must_start_at_zero(client, repo):
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, b"x" * 10, 5)
    assert_status(r, 416)


def test_content_range_length_mismatch_is_rejected(client, repo):
    loc = start_upload(client, repo)
    r = client.patch(loc, content=b"y" * 10, headers={**OCTET, "Content-Range": "0-99"})
    assert r.status_code in (400, 416), describe(r)
    s = client.get(loc)
    if s.status_code == 204:
        assert s.headers.get("range") in (None, "0-0"), describe(s)
    else:
        assert_error(s, 404, "BLOB_UPLOAD_UNKNOWN")


def test_digest_mismatch_on_put_is_rejected_and_not_visible(client, repo):
    data = random_bytes(4000)
    wrong = digest_of(b"something else")
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data, 0)
    assert_status(r, 202)
    r = client.put(with_query(absolute(client, r.headers["location"]), digest=wrong))
    assert_error(r, 400, "DIGEST_INVALID")
    assert not blob_visible(client, repo, wrong)
    assert not blob_visible(client, repo, digest_of(data))


def test_digest_mismatch_on_monolithic_post(client, repo):
    data = random_bytes(100)
    wrong = digest_of(b"other")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    assert not blob_visible(client, repo, wrong)
    assert not blob_visible(client, repo, digest_of(data))


@pytest.mark.parametrize(
    "bad", ["sha256:xyz", "sha256:" + "a" * 63, "notadigest", "sha256:" + "G" * 64, "md5:" + "a" * 32]
)
def test_invalid_digest_string(client, repo, bad):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": bad}, content=b"abc", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    loc = start_upload(client, repo)
    r = client.put(with_query(loc, digest=bad), content=b"abc", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")


def test_put_without_digest_is_rejected(client, repo):
    loc = start_upload(client, repo)
    r = client.put(loc, content=b"abc", headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


def test_delete_session(client, repo):
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, b"partial", 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    r = client.delete(loc)
    assert_status(r, 204)
    assert_error(client.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(client, loc, b"more", 7), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(with_query(loc, digest=digest_of(b"partial"))), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(loc), 404, "BLOB_UPLOAD_UNKNOWN")


def test_finished_session_is_unknown(client, repo):
    data = b"finished " + random_bytes(16)
    loc = start_upload(client, repo)
    d = digest_of(data)
    r = client.put(with_query(loc, digest=d), content=data, headers=OCTET)
    assert_status(r, 201)
    assert_error(client.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(client, loc, b"x", len(data)), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(with_query(loc, digest=d), content=data, headers=OCTET), 404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_session_uuid(client, repo):
    loc = f"/v2/{repo}/blobs/uploads/00000000-0000-4000-8000-000000000000"
    r = client.get(loc)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = patch_chunk(client, loc, b"abc", 0)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_session_is_bound_to_its_repository(client, new_repo):
    a, b = new_repo("a"), new_repo("b")
    loc = start_upload(client, a)
    path = loc.split("/blobs/uploads/", 1)[1]
    r = client.get(f"/v2/{b}/blobs/uploads/{path}")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "NAME_UNKNOWN")


@pytest.mark.parametrize("mode", ["monolithic", "chunked"])
def test_sha512_blobs(client, repo, mode):
    data = random_bytes(6000)
    if mode == "monolithic":
        d = push_blob(client, repo, data, alg="sha512")
    else:
        d = chunked_push(client, repo, data, 2500, alg="sha512")
    assert d.startswith("sha512:")
    r = client.head(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    assert int(r.headers["content-length"]) == len(data)
    _assert_blob(client, repo, data, d)


def test_sha512_digest_mismatch(client, repo):
    data = random_bytes(100)
    wrong = digest_of(b"nope", "sha512")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data, headers=OCTET)
    assert_error(r, 400, "DIGEST_INVALID")
    assert not blob_visible(client, repo, wrong)


def test_cross_repo_mount(client, new_repo):
    src, dst = new_repo("src"), new_repo("dst")
    data = random_bytes(2048)
    d = push_blob(client, src, data)
    assert not blob_visible(client, dst, d)
    r = client.post(f"/v2/{dst}/blobs/uploads/", params={"mount": d, "from": src}, headers={"Content-Length": "0"})
    assert_status(r, 201)
    assert r.headers.get("location"), describe(r)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    _assert_blob(client, dst, data, d)


def test_mount_blob_not_in_source_opens_session(client, new_repo):
    src, dst = new_repo("src"), new_repo("dst")
    push_blob(client, src, b"unrelated " + random_bytes(8))
    data = random_bytes(512)
    d = digest_of(data)
    r = client.post(f"/v2/{dst}/blobs/uploads/", params={"mount": d, "from": src}, headers={"Content-Length": "0"})
    assert_status(r, 202)
    assert r.headers.get("location"), describe(r)
    assert not blob_visible(client, dst, d)
    r = client.put(with_query(absolute(client, r.headers["location"]), digest=d), content=data, headers=OCTET)
    assert_status(r, 201)
    _assert_blob(client, dst, data, d)


def test_mount_from_unknown_repository_opens_session(client, new_repo):
    d = digest_of(random_bytes(32))
    r = client.post(
        f"/v2/{new_repo('dst')}/blobs/uploads/",
        params={"mount": d, "from": new_repo("nope")},
        headers={"Content-Length": "0"},
    )
    assert_status(r, 202)
    assert r.headers.get("location"), describe(r)


def test_mount_without_from_when_blob_exists(client, new_repo):
    src, dst = new_repo("src"), new_repo("dst")
    data = random_bytes(700)
    d = push_blob(client, src, data)
    r = client.post(f"/v2/{dst}/blobs/uploads/", params={"mount": d}, headers={"Content-Length": "0"})
    if REFERENCE:  # Distribution 2.8 has no automatic content discovery
        assert_status(r, 201, 202)
        return
    assert_status(r, 201)
    assert r.headers.get("docker-content-digest") == d, describe(r)
    _assert_blob(client, dst, data, d)


def test_mount_without_from_of_unknown_blob_opens_session(client, repo):
    r = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"mount": digest_of(random_bytes(9))}, headers={"Content-Length": "0"}
    )
    assert_status(r, 202)
    assert r.headers.get("location"), describe(r)


def test_same_blob_pushed_twice_and_in_parallel_sessions(client, repo):
    data = random_bytes(1500)
    d = digest_of(data)
    l1, l2 = start_upload(client, repo), start_upload(client, repo)
    assert l1 != l2
    r1 = client.put(with_query(l1, digest=d), content=data, headers=OCTET)
    r2 = client.put(with_query(l2, digest=d), content=data, headers=OCTET)
    assert_status(r1, 201)
    assert_status(r2, 201)
    assert push_blob(client, repo, data) == d
    _assert_blob(client, repo, data, d)


def test_empty_blob(client, repo):
    d = push_blob(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    assert r.content == b""
    assert r.headers.get("docker-content-digest") == d


# ------------------------------------------------------------------ truncated uploads


def _wait_settled(client, loc, timeout=5.0):
    """Poll the session until two reads agree (the server may still be handling the drop)."""
    deadline = time.monotonic() + timeout
    prev = None
    while True:
        s = client.get(loc)
        cur = (s.status_code, s.headers.get("range"))
        if cur == prev or time.monotonic() > deadline:
            return s
        prev = cur
        time.sleep(0.3)


def _finish_from(client, repo, loc, data, s):
    """Given a session GET answer, either resume it or accept that it is cleanly gone."""
    if s.status_code == 404:
        assert_error(s, 404, "BLOB_UPLOAD_UNKNOWN")
        return
    assert_status(s, 204)
    off = parse_range(s.headers.get("range"))  # callers always sent >1 byte first
    loc = absolute(client, s.headers.get("location") or loc)
    if off < len(data):
        r = patch_chunk(client, loc, data[off:], off)
        assert_status(r, 202)
        loc = absolute(client, r.headers["location"])
    d = digest_of(data)
    r = client.put(with_query(loc, digest=d))
    assert_status(r, 201)
    _assert_blob(client, repo, data, d)


def test_truncated_put_leaves_nothing_visible(registry, client, repo):
    data = random_bytes(50_000)
    d = digest_of(data)
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data[:10_000], 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    p = urlsplit(with_query(loc, digest=d))
    send_truncated(
        registry.host,
        registry.port,
        "PUT",
        f"{p.path}?{p.query}",
        {**OCTET, **registry.auth_headers},
        declared_length=40_000,
        sent=data[10_000:25_000],
    )
    assert not blob_visible(client, repo, d)
    s = _wait_settled(client, loc)
    assert not blob_visible(client, repo, d)
    if s.status_code == 204:
        off = parse_range(s.headers.get("range"))
        assert 10_000 <= off <= 25_000, describe(s)
    _finish_from(client, repo, loc, data, s)


def test_truncated_patch_leaves_session_consistent(registry, client, repo):
    data = random_bytes(60_000)
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, data[:20_000], 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    p = urlsplit(loc)
    path = p.path + (f"?{p.query}" if p.query else "")
    send_truncated(
        registry.host,
        registry.port,
        "PATCH",
        path,
        {**OCTET, "Content-Range": "20000-59999", **registry.auth_headers},
        declared_length=40_000,
        sent=data[20_000:30_000],
    )
    s = _wait_settled(client, loc)
    if s.status_code == 204:
        off = parse_range(s.headers.get("range"))
        assert 20_000 <= off <= 30_000, describe(s)
    assert not blob_visible(client, repo, digest_of(data))
    _finish_from(client, repo, loc, data, s)


def test_truncated_monolithic_post_leaves_nothing_visible(registry, client, repo):
    data = random_bytes(30_000)
    d = digest_of(data)
    send_truncated(
        registry.host,
        registry.port,
        "POST",
        f"/v2/{repo}/blobs/uploads/?digest={d}",
        {**OCTET, **registry.auth_headers},
        declared_length=len(data),
        sent=data[:12_000],
    )
    time.sleep(0.3)
    assert not blob_visible(client, repo, d)
    # and a later complete push of the same content works
    assert push_blob(client, repo, data) == d
    _assert_blob(client, repo, data, d)
