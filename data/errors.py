"""The error of malformed annotation files, shared by every loader (:mod:`data.annotations`,
:mod:`data.hacs_json`); here so that the pandas-free readers raise it without importing pandas."""

from __future__ import annotations

from pathlib import Path


class AnnotationError(ValueError):
    """An annotation file is malformed. The message names the file, the entry and the field."""

    def __init__(self, path: str | Path, entry: str, field_name: str, problem: str):
        self.path, self.entry, self.field, self.problem = str(path), entry, field_name, problem
        super().__init__(f"{path}: entry {entry}, field '{field_name}': {problem}")
