"""Which videos the extract stage reads, and how a decoding worker opens each one.

``extract.videos`` names the videos in one of these ways (``""`` = the dataset's video table):

* ``""``: the dataset's video table (``data.dataset.load_dataset``), its ids and paths;
  a video whose file was not found has path ``""`` and fails as "file not found".
* a video file: one video. A known video extension (``VIDEO_EXTENSIONS``: ``.mp4``,
  ``.mkv``, ``.webm``, ``.mts``, ``.m2ts``, ...) makes it one; a file with another
  extension is one when it is not text and PyAV finds a video stream in it.
* an archive (``ARCHIVE_SUFFIXES``: ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``,
  ``.tar.xz``, ``.zip``): every member whose name has a video extension is one video,
  id = the member's base name without extension (``clips/P01_11.MP4`` -> ``P01_11``).
  Nothing is unpacked (see "Reading archive members" below).
* a folder: its video files and archives (not its subfolders), sorted by name.
* a glob (``/data/*.mp4``, ``/shards/videos-*.tar``): the matching files, sorted; an
  archive among them stands for its members.
* any other file: a list, one path per line, of videos or archives (relative paths
  resolve against the list file's folder). Blank lines are skipped, and so are
  comments: a line that is ``#`` or starts with ``# `` (hash, space) and names no
  existing file. Any other line is a path, including one that starts with ``#``
  (``#take2.mp4`` is a video). A listed video that does not exist fails per video,
  like a missing file; a listed archive that does not exist stops the listing (its
  members cannot be known). A file that is not UTF-8 text (a NUL byte in its first
  ``_SNIFF_BYTES``, or invalid UTF-8) and not a video either is refused in one line.

Ids must be unique (two files with the same stem raise ``ValueError`` naming both).
Each ``VideoSource`` carries a ``cost`` used to balance shards: the duration in seconds
for the dataset (from the annotations), else the file or member size in bytes.

Reading archive members
-----------------------
* Uncompressed tar members and stored (uncompressed) zip members are contiguous bytes
  of the archive: the listing records where they start (``member_offset``) and the
  reader decodes them in place (``data.video.ByteRange``). Memory is that of the plain
  file; nothing is copied.
* Members of compressed tars (gzip, bzip2, xz: no random access) and deflated zip
  members are streamed once, sequentially, into a temporary file that is deleted as
  soon as the decoder has opened it (``data.video.VideoReader``): disk use is bounded
  by the member's size per decoding worker, memory by one copy block. Each decoding
  worker keeps its compressed archive open and takes its members in archive order (the
  listing's order; ``archive_order`` restores it in a share balanced by size), so it
  decompresses the archive once from start to end (listing it decompresses it once
  more). With ``W`` workers a ``.tar.gz`` is thus decompressed ``W + 1`` times in all;
  videos hardly compress, so a plain ``.tar`` is the better container. A tar's
  compression is read from its first bytes, whatever its name says.
"""

from __future__ import annotations

import codecs
import glob
import math
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from data.video import ByteRange, VideoError, VideoReader, probe

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".m2v", ".flv", ".f4v",
                    ".wmv", ".asf", ".3gp", ".3g2", ".ts", ".mts", ".m2ts", ".mxf", ".ogv", ".vob", ".divx",
                    ".y4m")
# name suffix -> archive kind; longest suffixes first, so that ".tar.gz" is not taken for ".gz"
ARCHIVE_SUFFIXES = {".tar.gz": "tar", ".tar.bz2": "tar", ".tar.xz": "tar", ".tgz": "tar", ".tbz2": "tar",
                    ".txz": "tar", ".tar": "tar", ".zip": "zip"}
# first bytes of a compressed file -> tarfile's compression name
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_GLOB_CHARACTERS = set("*?[")
_SNIFF_BYTES = 8192  # a file is text when this much of its start holds no NUL byte and decodes as UTF-8
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we skip, name length, extra length


