"""Merging per-rank feature shards into ``features.h5``; also a command.

    python -m features.merge WORK_DIR/features/features.h5 [--world-size N] [--keep-shards]

Shards sit beside the main file: ``features.rank<i>-of-<N>.h5`` (``features.store.shard_path``),
each with its failure list ``failed.rank<i>-of-<N>.tsv``. A torchrun extraction merges at
the end by itself (rank 0); after ``extract.shard=i/n`` job arrays, run this once all n
jobs have finished. The merged file holds the complete videos of every shard and of the
existing main file (when it was made with the same settings; otherwise it is replaced),
``failed.tsv`` lists the failures of all shards, and the shard files are removed.
The exit status is 1 when some video failed, 2 when the merge itself cannot be done.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from features.store import IDENTIFYING_KEYS, FeatureStore, FeatureStoreError, merge_shards, shard_path

log = logging.getLogger(__name__)

FAILED_TSV_NAME = "failed.tsv"  # beside features.h5 (configs.paths.RunPaths.failed_videos)
FAILED_COLUMNS = ("video_id", "path", "reason")


# ------------------------------------------------------------------ failure lists


def write_failures(path: Path, failures) -> None:
    """Write ``failures`` (items with video_id, path, reason) as a tab-separated file with a header.

    An empty list removes the file: its absence means nothing failed.
    """
    path = Path(path)
    failures = list(failures)
    if not failures:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(FAILED_COLUMNS)
        for failure in failures:
            writer.writerow([failure.video_id, failure.path, " ".join(str(failure.reason).split())])
    tmp.replace(path)


@dataclass(frozen=True)
class FailedVideo:
    video_id: str
    path: str
    reason: str


def read_failures(path: Path) -> list[FailedVideo]:
    """The rows of a failure list (``[]`` when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or tuple(rows[0]) != FAILED_COLUMNS:
        raise ValueError(f"{path}: expected a header {'/'.join(FAILED_COLUMNS)} (tab-separated)")
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(FAILED_COLUMNS):
            raise ValueError(f"{path}: line {line_number} has {len(row)} tab-separated fields, "
                             f"expected {len(FAILED_COLUMNS)}")
    return [FailedVideo(*row) for row in rows[1:]]


# ------------------------------------------------------------------ shards


def find_shards(features_h5: Path, world_size: int | None = None) -> tuple[int, list[Path]]:
    """``(N, [shard 0, ..., shard N-1])`` beside ``features_h5``; raises when some are missing."""
    features_h5 = Path(features_h5)
    stem, suffix = re.escape(features_h5.stem), re.escape(features_h5.suffix)
    pattern = re.compile(stem + r"\.rank(\d+)-of-(\d+)" + suffix + "$")
    found: dict[int, set[int]] = {}
    for candidate in features_h5.parent.glob(f"{features_h5.stem}.rank*-of-*{features_h5.suffix}"):
        match = pattern.match(candidate.name)
        if match:
            found.setdefault(int(match[2]), set()).add(int(match[1]))
    if world_size is None:
        if not found:
            raise FileNotFoundError(f"no shard files {features_h5.stem}.rank<i>-of-<N>{features_h5.suffix} "
                                    f"beside {features_h5}")
        if len(found) > 1:
            raise ValueError(f"shards of several splits beside {features_h5}: N in {sorted(found)}; "
                             "pass --world-size")
        world_size = next(iter(found))
    missing = sorted(set(range(world_size)) - found.get(world_size, set()))
    if missing:
        names = ", ".join(shard_path(features_h5, rank, world_size).name for rank in missing)
        raise FileNotFoundError(f"merge: {len(missing)} of {world_size} shards missing beside {features_h5}: "
                                f"{names} (has every job finished?)")
    return world_size, [shard_path(features_h5, rank, world_size) for rank in range(world_size)]


def done_marker(shard: Path) -> Path:
    """Written by a torchrun rank once its shard is closed; rank 0 waits for all of them before merging."""
    return shard.with_name(shard.name + ".done")


def _remove_shard(path: Path) -> None:
    path.unlink(missing_ok=True)
    done_marker(path).unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".parts"), ignore_errors=True)


@dataclass
class MergeResult:
    video_ids: list[str]  # every complete video of the merged file
    failures: list[FailedVideo]  # still-failing videos of all shards (now in failed.tsv)


def same_settings(first: Path, second: Path) -> bool:
    """Whether two feature files were made with the same extraction settings (identifying attrs)."""
    with FeatureStore(first) as first_store, FeatureStore(second) as second_store:
        first_attrs, second_attrs = first_store.attrs, second_store.attrs
    return all(first_attrs.get(key) == second_attrs.get(key) for key in IDENTIFYING_KEYS)


def merge_extraction(features_h5: str | Path, world_size: int | None = None,
                     keep_shards: bool = False) -> MergeResult:
    """Merge ``features.rank*-of-N.h5`` and their failure lists into ``features_h5`` and ``failed.tsv``.

    Args:
        features_h5: the main file; shards are looked for beside it.
        world_size: N of the shards (default: the only N found).
        keep_shards: keep the shard files (default: remove them once merged).
    """
    features_h5 = Path(features_h5)
    world_size, shards = find_shards(features_h5, world_size)
    inputs = list(shards)  # shard 0 first: the merged file takes its root attrs (config included)
    if features_h5.exists():
        if same_settings(shards[0], features_h5):
            inputs.append(features_h5)  # videos merged earlier stay
        else:
            log.warning("merge: %s was made with other extraction settings than the shards; replacing it",
                        features_h5)
    video_ids = merge_shards(inputs, features_h5)
    failed_tsv = features_h5.with_name(FAILED_TSV_NAME)
    failures = [failure for rank in range(world_size)
                for failure in read_failures(shard_path(failed_tsv, rank, world_size))]
    failures = [failure for failure in failures if failure.video_id not in set(video_ids)]
    write_failures(failed_tsv, failures)
    if not keep_shards:
        for rank, shard in enumerate(shards):
            _remove_shard(shard)
            shard_path(failed_tsv, rank, world_size).unlink(missing_ok=True)
    log.info("merged %d shards into %s: %d videos, %d failed", world_size, features_h5, len(video_ids),
             len(failures))
    return MergeResult(video_ids, failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.merge",
        description="Merge the shards features.rank<i>-of-<N>.h5 beside FEATURES_H5 (and their failure "
                    "lists) into FEATURES_H5 and failed.tsv, then remove them.")
    parser.add_argument("features_h5", type=Path, help="the main file, e.g. WORK_DIR/features/features.h5")
    parser.add_argument("--world-size", type=int, default=None,
                        help="N of the shards (default: the one found)")
    parser.add_argument("--keep-shards", action="store_true", help="keep the shard files after merging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = merge_extraction(args.features_h5, args.world_size, args.keep_shards)
    except (OSError, ValueError, FeatureStoreError) as error:
        print(f"merge failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    failed_tsv = args.features_h5.with_name(FAILED_TSV_NAME)
    print(f"merged {len(result.video_ids)} videos into {args.features_h5}")
    if result.failures:
        print(f"{len(result.failures)} videos failed, see {failed_tsv}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
