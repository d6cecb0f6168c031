"""Content digests (`<algorithm>:<hex>`), per the OCI image specification."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from dockyard.domain.errors import DigestInvalid

#: Registered algorithms and the exact hex length each encodes.
ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}

_ENCODED = re.compile(r"^[a-f0-9]+$")
_GENERIC = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated digest of a supported algorithm."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _GENERIC.match(text):
            raise DigestInvalid(f"invalid digest {text!r}")
        algorithm, _, encoded = text.partition(":")
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != length or not _ENCODED.match(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {text!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def looks_like_digest(reference: str) -> bool:
    """True when a manifest reference is meant as a digest rather than a tag."""
    return ":" in reference
