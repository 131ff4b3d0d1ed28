"""The bmn stage end to end on synthetic features: training, checkpoints, metrics, proposals.json,
stage skip, inference-only reruns and exact resume after a crash."""

import json
import logging

import numpy as np
import pytest
import torch
from bmn_stage_helpers import (
    random_proposal_metrics,
    stage_config,
    write_annotation_json,
    write_synthetic_features,
)

import proposals.stage
from data.dataset import load_dataset
from evaluation.proposal import average_recall
from formats.proposals import load_proposals
from proposals.stage import run_bmn
from proposals.train import load_bmn, read_bmn_checkpoint
from runstate.paths import RunPaths


@pytest.fixture(autouse=True)
def restore_threads():
    """The stage sets torch's thread count from the config (1 here); put it back afterwards."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def prepare(tmp_path, action_sec, actions_per_video, *overrides):
    """Annotations, a matching feature store and the config of one run under ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    annotation_json = write_annotation_json(tmp_path / "annotations.json", action_sec, actions_per_video)
    cfg = stage_config(tmp_path / "work", annotation_json, *overrides)
    paths = RunPaths.from_config(cfg)
    annotations = load_dataset(cfg)
    write_synthetic_features(annotations, paths.features_h5)
    return cfg, paths, annotations.subset("validation")


def check_proposals_file(paths, validation, top_k):
    """proposals.json is valid, covers every validation video, sorted by score, inside the video."""
    data = json.loads(paths.proposals_json.read_text())
    assert data["version"] == "1.0" and data["external_data"] == {}
    assert sorted(data["results"]) == sorted(validation.videos["video_id"])
    table = load_proposals(paths.proposals_json)  # the evaluation package's validator
    durations = validation.videos.set_index("video_id")["duration"]
    for video_id, entries in data["results"].items():
        scores = [entry["score"] for entry in entries]
        assert 1 <= len(entries) <= top_k
        assert scores == sorted(scores, reverse=True)
        segments = np.array([entry["segment"] for entry in entries])
        assert (segments[:, 0] < segments[:, 1]).all()
        assert segments.min() >= 0.0 and segments.max() <= durations[video_id] + 1e-9
    return table


def read_metrics(paths):
    return [json.loads(line) for line in paths.bmn_metrics.read_text().splitlines()]


@pytest.mark.slow
def test_windows_stage_trains_writes_proposals_and_skips_when_unchanged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg, paths, validation = prepare(tmp_path, (1.5, 3.5), 4, "bmn.input=windows", "bmn.epochs=12",
                                     "bmn.lr_step=10", "bmn.lr=1e-2", "bmn.batch_size=8")
    run_bmn(cfg, paths)

    table = check_proposals_file(paths, validation, top_k=100)
    ground_truth = validation.segments[["video_id", "start", "end"]]
    result = average_recall(ground_truth, table)
    durations = dict(zip(validation.videos["video_id"], validation.videos["duration"]))
    baseline = random_proposal_metrics(ground_truth, durations)
    assert result.ar_at(100) >= 0.7
    assert result.ar_at(100) >= baseline["AR@100"] + 0.3  # random: ~0.32
    assert result.auc >= baseline["AUC"] + 0.3  # random: ~0.18
    assert f"AR@100 {100 * result.ar_at(100):.2f}" in caplog.text  # printed at the end

    records = read_metrics(paths)
    assert [record["epoch"] for record in records] == list(range(1, 13))
    assert records[-1]["train_loss"] < 0.8 * records[0]["train_loss"]
    assert all(np.isfinite(record["val_loss"]) for record in records)
    assert [record["lr"] for record in records] == pytest.approx([1e-2] * 10 + [1e-3] * 2)
    best = read_bmn_checkpoint(paths.bmn_checkpoint)
    aucs = [record["AUC"] for record in records]
    assert best["epoch"] == 1 + int(np.argmax(aucs)) and best["val"]["AUC"] == max(aucs)
    last = read_bmn_checkpoint(paths.proposals_dir / "last.pt")
    assert last["epoch"] == 12
    assert all(group["foreach"] is True for group in last["optimizer"]["param_groups"])  # as the stage builds it

    # unchanged: nothing is redone
    outputs = [paths.proposals_json, paths.bmn_checkpoint, paths.bmn_metrics, paths.proposals_dir / "last.pt"]
    mtimes = [path.stat().st_mtime_ns for path in outputs]
    caplog.clear()
    run_bmn(cfg, paths)
    assert "nothing to do" in caplog.text
    assert [path.stat().st_mtime_ns for path in outputs] == mtimes

    # a post-processing setting changed: inference again, no training
    cfg.bmn.top_k = 5
    caplog.clear()
    run_bmn(cfg, paths)
    assert "nothing to do" not in caplog.text and "resuming" in caplog.text
    assert [path.stat().st_mtime_ns for path in outputs[1:]] == mtimes[1:]
    check_proposals_file(paths, validation, top_k=5)


