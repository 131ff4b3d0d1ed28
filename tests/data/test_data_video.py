import io
import os

import av
import numpy as np
import pytest
from testkit import decode_index, index_frames

from data.mp4 import write_mp4
from data.video import VideoError, VideoReader


def nearest_frame(times, native_fps, num_frames):
    """Plain reference: the native frame whose time i / fps is nearest t, ties to the later one."""
    out = []
    for t in times:
        best, best_gap = 0, None
        for i in range(num_frames):
            gap = abs(i / native_fps - t)
            if best_gap is None or gap <= best_gap + 1e-9:
                best, best_gap = i, gap
        out.append(best)
    return np.array(out)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {
        "25": write_mp4(root / "v25.mp4", index_frames(100), 25),
        "59.94": write_mp4(root / "v5994.mp4", index_frames(180), 59.94),
        "30": write_mp4(root / "v30.mp4", index_frames(90), 30),
    }


def test_reader_metadata(videos):
    reader = VideoReader(videos["59.94"])
    assert reader.num_frames == 180 and len(reader) == 180
    assert reader.native_fps == pytest.approx(60000 / 1001, rel=1e-6)
    assert reader.duration == pytest.approx(180 * 1001 / 60000, rel=1e-3)
    assert (reader.height, reader.width) == (64, 96)


def test_every_native_frame_decodes_to_its_index(videos):
    reader = VideoReader(videos["30"])
    assert (decode_index(reader.frames(np.arange(90))) == np.arange(90)).all()


@pytest.mark.parametrize("native, target_fps", [("59.94", 60.0), ("25", 30.0), ("30", 60.0), ("25", 8.0)])
def test_target_fps_timeline_picks_nearest_native_frame(videos, native, target_fps):
    reader = VideoReader(videos[native])
    times = np.arange(int(reader.duration * target_fps) + 3) / target_fps  # runs past the end: clamped
    expected = nearest_frame(times, reader.native_fps, reader.num_frames)
    assert (reader.frame_indices(times) == expected).all()
    assert (decode_index(reader.frames_at(times)) == expected).all()


def test_by_hand_59_94_on_60_timeline(videos):
    reader = VideoReader(videos["59.94"])
    # t = j / 60; native frame = round(j * 59.94 / 60): 0..8 all equal j until the drift reaches half a frame
    assert reader.frame_indices(np.arange(9) / 60).tolist() == list(range(9))
    # at j = 500, t = 8.333 s -> 499.5 native frames -> ties go to the later frame (clamped to 179)
    assert reader.frame_indices([100 / 60.0])[0] == 100  # 99.9 -> 100
    # 25 fps on a 30 fps timeline: t = 1/30 -> 0.833 -> frame 1; t = 2/30 -> 1.667 -> 2; t = 3/30 -> 2.5 -> 3
    assert VideoReader(videos["25"]).frame_indices(np.arange(4) / 30).tolist() == [0, 1, 2, 3]


def test_resize_short_side_at_decode(videos):
    reader = VideoReader(videos["30"], short_side=40)
    frames = reader.frames([0, 5, 5, 89, 3])  # repeats and any order
    assert frames.shape == (5, 40, 60, 3) and frames.dtype == np.uint8
    assert decode_index(frames).tolist() == [0, 5, 5, 89, 3]


def test_decord_small_width_workaround(videos):
    # 96x64 -> short side 32 -> 48 px wide, a width decord 0.6 cannot copy; decoded 2 px wider
    reader = VideoReader(videos["30"], short_side=32)
    frames = reader.frames([4, 9])
    assert frames.shape == (2, 32, 50, 3)
    assert decode_index(frames).tolist() == [4, 9]


def test_file_like_source(videos):
    with open(videos["30"], "rb") as handle:
        reader = VideoReader(io.BytesIO(handle.read()), name="member.mp4")
    assert decode_index(reader.frames([7, 8]))[1] == 8


def test_one_frame_and_odd_size_videos(tmp_path):
    one = write_mp4(tmp_path / "one.mp4", index_frames(1), 30)
    reader = VideoReader(one)
    assert reader.num_frames == 1 and reader.frame_indices([0.0, 5.0]).tolist() == [0, 0]
    assert reader.duration == pytest.approx(1 / 30)
    odd = write_mp4(tmp_path / "odd.mp4", index_frames(10, height=90, width=160), 30)
    frames = VideoReader(odd, short_side=45).frames([9])
    assert frames.shape == (1, 45, 80, 3) and decode_index(frames)[0] == 9


def _remux_faststart(src, dst):
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def test_broken_files_raise_video_error(tmp_path, videos):
    data = videos["30"].read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.mp4").write_bytes(os.urandom(4000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    _remux_faststart(videos["30"], tmp_path / "fast.mp4")
    fast = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "fast_truncated.mp4").write_bytes(fast[: len(fast) // 2])
    cases = {"truncated.mp4": "cannot", "random.mp4": "cannot", "empty.mp4": "empty file",
             "missing.mp4": "file not found", "fast_truncated.mp4": "cannot"}
    for name, reason in cases.items():
        with pytest.raises(VideoError) as info:
            VideoReader(tmp_path / name).frames(np.arange(90))
        assert info.value.path == str(tmp_path / name) and reason in info.value.reason
        assert "\n" not in str(info.value)


def test_out_of_range_index_is_video_error(videos):
    with pytest.raises(VideoError, match="out of range"):
        VideoReader(videos["30"]).frames([90])
