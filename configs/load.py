"""Loading a YAML config (with `_base_` inheritance) and `section.key=value` overrides.

The result is a validated `configs.schema.Config`. Everything that can be wrong with a
config is found here, before any stage starts: an unknown key (with the closest valid
keys), a value of the wrong type, an impossible value.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from configs.schema import PATH_KEYS, Config, ConfigError

BASE_KEY = "_base_"
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the run's `Config` from a YAML file and `section.key=value` overrides.

    Relative paths inside a YAML file resolve against that file's folder; relative
    paths given as overrides resolve against the current folder.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    values = _read_yaml_with_bases(path, seen=())
    for text in overrides:
        key, value = parse_override(text)
        value = _resolve_paths_in_value(key, value, Path.cwd())
        _set_dotted(values, key, value)
    return config_from_dict(values)


def load_config_values(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Like ``load_config``, from a config already read (e.g. the one a model bundle carries)."""
    values = _merge({}, values)  # a copy: overrides must not change the caller's dict
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(values, key, _resolve_paths_in_value(key, value, Path.cwd()))
    return config_from_dict(values)


def parse_override(text: str) -> tuple[str, Any]:
    """`"bmn.lr=1e-3"` -> `("bmn.lr", 0.001)`; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. a pattern like {participant}/{video_id}.mp4): the plain string
    # YAML reads 1e-3 as a string (it wants 1.0e-3); accept the plain scientific form too.
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)
    return key, value


def config_from_dict(values: dict[str, Any]) -> Config:
    """Check `values` against the schema and build a validated `Config`."""
    config = _build_dataclass(Config, values, prefix="")
    config.validate()
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_yaml(config: Config) -> str:
    """The resolved config as YAML text (what ``<work_dir>/config.yaml`` holds; it loads back as is)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every valid dotted key of the schema, e.g. `extract.fps`."""
    keys = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        field_type = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(field_type):
            keys.extend(all_keys(field_type, key + "."))
    return keys


# --------------------------------------------------------------------------------------
# YAML files and inheritance


def _read_yaml_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle through {[str(p) for p in seen]}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    values = _resolve_paths_in_tree(values, path.parent)
    bases = values.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ file not found: {base_path}")
        merged = _merge(merged, _read_yaml_with_bases(base_path.resolve(), seen + (path,)))
    return _merge(merged, values)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins. Lists and scalars are replaced whole."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts. A mapping given for a section (``extract={fps: 30}``) is merged
    into what the file says, so only the keys it names change."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        value = _merge(node[parts[-1]], value)
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------
# Paths


def _is_path_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in PATH_KEYS)


def _resolve_path(value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    expanded = Path(value).expanduser()
    return str(expanded if expanded.is_absolute() else (folder / expanded).resolve())


def _resolve_paths_in_value(key: str, value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_paths_in_value(f"{key}.{k}", v, folder) for k, v in value.items()}
    return _resolve_path(value, folder) if _is_path_key(key) else value


def _resolve_paths_in_tree(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = {}
    for section, body in values.items():
        if isinstance(body, dict):
            out[section] = {k: _resolve_paths_in_value(f"{section}.{k}", v, folder) for k, v in body.items()}
        else:
            out[section] = body
    return out


# --------------------------------------------------------------------------------------
# Typed construction


def _unknown_key_error(key: str, cls: type, prefix: str) -> ConfigError:
    valid = all_keys(Config)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not close:  # fall back to the keys of the same section
        close = [k for k in valid if k.startswith(prefix)][:6]
    return ConfigError(f"{key}: unknown key; closest valid keys: {', '.join(close)}")


def _build_dataclass(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise _unknown_key_error(f"{prefix}{key}", cls, prefix)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        key = f"{prefix}{f.name}"
        field_type = hints[f.name]
        if dataclasses.is_dataclass(field_type):
            kwargs[f.name] = _build_dataclass(field_type, values[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(values[f.name], field_type, key)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_type)}, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # no setting of the schema means anything at .inf or .nan
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{key}: unsupported schema type {tp}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
