import json

import numpy as np
import pandas as pd
import pytest

from data.annotations import (
    AnnotationError,
    concat_annotations,
    load_ek100_csv,
    load_hacs_json,
    resolve_video_paths,
)
from data.ek100_csv import parse_timestamp, read_class_names

# --------------------------------------------------------------------------------------
# EK100: the real validation file


@pytest.fixture(scope="module")
def ek100(ek100_dir):
    return load_ek100_csv(ek100_dir / "EPIC_100_validation.csv", ek100_dir / "EPIC_100_verb_classes.csv",
                          ek100_dir / "EPIC_100_noun_classes.csv", ek100_dir / "EPIC_100_video_info.csv")


def test_ek100_real_validation_counts(ek100):
    assert len(ek100.segments) == 9668
    assert ek100.segments["video_id"].nunique() == 138 == len(ek100.videos)
    assert ek100.heads == {"verb": 97, "noun": 300}
    assert ek100.num_nouns == 300
    assert set(ek100.segments["subset"]) == {"validation"}
    assert (ek100.segments["end"] >= ek100.segments["start"]).all()


def test_ek100_real_rows_by_hand(ek100):
    seg = ek100.segments
    # P01_11_0: 00:00:00.00 -> 00:00:01.89, take (0) plate (2)
    first = seg.iloc[0]
    assert (first.video_id, first.start, first.end, first.verb, first.noun, first.label) == \
        ("P01_11", 0.0, 1.89, 0, 2, 2)
    # P01_11_1: 00:00:01.56 -> 00:00:02.45, put-down (1) plate (2): action 1 * 300 + 2
    assert (seg.iloc[1].start, seg.iloc[1].end, seg.iloc[1].label) == (1.56, 2.45, 302)
    # line 59 of the file, P01_11_17: 00:00:58.51 -> 00:01:00.40, take trays (0, 35)
    row = seg.iloc[57]
    assert row.start == pytest.approx(58.51) and row.end == pytest.approx(60.40) and row.noun == 35
    # last row P32_10_9: 00:02:09.98 -> 00:02:25.73, rinse (2) cooker (46)
    last = seg.iloc[-1]
    assert (last.video_id, last.verb, last.noun, last.label) == ("P32_10", 2, 46, 2 * 300 + 46)
    assert last.start == pytest.approx(129.98) and last.end == pytest.approx(145.73)
    assert ek100.classes["verb"][:3] == ["take", "put", "wash"]
    assert ek100.classes["noun"][0] == "tap"


def test_ek100_video_info(ek100):
    video = ek100.videos.set_index("video_id").loc["P01_12"]
    assert video.duration == pytest.approx(173.806967)
    assert video.fps == pytest.approx(59.94005994)
    assert video.path == ""


def test_ek100_without_class_files_numbers_classes(ek100_dir):
    ann = load_ek100_csv(ek100_dir / "EPIC_100_validation.csv", subset="validation")
    assert len(ann.classes["verb"]) == ann.segments["verb"].max() + 1
    assert np.isnan(ann.videos["fps"]).all()


def test_ek100_pickle_loads_like_csv(tmp_path, ek100_dir):
    table = pd.read_csv(ek100_dir / "EPIC_100_validation.csv").head(50).set_index("narration_id")
    table.to_pickle(tmp_path / "val.pkl")
    ann = load_ek100_csv(tmp_path / "val.pkl", ek100_dir / "EPIC_100_verb_classes.csv",
                         ek100_dir / "EPIC_100_noun_classes.csv")
    assert len(ann.segments) == 50 and ann.segments.iloc[1].label == 302


def test_parse_timestamp():
    assert parse_timestamp("00:00:01.89") == pytest.approx(1.89)
    assert parse_timestamp("01:02:03.5") == pytest.approx(3723.5)
    assert parse_timestamp("00:00:07") == 7.0
    for bad in ("1.5", "00:61", "aa:bb:cc", ""):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


EK_HEADER = "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n"


@pytest.mark.parametrize("row, field", [
    ("P01_01_0,P01_01,00:00:0x.00,00:00:02.00,1,2", "start_timestamp"),
    ("P01_01_0,P01_01,00:00:03.00,00:00:02.00,1,2", "stop_timestamp"),  # end before start
    ("P01_01_0,P01_01,00:00:01.00,00:00:02.00,one,2", "verb_class"),
    ("P01_01_0,P01_01,00:00:01.00,00:00:02.00,1,", "noun_class"),
    ("P01_01_0,P01_01,-00:00:01.00,00:00:02.00,1,2", "start_timestamp"),  # a negative time
])
def test_ek100_malformed_rows_name_file_entry_field(tmp_path, row, field):
    path = tmp_path / "bad.csv"
    path.write_text(EK_HEADER + "P01_01_9,P01_01,00:00:00.00,00:00:01.00,0,0\n" + row + "\n")
    with pytest.raises(AnnotationError) as info:
        load_ek100_csv(path)
    message = str(info.value)
    assert str(path) in message and "row 3 (P01_01_0)" in message and f"'{field}'" in message


