"""The classify stage end to end on hand-made inputs: a tiny real checkpoint, features, proposals, videos.

Expected detections are computed here independently: plain loops pool the features, the
checkpoint's head weights are applied in float64, verb-noun pairs are enumerated by brute force.
"""

import hashlib
import itertools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from testkit import index_frames

import localize.proposal_classifier
import localize.stage
from backbone.build import build_model
from backbone.clips import clips_to_tensor
from backbone.weights import save_checkpoint
from configs.schema import Config
from data.mp4 import write_mp4
from data.video import VideoReader
from formats.failures import read_failures
from formats.feature_writer import FeatureWriter
from formats.submission import load_ek100_submission
from localize.stage import run_classify
from runstate.paths import RunPaths
from runstate.runtime import PartialFailure

VERBS, NOUNS = ["take", "put", "open"], ["cup", "pan", "lid", "tap"]
LABELS = ["Archery", "Bowling", "Surfing"]
WIDTH = 4  # TSN-18 of width 4: 32-dimensional features
DIM = 8 * WIDTH
CLIP_STEP_SEC = 0.5  # stored clip centres at 0.25, 0.75, ...


def make_config(root: Path, style: str, **classify) -> Config:
    cfg = Config()
    cfg.dataset.source = "files"
    cfg.dataset.style = cfg.dataset.synthetic.style = style
    cfg.dataset.subsets = ["validation"]
    cfg.runtime.work_dir = str(root / "work")
    cfg.runtime.device = "cpu"
    cfg.model.name, cfg.model.width, cfg.model.num_frames, cfg.model.interval = "tsn", WIDTH, 2, 2
    cfg.extract.fps, cfg.extract.short_side, cfg.extract.batch_size = 10.0, 32, 4
    cfg.classify.top_verbs, cfg.classify.top_nouns, cfg.classify.top_k_classes = 2, 2, 2
    for key, value in classify.items():
        setattr(cfg.classify, key, value)
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    if style == "ek100":
        for name, classes in (("verbs", VERBS), ("nouns", NOUNS)):
            lines = "".join(f"{i},{class_name}\n" for i, class_name in enumerate(classes))
            (annotations / f"{name}.csv").write_text("id,key\n" + lines)
        rows = "".join(f"{video},00:00:01.00,00:00:02.50,{i % 3},{i % 4}\n"
                       for i, video in enumerate(["v1", "v2", "v3"]))
        (annotations / "val.csv").write_text("video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n"
                                             + rows)
        cfg.dataset.annotations = {"validation": str(annotations / "val.csv")}
        cfg.dataset.verb_classes, cfg.dataset.noun_classes = str(annotations / "verbs.csv"), str(
            annotations / "nouns.csv")
        cfg.dataset.video_dir, cfg.dataset.video_pattern = str(root / "videos"), "{video_id}.mp4"
    else:
        database = {video: {"subset": "validation", "duration": 6.0,
                            "annotations": [{"label": LABELS[i], "segment": [1.0, 3.0]}]}
                    for i, video in enumerate(["h1", "h2", "h3"])}
        database["t1"] = {"subset": "training", "duration": 6.0, "annotations": []}
        (annotations / "hacs.json").write_text(json.dumps({"database": database}))
        cfg.dataset.annotations = {"validation": str(annotations / "hacs.json")}
    cfg.validate()
    return cfg


