"""Video lists for the extract stage: list files, globs, folders, archives; ids, errors, reading members."""

from __future__ import annotations

import tarfile
import zipfile

import numpy as np
import pytest
from testkit import decode_index, index_frames

from data.mp4 import write_mp4
from data.video import VideoError, VideoReader
from features.sources import SourceOpener, VideoSource, archive_order, list_sources, sources_from_table


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 40-frame 96x64 video whose frames show their index (see testkit.index_frames)."""
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", index_frames(40), 20, keyframe_interval=8)


def make_archives(folder, files: dict):
    """Every archive kind holding ``files`` (member name -> path): tar, tar.gz, tgz, tar.xz, zip stored/deflated."""
    archives = {}
    for name, mode in (("v.tar", "w"), ("v.tar.gz", "w:gz"), ("v.tgz", "w:gz"), ("v.tar.xz", "w:xz")):
        archives[name] = folder / name
        with tarfile.open(archives[name], mode) as tar:
            for member, path in files.items():
                tar.add(path, arcname=member)
    for name, method in (("stored.zip", zipfile.ZIP_STORED), ("deflated.zip", zipfile.ZIP_DEFLATED)):
        archives[name] = folder / name
        with zipfile.ZipFile(archives[name], "w", method) as zip_file:
            for member, path in files.items():
                zip_file.write(path, arcname=member)
    return archives


# ------------------------------------------------------------------ list files, globs, folders


def test_list_file_skips_comments_and_resolves_relative_paths(tmp_path):
    touch(tmp_path / "videos" / "a.mp4", b"123")
    listed = tmp_path / "lists" / "videos.txt"
    listed.parent.mkdir()
    listed.write_text(f"# my videos\n\n../videos/a.mp4\n  {tmp_path}/elsewhere/b.MKV  \n#\n")
    sources = list_sources(str(listed))
    assert [(s.video_id, s.path, s.cost) for s in sources] == [
        ("a", str(tmp_path / "lists" / "../videos/a.mp4"), 3.0),
        ("b", str(tmp_path / "elsewhere" / "b.MKV"), 0.0),  # missing: fails later, per video
    ]


def test_list_file_lines_starting_with_hash(tmp_path):
    # A file whose name starts with '#' is a video when it exists; "# " + no such file is a comment;
    # "#name" without such a file is a (missing) video, not a comment.
    touch(tmp_path / "#take2.mp4", b"12")
    touch(tmp_path / "# spaced.mp4", b"1")
    listed = tmp_path / "list.txt"
    listed.write_text("#take2.mp4\n# spaced.mp4\n# a comment.mp4\n#gone.mp4\n")
    assert [(s.video_id, s.cost) for s in list_sources(str(listed))] == [
        ("#take2", 2.0), ("# spaced", 1.0), ("#gone", 0.0)]


@pytest.mark.parametrize("content, why", [
    (b"clip.mp4\n\0\0\x01binary", "binary content"),
    (b"caf\xe9.mp4\n", "binary content"),  # Latin-1, not UTF-8, within the sniffed head
    (b"a.mp4\n" * 2000 + b"caf\xe9.mp4\n", "not UTF-8 text at byte 12003"),  # past the sniffed head
])
def test_a_binary_or_non_utf8_list_is_one_line_naming_the_file(tmp_path, content, why):
    listed = touch(tmp_path / "videos.lst", content)
    with pytest.raises(ValueError) as info:
        list_sources(str(listed))
    message = str(info.value)
    assert "\n" not in message and str(listed) in message and why in message


def test_an_unreadable_list_is_one_line_naming_the_file(tmp_path, monkeypatch):
    listed = touch(tmp_path / "videos.lst", b"a.mp4\n")

    def refuse(path, *args, **kwargs):  # as open() does for a file without read permission (not for root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("features.sources.open", refuse, raising=False)
    with pytest.raises(ValueError) as info:
        list_sources(str(listed))
    assert str(info.value) == f"extract.videos {listed}: cannot read it (Permission denied)"


def test_single_videos_of_any_extension(tmp_path, video):
    # Known extensions need no look inside (the file here is not even a video); an unknown
    # extension is a video when it is binary and PyAV finds a video stream.
    mts = touch(tmp_path / "camera" / "00001.MTS", b"not read at listing")
    assert [(s.video_id, s.path) for s in list_sources(str(mts))] == [("00001", str(mts))]
    odd = touch(tmp_path / "clip.bin", video.read_bytes())
    assert [s.video_id for s in list_sources(str(odd))] == ["clip"]
    noise = touch(tmp_path / "noise.bin", b"\0" + np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=f"{noise} is not a video list .binary content, and PyAV finds no"):
        list_sources(str(noise))


def test_glob_folder_and_single_file(tmp_path):
    for name in ("b.mp4", "a.webm", "notes.txt", "c.MP4", "d.m2ts"):
        touch(tmp_path / name)
    (tmp_path / "sub.mp4").mkdir()  # a folder named like a video is not one
    assert [s.video_id for s in list_sources(f"{tmp_path}/*.mp4")] == ["b"]
    assert [s.video_id for s in list_sources(str(tmp_path))] == ["a", "b", "c", "d"]
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


def test_archive_collections_in_globs_folders_and_lists(tmp_path):
    (tmp_path / "shards").mkdir()
    for shard, names in (("s0", ["a.mp4", "b.mp4"]), ("s1", ["c.mkv"])):
        with tarfile.open(tmp_path / "shards" / f"{shard}.tar", "w") as tar:
            for name in names:
                tar.add(touch(tmp_path / "src" / name), arcname=f"videos/{name}")
    touch(tmp_path / "shards" / "d.mp4")
    by_glob = [(s.video_id, s.archive_kind) for s in list_sources(f"{tmp_path}/shards/s*.tar")]
    assert by_glob == [("a", "tar"), ("b", "tar"), ("c", "tar")]
    by_folder = [(s.video_id, s.archive_kind) for s in list_sources(str(tmp_path / "shards"))]
    assert by_folder == [("d", ""), ("a", "tar"), ("b", "tar"), ("c", "tar")]
    listed = tmp_path / "list.txt"
    listed.write_text("shards/s1.tar\nshards/d.mp4\n")
    assert [s.video_id for s in list_sources(str(listed))] == ["c", "d"]
    listed.write_text("shards/s1.tar\nshards/s9.tar\n")
    with pytest.raises(FileNotFoundError, match=f"video list {listed}, line 2: archive .*s9.tar does not exist"):
        list_sources(str(listed))


# ------------------------------------------------------------------ archives


def test_archive_members_ids_and_where_their_bytes_are(tmp_path):
    payload = {"clips/P01/P01_11.mp4": b"first video bytes", "P02_03.MKV": b"second", "readme.txt": b"no"}
    files = {name: touch(tmp_path / "src" / name, data) for name, data in payload.items()}
    for name, archive in make_archives(tmp_path, files).items():
        sources = list_sources(str(archive))
        kind = "zip" if name.endswith(".zip") else "tar"
        assert [(s.video_id, s.member, s.archive_kind, s.cost, s.member_size) for s in sources] == [
            ("P01_11", "clips/P01/P01_11.mp4", kind, 17.0, 17), ("P02_03", "P02_03.MKV", kind, 6.0, 6)], name
        assert sources[0].display_path == f"{archive}:clips/P01/P01_11.mp4"
        in_place = name in ("v.tar", "stored.zip")
        for source in sources:
            if in_place:  # the recorded offset points at the member's bytes inside the archive
                with open(archive, "rb") as handle:
                    handle.seek(source.member_offset)
                    assert handle.read(source.member_size) == payload[source.member], name
                assert source.tar_member is None
            else:
                assert source.member_offset == -1
                assert (source.tar_member is not None) == (kind == "tar"), name


def test_archive_members_that_are_not_videos_fail_naming_the_member(tmp_path):
    files = {"clips/a.mp4": touch(tmp_path / "src" / "a.mp4", b"first video bytes")}
    for archive in make_archives(tmp_path, files).values():
        source = list_sources(str(archive))[0]
        opener = SourceOpener()
        with pytest.raises(VideoError, match=f"{archive}:clips/a.mp4: cannot open"):
            opener.reader(source, short_side=32)
        opener.close()


def test_members_decode_like_the_plain_file_with_one_open_and_no_file_left(tmp_path, video, spill_dir,
                                                                           decord_opens):
    files = {"deep/dir/clip.mp4": video, "other.mp4": video.with_name("other.mp4")}
    files["other.mp4"].write_bytes(video.read_bytes())
    archives = make_archives(tmp_path, files)
    opens = decord_opens
    plain = VideoReader(video, short_side=40)
    expected = plain.frames(np.arange(plain.num_frames))
    assert decode_index(expected).tolist() == list(range(40))
    for name, archive in archives.items():
        opener = SourceOpener()
        for source in list_sources(str(archive)):
            opens.clear()
            reader = opener.reader(source, short_side=40)
            assert len(opens) == 1, (name, opens)  # decord opened the member once, at the decode size
            assert list(spill_dir.iterdir()) == []  # a spilled copy is deleted as soon as decord has it
            assert (reader.num_frames, reader.native_fps, reader.duration) == \
                (plain.num_frames, plain.native_fps, plain.duration)
            np.testing.assert_array_equal(reader.frames(np.arange(reader.num_frames)), expected, err_msg=name)
        opener.close()


def test_archive_errors(tmp_path):
    with tarfile.open(tmp_path / "empty.tar", "w") as tar:
        tar.add(touch(tmp_path / "notes.txt"), arcname="notes.txt")
    with pytest.raises(ValueError, match="holds no video files"):
        list_sources(str(tmp_path / "empty.tar"))
    # A gzipped tar under a .tar name is recognised by its first bytes.
    with tarfile.open(tmp_path / "packed.tar", "w:gz") as tar:
        tar.add(touch(tmp_path / "a.mp4"), arcname="a.mp4")
    assert [(s.video_id, s.member_offset) for s in list_sources(str(tmp_path / "packed.tar"))] == [("a", -1)]
    touch(tmp_path / "broken.zip", b"PK not really")
    with pytest.raises(ValueError, match="broken.zip: cannot read it as a zip archive"):
        list_sources(str(tmp_path / "broken.zip"))
    data = (tmp_path / "packed.tar").read_bytes()
    touch(tmp_path / "cut.tar.gz", data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.tar.gz: cannot read it as a tar archive") as info:
        list_sources(str(tmp_path / "cut.tar.gz"))
    assert "\n" not in str(info.value)


def test_a_truncated_archive_fails_per_member(tmp_path, video):
    with tarfile.open(tmp_path / "v.tar", "w") as tar:
        tar.add(video, arcname="clip.mp4")
    source = list_sources(str(tmp_path / "v.tar"))[0]
    with open(tmp_path / "v.tar", "r+b") as handle:
        handle.truncate(source.member_offset + source.member_size // 2)
    with pytest.raises(VideoError, match="v.tar:clip.mp4: bytes .* lie outside"):
        SourceOpener().reader(source, short_side=32)


def test_archive_order_restores_the_stream_order_of_compressed_members(tmp_path):
    names = [f"v{index}.mp4" for index in range(5)]
    with tarfile.open(tmp_path / "v.tar.gz", "w:gz") as tar:
        for name in names:
            tar.add(touch(tmp_path / "src" / name, name.encode() * 10), arcname=name)
    streamed = list_sources(str(tmp_path / "v.tar.gz"))
    plain = [VideoSource("p0", "/p0.mp4"), VideoSource("p1", "/p1.mp4")]
    shuffled = [streamed[3], plain[0], streamed[1], streamed[4], plain[1], streamed[0], streamed[2]]
    ordered = archive_order(shuffled)
    # Plain files keep their slots; the members fill theirs in archive order.
    assert [s.video_id for s in ordered] == ["v0", "p0", "v1", "v2", "p1", "v3", "v4"]


def test_dataset_table_sources_and_missing_path():
    import pandas as pd

    table = pd.DataFrame({"video_id": ["v1", "v2"], "path": ["/data/v1.mp4", ""],
                          "duration": [12.5, float("nan")], "fps": [30.0, 30.0],
                          "subset": ["validation", "validation"]})
    sources = sources_from_table(table)
    assert sources == [VideoSource("v1", "/data/v1.mp4", cost=12.5), VideoSource("v2", "", cost=0.0)]
    with pytest.raises(VideoError, match="v2: video file not found"):
        SourceOpener().reader(sources[1], short_side=32)
