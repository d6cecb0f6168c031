from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import World, running_server, seed


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_server(tmp_path_factory.mktemp("api")) as server:
        yield seed(server)
