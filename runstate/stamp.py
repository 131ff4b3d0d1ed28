"""Stage completion stamps: skip a stage whose inputs, settings and outputs are unchanged and whole.

A stage computes a fingerprint of what its result depends on (config sections, input
file identities) and, when it has finished, writes it to ``<stage dir>/.done.json``
together with what it produced: for every output its size and SHA-256, or, for outputs
too large to hash on every run (``features.h5``), its size and the name of a check the
stage runs instead (HDF5: the file opens and every video group is marked complete).

``check_complete`` says "complete" only when the fingerprint matches *and* every output is
still whole; otherwise it says why not in one line (``StampCheck.reason``), which the
stage logs before redoing what is needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from runstate import atomic

STAMP_NAME = ".done.json"
STAMP_VERSION = 2
# A check for an output that is not hashed: returns "" when the file is whole, else why it is not.
OutputCheck = Callable[[Path], str]


def file_identity(path: str | Path) -> dict[str, Any]:
    """Cheap identity of an input file: size and modification time (``missing`` when absent)."""
    path = Path(path)
    if not path.exists():
        return {"path": str(path), "missing": True}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_sha256(path: str | Path, block_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


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


@dataclass(frozen=True)
class StampCheck:
    complete: bool
    reason: str  # "" when complete; else one line: no stamp, other settings, or which output is damaged

    @property
    def damaged(self) -> bool:
        """The settings match but an output is missing or not whole (worth a warning)."""
        return not self.complete and self.reason.startswith("output ")

    def __bool__(self) -> bool:
        return self.complete


def _describe_output(path: Path, checks: Mapping[Path, OutputCheck]) -> dict[str, Any]:
    record: dict[str, Any] = {"path": str(path), "size": path.stat().st_size}
    if path in checks:
        record["check"] = True
    else:
        record["sha256"] = file_sha256(path)
    return record


def _output_problem(record: dict, checks: Mapping[Path, OutputCheck]) -> str:
    path = Path(record["path"])
    if not path.is_file():
        return f"output {path} is missing"
    size = path.stat().st_size
    if size != record.get("size"):
        return f"output {path} is damaged: {size} bytes, {record.get('size')} when it was written"
    if record.get("check"):
        check = checks.get(path)
        problem = check(path) if check is not None else "no check given for it"
        return f"output {path} is damaged: {problem}" if problem else ""
    if file_sha256(path) != record.get("sha256"):
        return f"output {path} is damaged: its content hash differs from when it was written"
    return ""


def check_complete(stage_dir: Path, digest: str, checks: Mapping[Path, OutputCheck] | None = None) -> StampCheck:
    """Whether the stage finished with this fingerprint and all its outputs are still whole."""
    checks = {Path(path): check for path, check in (checks or {}).items()}
    stamp = Path(stage_dir) / STAMP_NAME
    if not stamp.is_file():
        return StampCheck(False, "not run to completion yet")
    try:
        data = json.loads(stamp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return StampCheck(False, f"stamp {stamp} is unreadable")
    if not isinstance(data, dict) or data.get("version") != STAMP_VERSION:
        return StampCheck(False, f"stamp {stamp} is of another version")
    if data.get("fingerprint") != digest:
        return StampCheck(False, "inputs or settings changed since the last complete run")
    for record in data.get("outputs", []):
        problem = _output_problem(record, checks)
        if problem:
            return StampCheck(False, problem)
    return StampCheck(True, "")


def mark_complete(stage_dir: Path, digest: str, outputs: list[Path],
                  checks: Mapping[Path, OutputCheck] | None = None) -> None:
    """Stamp the stage complete: the fingerprint and, per output, size and hash (or the check's name)."""
    checks = {Path(path): check for path, check in (checks or {}).items()}
    records = [_describe_output(Path(path), checks) for path in outputs]
    atomic.write_json(Path(stage_dir) / STAMP_NAME,
                      {"version": STAMP_VERSION, "fingerprint": digest, "outputs": records}, indent=True)


def clear(stage_dir: Path) -> None:
    (Path(stage_dir) / STAMP_NAME).unlink(missing_ok=True)
