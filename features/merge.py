"""Merge per-rank feature shards into ``features.h5``: the command line.

    python -m features.merge WORK_DIR/features/features.h5 [--world-size N] [--keep-shards]

After ``extract.shard=i/n`` job arrays, run this once all n jobs have finished (a torchrun
extraction merges by itself). What a merge does is ``formats.feature_shards.merge_extraction``.
The exit status is 1 when some video failed, 2 when the merge itself cannot be done.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from formats.feature_shards import FAILED_TSV_NAME, merge_extraction
from formats.features import FeatureStoreError


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
    print(f"merged {len(result.video_ids)} videos into {args.features_h5}")
    if result.failures:
        print(f"{len(result.failures)} videos failed, see {args.features_h5.with_name(FAILED_TSV_NAME)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