@dataclass(frozen=True)
class VideoSource:
    """One video to extract.

    Attributes:
        video_id: the id features are stored under.
        path: the video file, or the archive holding it ("" when the dataset has no file for it).
        member: the archive member name ("" for a plain file).
        archive_kind: "" (plain file), "tar" or "zip".
        cost: shard-balancing weight (seconds or bytes, see the module docstring), >= 0.
        member_offset: bytes from the start of the archive to the member's first byte when the
            member is stored there contiguously and uncompressed (read in place); -1 when it must
            be streamed.
        member_size: the member's size in bytes (uncompressed).
        tar_member: for a streamed tar member, its header (so that a worker seeks straight to it).
    """

    video_id: str
    path: str
    member: str = ""
    archive_kind: str = ""
    cost: float = 0.0
    member_offset: int = -1
    member_size: int = 0
    tar_member: tarfile.TarInfo | None = None

    @property
    def display_path(self) -> str:
        """What failure reports show: the file, or ``archive.tar:member``."""
        return f"{self.path}:{self.member}" if self.member else self.path


def _is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def archive_kind(name: str) -> str:
    """"tar" or "zip" for a name with an archive suffix (any case), else ""."""
    lower = name.lower()
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES.items() if lower.endswith(suffix)), "")


def _check_unique(sources: list[VideoSource], where: str) -> list[VideoSource]:
    seen: dict[str, VideoSource] = {}
    for source in sources:
        if source.video_id in seen:
            raise ValueError(f"{where}: two videos have the id {source.video_id!r}: "
                             f"{seen[source.video_id].display_path} and {source.display_path}")
        seen[source.video_id] = source
    return sources


def _file_cost(path: Path) -> float:
    return float(path.stat().st_size) if path.is_file() else 0.0


def sources_from_table(videos: pd.DataFrame) -> list[VideoSource]:
    """The video table (``video_id``, ``path``, ``duration`` seconds) as sources, in table order."""
    sources = []
    for video_id, path, duration in zip(videos["video_id"], videos["path"], videos["duration"]):
        duration = float(duration)
        cost = duration if math.isfinite(duration) and duration >= 0 else 0.0
        sources.append(VideoSource(video_id=str(video_id), path=str(path or ""), cost=cost))
    return _check_unique(sources, "dataset video table")


def _expand(paths: list[Path]) -> list[VideoSource]:
    """Plain files (id = stem) and the video members of the archives among them, in order."""
    sources = []
    for path in paths:
        if archive_kind(path.name):
            sources.extend(sources_from_archive(path))
        else:
            sources.append(VideoSource(video_id=path.stem, path=str(path), cost=_file_cost(path)))
    return sources


def sources_from_paths(paths: list[Path], where: str) -> list[VideoSource]:
    """Videos and archives (expanded to their members), ids unique."""
    return _check_unique(_expand(paths), where)


# ------------------------------------------------------------------ list files


