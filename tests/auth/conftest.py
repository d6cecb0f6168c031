"""Fixtures for the identity and access-control suite.

One Dockyard server on a throwaway PostgreSQL database (`dockyard_auth_<hex>`) for the whole
session, populated once with the CLI (see world.py); a second, rate-limited server is started
only by the tests that need it. Both databases are dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import AuthServer
from .world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("auth-main"))
    try:
        yield w
    finally:
        w.close()
        w.server.close()


@pytest.fixture
def live(world: World) -> World:
    """The shared world, after checking its server is still running."""
    world.server.check_alive()
    return world


#: The strict server: few failed logins allowed, plain passwords refused on the registry login,
#: the shortest token lifetime the settings allow (for the real-expiry test), a superuser by name.
LIMITED_CONFIG = {
    "auth": {
        "max_failed_logins": 5,
        "failed_login_window_seconds": 600,
        "allow_password_on_cli": False,
        "token_lifetime_seconds": 30,
        "superusers": ["cfgsu"],
    },
}


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    srv = AuthServer.create(tmp_path_factory.mktemp("auth-limited"), LIMITED_CONFIG)
    try:
        yield srv
    finally:
        srv.close()
