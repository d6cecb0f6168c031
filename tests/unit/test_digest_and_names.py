from __future__ import annotations

import hashlib

import pytest

from dockyard.domain.digest import Digest
from dockyard.domain.errors import DigestInvalid, NameInvalid, TagInvalid
from dockyard.domain.names import namespace_of, validate_repository_name, validate_tag

pytestmark = pytest.mark.unit


def test_digest_round_trip() -> None:
    text = "sha256:" + hashlib.sha256(b"x").hexdigest()
    digest = Digest.parse(text)
    assert digest.algorithm == "sha256"
    assert str(digest) == text
    assert Digest.of(b"x") == digest


def test_sha512_digest() -> None:
    text = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert Digest.parse(text) == Digest.of(b"x", "sha512")


@pytest.mark.parametrize(
    "text",
    [
        "sha256:abc",
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "md5:" + "a" * 32,
        "sha512:" + "a" * 64,
        "nocolon",
        "",
        "sha256:" + "a" * 64 + "/../x",
    ],
)
def test_invalid_digests(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a/b/c/d", "my-org/my_repo.v2", "a__b/c--d"])
def test_valid_names(name: str) -> None:
    assert validate_repository_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a/.b", "-a", "a_", "a" * 256, "a/b%2f", "a b"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_repository_name(name)


def test_namespace_is_first_component() -> None:
    assert namespace_of("org/team/app") == "org"
    assert namespace_of("solo") == "solo"


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a/b", "a:b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid):
        validate_tag(tag)
