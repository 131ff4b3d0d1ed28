"""Video lists for the extract stage: list files, globs, folders, archives; ids and errors."""

from __future__ import annotations

import tarfile
import zipfile

import pytest

from data.video import VideoError
from features.sources import SourceOpener, VideoSource, list_sources, sources_from_table


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_list_file_skips_comments_and_resolves_relative_paths(tmp_path):
    touch(tmp_path / "videos" / "a.mp4", b"123")
    listed = tmp_path / "lists" / "videos.txt"
    listed.parent.mkdir()
    listed.write_text(f"# my videos\n\n../videos/a.mp4\n  {tmp_path}/elsewhere/b.MKV  \n")
    sources = list_sources(str(listed))
    assert [(s.video_id, s.path, s.cost) for s in sources] == [
        ("a", str(tmp_path / "lists" / "../videos/a.mp4"), 3.0),
        ("b", str(tmp_path / "elsewhere" / "b.MKV"), 0.0),  # missing: fails later, per video
    ]


def test_glob_folder_and_single_file(tmp_path):
    for name in ("b.mp4", "a.webm", "notes.txt", "c.MP4"):
        touch(tmp_path / name)
    (tmp_path / "sub.mp4").mkdir()  # a folder named like a video is not one
    assert [s.video_id for s in list_sources(f"{tmp_path}/*.mp4")] == ["b"]
    assert [s.video_id for s in list_sources(str(tmp_path))] == ["a", "b", "c"]
    assert [s.path for s in list_sources(str(tmp_path / "c.MP4"))] == [str(tmp_path / "c.MP4")]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        list_sources(f"{tmp_path}/*.avi")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_sources(str(tmp_path / "nothing.txt"))


def test_duplicate_ids_are_refused_naming_both_files(tmp_path):
    first, second = touch(tmp_path / "x" / "a.mp4"), touch(tmp_path / "y" / "a.mkv")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{first}\n{second}\n")
    with pytest.raises(ValueError, match=f"two videos have the id 'a': {first} and {second}"):
        list_sources(str(listed))


def test_archive_members_ids_and_reading(tmp_path):
    payload = {"clips/P01/P01_11.mp4": b"first video bytes", "P02_03.MKV": b"second", "readme.txt": b"no"}
    tar_path, zip_path = tmp_path / "v.tar", tmp_path / "v.zip"
    for name, data in payload.items():
        touch(tmp_path / "src" / name, data)
    with tarfile.open(tar_path, "w") as tar, zipfile.ZipFile(zip_path, "w") as zip_file:
        for name in payload:
            tar.add(tmp_path / "src" / name, arcname=name)
            zip_file.write(tmp_path / "src" / name, arcname=name)
    for archive, kind in ((tar_path, "tar"), (zip_path, "zip")):
        sources = list_sources(str(archive))
        assert [(s.video_id, s.member, s.archive_kind, s.cost) for s in sources] == [
            ("P01_11", "clips/P01/P01_11.mp4", kind, 17.0), ("P02_03", "P02_03.MKV", kind, 6.0)]
        assert sources[0].display_path == f"{archive}:clips/P01/P01_11.mp4"
        # Not videos: the reader's error names the archive member.
        opener = SourceOpener()
        with pytest.raises(VideoError, match=f"{archive}:clips/P01/P01_11.mp4: cannot open"):
            opener.reader(sources[0], short_side=32)
        opener.close()


def test_archive_errors(tmp_path):
    with tarfile.open(tmp_path / "empty.tar", "w") as tar:
        tar.add(touch(tmp_path / "notes.txt"), arcname="notes.txt")
    with pytest.raises(ValueError, match="holds no video files"):
        list_sources(str(tmp_path / "empty.tar"))
    with tarfile.open(tmp_path / "packed.tar", "w:gz") as tar:
        tar.add(touch(tmp_path / "a.mp4"), arcname="a.mp4")
    with pytest.raises(ValueError, match="compressed tars .* are not supported"):
        list_sources(str(tmp_path / "packed.tar"))
    touch(tmp_path / "broken.zip", b"PK not really")
    with pytest.raises(ValueError, match="not a valid zip file"):
        list_sources(str(tmp_path / "broken.zip"))


def test_dataset_table_sources_and_missing_path():
    import pandas as pd

    table = pd.DataFrame({"video_id": ["v1", "v2"], "path": ["/data/v1.mp4", ""],
                          "duration": [12.5, float("nan")], "fps": [30.0, 30.0],
                          "subset": ["validation", "validation"]})
    sources = sources_from_table(table)
    assert sources == [VideoSource("v1", "/data/v1.mp4", cost=12.5), VideoSource("v2", "", cost=0.0)]
    with pytest.raises(VideoError, match="v2: video file not found"):
        SourceOpener().reader(sources[1], short_side=32)
