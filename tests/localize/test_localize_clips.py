"""The `clips` mode: where clips go inside a proposal, which frames are decoded, how clips are averaged."""

import numpy as np
import pytest
import torch
from testkit import decode_index, index_frames

from backbone.clips import IMAGENET_MEAN, IMAGENET_STD
from data.clip_geometry import ClipGeometry
from data.mp4 import write_mp4
from data.video import VideoError, VideoReader
from features.windows import clip_grid
from localize.classifiers import ClipClassifier
from localize.clip_sampling import proposal_clip_centers

FPS = 10.0


def test_clip_centres_hand_worked():
    centres = proposal_clip_centers(np.array([[2.0, 5.0], [0.0, 1.2]]), 3)
    np.testing.assert_allclose(centres, [[2.5, 3.5, 4.5], [0.2, 0.6, 1.0]])
    np.testing.assert_allclose(proposal_clip_centers(np.array([[1.0, 1.0]]), 2), [[1.0, 1.0]])


def test_clip_frames_hand_worked():
    # centre 2.5 s at 10 fps = frame 25; 4 frames 2 apart span 6 frames, so the clip starts at 25 - 3 = 22
    assert ClipGeometry(4, 2, FPS).frame_ids(np.array([2.5])).tolist() == [[22, 24, 26, 28]]
    # an odd span: 4 frames 3 apart span 9, 25 - 4.5 = 20.5 rounds up to 21
    assert ClipGeometry(4, 3, FPS).frame_ids(np.array([2.5])).tolist() == [[21, 24, 27, 30]]
    # near the start frames are clamped to frame 0: centre frame 1 -> start 1 - 3 = -2 -> -2, 0, 2, 4
    assert ClipGeometry(4, 2, FPS).frame_ids(np.array([0.1])).tolist() == [[0, 0, 2, 4]]


def test_clip_frames_equal_extraction_frames_at_extraction_centres():
    grid = clip_grid(duration_sec=20.0, fps=30.0, num_frames=8, interval_frames=4, stride_frames=8)
    frames = ClipGeometry(8, 4, 30.0).frame_ids(grid.clip_centers_sec)
    extraction = grid.frame_ids[grid.clip_frame_ids]  # (N, T) target frames of each extraction clip
    unpadded = frames.max(axis=1) <= grid.num_target_frames - 1  # extraction pads past the end
    assert unpadded.sum() > 60
    np.testing.assert_array_equal(frames[unpadded], extraction[unpadded])


@pytest.fixture(scope="module")
def index_video(tmp_path_factory):
    """A 10 fps video of 80 frames whose frame i shows the number i."""
    path = tmp_path_factory.mktemp("video") / "index.mp4"
    write_mp4(path, index_frames(80, 64, 96), FPS, crf=10, keyframe_interval=10)
    return path


class SpyModel(torch.nn.Module):
    """Records the frame numbers it is shown; its logits depend on them, so averaging can be checked.

    verb logits of a clip: [first frame / 10, 0]; noun logits: [0, last frame / 20, 1].
    """

    def __init__(self):
        super().__init__()
        self.seen = []
        self.shapes = []

    def forward(self, video):
        self.shapes.append(tuple(video.shape))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
        pixels = (video * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)  # (B, 3, T, H, W)
        batch, _, num_frames, height, width = pixels.shape
        frames = pixels.permute(0, 2, 3, 4, 1).reshape(batch * num_frames, height, width, 3)  # (B*T, H, W, 3)
        numbers = torch.from_numpy(decode_index(frames.numpy())).view(batch, num_frames).double()  # (B, T)
        self.seen.append(numbers.long())
        zeros = torch.zeros(batch, dtype=torch.float64)
        logits = {"verb": torch.stack([numbers[:, 0] / 10, zeros], dim=1),
                  "noun": torch.stack([zeros, numbers[:, -1] / 20, zeros + 1], dim=1)}
        return logits, torch.zeros(batch, 4)


