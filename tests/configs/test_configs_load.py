import re
from pathlib import Path

import pytest
import yaml

from configs.load import all_keys, config_yaml, load_config, parse_override
from configs.schema import Config, ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["synthetic", "synthetic-hacs", "synthetic-tiny", "hacs", "ek100"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, Config)
    assert Path(cfg.runtime.work_dir).is_absolute()


def test_paper_settings_in_real_configs():
    hacs = load_config(CONFIGS / "hacs.yaml")
    assert (hacs.extract.fps, hacs.extract.stride, hacs.extract.short_side) == (30.0, 16, 128)
    assert (hacs.model.num_frames, hacs.model.interval) == (8, 8)
    assert (hacs.bmn.input, hacs.bmn.temporal_scale) == ("rescale", 100)
    assert (hacs.finetune.optimizer, hacs.finetune.lr, hacs.finetune.epochs, hacs.finetune.warmup_epochs) == \
        ("adamw", 2e-4, 30, 8)
    ek = load_config(CONFIGS / "ek100.yaml")
    assert (ek.extract.fps, ek.extract.stride, ek.extract.short_side, ek.extract.crop) == (60.0, 8, 224, "none")
    assert (ek.bmn.input, ek.classify.mode, ek.classify.num_clips) == ("windows", "clips", 6)
    assert ek.dataset.style == "ek100" and hacs.dataset.style == "hacs"


def test_base_inheritance_overrides_only_what_it_names():
    base = load_config(CONFIGS / "synthetic.yaml")
    tiny = load_config(CONFIGS / "synthetic-tiny.yaml")
    hacs = load_config(CONFIGS / "synthetic-hacs.yaml")
    assert tiny.dataset.synthetic.num_train_videos == 6
    assert tiny.finetune.optimizer == base.finetune.optimizer  # inherited
    assert hacs.dataset.style == "hacs" and hacs.model.width == base.model.width
    assert tiny.runtime.work_dir != base.runtime.work_dir


def test_overrides_are_yaml_typed():
    cfg = load_config(CONFIGS / "synthetic.yaml",
                      ["bmn.lr=1e-3", "extract.fps=60", "dataset.subsets=[validation]", "eval.report=false",
                       "model.route_kernels=[3, 5]"])
    assert cfg.bmn.lr == pytest.approx(1e-3)
    assert cfg.extract.fps == 60.0 and isinstance(cfg.extract.fps, float)
    assert cfg.dataset.subsets == ["validation"]
    assert cfg.eval.report is False
    assert cfg.model.route_kernels == [3, 5]


@pytest.mark.parametrize("override, message", [
    ("extract.bogus=1", "extract.bogus: unknown key"),
    ("extract.strid=4", "closest valid keys: extract.stride"),
    ("bogus.key=1", "bogus: unknown key"),
    ("extract.fps=-30", "extract.fps: must be > 0"),
    ("extract.stride=0", "extract.stride: must be >= 1"),
    ("extract.stride=2.5", "extract.stride: expected int"),
    ("model.depth=abc", "model.depth: expected int"),
    ("model.depth=20", "model.depth: must be 10, 18, 34, 50 or 101"),
    ("eval.report=3", "eval.report: expected bool"),
    ("dataset.subsets=[train]", "dataset.subsets"),
    ("extract.shard=3/2", "extract.shard"),
    ("runtime.device=tpu", "runtime.device: must be one of"),
    ("nonsense", "expected section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(CONFIGS / "synthetic.yaml", [override])


def test_unknown_key_in_file_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yaml").write_text(yaml.safe_dump({"runtime": {"work_dir": "runs/x"}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"_base_": "sub/base.yaml", "model": {"width": 8}}))
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.runtime.work_dir == str((tmp_path / "sub" / "runs" / "x").resolve())  # relative to its own file
    assert cfg.model.width == 8
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model": {"widht": 8}}))
    with pytest.raises(ConfigError, match="model.widht: unknown key; closest valid keys: model.width"):
        load_config(tmp_path / "bad.yaml")


def test_base_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="finetune.short_side_range"):
        load_config(CONFIGS / "synthetic.yaml", ["finetune.crop_size=100"])
    with pytest.raises(ConfigError, match="dataset.synthetic.style"):
        load_config(CONFIGS / "synthetic.yaml", ["dataset.style=hacs"])


def test_dump_roundtrip(tmp_path):
    cfg = load_config(CONFIGS / "synthetic.yaml", ["bmn.epochs=3"])
    (tmp_path / "config.yaml").write_text(config_yaml(cfg))
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_parse_override_and_keys():
    assert parse_override("a.b=1e-4") == ("a.b", 1e-4)
    assert parse_override("a.b=hello") == ("a.b", "hello")
    assert parse_override("a.b=") == ("a.b", "")
    assert "extract.fps" in all_keys() and "dataset.synthetic.seed" in all_keys()


def test_a_section_override_merges_into_the_file_section():
    base = load_config(CONFIGS / "synthetic-tiny.yaml")
    cfg = load_config(CONFIGS / "synthetic-tiny.yaml", ["extract={fps: 25, stride: 2}"])
    assert cfg.extract.fps == 25.0 and cfg.extract.stride == 2
    assert cfg.extract.short_side == base.extract.short_side == 32  # from the file, not the schema default
    nested = load_config(CONFIGS / "synthetic-tiny.yaml", ["dataset={synthetic: {seed: 7}}"])
    assert nested.dataset.synthetic.seed == 7
    assert nested.dataset.synthetic.num_train_videos == base.dataset.synthetic.num_train_videos == 6


@pytest.mark.parametrize("override, key", [
    ("extract.fps=.inf", "extract.fps"), ("finetune.lr=.nan", "finetune.lr"), ("bmn.lr=-.inf", "bmn.lr"),
    ("bmn.soft_nms_alpha=.nan", "bmn.soft_nms_alpha"), ("eval.tiou_thresholds=[0.5, .nan]", "eval.tiou_thresholds[1]"),
    ("bmn={soft_nms_low: .nan}", "bmn.soft_nms_low"),
])
def test_non_finite_numbers_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be a finite number"):
        load_config(CONFIGS / "synthetic.yaml", [override])


def test_overrides_may_stand_before_or_after_the_stage():
    import pipeline

    args = pipeline.build_parser().parse_intermixed_args(["bmn.lr=1e-3", "--stage", "bmn", "extract.fps=25"])
    assert args.stage == "bmn" and args.overrides == ["bmn.lr=1e-3", "extract.fps=25"]