def test_rescale_stage_recalls_long_actions(tmp_path):
    cfg, paths, validation = prepare(tmp_path, (6.0, 12.0), 2, "bmn.input=rescale", "bmn.temporal_scale=32",
                                     "bmn.max_duration=32", "bmn.epochs=12", "bmn.lr_step=10", "bmn.lr=1e-2",
                                     "bmn.batch_size=2")
    run_bmn(cfg, paths)

    table = check_proposals_file(paths, validation, top_k=100)
    ground_truth = validation.segments[["video_id", "start", "end"]]
    result = average_recall(ground_truth, table)
    baseline = random_proposal_metrics(ground_truth, dict(zip(validation.videos["video_id"],
                                                              validation.videos["duration"])))
    assert result.ar_at(100) >= 0.85  # random: ~0.77 (the actions are a third of the video)
    assert result.auc >= baseline["AUC"] + 0.15  # random: ~0.58
    model, checkpoint = load_bmn(paths.bmn_checkpoint)
    assert checkpoint["model_args"]["temporal_scale"] == 32 and checkpoint["model_args"]["feature_dim"] == 16
    assert checkpoint["val"]["AUC"] == max(record["AUC"] for record in read_metrics(paths))


def test_interrupted_training_resumes_exactly(tmp_path, monkeypatch):
    overrides = ("bmn.input=windows", "bmn.epochs=3", "bmn.lr_step=2", "bmn.lr=1e-2", "bmn.batch_size=4")
    cfg_a, paths_a, _ = prepare(tmp_path / "a", (1.5, 3.5), 4, *overrides)
    run_bmn(cfg_a, paths_a)

    cfg_b, paths_b, _ = prepare(tmp_path / "b", (1.5, 3.5), 4, *overrides)
    real_save = proposals.stage.save_bmn_checkpoint

    def crash_at_second_last_pt(path, model, model_args, config, epoch, *args, **kwargs):
        if path.name == "last.pt" and epoch == 2:  # epoch 2 trained, its metrics line written, not last.pt
            raise KeyboardInterrupt("simulated crash")
        return real_save(path, model, model_args, config, epoch, *args, **kwargs)

    monkeypatch.setattr(proposals.stage, "save_bmn_checkpoint", crash_at_second_last_pt)
    with pytest.raises(KeyboardInterrupt):
        run_bmn(cfg_b, paths_b)
    assert read_bmn_checkpoint(paths_b.proposals_dir / "last.pt")["epoch"] == 1
    assert len(read_metrics(paths_b)) == 2
    assert not paths_b.proposals_json.exists()

    monkeypatch.setattr(proposals.stage, "save_bmn_checkpoint", real_save)
    run_bmn(cfg_b, paths_b)
    for name in ("last.pt", "bmn.pt"):
        a = read_bmn_checkpoint(paths_a.proposals_dir / name)
        b = read_bmn_checkpoint(paths_b.proposals_dir / name)
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
    optimizer_a = read_bmn_checkpoint(paths_a.proposals_dir / "last.pt")["optimizer"]["state"]
    optimizer_b = read_bmn_checkpoint(paths_b.proposals_dir / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(optimizer_a[i]["exp_avg_sq"], optimizer_b[i]["exp_avg_sq"]) for i in optimizer_a)

    timing = ("seconds", "train_windows_per_sec")
    records_a = [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(paths_a)]
    records_b = [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(paths_b)]
    assert records_a == records_b and len(records_a) == 3
    assert json.loads(paths_a.proposals_json.read_text()) == json.loads(paths_b.proposals_json.read_text())
