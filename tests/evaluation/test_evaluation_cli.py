"""The command line (HACS files), the report and the pipeline's eval stage, on a tiny hand-worked set."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from configs.schema import Config, DatasetConfig, EvalConfig
from evaluation.cli import main
from evaluation.stage import run_eval
from runstate.paths import RunPaths

GROUND_TRUTH = {
    "version": "VERSION 1.3",
    "taxonomy": [],
    "database": {
        "vA": {"subset": "validation", "duration": 100.0, "annotations": [
            {"label": "Archery", "segment": [0.0, 10.0]}, {"label": "Archery", "segment": [20.0, 30.0]}]},
        "vB": {"subset": "validation", "duration": 60.0, "annotations": [
            {"label": "Bowling", "segment": [5.0, 15.0]}]},
        "vC": {"subset": "training", "duration": 50.0, "annotations": [
            {"label": "Curling", "segment": [0.0, 10.0]}]},
    },
}

SUBMISSION = {
    "version": "VERSION 1.3",
    "external_data": {"used": False},
    "results": {
        # Archery: TP, duplicate (FP), TP -> AP 5/6 at every threshold
        "vA": [{"label": "Archery", "score": 0.9, "segment": [0.0, 10.0]},
               {"label": "Archery", "score": 0.8, "segment": [0.0, 10.0]},
               {"label": "Archery", "score": 0.7, "segment": [20.0, 30.0]}],
        # Bowling: tIoU 8/10 -> AP 1 up to the threshold 0.8, then 0
        "vB": [{"label": "Bowling", "score": 0.6, "segment": [5.0, 13.0]}],
    },
}

PROPOSALS = {
    "version": "1",
    "results": {"vA": [{"segment": [0.0, 10.0], "score": 0.9}, {"segment": [20.0, 30.0], "score": 0.5}],
                "vB": [{"segment": [5.0, 15.0], "score": 0.4}]},
}

EXPECTED_MAP = np.array([(5 / 6 + 1) / 2] * 7 + [(5 / 6) / 2] * 3)


@pytest.fixture()
def files(tmp_path):
    paths = {}
    for name, content in (("gt.json", GROUND_TRUTH), ("submission.json", SUBMISSION), ("proposals.json", PROPOSALS)):
        paths[name] = tmp_path / name
        paths[name].write_text(json.dumps(content))
    return paths


def test_hacs_command_line_table_and_metrics(files, tmp_path, capsys):
    output = tmp_path / "out" / "metrics.json"
    code = main(["--dataset", "hacs", "--ground-truth", str(files["gt.json"]),
                 "--predictions", str(files["submission.json"]), "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["task", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85",
                                  "0.90", "0.95", "avg"]
    expected_row = [f"{100 * m:.2f}" for m in EXPECTED_MAP] + [f"{100 * EXPECTED_MAP.mean():.2f}"]
    assert printed[1].split() == ["mAP"] + expected_row
    metrics = json.loads(output.read_text())
    np.testing.assert_allclose(metrics["mAP"], EXPECTED_MAP, rtol=0, atol=1e-12)
    assert metrics["average_mAP"] == pytest.approx(EXPECTED_MAP.mean(), abs=1e-12)
    assert metrics["tiou_thresholds"][0] == 0.5 and len(metrics["tiou_thresholds"]) == 10
    assert metrics["per_class"] == {"Archery": pytest.approx(5 / 6, abs=1e-12), "Bowling": pytest.approx(0.7)}


@pytest.mark.parametrize("proposals", [False, True])
def test_workers_give_the_same_metrics(files, tmp_path, proposals):
    # --workers N reads the file and scores the classes in N processes (runstate.parts)
    predictions = files["proposals.json" if proposals else "submission.json"]
    written = []
    for workers in (1, 3):
        output = tmp_path / f"metrics_{workers}.json"
        assert main(["--dataset", "hacs", "--ground-truth", str(files["gt.json"]), "--predictions", str(predictions),
                     "--output", str(output), "--workers", str(workers), *(["--proposals"] if proposals else [])]) == 0
        written.append(output.read_text())
    assert written[0] == written[1]


@pytest.mark.parametrize("proposals", [False, True])
def test_hacs_command_line_does_not_import_pandas(files, tmp_path, proposals):
    # HACS files are read into numpy columns and scored as they are (pandas costs ~0.3 s to import)
    predictions = files["proposals.json" if proposals else "submission.json"]
    arguments = ["--dataset", "hacs", "--ground-truth", str(files["gt.json"]), "--predictions", str(predictions),
                 "--output", str(tmp_path / "metrics.json"), *(["--proposals"] if proposals else [])]
    code = f"import sys; from evaluation.cli import main; print(main({arguments!r}), 'pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "0 False"
    assert json.loads((tmp_path / "metrics.json").read_text())


def test_label_without_ground_truth_in_the_subset_fails_with_one_line(files, tmp_path, capsys):
    submission = json.loads(json.dumps(SUBMISSION))
    submission["results"]["vC"] = [{"label": "Curling", "score": 0.5, "segment": [0, 10]}]
    path = tmp_path / "curling.json"
    path.write_text(json.dumps(submission))
    code = main(["--dataset", "hacs", "--ground-truth", str(files["gt.json"]), "--predictions", str(path)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'Curling' (video vC)" in error and "Traceback" not in error
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("broken", ["score", "missing_gt", "not_json"])
def test_invalid_files_exit_non_zero_with_one_line(files, tmp_path, capsys, broken):
    gt, predictions = files["gt.json"], files["submission.json"]
    if broken == "score":
        submission = json.loads(json.dumps(SUBMISSION))
        submission["results"]["vB"][0]["score"] = "high"
        predictions.write_text(json.dumps(submission))
        expected = "results['vB'][0], field 'score'"
    elif broken == "missing_gt":
        gt = tmp_path / "nowhere.json"
        expected = "file not found"
    else:
        predictions.write_text("{not json")
        expected = "not valid JSON"
    code = main(["--dataset", "hacs", "--ground-truth", str(gt), "--predictions", str(predictions)])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1 and expected in error


def test_proposals_and_report(files, tmp_path, capsys):
    output = tmp_path / "proposal_metrics.json"
    code = main(["--dataset", "hacs", "--ground-truth", str(files["gt.json"]), "--proposals",
                 "--predictions", str(files["proposals.json"]), "--output", str(output),
                 "--report", str(tmp_path / "proposal_report")])
    assert code == 0
    metrics = json.loads(output.read_text())["proposals"]
    # 3 proposals for 2 videos: at AN = 1, vA uses int(2 * 2/3) = 1 proposal (recalls 1 of its 2
    # segments), vB int(1 * 2/3) = 0: AR@1 = 1/3. All are used by AN = 100: AR@100 = 1.
    assert metrics["AR@1"] == pytest.approx(1 / 3, abs=1e-12)
    assert metrics["AR@100"] == 1.0
    assert set(metrics) == {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}
    assert (tmp_path / "proposal_report" / "ar_an.png").stat().st_size > 0

    report_dir = tmp_path / "report"
    code = main(["--dataset", "hacs", "--ground-truth", str(files["gt.json"]),
                 "--predictions", str(files["submission.json"]), "--report", str(report_dir)])
    assert code == 0
    report = (report_dir / "report.md").read_text()
    assert "| mAP | " + " | ".join(f"{100 * m:.2f}" for m in EXPECTED_MAP) in report
    assert "### Best classes" in report and "| Bowling | 70.00 | 1 | 1 |" in report
    for plot in ("map_vs_tiou.png", "timelines.png"):
        assert (report_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_stage_writes_metrics_and_report_then_skips(files, tmp_path, caplog):
    cfg = Config(
        dataset=DatasetConfig(source="files", style="hacs", annotations={"validation": str(files["gt.json"])},
                              subsets=["validation"]),
        eval=EvalConfig(subset="validation", tiou_thresholds=[], report=True),
    )
    paths = RunPaths(tmp_path / "run")
    paths.submission_json.parent.mkdir(parents=True)
    paths.proposals_json.parent.mkdir(parents=True, exist_ok=True)
    paths.submission_json.write_text(json.dumps(SUBMISSION))
    paths.proposals_json.write_text(json.dumps(PROPOSALS))

    run_eval(cfg, paths)
    metrics = json.loads(paths.metrics_json.read_text())
    np.testing.assert_allclose(metrics["mAP"], EXPECTED_MAP, rtol=0, atol=1e-12)
    assert metrics["proposals"]["AR@100"] == 1.0
    assert paths.report_md.is_file()

    with caplog.at_level(logging.INFO, logger="evaluation.stage"):
        run_eval(cfg, paths)
    assert "nothing to do" in caplog.text

    # a changed input is evaluated again; custom thresholds apply to detection
    cfg.eval.tiou_thresholds = [0.5, 0.9]
    run_eval(cfg, paths)
    metrics = json.loads(paths.metrics_json.read_text())
    np.testing.assert_allclose(metrics["mAP"], [EXPECTED_MAP[0], EXPECTED_MAP[-1]], rtol=0, atol=1e-12)


def test_eval_stage_without_inputs_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the classify"):
        run_eval(Config(), RunPaths(tmp_path / "empty"))
