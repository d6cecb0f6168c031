"""The local driver's "server": a directory. Nothing runs, so nothing refuses credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def server(workdir: Path) -> Iterator[dict[str, Any]]:
    root = workdir / "local-root"
    root.mkdir(parents=True, exist_ok=True)
    yield {"driver": "local", "root": str(root)}


def bad_credentials(options: dict[str, Any]) -> dict[str, Any] | None:
    """None: a directory takes no credentials."""
    return None
