"""The command line: help, config errors before any work, the resolved config, logs."""

import subprocess
import sys
from pathlib import Path

import yaml

import pipeline

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_stage():
    result = run_cli("--help")
    assert result.returncode == 0
    for stage in ("finetune", "extract", "bmn", "classify", "eval", "all"):
        assert f"  {stage}" in result.stdout


def test_unknown_key_fails_before_any_work(tmp_path):
    work_dir = tmp_path / "work"
    result = run_cli("--stage", "extract", "extract.bogus=1", f"runtime.work_dir={work_dir}",
                     f"runtime.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("config error: extract.bogus: unknown key")
    assert "closest valid keys" in result.stderr
    assert not work_dir.exists() and not (tmp_path / "cache").exists()


def test_impossible_values_fail_with_one_line():
    for override, key in (("extract.fps=-1", "extract.fps"), ("extract.stride=0", "extract.stride")):
        result = run_cli("--stage", "extract", override)
        assert result.returncode == 2
        assert result.stderr.strip() == f"config error: {key}: " + result.stderr.strip().split(": ", 2)[2]


def test_resolved_config_written_and_paths_independent_of_cwd(tmp_path):
    work_dir = tmp_path / "work"
    # run from another folder: the config's relative paths still resolve from the config file
    result = run_cli("--config", str(REPO / "configs" / "synthetic-tiny.yaml"), "--stage", "eval",
                     f"runtime.work_dir={work_dir}", f"runtime.cache_dir={tmp_path / 'cache'}", "bmn.lr=5e-4",
                     cwd=tmp_path)
    written = yaml.safe_load((work_dir / "config.yaml").read_text())
    assert written["bmn"]["lr"] == 5e-4
    assert written["runtime"]["work_dir"] == str(work_dir)
    assert (tmp_path / "cache" / "synthetic").is_dir()  # synthetic videos generated on first run
    assert result.returncode in (0, 1, 3), result.stderr


def test_stage_table_matches_stages():
    assert tuple(pipeline.STAGE_FUNCTIONS) == ("finetune", "extract", "bmn", "classify", "eval")
