"""The access table of browser sessions and OAuth2 applications: merged into
`test_access.py`, which checks that every principal listed under an endpoint's need is refused.
"""

from __future__ import annotations

from typing import Any

from .support import World

#: need -> {principal: (status, code)}, for the needs these endpoints add.
REFUSED: dict[str, dict[str, tuple[int, str]]] = {}
#: (method, OpenAPI path) of operations that need no right at all.
OPEN_TO_ALL: set[tuple[str, str]] = set()


def endpoints(world: World) -> list[tuple[str, str, str, str, Any]]:
    """(need, method, OpenAPI path, concrete path, JSON body), as in `test_access.endpoints`."""
    return []
