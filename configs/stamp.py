"""Stage completion stamps: skip a stage whose inputs, settings and outputs are unchanged.

A stage computes a fingerprint of what its result depends on (config sections, input
file identities) and, when it has finished, writes it to `<stage dir>/.done.json`
together with the outputs it produced. A later run with the same fingerprint whose
outputs all still exist says so and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

STAMP_NAME = ".done.json"


def file_identity(path: str | Path) -> dict[str, Any]:
    """Cheap identity of an input file: size and modification time (None when missing)."""
    path = Path(path)
    if not path.exists():
        return {"path": str(path), "missing": True}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fingerprint(*parts: Any) -> str:
    """SHA-256 of a JSON rendering of config sections (dataclasses), dicts, strings, files."""
    def plain(value):
        if is_dataclass(value):
            return asdict(value)
        if isinstance(value, Path):
            return str(value)
        return value

    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def is_complete(stage_dir: Path, digest: str) -> bool:
    stamp = Path(stage_dir) / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return data.get("fingerprint") == digest and all(Path(p).exists() for p in data.get("outputs", []))


def mark_complete(stage_dir: Path, digest: str, outputs: list[Path]) -> None:
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / (STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": digest, "outputs": [str(p) for p in outputs]}, indent=1))
    os.replace(tmp, stage_dir / STAMP_NAME)


def clear(stage_dir: Path) -> None:
    (Path(stage_dir) / STAMP_NAME).unlink(missing_ok=True)
