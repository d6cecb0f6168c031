"""Path parameters shared by the resources, with the grammar they must follow."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from dockyard.api.schemas import DIGEST_PATTERN

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"

RepositoryName = Annotated[
    str,
    Path(
        description="Full repository name, NAMESPACE/NAME[/...] (its slashes as they are).",
        max_length=255,
        pattern=rf"^{_COMPONENT}(?:/{_COMPONENT})*$",
        examples=["acme/web"],
    ),
]
TagName = Annotated[str, Path(description="A tag.", pattern=r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$", examples=["v1"])]
DigestParam = Annotated[str, Path(description="A manifest digest.", max_length=160, pattern=DIGEST_PATTERN)]
