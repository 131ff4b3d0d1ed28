"""Shards: several processes (torchrun ranks, job-array tasks) extract into one store.

Each rank writes its own file ``features.rank<i>-of-<N>.h5`` (``shard_path``) with its own
writer and its failure list ``failed.rank<i>-of-<N>.tsv``; a torchrun rank marks its shard
done with ``<shard>.done`` (``done_marker``). ``merge_extraction`` copies the complete videos
of all shards (and of an existing main file made with the same settings) into the main
file, through a temporary file and an atomic replace (``merge_shards``), merges the failure
lists, and removes the shards. ``assign_shards`` splits the videos, balanced by duration.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from formats.failures import FailedVideo, read_failures, write_failures
from formats.feature_writer import PART_SUFFIX
from formats.features import (
    IDENTIFYING_KEYS,
    FeatureStore,
    FeatureStoreError,
    FeatureStoreMismatch,
    attr_differences,
    complete_video_ids,
    is_int,
    open_existing,
    read_root_attrs,
    sidecar,
    write_root_attrs,
)
from runstate import atomic

log = logging.getLogger(__name__)

FAILED_TSV_NAME = "failed.tsv"  # beside features.h5 (runstate.paths.RunPaths.failed_videos)

def shard_path(features_h5: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Shard file of one rank: ``features.h5`` -> ``features.rank1-of-4.h5`` (unchanged for world_size 1)."""
    features_h5 = Path(features_h5)
    if not is_int(world_size) or world_size < 1:
        raise ValueError(f"shard_path: world_size must be a positive integer, got {world_size!r}")
    if not is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"shard_path: rank must be in 0..{world_size - 1}, got {rank!r}")
    if world_size == 1:
        return features_h5
    return features_h5.with_name(f"{features_h5.stem}.rank{rank}-of-{world_size}{features_h5.suffix}")


def assign_shards(video_ids: list[str], durations, world_size: int) -> list[list[str]]:
    """Split videos over ranks, balanced by duration (greedy longest-processing-time).

    Videos are taken longest first (ties by id) and each goes to the rank with the least
    total duration so far (ties to the lowest rank). Each rank's list is in assignment
    order. Any non-negative cost works as ``durations`` (e.g. file sizes when durations
    are unknown).
    """
    video_ids = list(video_ids)
    durations = [float(duration) for duration in durations]
    if not is_int(world_size) or world_size < 1:
        raise ValueError(f"assign_shards: world_size must be a positive integer, got {world_size!r}")
    if len(video_ids) != len(durations):
        raise ValueError(f"assign_shards: {len(video_ids)} video ids but {len(durations)} durations")
    if len(set(video_ids)) != len(video_ids):
        duplicates = sorted({video_id for video_id in video_ids if video_ids.count(video_id) > 1})
        raise ValueError(f"assign_shards: duplicate video ids {duplicates[:5]}")
    for video_id, duration in zip(video_ids, durations):
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"assign_shards: video {video_id!r} has duration {duration!r}; "
                             "need finite values >= 0 (pass a cost proxy such as file size if unknown)")
    loads = [0.0] * world_size
    shards: list[list[str]] = [[] for _ in range(world_size)]
    for duration, video_id in sorted(zip(durations, video_ids), key=lambda pair: (-pair[0], pair[1])):
        rank = min(range(world_size), key=lambda index: (loads[index], index))
        shards[rank].append(video_id)
        loads[rank] += duration
    return shards


def _groups_equal(first: h5py.Group, second: h5py.Group) -> bool:
    # repr() so that a NaN native_fps compares equal to itself.
    first_attrs = {key: repr(np.asarray(value).tolist()) for key, value in first.attrs.items()}
    second_attrs = {key: repr(np.asarray(value).tolist()) for key, value in second.attrs.items()}
    return (first_attrs == second_attrs
            and first["features"].dtype == second["features"].dtype
            and np.array_equal(first["features"][()], second["features"][()], equal_nan=True)
            and np.array_equal(first["times"][()], second["times"][()], equal_nan=True))


def merge_shards(shard_paths: list[str | os.PathLike], out_path: str | os.PathLike) -> list[str]:
    """Copy the complete videos of per-rank shard files into one file, atomically.

    All shards must have the same identifying attrs (``FeatureStoreMismatch`` otherwise)
    and must have been closed by their writers (no pending parts). A video in several
    shards is an error unless the copies are identical. The root attrs (config
    included) are taken from the first shard. Returns the merged video ids, sorted.
    """
    shard_paths = [Path(path) for path in shard_paths]
    out_path = Path(out_path)
    if not shard_paths:
        raise ValueError("merge_shards: no shard files given")
    for path in shard_paths:
        if not path.exists():
            raise FileNotFoundError(f"merge_shards: shard {path} does not exist")
        parts_dir = sidecar(path, "parts")
        if parts_dir.exists() and any(parts_dir.glob("*" + PART_SUFFIX)):
            raise FeatureStoreError(f"merge_shards: shard {path} has unconsolidated parts in {parts_dir}; "
                                    "rerun that rank's extraction so that its writer closes")
    output = atomic.AtomicFile(out_path)
    tmp_path = output.tmp_path
    shard_files = []
    try:
        for path in shard_paths:
            shard_files.append(open_existing(path))
        first_attrs = read_root_attrs(shard_files[0])
        owner: dict[str, int] = {}  # video id -> index of the shard it is copied from
        for index, shard in enumerate(shard_files):
            differences = attr_differences(first_attrs, read_root_attrs(shard))
            if differences:
                raise FeatureStoreMismatch(f"merge_shards: shard {shard_paths[index]} differs from "
                                           f"{shard_paths[0]}: " + "; ".join(differences))
            for video_id in complete_video_ids(shard):
                if video_id in owner:
                    other = shard_files[owner[video_id]]
                    if not _groups_equal(other["videos"][video_id], shard["videos"][video_id]):
                        raise FeatureStoreError(f"merge_shards: video {video_id!r} differs between shards "
                                                f"{shard_paths[owner[video_id]]} and {shard_paths[index]}")
                else:
                    owner[video_id] = index
        with h5py.File(tmp_path, "w", locking=False) as out:
            write_root_attrs(out, first_attrs)
            out_videos = out.create_group("videos")
            for video_id in sorted(owner):
                source = shard_files[owner[video_id]]
                source.copy(source["videos"][video_id], out_videos, name=video_id)
    except BaseException:
        output.abort()
        raise
    finally:
        for shard in shard_files:
            shard.close()
    output.commit()
    return sorted(owner)


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
    sidecar(path, "lock").unlink(missing_ok=True)
    shutil.rmtree(sidecar(path, "parts"), ignore_errors=True)


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