def test_ek100_missing_column_and_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("video_id,start_timestamp\nP01,00:00:00.00\n")
    with pytest.raises(AnnotationError, match="stop_timestamp.*missing column"):
        load_ek100_csv(path)
    with pytest.raises(AnnotationError, match="file not found"):
        load_ek100_csv(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="subset"):
        load_ek100_csv(path, subset="train")


def test_ek100_class_out_of_range(tmp_path, ek100_dir):
    path = tmp_path / "bad.csv"
    path.write_text(EK_HEADER + "P01_01_0,P01_01,00:00:00.00,00:00:01.00,97,0\n")
    with pytest.raises(AnnotationError, match="verb_class.*outside 0..96"):
        load_ek100_csv(path, ek100_dir / "EPIC_100_verb_classes.csv", ek100_dir / "EPIC_100_noun_classes.csv")


def test_class_file_ids_must_be_dense(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("id,key\n0,take\n2,put\n")
    with pytest.raises(AnnotationError, match="0..K-1"):
        read_class_names(path)
    path.write_text("id,key\n1,put\n0,take\n")
    assert read_class_names(path) == ["take", "put"]


# --------------------------------------------------------------------------------------
# HACS / ActivityNet JSON


def _hacs(tmp_path, database, name="hacs.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"database": database}))
    return path


def test_hacs_json_loads_with_string_durations_and_test_videos(tmp_path):
    path = _hacs(tmp_path, {
        "a": {"subset": "training", "duration": "92.17",
              "annotations": [{"label": "Zumba", "segment": [5.5, 68.0]},
                              {"label": "Archery", "segment": [70, 80.25]}]},
        "b": {"subset": "validation", "duration": 30,
              "annotations": [{"label": "Zumba", "segment": ["1.0", "2.0"]}]},
        "c": {"subset": "testing", "duration": 12.5},  # no annotations
    })
    ann = load_hacs_json(path)
    assert ann.classes == {"label": ["Archery", "Zumba"]}  # sorted names
    assert ann.segments[["video_id", "start", "end", "label", "subset"]].values.tolist() == [
        ["a", 5.5, 68.0, 1, "training"], ["a", 70.0, 80.25, 0, "training"], ["b", 1.0, 2.0, 1, "validation"]]
    assert ann.videos.set_index("video_id")["duration"].to_dict() == {"a": 92.17, "b": 30.0, "c": 12.5}
    assert ann.style == "hacs"
    assert len(ann.subset("validation").segments) == 1


def test_hacs_given_class_list(tmp_path):
    path = _hacs(tmp_path, {"a": {"subset": "training", "duration": 9,
                                   "annotations": [{"label": "B", "segment": [1, 2]}]}})
    assert load_hacs_json(path, ["A", "B", "C"]).segments.label.tolist() == [1]
    with pytest.raises(AnnotationError, match="not in the given class list"):
        load_hacs_json(path, ["A"])


@pytest.mark.parametrize("entry, field", [
    ({"duration": 10}, "subset"),
    ({"subset": "train", "duration": 10}, "subset"),
    ({"subset": "training"}, "duration"),
    ({"subset": "training", "duration": "ten"}, "duration"),
    ({"subset": "training", "duration": 10, "annotations": [{"segment": [1, 2]}]}, "label"),
    ({"subset": "training", "duration": 10, "annotations": [{"label": "x", "segment": [3, 2]}]}, "segment"),
    ({"subset": "training", "duration": 10, "annotations": [{"label": "x", "segment": [1]}]}, "segment"),
    ({"subset": "training", "duration": 10, "annotations": [{"label": "x", "segment": ["a", 2]}]}, "segment[0]"),
    ({"subset": "training", "duration": 10, "annotations": [{"label": "x", "segment": [-0.5, 2]}]}, "segment[0]"),
])
def test_hacs_malformed_entries(tmp_path, entry, field):
    path = _hacs(tmp_path, {"vid1": entry})
    with pytest.raises(AnnotationError) as info:
        load_hacs_json(path)
    assert str(path) in str(info.value) and "vid1" in str(info.value) and f"'{field}'" in str(info.value)


def test_hacs_typed_and_validating_ways_read_the_same_columns(tmp_path, monkeypatch):
    from data import hacs_json

    rng = np.random.default_rng(2)
    for trial in range(20):
        database = {}
        for video in range(int(rng.integers(0, 6))):
            entry = {"subset": ["training", "validation", "testing"][int(rng.integers(0, 3))],
                     "duration": [int(rng.integers(1, 100)), float(rng.uniform(0.5, 100))][video % 2],
                     "extra": {"ignored": [1]}}
            if rng.random() < 0.8:
                entry["annotations"] = [{"label": ["A", "B", "Curling ü"][int(rng.integers(0, 3))],
                                         "segment": [float(s), float(s) + float(rng.uniform(0, 5))]}
                                        for s in rng.uniform(0, 50, int(rng.integers(0, 4)))]
            database[f"v{video}"] = entry
        path = _hacs(tmp_path, database, f"{trial}.json")
        typed = hacs_json.read_hacs_json(path)
        monkeypatch.setattr(hacs_json, "_typed_columns", lambda raw: None)  # the validating way only
        validating = hacs_json.read_hacs_json(path)
        monkeypatch.undo()
        for field in ("video_ids", "durations", "video_subsets", "segment_video", "segments", "labels"):
            np.testing.assert_array_equal(getattr(typed, field), getattr(validating, field))
            assert getattr(typed, field).dtype == getattr(validating, field).dtype
        assert typed.class_names == validating.class_names


def test_hacs_not_json_or_no_database(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_hacs_json(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(AnnotationError, match="database"):
        load_hacs_json(tmp_path / "y.json")


# --------------------------------------------------------------------------------------
# Video paths


def test_resolve_video_paths(tmp_path):
    (tmp_path / "P01").mkdir()
    (tmp_path / "P01" / "P01_11.MP4").write_bytes(b"x")
    (tmp_path / "P02").mkdir()
    (tmp_path / "P02" / "P02_01.mkv").write_bytes(b"x")
    (tmp_path / "v_abc.mp4").write_bytes(b"x")
    videos = pd.DataFrame({"video_id": ["P01_11", "P02_01", "P03_01"], "path": ""})
    missing = resolve_video_paths(videos, tmp_path, "{participant}/{video_id}.*")
    assert missing == ["P03_01"]
    assert videos.path.tolist() == [str(tmp_path / "P01" / "P01_11.MP4"), str(tmp_path / "P02" / "P02_01.mkv"), ""]
    videos = pd.DataFrame({"video_id": ["abc", "def"], "path": ""})
    assert resolve_video_paths(videos, tmp_path, "v_{video_id}.mp4") == ["def"]


def test_concat_rejects_duplicates_and_class_mismatch(tmp_path):
    a = _hacs(tmp_path, {"x": {"subset": "training", "duration": 5,
                               "annotations": [{"label": "A", "segment": [1, 2]}]}}, "a.json")
    b = _hacs(tmp_path, {"x": {"subset": "validation", "duration": 5,
                               "annotations": [{"label": "A", "segment": [1, 2]}]}}, "b.json")
    with pytest.raises(ValueError, match="two subsets"):
        concat_annotations([load_hacs_json(a), load_hacs_json(b)])
    c = _hacs(tmp_path, {"y": {"subset": "validation", "duration": 5,
                               "annotations": [{"label": "B", "segment": [1, 2]}]}}, "c.json")
    with pytest.raises(ValueError, match="class lists"):
        concat_annotations([load_hacs_json(a), load_hacs_json(c)])


def test_ek100_labelless_test_timestamps_list_videos_without_ground_truth(tmp_path, ek100_dir):
    """EPIC_100_test_timestamps.csv has no verb/noun columns: a split used only for detection."""
    path = tmp_path / "EPIC_100_test_timestamps.csv"
    path.write_text("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
                    "start_frame,stop_frame\n"
                    "P01_101_0,P01,P01_101,00:00:01.00,00:00:01.50,00:00:03.00,90,180\n"
                    "P01_101_1,P01,P01_101,00:00:04.00,00:00:04.50,00:00:09.25,270,555\n"
                    "P02_102_0,P02,P02_102,00:00:01.00,00:00:02.00,00:00:05.00,120,300\n")
    annotations = load_ek100_csv(path, ek100_dir / "EPIC_100_verb_classes.csv",
                                 ek100_dir / "EPIC_100_noun_classes.csv", subset="testing")
    assert annotations.segments.empty
    assert annotations.videos["video_id"].tolist() == ["P01_101", "P02_102"]
    assert annotations.videos["duration"].tolist() == [9.25, 5.0]  # no video_info: the last stop time
    assert (annotations.videos["subset"] == "testing").all()
    assert len(annotations.classes["verb"]) == 97 and len(annotations.classes["noun"]) == 300
    # one label column alone is a damaged labelled file, not a labelless one
    path.write_text("video_id,start_timestamp,stop_timestamp,verb_class\nP01_101,00:00:01.00,00:00:02.00,3\n")
    with pytest.raises(AnnotationError, match="'noun_class'"):
        load_ek100_csv(path)


def test_ek100_csv_edges_empty_ragged_bom_and_quoted(tmp_path):
    path = tmp_path / "val.csv"
    path.write_text("")
    with pytest.raises(AnnotationError, match="cannot be read as a table"):
        load_ek100_csv(path)
    path.write_text(EK_HEADER + "P01_01_0,P01_01,00:00:00.00,00:00:01.00,0,0,extra\n")
    with pytest.raises(AnnotationError, match=r"row 2.*7 fields where the header has 6"):
        load_ek100_csv(path)
    # a byte-order mark, a quoted field with a comma, a blank line: read as spreadsheet exports write them
    path.write_bytes(b"\xef\xbb\xbf" + (EK_HEADER.replace("noun_class", "noun_class,narration") +
                     'P01_01_0,P01_01,00:00:00.00,00:00:01.00,3,4,"open door, slowly"\n\n').encode())
    annotations = load_ek100_csv(path)
    assert annotations.segments[["verb", "noun"]].values.tolist() == [[3, 4]]
    assert annotations.segments["video_id"].tolist() == ["P01_01"]
