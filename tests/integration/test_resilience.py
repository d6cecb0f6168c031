"""Uploads survive a crash (kill -9) and continue on another instance."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from .helpers import (
    OCI_MANIFEST,
    REFERENCE,
    absolute,
    assert_status,
    basic_auth_header,
    create_superuser,
    describe,
    digest_of,
    dockyard_server,
    get_manifest,
    parse_range,
    patch_chunk,
    path_of,
    push_image,
    put_manifest,
    rand,
    random_bytes,
    reference_server,
    start_upload,
    with_query,
)

pytestmark = pytest.mark.integration


def _slow_patch(host, port, path, data, start, first, stop_evt, auth_headers):
    """Stream a PATCH: send `first` bytes of `data`, then dribble until told to stop."""
    s = socket.create_connection((host, port), timeout=10)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in auth_headers.items())
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Range: {start}-{start + len(data) - 1}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        s.sendall(head.encode() + data[:first])
        sent = first
        while not stop_evt.is_set() and sent < len(data) - 1:
            s.sendall(data[sent : sent + 1024])
            sent += 1024
            time.sleep(0.02)
    except OSError:
        pass  # server died under us: expected
    finally:
        s.close()


@pytest.mark.slow
def test_upload_resumes_after_kill_9(tmp_path):
    base = tmp_path / "crash"
    base.mkdir()
    make = reference_server if REFERENCE else dockyard_server
    srv = make(base)
    port = srv.port
    srv.start()
    create_superuser(srv)
    creds = srv.credentials
    try:
        with httpx.Client(base_url=srv.url, timeout=30, auth=creds) as c:
            repo = f"it/crash-{rand()}"
            # something complete before the crash must survive it
            img = push_image(c, repo, "before")
            data = random_bytes(3 * 1024 * 1024 + 123)
            loc = start_upload(c, repo)
            first = 1024 * 1024
            r = patch_chunk(c, loc, data[:first], 0)
            assert_status(r, 202)
            loc = absolute(c, r.headers["location"])

            # second chunk is streaming when the server is killed
            stop = threading.Event()
            t = threading.Thread(
                target=_slow_patch,
                args=(
                    srv.host,
                    port,
                    path_of(loc),
                    data[first : 2 * first + 512 * 1024],
                    first,
                    256 * 1024,
                    stop,
                    basic_auth_header(*creds) if creds else {},
                ),
                daemon=True,
            )
            t.start()
            time.sleep(0.6)
        srv.kill9()
        stop.set()
        t.join(timeout=10)

        srv = make(base, port=port)  # identical command line: same data dir, same port
        srv.start()
        srv.credentials = creds  # the user survives the crash with the database
        with httpx.Client(base_url=srv.url, timeout=30, auth=srv.auth) as c:
            r = get_manifest(c, repo, "before")
            assert_status(r, 200)
            assert r.content == img.body

            s = c.get(loc)
            assert_status(s, 204)
            off = parse_range(s.headers.get("range"))
            print(f"resuming after kill -9 at offset {off} (first chunk {first})")
            assert first <= off <= 2 * first + 512 * 1024, describe(s)
            loc = absolute(c, s.headers.get("location") or loc)
            r = patch_chunk(c, loc, data[off:], off)
            assert_status(r, 202)
            assert parse_range(r.headers.get("range")) == len(data), describe(r)
            d = digest_of(data)
            r = c.put(with_query(absolute(c, r.headers["location"]), digest=d))
            assert_status(r, 201)
            r = c.get(f"/v2/{repo}/blobs/{d}")
            assert_status(r, 200)
            assert r.headers.get("docker-content-digest") == d
            assert digest_of(r.content) == d
            assert r.content == data
    finally:
        srv.stop()


@pytest.fixture
def shared_backend() -> str:
    return "reference" if REFERENCE else "postgres"


def test_upload_continues_on_another_instance(server_pool, shared_backend):
    a = server_pool.get(shared_backend)
    b = server_pool.second_instance(shared_backend)
    try:
        with (
            httpx.Client(base_url=a.url, timeout=30, auth=a.auth) as ca,
            httpx.Client(base_url=b.url, timeout=30, auth=b.auth) as cb,
        ):
            repo = f"it/instances-{rand()}"
            data = random_bytes(2 * 1024 * 1024 + 7)
            half = len(data) // 2
            loc_a = start_upload(ca, repo)
            r = patch_chunk(ca, loc_a, data[:half], 0)
            assert_status(r, 202)
            # continue on B with the Location A handed out
            loc_b = absolute(cb, path_of(r.headers["location"]))
            s = cb.get(loc_b)
            assert_status(s, 204)
            assert parse_range(s.headers.get("range")) == half, describe(s)
            r = patch_chunk(cb, loc_b, data[half : half + 1000], half)
            assert_status(r, 202)
            assert parse_range(r.headers.get("range")) == half + 1000, describe(r)
            # back on A for one more chunk, then finish on B
            loc_a = absolute(ca, path_of(r.headers["location"]))
            r = patch_chunk(ca, loc_a, data[half + 1000 : half + 5000], half + 1000)
            assert_status(r, 202)
            loc_b = absolute(cb, path_of(r.headers["location"]))
            d = digest_of(data)
            r = cb.put(
                with_query(loc_b, digest=d),
                content=data[half + 5000 :],
                headers={"Content-Type": "application/octet-stream"},
            )
            assert_status(r, 201)
            # pull from A
            r = ca.get(f"/v2/{repo}/blobs/{d}")
            assert_status(r, 200)
            assert r.content == data
            assert r.headers.get("docker-content-digest") == d
            # the finished session is gone on both
            assert ca.get(loc_a).status_code == 404
            # a manifest pushed on B is visible on A
            m = push_image(cb, repo, "shared")
            r = get_manifest(ca, repo, "shared")
            assert_status(r, 200)
            assert r.content == m.body
            assert_status(put_manifest(ca, repo, "again", m.body, OCI_MANIFEST), 201)
            assert cb.get(f"/v2/{repo}/tags/list").json()["tags"] == ["again", "shared"]
    finally:
        b.stop()
        server_pool.extra.remove(b)


def test_concurrent_patches_at_same_offset(registry, client, repo):
    """Two PATCHes racing for the same range: exactly one wins, the session stays coherent."""
    size = 2 * 1024 * 1024
    loc = start_upload(client, repo)
    r = patch_chunk(client, loc, b"h" * 10, 0)
    assert_status(r, 202)
    loc = absolute(client, r.headers["location"])
    bodies = [random_bytes(size), random_bytes(size)]
    results: list[httpx.Response | None] = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        with httpx.Client(base_url=registry.url, timeout=60, auth=registry.auth) as c:
            barrier.wait()
            results[i] = patch_chunk(c, loc, bodies[i], 10)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = [r.status_code for r in results if r is not None]
    assert len(statuses) == 2, statuses
    winners = [i for i, r in enumerate(results) if r is not None and r.status_code == 202]
    assert len(winners) == 1, "exactly one racing PATCH may be accepted" + "".join(
        describe(r) for r in results if r is not None
    )
    loser = results[1 - winners[0]]
    assert loser is not None
    assert loser.status_code in (409, 416, 423), describe(loser)
    s = client.get(loc)
    assert_status(s, 204)
    assert parse_range(s.headers.get("range")) == 10 + size, describe(s)
    data = b"h" * 10 + bodies[winners[0]]
    d = digest_of(data)
    r = client.put(with_query(loc, digest=d))
    assert_status(r, 201)
    r = client.get(f"/v2/{repo}/blobs/{d}")
    assert_status(r, 200)
    served = digest_of(r.content)
    which = {digest_of(b"h" * 10 + b): f"body {i}" for i, b in enumerate(bodies)}.get(served, "neither")
    assert served == d, (
        f"blob {d} serves bytes with digest {served} ({which}; winner was body {winners[0]}, "
        f"loser answered {loser.status_code}, {len(r.content)} bytes served)"
    )
    assert r.content == data