def write_checkpoint(cfg: Config, heads: dict[str, list[str]], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("tsn", 18, {name: len(names) for name, names in heads.items()}, width=WIDTH,
                        num_frames=cfg.model.num_frames, dropout=0.5)
    with torch.no_grad():
        for head in model.heads.values():  # confident heads, so that classes differ clearly
            head.weight.normal_(0, 1.0)
            head.bias.normal_(0, 0.5)
    save_checkpoint(RunPaths.from_config(cfg).checkpoint, model, asdict(cfg), heads, epoch=1)
    return model.eval()


def write_features(cfg: Config, videos: dict[str, int], seed: int = 0, sha: str = "") -> dict[str, tuple]:
    paths = RunPaths.from_config(cfg)
    sha = sha or hashlib.sha256(paths.checkpoint.read_bytes()).hexdigest()
    attrs = {"backbone": "tsn", "checkpoint_sha256": sha, "fps": 10.0, "num_frames": 2, "interval": 2,
             "stride": 5, "short_side": 32, "dim": DIM}
    rng = np.random.default_rng(seed)
    stored = {}
    with FeatureWriter(paths.features_h5, attrs, dtype="float32") as writer:
        for video_id, num_clips in videos.items():
            features = rng.normal(size=(num_clips, DIM)).astype(np.float32)
            times = np.arange(num_clips) * CLIP_STEP_SEC + CLIP_STEP_SEC / 2
            writer.begin_video(video_id, num_clips * CLIP_STEP_SEC, 10.0, num_clips)
            writer.write_chunk(video_id, 0, features, times)
            writer.finish_video(video_id)
            stored[video_id] = (features, times)
    return stored


PROPOSALS = {  # deliberately not sorted by score
    "v1": [([1.0, 2.6], 0.4), ([0.0, 1.1], 0.9), ([2.2, 2.3], 0.6)],
    "v2": [([0.5, 3.5], 0.8), ([3.0, 5.0], 0.3)],
    "v3": [([1.0, 2.0], 0.7)],
    "h1": [([1.0, 3.0], 0.9), ([0.0, 5.0], 0.2)],
    "h2": [([2.0, 4.0], 0.5)],
    "h3": [([0.5, 1.5], 0.6)],
    "t1": [([0.0, 1.0], 0.9)],  # a training video: not classified
}


def write_proposals(cfg: Config, video_ids) -> None:
    path = RunPaths.from_config(cfg).proposals_json
    path.parent.mkdir(parents=True, exist_ok=True)
    results = {video: [{"segment": segment, "score": score} for segment, score in PROPOSALS[video]]
               for video in video_ids}
    path.write_text(json.dumps({"version": "test", "results": results}))


def head_weights(model, name):
    head = model.heads[name]
    return head.weight.detach().double().numpy(), head.bias.detach().double().numpy()


def softmax64(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def expected_ek100(model, probabilities_of, video_ids, top=2, cap=1000):
    """Brute force: every proposal x its top verbs x top nouns, product scores, best first."""
    results = {}
    for video in video_ids:
        rows = []
        ranked = sorted(PROPOSALS[video], key=lambda item: -item[1])
        for segment, score in ranked:
            verb_p, noun_p = probabilities_of(video, segment)
            verbs = sorted(range(len(VERBS)), key=lambda v: (-verb_p[v], v))[:top]
            nouns = sorted(range(len(NOUNS)), key=lambda n: (-noun_p[n], n))[:top]
            for v, n in itertools.product(verbs, nouns):
                rows.append((score * verb_p[v] * noun_p[n], v, n, segment))
        rows.sort(key=lambda row: -row[0])
        results[video] = rows[:cap]
    return results


def feature_probabilities(model, stored):
    def probabilities(video, segment):
        features, times = stored[video]
        inside = (times >= segment[0]) & (times <= segment[1])
        if not inside.any():
            middle = (segment[0] + segment[1]) / 2
            inside = np.arange(len(times)) == np.argmin(np.abs(times - middle))
        mean = features[inside].astype(np.float64).mean(axis=0)
        return tuple(softmax64(mean @ weight.T + bias)
                     for weight, bias in (head_weights(model, "verb"), head_weights(model, "noun")))

    return probabilities


def assert_ek100_submission(path, expected):
    content = json.loads(path.read_text())
    assert (content["version"], content["challenge"], content["sls_pt"]) == ("0.2", "action_detection", 2)
    load_ek100_submission(path, len(VERBS), len(NOUNS))  # the evaluator accepts it
    assert sorted(content["results"]) == sorted(expected)
    for video, rows in expected.items():
        entries = content["results"][video]
        assert [(e["verb"], e["noun"], e["action"]) for e in entries] == [(v, n, f"{v},{n}")
                                                                          for _, v, n, _ in rows]
        np.testing.assert_allclose([e["score"] for e in entries], [row[0] for row in rows], rtol=1e-5)
        assert [e["segment"] for e in entries] == [row[3] for row in rows]


def test_ek100_features_mode_exact_detections_and_up_to_date_rerun(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, "ek100")
    model = write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    stored = write_features(cfg, {"v1": 8, "v2": 12, "v3": 6})
    write_proposals(cfg, ["v1", "v2", "v3", "t1"])
    paths = RunPaths.from_config(cfg)
    run_classify(cfg, paths)
    expected = expected_ek100(model, feature_probabilities(model, stored), ["v1", "v2", "v3"])
    assert_ek100_submission(paths.submission_json, expected)
    assert not (paths.detections_dir / "failed.tsv").exists()

    # unchanged inputs: nothing is recomputed
    calls = []
    monkeypatch.setattr(localize.proposal_classifier, "ek100_detections", lambda *args: calls.append(args))
    run_classify(cfg, paths)
    assert calls == []
    # other supervision levels: the file is rewritten from the journal, the detections are not recomputed
    cfg.classify.sls_pt = 5
    run_classify(cfg, paths)
    assert calls == [] and json.loads(paths.submission_json.read_text())["sls_pt"] == 5
    # other detection settings: recomputed
    cfg.classify.top_nouns = 3
    with pytest.raises(AttributeError):  # the stand-in returns None, not detections
        run_classify(cfg, paths)
    assert len(calls) == 1


def test_cap_and_proposals_per_video(tmp_path):
    cfg = make_config(tmp_path, "ek100", max_detections_per_video=3, proposals_per_video=2)
    model = write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    stored = write_features(cfg, {"v1": 8, "v2": 12, "v3": 6})
    write_proposals(cfg, ["v1", "v2", "v3"])
    paths = RunPaths.from_config(cfg)
    run_classify(cfg, paths)
    saved = dict(PROPOSALS)
    try:  # the expectation from the 2 best proposals of each video, capped at 3 detections
        for video in ("v1", "v2", "v3"):
            PROPOSALS[video] = sorted(saved[video], key=lambda item: -item[1])[:2]
        expected = expected_ek100(model, feature_probabilities(model, stored), ["v1", "v2", "v3"], cap=3)
    finally:
        PROPOSALS.update(saved)
    assert_ek100_submission(paths.submission_json, expected)


def test_interrupted_run_resumes_from_the_journal(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, "ek100")
    model = write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    stored = write_features(cfg, {"v1": 8, "v2": 12, "v3": 6})
    write_proposals(cfg, ["v1", "v2", "v3"])
    paths = RunPaths.from_config(cfg)
    real = localize.proposal_classifier.ek100_detections
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(localize.proposal_classifier, "ek100_detections", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_classify(cfg, paths)
    assert not paths.submission_json.exists()
    assert len((paths.detections_dir / "partial.jsonl").read_text().splitlines()) == 2  # header + v1

    def counted(*args):
        calls.append(1)
        return real(*args)

    calls.clear()
    monkeypatch.setattr(localize.proposal_classifier, "ek100_detections", counted)
    run_classify(cfg, paths)
    assert len(calls) == 2  # v2 and v3 only
    assert_ek100_submission(paths.submission_json,
                            expected_ek100(model, feature_probabilities(model, stored), ["v1", "v2", "v3"]))


def test_failed_video_is_reported_and_the_rest_written(tmp_path):
    cfg = make_config(tmp_path, "ek100", sls_pt=4)
    model = write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    stored = write_features(cfg, {"v1": 8, "v3": 6})  # v2 has no features
    write_proposals(cfg, ["v1", "v2", "v3"])
    paths = RunPaths.from_config(cfg)
    with pytest.raises(PartialFailure, match=r"^classify: 1 of 3 videos failed") as error:
        run_classify(cfg, paths)
    assert "\n" not in str(error.value)
    failures = read_failures(paths.detections_dir / "failed.tsv")
    assert [(f[0], f[1]) for f in failures] == [("v2", str(paths.features_h5))]
    assert failures[0][2].startswith("MissingFeatures: no complete features")
    content = json.loads(paths.submission_json.read_text())
    assert content["sls_pt"] == 4 and sorted(content["results"]) == ["v1", "v3"]
    expected = expected_ek100(model, feature_probabilities(model, stored), ["v1", "v3"])
    scores = [e["score"] for e in content["results"]["v3"]]
    assert scores == pytest.approx([row[0] for row in expected["v3"]], rel=1e-5)


def test_hacs_video_level_exact_detections(tmp_path):
    cfg = make_config(tmp_path, "hacs", top_k_classes=2, mode="clips")  # mode is EK-only: ignored
    model = write_checkpoint(cfg, {"label": LABELS})
    stored = write_features(cfg, {"h1": 10, "h2": 7, "h3": 12})
    write_proposals(cfg, ["h1", "h2", "h3", "t1"])
    paths = RunPaths.from_config(cfg)
    run_classify(cfg, paths)
    content = json.loads(paths.submission_json.read_text())
    assert content["version"] == "VERSION 1.3" and content["external_data"]["used"] is False
    assert sorted(content["results"]) == ["h1", "h2", "h3"]
    weight, bias = head_weights(model, "label")
    for video in ("h1", "h2", "h3"):
        probabilities = softmax64(stored[video][0].astype(np.float64).mean(axis=0) @ weight.T + bias)
        best = sorted(range(3), key=lambda c: (-probabilities[c], c))[:2]
        ranked = sorted(PROPOSALS[video], key=lambda item: -item[1])
        rows = sorted(((score * probabilities[c], LABELS[c], segment)
                       for segment, score in ranked for c in best), key=lambda row: -row[0])
        entries = content["results"][video]
        assert [(e["label"], e["segment"]) for e in entries] == [(label, seg) for _, label, seg in rows]
        np.testing.assert_allclose([e["score"] for e in entries], [row[0] for row in rows], rtol=1e-5)


def test_checkpoint_heads_must_match_the_dataset(tmp_path):
    cfg = make_config(tmp_path, "ek100")
    write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS[:3]})
    write_features(cfg, {"v1": 8})
    write_proposals(cfg, ["v1"])
    with pytest.raises(ValueError, match="3 noun classes, the dataset 4"):
        run_classify(cfg, RunPaths.from_config(cfg))


def test_features_of_another_checkpoint_are_refused(tmp_path):
    cfg = make_config(tmp_path, "ek100")
    write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    write_features(cfg, {"v1": 8}, sha="0" * 64)
    write_proposals(cfg, ["v1"])
    with pytest.raises(ValueError, match="re-run the extract stage"):
        run_classify(cfg, RunPaths.from_config(cfg))


@pytest.mark.slow
def test_ek100_clips_mode_from_videos(tmp_path):
    cfg = make_config(tmp_path, "ek100", mode="clips", num_clips=3)
    model = write_checkpoint(cfg, {"verb": VERBS, "noun": NOUNS})
    for video in ("v1", "v2"):  # v3's file is missing
        write_mp4(tmp_path / "videos" / f"{video}.mp4", index_frames(60, 64, 96), 10.0, keyframe_interval=10)
    write_proposals(cfg, ["v1", "v2", "v3"])
    paths = RunPaths.from_config(cfg)
    with pytest.raises(PartialFailure, match="1 of 3 videos failed"):
        run_classify(cfg, paths)
    assert [f[0] for f in read_failures(paths.detections_dir / "failed.tsv")] == ["v3"]

    def clip_probabilities(video, segment):
        """3 clips at start + (i + 0.5) L / 3; 2 frames 2 apart around each centre, 10 fps timeline."""
        reader = VideoReader(tmp_path / "videos" / f"{video}.mp4", short_side=32)
        clips = []
        for i in range(3):
            centre_frame = (segment[0] + (i + 0.5) * (segment[1] - segment[0]) / 3) * 10.0
            first = int(np.floor(centre_frame - 1 + 0.5))
            clips.append(reader.frames_at(np.maximum([first, first + 2], 0) / 10.0))  # (2, H, W, 3)
        with torch.no_grad():
            logits, _ = model(clips_to_tensor(np.stack(clips)))  # the 3 clips in one batch
        return (softmax64(logits["verb"].double().numpy()).mean(axis=0),
                softmax64(logits["noun"].double().numpy()).mean(axis=0))

    assert_ek100_submission(paths.submission_json, expected_ek100(model, clip_probabilities, ["v1", "v2"]))