def softmax64(logits):
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_clips_mode_decodes_the_right_frames_and_averages_probabilities(index_video):
    model = SpyModel()
    classifier = ClipClassifier(model, "cpu", num_clips=3, num_frames=4, interval_frames=2, fps=FPS,
                                short_side=64, batch_size=4)
    # proposals out of time order, one near the start (clamping), one past the end (reader clamps to 79)
    segments = np.array([[2.0, 5.0], [0.0, 1.2], [7.0, 9.0]])
    probabilities = classifier.proposal_probabilities(str(index_video), segments)

    expected_frames = {
        # [2, 5]: centres 2.5, 3.5, 4.5 s -> first frames 22, 32, 42
        (0, 0): [22, 24, 26, 28], (0, 1): [32, 34, 36, 38], (0, 2): [42, 44, 46, 48],
        # [0, 1.2]: centres 0.2, 0.6, 1.0 -> 2 - 3 = -1 (clamped), 3, 7
        (1, 0): [0, 1, 3, 5], (1, 1): [3, 5, 7, 9], (1, 2): [7, 9, 11, 13],
        # [7, 9]: centres 7.33, 8.0, 8.67 s -> first frames 70, 77, 84; frames past 79 show frame 79
        (2, 0): [70, 72, 74, 76], (2, 1): [77, 79, 79, 79], (2, 2): [79, 79, 79, 79],
    }
    seen = torch.cat(model.seen).tolist()
    assert sorted(seen) == sorted(expected_frames.values())  # every clip decoded once, these frames
    assert [len(batch) for batch in model.seen] == [4, 4, 1]  # batch_size clips per forward pass
    firsts = [batch[:, 0].tolist() for batch in model.seen]
    assert sum(firsts, []) == sorted(sum(firsts, []))  # clips in time order

    for p in range(3):
        clips = [expected_frames[(p, i)] for i in range(3)]
        verb = np.mean([softmax64([frames[0] / 10, 0]) for frames in clips], axis=0)
        noun = np.mean([softmax64([0, frames[-1] / 20, 1]) for frames in clips], axis=0)
        np.testing.assert_allclose(probabilities["verb"][p], verb, rtol=1e-6)
        np.testing.assert_allclose(probabilities["noun"][p], noun, rtol=1e-6)


def test_frames_as_the_video_reader_gives_them_at_target_times(index_video):
    """At another decode rate the frames are the reader's nearest frames to the target times."""
    model = SpyModel()
    classifier = ClipClassifier(model, "cpu", num_clips=1, num_frames=2, interval_frames=3, fps=15.0,
                                short_side=64)
    classifier.proposal_probabilities(str(index_video), np.array([[2.0, 3.0]]))
    # centre 2.5 s = target frame 37.5 - 1.5 = 36 -> targets 36, 39 = 2.4 s, 2.6 s -> native 24, 26
    target_times = np.array([36, 39]) / 15.0
    native = VideoReader(index_video).frame_indices(target_times)
    assert native.tolist() == [24, 26]
    assert model.seen[0].tolist() == [[24, 26]]


def test_unreadable_video_raises_video_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    classifier = ClipClassifier(SpyModel(), "cpu", 2, 2, 2, FPS, 64)
    with pytest.raises(VideoError):
        classifier.proposal_probabilities(str(broken), np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="crop"):
        ClipClassifier(SpyModel(), "cpu", 2, 2, 2, FPS, 64, crop="corner")


def test_center_crop_and_short_side(index_video):
    model = SpyModel()
    for crop, width in (("none", 60), ("center", 40)):
        ClipClassifier(model, "cpu", 2, 4, 2, FPS, short_side=40, crop=crop).proposal_probabilities(
            str(index_video), np.array([[1.0, 2.0]]))
        assert model.shapes[-1] == (2, 3, 4, 40, width)  # (clips, 3, T, H, W): 64x96 frames at short side 40


class CountingReader:
    """Wraps a VideoReader and records the frames each decode call asks for."""

    def __init__(self, path, short_side):
        self.reader = VideoReader(path, short_side=short_side)
        self.calls = []

    def frames_at(self, times_sec):
        self.calls.append(self.reader.frame_indices(times_sec).tolist())
        return self.reader.frames_at(times_sec)


def test_identical_clips_run_once_and_frames_decode_once(index_video):
    readers = []

    def open_video(path, short_side):
        readers.append(CountingReader(path, short_side))
        return readers[-1]

    model = SpyModel()
    classifier = ClipClassifier(model, "cpu", num_clips=4, num_frames=4, interval_frames=1, fps=FPS,
                                short_side=64, batch_size=2, open_video=open_video)
    # the same proposal twice, and one sharing half of its clips: [2, 4] -> centres 2.25, 2.75, 3.25, 3.75
    segments = np.array([[2.0, 4.0], [2.0, 4.0], [3.0, 5.0]])
    probabilities = classifier.proposal_probabilities(str(index_video), segments)
    seen = torch.cat(model.seen)
    assert len(seen) == 6  # 12 clips, 6 distinct
    assert len({tuple(clip) for clip in seen.tolist()}) == 6
    decoded = sum(readers[0].calls, [])
    assert len(decoded) == len(set(decoded))  # no frame decoded twice across the batches
    assert set(decoded) == set(seen.reshape(-1).tolist())
    np.testing.assert_array_equal(probabilities["verb"][0], probabilities["verb"][1])
    # proposal 2 shares clips 3.25, 3.75 s with proposal 0: its clip frames are [31..34], [36..39], ...
    assert [21, 22, 23, 24] in seen.tolist() and [46, 47, 48, 49] in seen.tolist()
