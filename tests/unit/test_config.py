from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.config import ConfigError, load_settings

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_defaults_are_the_embedded_registry(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": tmp_path})
    assert settings.is_sqlite
    assert settings.auto_migrate
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'dockyard.db'}"
    assert list(settings.storage.locations) == ["local"]


def test_environment_overrides_file(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("server:\n  port: 9000\n")
    settings = load_settings(
        file, environ={"DOCKYARD_SERVER__PORT": "9100", "DOCKYARD_DATABASE__URL": "postgresql://x/y"}
    )
    assert settings.server.port == 9100
    assert not settings.is_sqlite
    assert not settings.auto_migrate


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server:\n  prot: 1\n", "server.prot: unknown key"),
        ("server:\n  port: 70000\n", "server.port"),
        ("storage:\n  locations:\n    a:\n      driver: floppy\n", "storage.locations.a.driver"),
        ("storage:\n  preference: [nowhere]\n", "storage"),
        ("registry:\n  max_manifest_bytes: 10\n", "registry.max_manifest_bytes"),
        ("- a list\n", "top level"),
        ("server: [\n", "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(file, environ={})
    assert key in str(info.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/*.yaml must hold at least one configuration"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    load_settings(example, environ={})


def test_unrelated_dockyard_variables_are_not_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"DOCKYARD_BIN": "/x", "DOCKYARD_DATA_DIR": str(tmp_path)})
    assert settings.data_dir == tmp_path


def test_misspelt_nested_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="servr"):
        load_settings(environ={"DOCKYARD_SERVR__PORT": "1"})
