"""The file contracts between stages, each with one home that writes and reads it.

* `formats.features`: the feature store layout and its reader (`FeatureStore`); `feature_writer`
  (the crash-safe writer) and `feature_shards` (per-rank shards and their merge);
* `formats.proposals`: `proposals.json`;
* `formats.submission`: the HACS and EK100 submission files (builders, validators, constants);
* `formats.checkpoint`: our checkpoints (classifier and BMN, one `FORMAT_VERSION`);
* `formats.failures`: `failed.tsv`.
"""
