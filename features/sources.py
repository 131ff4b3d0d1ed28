"""Which videos the extract stage reads, and how a decoding worker opens each one.

A run's videos come from one of four places (``extract.videos``):

* ``""``: the dataset's video table (``data.dataset.load_dataset``), its ids and paths;
  a video whose file was not found has path ``""`` and fails as "file not found".
* a ``.tar`` or ``.zip`` archive: every member whose name ends in a video extension is
  one video, id = the member's base name without extension (``clips/P01_11.MP4`` ->
  ``P01_11``). Members are read one at a time straight from the archive (no unpacking
  to disk): a worker hands decord a file object over the member.
* a glob (``/data/*.mp4``) or a folder (every video file in it): id = file stem.
* any other file: a list of video paths, one per line (blank lines and lines starting
  with ``#`` are skipped; relative paths resolve against the list file's folder);
  id = file stem. Listed paths that do not exist fail per video, like a missing file.

Ids must be unique (two files with the same stem raise ``ValueError`` naming both).
Each ``VideoSource`` carries a ``cost`` used to balance shards: the duration in seconds
for the dataset (from the annotations), else the file or member size in bytes.
"""

from __future__ import annotations

import glob
import math
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from data.video import VideoError, VideoReader

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts")
ARCHIVE_KINDS = {".tar": "tar", ".zip": "zip"}  # suffix -> archive kind
_GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class VideoSource:
    """One video to extract.

    Attributes:
        video_id: the id features are stored under.
        path: the video file, or the archive holding it ("" when the dataset has no file for it).
        member: the archive member name ("" for a plain file).
        archive_kind: "" (plain file), "tar" or "zip".
        cost: shard-balancing weight (seconds or bytes, see the module docstring), >= 0.
        tar_member: for tar archives, the member's header (so that a worker seeks straight to it).
    """

    video_id: str
    path: str
    member: str = ""
    archive_kind: str = ""
    cost: float = 0.0
    tar_member: tarfile.TarInfo | None = None

    @property
    def display_path(self) -> str:
        """What failure reports show: the file, or ``archive.tar:member``."""
        return f"{self.path}:{self.member}" if self.member else self.path


def _is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


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


def sources_from_paths(paths: list[Path], where: str) -> list[VideoSource]:
    """Plain files, id = stem."""
    sources = [VideoSource(video_id=path.stem, path=str(path), cost=_file_cost(path)) for path in paths]
    return _check_unique(sources, where)


def sources_from_list_file(list_file: Path) -> list[VideoSource]:
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        paths.append(path if path.is_absolute() else list_file.parent / path)
    return sources_from_paths(paths, f"video list {list_file}")


def sources_from_archive(archive: Path) -> list[VideoSource]:
    """Video members of a ``.tar`` or ``.zip``, in archive order."""
    kind = ARCHIVE_KINDS[archive.suffix.lower()]
    sources = []
    if kind == "tar":
        try:
            with tarfile.open(archive, "r:") as tar:  # uncompressed only: members are read by seeking
                for member in tar:
                    if member.isfile() and _is_video_name(member.name):
                        sources.append(VideoSource(video_id=Path(member.name).stem, path=str(archive),
                                                   member=member.name, archive_kind=kind,
                                                   cost=float(member.size), tar_member=member))
        except tarfile.TarError as error:
            raise ValueError(f"video archive {archive}: cannot read it as an uncompressed tar ({error}); "
                             "compressed tars (.tar.gz) are not supported, videos hardly compress") from None
    else:
        try:
            with zipfile.ZipFile(archive) as zip_file:
                for info in zip_file.infolist():
                    if not info.is_dir() and _is_video_name(info.filename):
                        sources.append(VideoSource(video_id=Path(info.filename).stem, path=str(archive),
                                                   member=info.filename, archive_kind=kind,
                                                   cost=float(info.file_size)))
        except zipfile.BadZipFile as error:
            raise ValueError(f"video archive {archive}: not a valid zip file ({error})") from None
    if not sources:
        raise ValueError(f"video archive {archive} holds no video files "
                         f"(extensions {list(VIDEO_EXTENSIONS)})")
    return _check_unique(sources, f"video archive {archive}")


def list_sources(videos: str) -> list[VideoSource]:
    """The sources ``extract.videos`` names (an archive, a glob, a folder or a list file; see above)."""
    path = Path(videos).expanduser()
    if _GLOB_CHARACTERS & set(videos):
        matches = sorted(Path(match) for match in glob.glob(str(path)) if Path(match).is_file())
        if not matches:
            raise FileNotFoundError(f"extract.videos: no file matches {videos!r}")
        return sources_from_paths(matches, f"extract.videos {videos!r}")
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file() and _is_video_name(child.name))
        if not files:
            raise FileNotFoundError(f"extract.videos: folder {path} holds no video files")
        return sources_from_paths(files, f"folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"extract.videos: {path} does not exist")
    if path.suffix.lower() in ARCHIVE_KINDS:
        return sources_from_archive(path)
    if _is_video_name(path.name):
        return sources_from_paths([path], f"extract.videos {path}")
    return sources_from_list_file(path)


def source_identity(source: VideoSource) -> list:
    """What the stage fingerprint records of a source: id, file, member, and the file's size and mtime."""
    path = Path(source.path) if source.path else None
    if path is None or not path.exists():
        return [source.video_id, source.path, source.member, None]
    stat = path.stat()
    return [source.video_id, source.path, source.member, stat.st_size, stat.st_mtime_ns]


class SourceOpener:
    """Opens sources inside one decoding process; keeps each archive open across its members.

    Not shared between processes: every DataLoader worker builds its own (the dataset
    creates one per iteration), so file handles never cross a fork.
    """

    def __init__(self):
        self._archives: dict[str, tarfile.TarFile | zipfile.ZipFile] = {}

    def _member_file(self, source: VideoSource) -> BinaryIO:
        archive = self._archives.get(source.path)
        if archive is None:
            if source.archive_kind == "tar":
                archive = tarfile.open(source.path, "r:")
            else:
                archive = zipfile.ZipFile(source.path)
            self._archives[source.path] = archive
        if source.archive_kind == "tar":
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
        try:
            member_file = self._member_file(source)
        except (OSError, KeyError, tarfile.TarError, zipfile.BadZipFile) as error:
            raise VideoError(source.display_path, f"cannot read archive member: {error}") from None
        with member_file:  # decord copies the bytes it needs, so the member can be closed at once
            return VideoReader(member_file, short_side=short_side, name=source.display_path,
                               num_threads=num_threads)

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()
