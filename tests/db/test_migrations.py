"""Migrations on real databases: upgrade, downgrade, upgrade again, with data in the tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from dockyard.db import migrate
from dockyard.db.engine import create_sync_engine

pytestmark = pytest.mark.integration

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def _tables(url: str) -> set[str]:
    engine = create_sync_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()
    assert {"blobs", "manifests", "tags", "uploads", "repository_blobs"} <= _tables(database_url)

    engine = create_sync_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO namespaces (name, created_at) VALUES ('ns', 1)"))
        conn.execute(text("INSERT INTO blobs (digest, size, created_at) VALUES ('sha256:00', 1, 1)"))
    engine.dispose()

    migrate.downgrade(database_url, "base")
    assert migrate.current_revision(database_url) is None
    assert "blobs" not in _tables(database_url)

    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()
    migrate.check_current(database_url)


def test_usage_of_existing_content_is_counted_by_the_upgrade(database_url: str) -> None:
    migrate.upgrade(database_url, "0004")
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'ns', 1), (2, 'other', 1)"))
            conn.execute(
                text(
                    "INSERT INTO repositories (id, namespace_id, name, created_at) "
                    "VALUES (1, 1, 'ns/a', 1), (2, 1, 'ns/b', 1), (3, 2, 'other/c', 1)"
                )
            )
            conn.execute(text("INSERT INTO blobs (id, digest, size, created_at) VALUES (1, 'sha256:b1', 100, 1)"))
            conn.execute(text("INSERT INTO blobs (id, digest, size, created_at) VALUES (2, 'sha256:b2', 7, 1)"))
            # b1 in two repositories of ns (counted once), and in other; b2 in ns only.
            conn.execute(
                text(
                    "INSERT INTO repository_blobs (repository_id, blob_id, created_at) "
                    "VALUES (1, 1, 1), (2, 1, 1), (3, 1, 1), (1, 2, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at) "
                    "VALUES (1, 'sha256:m1', 'x', 30, :c, 1), (2, 'sha256:m1', 'x', 30, :c, 1)"
                ),
                {"c": b"{}"},
            )
        migrate.upgrade(database_url)
        with engine.begin() as conn:
            used = dict(
                conn.execute(text("SELECT namespace_id, SUM(bytes) FROM namespace_usage GROUP BY namespace_id")).all()
            )
            items = conn.execute(text("SELECT COUNT(*) FROM namespace_usage_items WHERE namespace_id = 1")).scalar()
        assert {int(k): int(v) for k, v in used.items()} == {1: 100 + 7 + 30, 2: 100}
        assert items == 3
    finally:
        engine.dispose()


def test_live_tag_is_unique(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'ns', 1)"))
            conn.execute(text("INSERT INTO repositories (id, namespace_id, name, created_at) VALUES (1, 1, 'ns/r', 1)"))
            conn.execute(
                text(
                    "INSERT INTO manifests (id, repository_id, digest, media_type, size, content, created_at) "
                    "VALUES (1, 1, 'sha256:aa', 'x', 1, :c, 1)"
                ),
                {"c": b"{}"},
            )
            insert = "INSERT INTO tags (repository_id, name, manifest_id, start_at, end_at) VALUES (1, 't', 1, 1, :end)"
            conn.execute(text(insert), {"end": 5})
            conn.execute(text(insert), {"end": 6})
            conn.execute(text(insert), {"end": None})
        with pytest.raises(Exception, match=r"(?i)unique"), engine.begin() as conn:
            conn.execute(text(insert), {"end": None})
    finally:
        engine.dispose()


def test_server_refuses_an_out_of_date_postgres_schema(postgres_url: str, tmp_path: Path) -> None:
    config = tmp_path / "dockyard.yaml"
    config.write_text(f"database:\n  url: {postgres_url}\n")
    result = subprocess.run(
        [DOCKYARD, "serve", "--host", "127.0.0.1", "--port", "1", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "dockyard db upgrade" in result.stderr
    assert "empty database" in result.stderr


def test_db_upgrade_command(postgres_url: str, tmp_path: Path) -> None:
    config = tmp_path / "dockyard.yaml"
    config.write_text(f"database:\n  url: {postgres_url}\n")
    result = subprocess.run(
        [DOCKYARD, "db", "upgrade", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(postgres_url) == migrate.head_revision()


def test_bad_configuration_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "dockyard.yaml"
    config.write_text("storage:\n  locations:\n    local:\n      driver: floppy\n")
    result = subprocess.run(
        [DOCKYARD, "serve", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "storage.locations.local.driver" in result.stderr
    validate = subprocess.run(
        [DOCKYARD, "config", "validate", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert validate.returncode != 0
    assert "storage.locations.local.driver" in validate.stderr


def test_existing_app_tokens_get_every_scope(database_url: str) -> None:
    migrate.upgrade(database_url, "0007")
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'u', 1)"))
            conn.execute(
                text("INSERT INTO accounts (id, kind, name, namespace_id, created_at) VALUES (1, 'user', 'u', 1, 1)")
            )
            conn.execute(
                text("INSERT INTO app_tokens (account_id, title, token_hash, created_at) VALUES (1, 't', 'h', 1)")
            )
            conn.execute(text("INSERT INTO repositories (namespace_id, name, created_at) VALUES (1, 'u/r', 1)"))
        migrate.upgrade(database_url)
        with engine.begin() as conn:
            scopes = conn.execute(text("SELECT scopes FROM app_tokens")).scalar_one()
            description = conn.execute(text("SELECT description FROM repositories")).scalar_one()
        assert scopes.split() == [
            "repo:read",
            "repo:write",
            "repo:admin",
            "repo:create",
            "org:admin",
            "user:read",
            "user:admin",
            "super:user",
        ]
        assert description is None
        migrate.downgrade(database_url, "0007")
        migrate.upgrade(database_url)
    finally:
        engine.dispose()


def test_sessions_and_oauth_tables_round_trip_with_data(database_url: str) -> None:
    """0010 (sessions, OAuth2 applications, codes, tokens) downgrades and upgrades again with rows
    in its tables and in the accounts they reference."""
    migrate.upgrade(database_url, "0010")
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO namespaces (id, name, kind, created_at) VALUES (1, 'u', 'user', 1)"))
            conn.execute(text("INSERT INTO namespaces (id, name, kind, created_at) VALUES (2, 'o', 'org', 1)"))
            conn.execute(
                text("INSERT INTO accounts (id, kind, name, namespace_id, created_at) VALUES (1, 'user', 'u', 1, 1)")
            )
            conn.execute(
                text(
                    "INSERT INTO sessions (token_hash, account_id, epoch, created_at, last_used_at, authenticated_at) "
                    "VALUES ('s', 1, 0, 1, 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO oauth_applications (id, namespace_id, name, client_id, secret_hash, redirect_uris, "
                    "scopes, created_at) VALUES (1, 2, 'app', 'c', 'h', '[]', 'repo:read', 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO oauth_authorizations (application_id, account_id, scopes, created_at, updated_at) "
                    "VALUES (1, 1, 'repo:read', 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO oauth_codes (code_hash, application_id, account_id, redirect_uri, scopes, "
                    "code_challenge, grant_id, created_at, expires_at) VALUES ('k', 1, 1, 'https://x/', 'repo:read', "
                    "'c', 'g', 1, 2)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO oauth_tokens (token_hash, kind, application_id, account_id, grant_id, scopes, "
                    "created_at, expires_at) VALUES ('t', 'access', 1, 1, 'g', 'repo:read', 1, 2)"
                )
            )
        migrate.downgrade(database_url, "0009")
        tables = _tables(database_url)
        assert not tables & {"sessions", "oauth_applications", "oauth_authorizations", "oauth_codes", "oauth_tokens"}
        assert "accounts" in tables
        migrate.upgrade(database_url, "0010")
        with engine.begin() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM oauth_tokens")).scalar_one() == 0
            assert conn.execute(text("SELECT name FROM accounts")).scalar_one() == "u"
    finally:
        engine.dispose()
