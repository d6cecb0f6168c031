"""Load settings: defaults < YAML file < DOCKYARD_* environment < command-line overrides.

Environment variables name a key path with double underscores: `DOCKYARD_DATABASE__URL`,
`DOCKYARD_SERVER__PORT`. Values are parsed as YAML scalars (so `8080` is a number).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dockyard.config.settings import Settings

ENV_PREFIX = "DOCKYARD_"


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key."""


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
    environ = os.environ if environ is None else environ
    for key, raw in environ.items():
        if not _is_setting(key):
            continue
        keys = key[len(ENV_PREFIX) :].lower().split("__")
        _set_path(data, keys, yaml.safe_load(raw) if raw else raw, origin=key)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, dotted.split("."), value, origin=f"--{dotted}")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _is_setting(variable: str) -> bool:
    """`DOCKYARD_<FIELD>` or `DOCKYARD_<SECTION>__<KEY>…`; other DOCKYARD_* names (tooling) are not.

    A nested name is always taken as a setting, so a misspelt `DOCKYARD_SERVR__PORT` is an error
    naming the key rather than silently ignored.
    """
    if not variable.startswith(ENV_PREFIX) or variable == "DOCKYARD_SETTINGS_JSON":
        return False
    name = variable[len(ENV_PREFIX) :]
    return "__" in name or name.lower() in Settings.model_fields


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def _set_path(data: dict[str, Any], keys: list[str], value: Any, *, origin: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(keys)} cannot be set, {key} is not a mapping")
        node = child
    node[keys[-1]] = value


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        if error["type"] == "union_tag_invalid":
            parts.append("driver")
            given = error["input"].get("driver") if isinstance(error["input"], dict) else None
            message = f"unknown driver {given!r}"
        else:
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            if parts[:2] == ["storage", "locations"] and len(parts) > 4:
                del parts[3]  # the driver tag pydantic adds to the path of a discriminated union
        lines.append(f"{'.'.join(parts) or '(top level)'}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
