"""The EK100 protocol on the real validation file (../shared/data/ek100): a submission built from
its own segments scores 100% on verb, noun and action; with segments removed it scores what a hand
calculation says. Skipped when the files are absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.annotations import load_ek100_csv
from evaluation.cli import main
from evaluation.evaluate import evaluate_detections


@pytest.fixture(scope="module")
def ek100(ek100_dir):
    return load_ek100_csv(ek100_dir / "EPIC_100_validation.csv", ek100_dir / "EPIC_100_verb_classes.csv",
                          ek100_dir / "EPIC_100_noun_classes.csv")


def submission_from(segments, seed: int = 0) -> dict:
    """One prediction per segment, with distinct random scores (the order must not matter)."""
    scores = np.random.default_rng(seed).permutation(len(segments)) / len(segments)
    results: dict[str, list] = {}
    for row, score in zip(segments.itertuples(), scores):
        results.setdefault(row.video_id, []).append({
            "verb": int(row.verb), "noun": int(row.noun), "action": f"{row.verb},{row.noun}",
            "score": float(score), "segment": [float(row.start), float(row.end)],
        })
    return {"version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0, "sls_td": 0,
            "results": results}


def test_perfect_submission_scores_one_on_every_task(ek100, tmp_path):
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(submission_from(ek100.segments)))
    evaluation = evaluate_detections("ek100", ek100, path)
    segments = ek100.segments
    expected_classes = {"verb": segments["verb"].nunique(), "noun": segments["noun"].nunique(),
                        "action": (segments["verb"] * 300 + segments["noun"]).nunique()}
    for task, result in evaluation.results.items():
        assert result.ap.shape == (5, expected_classes[task])
        # exact up to the rounding of summing n recall steps of 1/n
        np.testing.assert_allclose(result.ap, 1.0, rtol=0, atol=1e-12)
        assert result.num_ground_truth.sum() == len(segments) == result.num_predictions.sum()


def test_removed_segments_score_the_hand_calculation(ek100, tmp_path):
    segments = ek100.segments
    action = segments["verb"] * 300 + segments["noun"]
    counts = action.value_counts()
    chosen = int(counts[counts >= 5].index[0])  # the most frequent action class
    verb, noun = divmod(chosen, 300)
    k = 2
    removed = np.flatnonzero(action.to_numpy() == chosen)[:k]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(submission_from(segments.drop(index=removed), seed=1)))
    evaluation = evaluate_detections("ek100", ek100, path)

    # Every remaining prediction is a true positive with precision 1, so the touched class of each
    # task has AP (n - k) / n at every threshold and every other class 1.
    for task, label, column in (("verb", verb, segments["verb"]), ("noun", noun, segments["noun"]),
                                ("action", chosen, action)):
        result = evaluation.results[task]
        n = int((column == label).sum())
        index = int(np.flatnonzero(result.class_labels == label)[0])
        np.testing.assert_allclose(result.ap[:, index], (n - k) / n, rtol=0, atol=1e-12)
        others = np.delete(result.ap, index, axis=1)
        np.testing.assert_allclose(others, 1.0, rtol=0, atol=1e-12)
        expected_map = 1 - (k / n) / len(result.class_labels)
        np.testing.assert_allclose(result.mAP, expected_map, rtol=0, atol=1e-12)
        assert result.per_class_average_ap[index] == pytest.approx((n - k) / n, abs=1e-12)


def test_command_line_prints_100_for_all_tasks(ek100, ek100_dir, tmp_path, capsys):
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(submission_from(ek100.segments)))
    code = main(["--dataset", "ek100", "--ground-truth", str(ek100_dir / "EPIC_100_validation.csv"),
                 "--predictions", str(path), "--report", str(tmp_path / "report")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    for task in ("verb", "noun", "action"):
        row = next(line.split() for line in lines if line.startswith(task))
        assert row[1:] == ["100.00"] * 6  # five thresholds and the average
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"verb", "noun", "action"}
    assert metrics["action"]["average_mAP"] == 1.0
    assert metrics["verb"]["per_class"]["take"] == 1.0  # class names from the class file beside the CSV
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| action | " + " | ".join(["100.00"] * 6) + " |" in report
    assert "### Worst classes (action)" in report
    assert (tmp_path / "report" / "timelines.png").stat().st_size > 0


def _noisy_submission(segments, seed: int) -> dict:
    """Per segment: a shifted copy with a random verb or noun now and then, plus a random segment."""
    rng = np.random.default_rng(seed)
    results: dict[str, list] = {}
    for row in segments.itertuples():
        shift = rng.uniform(-2, 2)
        verb = int(row.verb) if rng.random() < 0.7 else int(rng.integers(97))
        noun = int(row.noun) if rng.random() < 0.7 else int(rng.integers(300))
        start = float(rng.uniform(0, row.end))
        for v, n, segment in ((verb, noun, [row.start + shift, row.end + shift]), (noun % 97, verb, [start, row.end])):
            results.setdefault(row.video_id, []).append({
                "verb": v, "noun": n, "action": f"{v},{n}", "score": float(rng.choice([0.25, 0.5, rng.random()])),
                "segment": [float(segment[0]), float(max(segment))]})
    return {"version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0, "sls_td": 0,
            "results": results}


def test_the_command_lines_columns_score_as_the_tables_do(ek100, ek100_dir, tmp_path):
    """The command line reads the CSV into columns (``data.ek100_csv``); the pipeline scores the
    tables (``load_ek100_csv``): the same numbers, bit for bit, on a noisy submission with ties."""
    from data.ek100_csv import read_ek100_csv

    path = tmp_path / "noisy.json"
    path.write_text(json.dumps(_noisy_submission(ek100.segments, seed=3)))
    columns = read_ek100_csv(ek100_dir / "EPIC_100_validation.csv", ek100_dir / "EPIC_100_verb_classes.csv",
                             ek100_dir / "EPIC_100_noun_classes.csv")
    from_tables, from_columns = (evaluate_detections("ek100", gt, path) for gt in (ek100, columns))
    assert from_tables.to_metrics() == from_columns.to_metrics()
    assert 0.05 < from_columns.to_metrics()["action"]["average_mAP"] < 0.95
    for table in ("ground_truth", "predictions"):  # what a report draws
        first, second = getattr(from_tables, table), getattr(from_columns, table)
        assert first.astype(str).values.tolist() == second.astype(str).values.tolist()


def test_command_line_does_not_import_pandas(ek100, ek100_dir, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(submission_from(ek100.segments.head(200))))
    arguments = ["--dataset", "ek100", "--ground-truth", str(ek100_dir / "EPIC_100_validation.csv"),
                 "--predictions", str(path), "--output", str(tmp_path / "metrics.json")]
    code = f"import sys; from evaluation.cli import main; print(main({arguments!r}), 'pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "0 False"
    assert json.loads((tmp_path / "metrics.json").read_text())["verb"]["average_mAP"] > 0
