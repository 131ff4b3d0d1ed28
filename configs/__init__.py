"""Typed configuration: the schema (`configs.schema`), loading (`configs.load`), run paths."""

from configs.load import load_config
from configs.paths import RunPaths
from configs.schema import Config, ConfigError

__all__ = ["Config", "ConfigError", "RunPaths", "load_config"]
