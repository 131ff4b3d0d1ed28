"""A loss that becomes NaN mid-training stops the bmn stage: one line, nothing marked best, last.pt kept."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from bmn_stage_helpers import stage_config, write_annotation_json, write_synthetic_features

import proposals.train
from data.dataset import load_dataset
from proposals.stage import run_bmn
from proposals.train import read_bmn_checkpoint
from runstate.epochs import TrainingDiverged
from runstate.paths import RunPaths


@pytest.mark.slow
def test_nan_loss_in_epoch_two_stops_and_keeps_epoch_one(tmp_path, monkeypatch):
    annotation_json = write_annotation_json(tmp_path / "annotations.json", (1.5, 3.5), 4)
    cfg = stage_config(tmp_path / "work", annotation_json, "bmn.input=windows", "bmn.epochs=3", "bmn.batch_size=4")
    paths = RunPaths.from_config(cfg)
    write_synthetic_features(load_dataset(cfg), paths.features_h5)
    real_loss = proposals.train.bmn_loss
    calls = {"epoch": 0}

    def loss_that_diverges(confidence_map, *args):
        loss = real_loss(confidence_map, *args)
        if calls["epoch"] == 2:  # the second epoch's first step: a NaN loss
            loss = dataclasses.replace(loss, total=loss.total * float("nan"))
        return loss

    real_epoch = proposals.train.train_one_epoch

    def count_epochs(*args, **kwargs):
        calls["epoch"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(proposals.train, "bmn_loss", loss_that_diverges)
    monkeypatch.setattr(proposals.stage, "train_one_epoch", count_epochs)
    with pytest.raises(TrainingDiverged, match=r"^bmn: training diverged at epoch 2, step 1: loss nan; stopped, "
                                               r"nothing marked best, the last good state .*last.pt is kept"):
        run_bmn(cfg, paths)
    assert read_bmn_checkpoint(paths.bmn_last)["epoch"] == 1
    best = read_bmn_checkpoint(paths.bmn_checkpoint)
    assert best["epoch"] == 1 and all(torch.isfinite(t).all() for t in best["model"].values())
    assert [json.loads(line)["epoch"] for line in paths.bmn_metrics.read_text().splitlines()] == [1]
    assert not paths.proposals_json.exists() and not (paths.proposals_dir / ".done.json").exists()
