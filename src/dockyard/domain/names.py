"""Repository names and tags, per the OCI distribution specification's grammar."""

from __future__ import annotations

import re
from typing import Final

from dockyard.domain.errors import NameInvalid, TagInvalid

#: Longest accepted repository name (the spec lets registries cap it; Distribution uses 255).
MAX_NAME_LENGTH: Final = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def validate_repository_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.match(name):
        raise NameInvalid(f"invalid repository name {name!r}")
    return name


def namespace_of(name: str) -> str:
    """The namespace (first path component) a repository belongs to."""
    return name.partition("/")[0]


def validate_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise TagInvalid(f"invalid tag {tag!r}")
    return tag