def _read_head(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    except OSError as error:
        raise ValueError(f"{what} {path}: cannot read it ({error.strerror or error})") from None


def _looks_binary(head: bytes) -> bool:
    """A NUL byte, or bytes that are not UTF-8 (a character cut at the end of ``head`` is allowed)."""
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _not_a_list(path: Path, why: str) -> ValueError:
    return ValueError(f"extract.videos: {path} is not a video list ({why}), nor a video or archive by its "
                      f"extension ({' '.join(VIDEO_EXTENSIONS)} {' '.join(ARCHIVE_SUFFIXES)})")


def _is_comment(line: str) -> bool:
    return line == "#" or line.startswith("# ")


def sources_from_list_file(list_file: Path) -> list[VideoSource]:
    """The videos a list file names (rules in the module docstring); ``ValueError`` naming the file
    when it cannot be read or is not UTF-8 text."""
    if _looks_binary(_read_head(list_file, "video list")):
        raise _not_a_list(list_file, "binary content")
    try:
        text = list_file.read_bytes().decode("utf-8")
    except OSError as error:
        raise ValueError(f"video list {list_file}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise _not_a_list(list_file, f"not UTF-8 text at byte {error.start}") from None
    paths = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        path = Path(line).expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        if _is_comment(line) and not path.is_file():
            continue
        if archive_kind(path.name) and not path.is_file():
            raise FileNotFoundError(f"video list {list_file}, line {number}: archive {path} does not exist")
        paths.append(path)
    return sources_from_paths(paths, f"video list {list_file}")


# ------------------------------------------------------------------ archives


def _tar_compression(archive: Path) -> str:
    """tarfile's compression name ("", "gz", "bz2", "xz") from the file's first bytes."""
    with open(archive, "rb") as handle:
        head = handle.read(8)
    return next((name for magic, name in _COMPRESSION_MAGIC.items() if head.startswith(magic)), "")


def _zip_data_offset(raw: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where a zip member's data begins: after its local header (whose extra field may differ from
    the central directory's, so it is read)."""
    raw.seek(info.header_offset)
    signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(raw.read(_ZIP_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"member {info.filename!r}: no local header at byte {info.header_offset}")
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length


def _tar_sources(archive: Path) -> list[VideoSource]:
    compression = _tar_compression(archive)
    sources = []
    with tarfile.open(archive, f"r:{compression}") as tar:
        for member in tar:
            if not (member.isfile() and _is_video_name(member.name)):
                continue
            in_place = not compression and not member.issparse()
            sources.append(VideoSource(
                video_id=Path(member.name).stem, path=str(archive), member=member.name, archive_kind="tar",
                cost=float(member.size), member_offset=member.offset_data if in_place else -1,
                member_size=member.size, tar_member=None if in_place else member))
    return sources


def _zip_sources(archive: Path) -> list[VideoSource]:
    sources = []
    with zipfile.ZipFile(archive) as zip_file, open(archive, "rb") as raw:
        for info in zip_file.infolist():
            if info.is_dir() or not _is_video_name(info.filename):
                continue
            stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1  # bit 0: encrypted
            sources.append(VideoSource(
                video_id=Path(info.filename).stem, path=str(archive), member=info.filename, archive_kind="zip",
                cost=float(info.file_size), member_offset=_zip_data_offset(raw, info) if stored else -1,
                member_size=info.file_size))
    return sources


def sources_from_archive(archive: Path) -> list[VideoSource]:
    """Video members of a tar (plain or compressed) or zip archive, in archive order."""
    kind = archive_kind(archive.name)
    try:
        sources = _tar_sources(archive) if kind == "tar" else _zip_sources(archive)
    # Each library has its own errors for a damaged file: tarfile.ReadError, zipfile.BadZipFile,
    # EOFError of a cut gzip stream, zlib/lzma errors, struct.error of a cut zip header, OSError.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as error:
        raise ValueError(f"video archive {archive}: cannot read it as a {kind} archive "
                         f"({type(error).__name__}: {error})") from None
    if not sources:
        raise ValueError(f"video archive {archive} holds no video files "
                         f"(extensions {' '.join(VIDEO_EXTENSIONS)})")
    return _check_unique(sources, f"video archive {archive}")


# ------------------------------------------------------------------ extract.videos


def list_sources(videos: str) -> list[VideoSource]:
    """The sources ``extract.videos`` names (a video, an archive, a glob, a folder or a list file; see above)."""
    path = Path(videos).expanduser()
    if _GLOB_CHARACTERS & set(videos):
        matches = sorted(Path(match) for match in glob.glob(str(path)) if Path(match).is_file())
        if not matches:
            raise FileNotFoundError(f"extract.videos: no file matches {videos!r}")
        return sources_from_paths(matches, f"extract.videos {videos!r}")
    if path.is_dir():
        files = sorted(child for child in path.iterdir()
                       if child.is_file() and (_is_video_name(child.name) or archive_kind(child.name)))
        if not files:
            raise FileNotFoundError(f"extract.videos: folder {path} holds no video files or archives")
        return sources_from_paths(files, f"folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"extract.videos: {path} does not exist")
    if archive_kind(path.name):
        return sources_from_archive(path)
    if _is_video_name(path.name):
        return sources_from_paths([path], f"extract.videos {path}")
    if _looks_binary(_read_head(path, "extract.videos")):
        if probe(str(path)) is None:
            raise _not_a_list(path, "binary content, and PyAV finds no video stream in it")
        return sources_from_paths([path], f"extract.videos {path}")  # a video with an unusual extension
    return sources_from_list_file(path)


def archive_order(sources: list[VideoSource]) -> list[VideoSource]:
    """The sources with the streamed members of each compressed tar put back in archive order.

    Every other source keeps its place, and the streamed members of one archive keep the
    places they held, only sorted among themselves by their position in the archive. A
    decoding worker that takes every W-th source then moves forward through each
    compressed tar (a gzip stream cannot seek back without decompressing again from the
    start). For a list in which shards were balanced by size (longest first), call this
    on each share.
    """
    slots: dict[str, list[int]] = {}  # archive -> positions of its streamed tar members
    for position, source in enumerate(sources):
        if source.tar_member is not None:
            slots.setdefault(source.path, []).append(position)
    ordered = list(sources)
    for positions in slots.values():
        members = sorted((sources[position] for position in positions), key=lambda s: s.tar_member.offset)
        for position, member in zip(positions, members):
            ordered[position] = member
    return ordered


def source_identity(source: VideoSource) -> list:
    """What the stage fingerprint records of a source: id, file, member, and the file's size and mtime."""
    path = Path(source.path) if source.path else None
    if path is None or not path.exists():
        return [source.video_id, source.path, source.member, None]
    stat = path.stat()
    return [source.video_id, source.path, source.member, stat.st_size, stat.st_mtime_ns]


# ------------------------------------------------------------------ opening, in a decoding process


class SourceOpener:
    """Opens sources inside one decoding process; keeps each streamed archive open across its members.

    Not shared between processes: every DataLoader worker builds its own (the dataset
    creates one per iteration), so file handles never cross a fork.
    """

    def __init__(self):
        self._archives: dict[str, tarfile.TarFile | zipfile.ZipFile] = {}

    def _member_stream(self, source: VideoSource) -> BinaryIO:
        """A file object reading a member that cannot be read in place (compressed)."""
        archive = self._archives.get(source.path)
        if archive is None:
            if source.archive_kind == "tar":
                archive = tarfile.open(source.path, f"r:{_tar_compression(Path(source.path))}")
            else:
                archive = zipfile.ZipFile(source.path)
            self._archives[source.path] = archive
        if source.archive_kind == "tar":
            # Seeks to the member: forward from where the previous member ended, decompressing what lies between.
            member_file = archive.extractfile(source.tar_member)
            if member_file is None:
                raise VideoError(source.display_path, "archive member is not a regular file")
            return member_file
        return archive.open(source.member)

    def reader(self, source: VideoSource, short_side: int, num_threads: int = 0) -> VideoReader:
        """A ``VideoReader`` on the source, frames resized to ``short_side``; ``VideoError`` if unreadable."""
        if not source.path:
            raise VideoError(source.video_id, "video file not found (no path for it in the dataset)")
        if not source.member:
            return VideoReader(source.path, short_side=short_side, name=source.path, num_threads=num_threads)
        if source.member_offset >= 0:
            return VideoReader(ByteRange(source.path, source.member_offset, source.member_size),
                               short_side=short_side, name=source.display_path, num_threads=num_threads)
        try:
            member_file = self._member_stream(source)
        # zipfile raises RuntimeError for an encrypted member, NotImplementedError for an unknown method
        except (OSError, KeyError, EOFError, RuntimeError, NotImplementedError, tarfile.TarError,
                zipfile.BadZipFile) as error:
            raise VideoError(source.display_path, f"cannot read archive member: {error}") from None
        with member_file:  # copied to a temporary file by the reader, so it can be closed at once
            return VideoReader(member_file, short_side=short_side, name=source.display_path,
                               num_threads=num_threads)

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()
