"""Tag listing and the catalog, with n/last paging and the Link header."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from .helpers import (
    OCI_MANIFEST,
    assert_error,
    assert_status,
    describe,
    push_blob,
    push_image,
    put_manifest,
    rand,
)

pytestmark = pytest.mark.integration

TAGS = ["v1.0", "a", "latest", "b2", "b1", "c", "0.9", "v1.1", "z_last", "m-mid"]


def _link_next(resp) -> str | None:
    link = resp.headers.get("link")
    if link is None:
        return None
    m = re.fullmatch(r'\s*<([^>]+)>\s*;\s*rel="?next"?\s*', link)
    assert m, f"malformed Link header {link!r}" + describe(resp)
    return m.group(1)


@pytest.fixture
def tagged(client, repo):
    m = push_image(client, repo)
    for t in TAGS:
        assert_status(put_manifest(client, repo, t, m.body, OCI_MANIFEST), 201)
    return repo


def test_tags_list(client, tagged):
    r = client.get(f"/v2/{tagged}/tags/list")
    assert_status(r, 200)
    body = r.json()
    assert body["name"] == tagged
    assert body["tags"] == sorted(TAGS)
    assert _link_next(r) is None


def test_tags_list_n(client, tagged):
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 3})
    assert_status(r, 200)
    assert r.json()["tags"] == sorted(TAGS)[:3]
    nxt = _link_next(r)
    assert nxt is not None, "a page that is full and has more must link to the next" + describe(r)
    u = urlsplit(nxt)
    assert u.path == f"/v2/{tagged}/tags/list", nxt
    q = parse_qs(u.query)
    assert q.get("n") == ["3"], nxt
    assert q.get("last") == [sorted(TAGS)[2]], nxt


def test_tags_list_follow_links(client, tagged):
    url = f"/v2/{tagged}/tags/list?n=4"
    seen: list[str] = []
    for _ in range(10):
        r = client.get(url)
        assert_status(r, 200)
        page = r.json()["tags"] or []
        assert len(page) <= 4
        seen += page
        nxt = _link_next(r)
        if nxt is None:
            break
        assert len(page) == 4, "only a full page may link onwards" + describe(r)
        url = nxt
    assert seen == sorted(TAGS)


def test_tags_list_last(client, tagged):
    s = sorted(TAGS)
    r = client.get(f"/v2/{tagged}/tags/list", params={"last": s[4]})
    assert_status(r, 200)
    assert r.json()["tags"] == s[5:]
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 2, "last": s[4]})
    assert_status(r, 200)
    assert r.json()["tags"] == s[5:7]
    # `last` need not be an existing tag: results start strictly after it
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 2, "last": "b"})
    assert_status(r, 200)
    assert r.json()["tags"] == [t for t in s if t > "b"][:2]
    # past the end: empty, no Link
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 5, "last": s[-1]})
    assert_status(r, 200)
    assert not r.json()["tags"]
    assert _link_next(r) is None


def test_tags_list_n_zero(client, tagged):
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 0})
    assert_status(r, 200)
    assert not r.json()["tags"]
    assert "link" not in r.headers, describe(r)


def test_tags_list_n_larger_than_count(client, tagged):
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": 1000})
    assert_status(r, 200)
    assert r.json()["tags"] == sorted(TAGS)
    assert _link_next(r) is None


@pytest.mark.parametrize("n", ["-1", "abc"])
def test_tags_list_bad_n(client, tagged, n):
    r = client.get(f"/v2/{tagged}/tags/list", params={"n": n})
    # Not defined by the spec: a 400 error or ignoring it are both sane; never a 5xx.
    assert r.status_code in (200, 400), describe(r)
    if r.status_code == 400:
        assert_error(
            r, 400, "PAGINATION_NUMBER_INVALID", "UNSUPPORTED", "NAME_INVALID", "MANIFEST_INVALID", "TAG_INVALID"
        )


def test_tags_list_unknown_repository(client, new_repo):
    r = client.get(f"/v2/{new_repo()}/tags/list")
    assert_error(r, 404, "NAME_UNKNOWN")


def test_tags_list_repo_without_tags(client, repo):
    # A repository that exists (has a blob / untagged manifest) but no tag.
    push_image(client, repo)
    r = client.get(f"/v2/{repo}/tags/list")
    if r.status_code == 404:  # some registries only know repositories with tags
        assert_error(r, 404, "NAME_UNKNOWN")
    else:
        assert_status(r, 200)
        assert not r.json().get("tags")


def test_catalog_paging(client):
    prefix = f"itcat-{rand()}"
    names = [f"{prefix}/{s}" for s in ("a", "b", "c", "d")]
    for n in names:
        push_image(client, n, "t")
    r = client.get("/v2/_catalog", params={"n": 2, "last": names[0]})
    assert_status(r, 200)
    assert r.json()["repositories"] == names[1:3]
    nxt = _link_next(r)
    assert nxt is not None, describe(r)
    u = urlsplit(nxt)
    assert u.path == "/v2/_catalog", nxt
    q = parse_qs(u.query)
    assert q.get("n") == ["2"], nxt
    assert q.get("last") == [names[2]], nxt
    r = client.get(nxt)
    assert_status(r, 200)
    assert r.json()["repositories"][0] == names[3]


def test_catalog_full_walk(client):
    prefix = f"itwalk-{rand()}"
    names = [f"{prefix}/{s}" for s in ("x", "y")]
    for n in names:
        push_blob(client, n, b"catalog " + n.encode())
        push_image(client, n, "t")
    url = "/v2/_catalog?n=50"
    seen: list[str] = []
    for _ in range(1000):
        r = client.get(url)
        assert_status(r, 200)
        page = r.json()["repositories"] or []
        seen += page
        nxt = _link_next(r)
        if nxt is None:
            break
        url = nxt
    assert seen == sorted(seen), "catalog must be in lexical order"
    assert len(seen) == len(set(seen)), "catalog pages must not overlap"
    for n in names:
        assert n in seen


def test_catalog_n_zero(client):
    r = client.get("/v2/_catalog", params={"n": 0})
    assert_status(r, 200)
    assert not r.json()["repositories"]
    assert "link" not in r.headers, describe(r)
