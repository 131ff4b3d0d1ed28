"""Typed configuration: the schema (`configs.schema`) and loading (`configs.load`)."""

from configs.load import load_config
from configs.schema import Config, ConfigError

__all__ = ["Config", "ConfigError", "load_config"]
