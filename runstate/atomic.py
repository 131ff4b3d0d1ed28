"""The one way any stage writes a file: a unique temporary file in the target folder, fsync, ``os.replace``.

A reader therefore sees either the old file or the whole new one, never a half-written
file, and a crash (SIGKILL, power loss) at any moment leaves the old file in place plus,
at worst, a stray temporary ``.<random>.<name>.tmp`` beside it (``remove_stale_temporaries``
clears those). Unique temporary names mean two writers of the same target never write
into each other's temporary file.

* ``AtomicFile(path)``: the building block, for writers that keep a file open across
  calls (an HDF5 part being filled clip chunk by clip chunk): ``.tmp_path`` to write,
  then ``.commit()`` or ``.abort()``.
* ``atomic_output(path)``: the same as a context manager yielding the temporary path,
  for libraries that write to a path (``h5py.File(tmp, "w")``).
* ``write_bytes``, ``write_text``, ``write_json``, ``write_jsonl``, ``torch_save``: whole files.

Errors at the edges of the machine (no space left, read-only file system, permission
denied) raise ``OutputError``, an ``OSError`` whose one-line message names the target and
the cause; nothing of the target is touched and the temporary file is removed.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); ``mkstemp`` makes 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


class OutputError(OSError):
    """A file could not be written; ``str()`` is one line naming the file and the cause."""

    def __init__(self, path: str | os.PathLike, error: OSError):
        code = error.errno if error.errno is not None else errno.EIO
        cause = error.strerror or str(error)
        super().__init__(code, cause)
        self.path = str(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror} (errno {self.errno})"


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or unlink in ``path`` durable (its directory entry)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p``; ``OutputError`` naming the folder when that is impossible (read-only, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(path, error) from None
    return path


class AtomicFile:
    """A temporary file ``.<random>.<name>.tmp`` beside ``path``, moved over ``path`` by ``commit``.

    Usage::

        out = AtomicFile(path)
        write_somehow(out.tmp_path)
        out.commit()           # or out.abort() to drop it
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        make_dirs(self.path.parent)
        try:
            fd, name = tempfile.mkstemp(prefix=".", suffix=f".{self.path.name}{TMP_SUFFIX}", dir=self.path.parent)
        except OSError as error:
            raise OutputError(self.path, error) from None
        try:
            os.fchmod(fd, _file_mode())
        finally:
            os.close(fd)
        self.tmp_path = Path(name)
        self.done = False

    def commit(self) -> Path:
        """fsync the temporary file, rename it over ``path``, fsync the folder."""
        try:
            fsync_file(self.tmp_path)
            os.replace(self.tmp_path, self.path)
            fsync_dir(self.path.parent)
        except OSError as error:
            self.abort()
            raise OutputError(self.path, error) from None
        self.done = True
        return self.path

    def abort(self) -> None:
        if not self.done:
            self.tmp_path.unlink(missing_ok=True)
            self.done = True


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path``, on an error it is removed."""
    out = AtomicFile(path)
    try:
        yield out.tmp_path
    except OSError as error:
        out.abort()
        if isinstance(error, OutputError):
            raise
        raise OutputError(path, error) from None
    except BaseException:
        out.abort()
        raise
    out.commit()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp_path, open(tmp_path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_bytes(value: Any, indent: bool = False) -> bytes:
    """JSON of plain values (dicts, lists, str, numbers, numpy scalars and arrays); NaN and inf become null."""
    import msgspec

    data = msgspec.json.encode(value, enc_hook=_plain)
    return msgspec.json.format(data, indent=2) if indent else data


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, value: Any, indent: bool = False) -> Path:
    return write_bytes(path, json_bytes(value, indent))


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """One JSON value per line (a history file rewritten whole)."""
    return write_bytes(path, b"".join(json_bytes(record) + b"\n" for record in records))


def torch_save(path: str | os.PathLike, value: Any) -> Path:
    """``torch.save`` atomically. The file is serialised in memory first, so that a full disk gives an
    ``OutputError`` naming the file instead of torch's zip-writer message."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return write_bytes(path, buffer.getbuffer())


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> int:
    """Delete temporary files left in ``folder`` by killed writers; returns how many.

    ``name`` limits it to the temporaries of that one target; ``None`` takes every
    ``.<random>.<name>.tmp`` directly in ``folder`` (not in its subfolders). Only call this
    while holding the lock that excludes other writers of what it removes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for stale in folder.glob(f".*.{name or '*'}{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed
