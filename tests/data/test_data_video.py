import io
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from testkit import REPO_ROOT, decode_index, index_frames

from data import video as video_module
from data.mp4 import write_mp4
from data.video import ByteRange, VideoError, VideoReader, decode_size, probe


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
    # 96x64 -> short side 32 -> 48 px wide, a width decord 0.6 cannot copy; decoded 2 px wider, known
    # in advance: one open
    reader = VideoReader(videos["30"], short_side=32)
    frames = reader.frames([4, 9])
    assert frames.shape == (2, 32, 50, 3) and reader.num_opens == 1
    assert decode_index(frames).tolist() == [4, 9]


def test_decode_size_by_hand():
    assert decode_size(64, 96, None) == (64, 96)
    assert decode_size(64, 96, 64) == (64, 96)  # already the short side
    assert decode_size(64, 96, 40) == (40, 60)
    assert decode_size(90, 160, 45) == (45, 80)
    assert decode_size(1080, 1920, 224) == (224, 398)  # 398.2 rounds down
    assert decode_size(64, 96, 32) == (32, 50)  # 48 px: a width decord cannot copy
    assert decode_size(96, 64, 72) == (108, 74)  # 72 -> 74 (portrait: the width is the short side)
    assert decode_size(48, 48, None) == (48, 50)


def test_one_decoder_open_per_video(videos, decord_opens):
    for short_side in (None, 40, 64):
        reader = VideoReader(videos["25"], short_side=short_side)
        assert reader.num_opens == 1
    assert len(decord_opens) == 3


def test_file_like_source_is_spilled_to_a_file_deleted_at_once(videos, spill_dir, decord_opens):
    with open(videos["30"], "rb") as handle:
        reader = VideoReader(io.BytesIO(handle.read()), short_side=40, name="member.mp4")
    assert list(spill_dir.iterdir()) == [] and len(decord_opens) == 1
    assert decord_opens[0].startswith(str(spill_dir))  # decord read a file, not the bytes
    assert decode_index(reader.frames([7, 8, 89])).tolist() == [7, 8, 89]


def test_a_failing_stream_is_a_video_error_and_leaves_no_file(spill_dir):
    class CutStream(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    with pytest.raises(VideoError, match="^a.tar.gz:x.mp4: cannot copy the stream .*EOFError: Compressed"):
        VideoReader(CutStream(), name="a.tar.gz:x.mp4")
    with pytest.raises(VideoError, match="empty file"):
        VideoReader(io.BytesIO(b""), name="empty.mp4")
    assert list(spill_dir.iterdir()) == []


def test_byte_range_is_read_in_place(tmp_path, videos, decord_opens):
    data = videos["30"].read_bytes()
    # A folder name with a comma and a colon: the subfile URL must not take them for syntax.
    folder = tmp_path / "odd,name:here"
    folder.mkdir()
    container = folder / "pack.bin"
    container.write_bytes(b"head" * 1000 + data + b"tail" * 10)
    reader = VideoReader(ByteRange(str(container), 4000, len(data)), short_side=40, name="pack.bin:v.mp4")
    plain = VideoReader(videos["30"], short_side=40)
    assert (reader.num_frames, reader.native_fps, reader.duration) == (plain.num_frames, plain.native_fps,
                                                                       plain.duration)
    np.testing.assert_array_equal(reader.frames(np.arange(90)), plain.frames(np.arange(90)))
    assert len(decord_opens) == 2 and decord_opens[0].startswith("subfile,")  # one each
    with pytest.raises(VideoError, match=r"pack.bin:v.mp4: bytes 4000\.\.\d+ lie outside"):
        VideoReader(ByteRange(str(container), 4000, len(data) + 100), name="pack.bin:v.mp4")


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


def write_container(path, container, codec, frames, fps, options=None):
    """Encode RGB frames with PyAV into any container (``format`` name) and codec."""
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


@pytest.mark.parametrize("name, container, codec, options", [
    ("cam.mts", "mpegts", "libx264", {}),  # AVCHD-like: H.264 with B-frames in MPEG-TS
    ("dvb.m2ts", "mpegts", "mpeg2video", {"bf": "2"}),
    ("disc.vob", "vob", "mpeg2video", {"bf": "2", "g": "12"}),
    ("clip.mkv", "matroska", "libx264", {}),
    ("clip.webm", "webm", "libvpx-vp9", {}),
    ("clip.avi", "avi", "mpeg4", {}),
    ("clip.mov", "mov", "libx264", {}),
])
def test_containers_decode_to_the_right_frames(tmp_path, spill_dir, name, container, codec, options):
    # decord alone starts an MPEG-TS at its second keyframe (calling it frame 0) and lands on wrong
    # frames near the end of an MPEG-PS; those are remuxed to MP4 first, which this checks.
    path = write_container(tmp_path / name, container, codec, index_frames(150), 25, options)
    header = probe(str(path))
    assert (header.height, header.width) == (64, 96)
    reader = VideoReader(path, short_side=40)
    assert (reader.num_frames, reader.native_fps, reader.height, reader.width) == (150, 25.0, 40, 60)
    assert reader.duration == pytest.approx(6.0, abs=0.05)
    assert decode_index(reader.frames(np.arange(150))).tolist() == list(range(150))
    random_access = VideoReader(path, short_side=40)
    assert decode_index(random_access.frames([149, 3, 75, 148])).tolist() == [149, 3, 75, 148]
    assert decode_index(random_access.frames_at([5.96, 0.0, 3.0])).tolist() == [149, 0, 75]
    assert list(spill_dir.iterdir()) == []  # the remuxed copy is gone


def test_short_strips_decord_prefixes():
    nested = ("[15:37:28] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: [15:37:28] "
              "/github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: x >= 0\nStack trace:")
    assert video_module._short(RuntimeError(nested)) == "Check failed: x >= 0"


# The child decodes broken files and prints each VideoError; nothing else may reach its stderr.
_QUIET_CHILD = """
import sys
import numpy as np
from data.video import VideoError, VideoReader
for path in sys.argv[1:]:
    try:
        reader = VideoReader(path, short_side=40)
        reader.frames(np.arange(reader.num_frames))
        print("decoded", path)
    except VideoError as error:
        print(error)
"""


def test_decoder_messages_are_silenced(tmp_path, videos):
    data = videos["30"].read_bytes()
    broken = {
        "truncated.mp4": data[: len(data) // 2],  # "moov atom not found" from ffmpeg, "ERROR opening" from decord
        "text.mp4": b"hello\n",
        "zeroed.mp4": data[:1500] + bytes(len(data) - 3000) + data[-1500:],  # h264 errors while decoding
    }
    paths = []
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        paths.append(str(tmp_path / name))
    result = subprocess.run([sys.executable, "-c", _QUIET_CHILD, *paths], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths)  # exactly one line per bad video
    assert all(line.startswith(path + ": ") for line, path in zip(lines, paths)), lines


def test_the_same_frames_always_make_the_same_file(tmp_path):
    """libx264 with its default B-frames gave a different file for the same synthetic frames most
    times (25 of 40 encodes of one video): the demo set, and what is trained on it, changed from
    one render to the next. Noisy frames with moving shapes, heap churn between the encodes."""
    from data.synthetic import Action, Renderer

    def rendered():
        renderer = Renderer(64, 8.0, 2, ["grow", "shrink"], np.random.default_rng([3, 1]))
        actions = [Action(0.5, 3.5, 0, 1, 30.0, 30.0, 12.0), Action(4.0, 9.0, 1, 2, 20.0, 40.0, 10.0)]
        return [renderer.frame(i / 15, actions) for i in range(150)]

    frames = rendered()
    files, ballast = set(), []
    for attempt in range(6):
        ballast.append(np.random.default_rng(attempt).bytes(1 << 20))
        path = write_mp4(tmp_path / f"encode_{attempt}.mp4", frames, 15.0, keyframe_interval=15)
        files.add(path.read_bytes())
    assert len(files) == 1


def test_a_released_reader_reopens_at_its_size_and_reads_the_same_frames(videos, decord_opens):
    reader = VideoReader(videos["30"], short_side=40)
    indices = np.array([3, 40, 41, 7, 89])
    before = reader.frames(indices)
    for _ in range(3):
        reader.release()
        assert np.array_equal(reader.frames(indices), before)
    assert reader.num_opens == 4 and len(decord_opens) == 4
    assert (reader.height, reader.width) == before.shape[1:3]
    assert (decode_index(reader.frames(np.arange(90))) == np.arange(90)).all()


def test_a_released_reader_of_a_spilled_stream_stays_open(videos, spill_dir, decord_opens):
    with open(videos["30"], "rb") as handle:
        reader = VideoReader(io.BytesIO(handle.read()), name="member.mp4")
    reader.release()  # its temporary copy is gone: nothing to reopen from
    assert (decode_index(reader.frames(np.arange(0, 90, 7))) == np.arange(0, 90, 7)).all()
    assert len(decord_opens) == 1


def test_a_video_replaced_while_released_is_a_video_error(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", index_frames(30), 30)
    reader = VideoReader(path)
    reader.release()
    write_mp4(path, index_frames(12), 30)
    with pytest.raises(VideoError, match="changed on disk: 12 frames, 30 when first opened"):
        reader.frames([0])
