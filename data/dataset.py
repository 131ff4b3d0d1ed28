"""From the `dataset` config section to one `Annotations` record with video paths.

`load_dataset(cfg)` is what every stage calls for ground truth and the video table. For
`dataset.source: synthetic` it first generates (or reuses) the synthetic set and reads
it back through the same real loaders as user data.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from configs.schema import Config, DatasetConfig
from data.annotations import (
    Annotations,
    concat_annotations,
    load_ek100_csv,
    load_hacs_json,
    resolve_video_paths,
)
from data.synthetic import generate_dataset, synthetic_dataset_files

log = logging.getLogger(__name__)


def resolve_dataset_files(cfg: Config) -> DatasetConfig:
    """The dataset section with concrete files: for a synthetic set, generated ones."""
    dataset = cfg.dataset
    if dataset.source == "synthetic":
        root = generate_dataset(dataset.synthetic, Path(cfg.runtime.cache_dir) / "synthetic", log=log.info)
        dataset = dataclasses.replace(dataset, source="files", **synthetic_dataset_files(dataset.synthetic, root))
    return dataset


def load_dataset(cfg: Config) -> Annotations:
    """Load every configured subset into one record, with `videos.path` filled in.

    Missing videos keep an empty path and are logged (not fatal here: the stages that
    need frames report them per video).
    """
    dataset = resolve_dataset_files(cfg)
    if dataset.style == "hacs":
        class_names = None
        if dataset.class_names:
            class_names = [line.strip() for line in Path(dataset.class_names).read_text().splitlines()
                           if line.strip()]
        by_file: dict[str, Annotations] = {}
        parts = []
        for subset in dataset.subsets:
            path = dataset.annotations[subset]
            if path not in by_file:
                by_file[path] = load_hacs_json(path, class_names)
            parts.append(by_file[path].subset(subset))
        annotations = concat_annotations(parts)  # several files need dataset.class_names to agree
    else:
        parts = [load_ek100_csv(path, dataset.verb_classes or None, dataset.noun_classes or None,
                                dataset.video_info or None, subset=subset)
                 for subset, path in dataset.annotations.items() if subset in dataset.subsets]
        annotations = concat_annotations(parts)
    if dataset.video_dir:
        missing = resolve_video_paths(annotations.videos, dataset.video_dir, dataset.video_pattern)
        if missing:
            log.warning("%d of %d videos not found under %s (e.g. %s)", len(missing), len(annotations.videos),
                        dataset.video_dir, ", ".join(missing[:3]))
    return annotations
