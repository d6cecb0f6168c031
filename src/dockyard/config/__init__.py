"""The one typed settings tree: YAML file + DOCKYARD_* environment overrides. Imports `domain` only."""

from dockyard.config.loader import ConfigError, load_settings
from dockyard.config.settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings"]
