"""The typed configuration schema: one dataclass per section, every key commented.

A run's configuration is a `Config` with one section per stage (`finetune`, `extract`,
`bmn`, `classify`, `eval`) plus `dataset`, `model` (the clip classifier, shared by
finetune, extract and classify) and `runtime`. YAML files and command-line overrides
are checked against these dataclasses by `configs.load`: an unknown key, a wrong type
or an impossible value stops the run before any work, naming the key.

Units are in the comments: seconds (`_sec`), frames on the decode-fps timeline
(`frames`), feature steps (`steps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUBSETS = ("training", "validation", "testing")


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _check_choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


@dataclass
class SyntheticConfig:
    """Parameters of the generated dataset (used when `dataset.source` is `synthetic`).

    The generated files are cached under `runtime.cache_dir` by a hash of these values,
    so a second run with the same parameters reuses them.
    """

    style: str = "ek100"  # "ek100": several short verb+noun actions per video; "hacs": one class per video
    num_train_videos: int = 48  # videos in the `training` subset
    num_val_videos: int = 12  # videos in the `validation` subset
    min_duration_sec: float = 16.0  # video length is drawn uniformly in [min, max] seconds
    max_duration_sec: float = 24.0
    fps: float = 30.0  # native frame rate of the written MP4 files
    frame_size: int = 64  # frames are frame_size x frame_size pixels
    num_verb_pairs: int = 3  # verbs come in time-reversed pairs (grow/shrink, fade in/out, colour A->B/B->A, ...)
    num_shapes: int = 4  # nouns: square, disk, triangle, ring, ...
    min_action_sec: float = 1.5  # action length range, seconds
    max_action_sec: float = 3.0
    actions_per_video: int = 5  # EK style: actions per video (HACS style: 1 to 3 instances of one class)
    overlap_prob: float = 0.15  # EK style: chance that an action overlaps the previous one
    noise_std: float = 12.0  # background pixel noise, in 0..255 units
    num_distractors: int = 2  # static shapes drawn in the background of every video
    # backgrounds drawn from a pool of this many (0 = one per video). HACS-style videos hold one class
    # each, so per-video backgrounds would let a classifier learn scenes instead of actions.
    num_backgrounds: int = 0
    seed: int = 0

    def validate(self, prefix: str) -> None:
        _check_choice(self.style, f"{prefix}.style", ("ek100", "hacs"))
        _check(self.num_train_videos >= 1, f"{prefix}.num_train_videos", "must be >= 1")
        _check(self.num_val_videos >= 1, f"{prefix}.num_val_videos", "must be >= 1")
        _check(self.min_duration_sec > 0, f"{prefix}.min_duration_sec", "must be > 0")
        _check(self.max_duration_sec >= self.min_duration_sec, f"{prefix}.max_duration_sec",
               "must be >= min_duration_sec")
        _check(self.fps > 0, f"{prefix}.fps", "must be > 0")
        _check(self.frame_size >= 16 and self.frame_size % 2 == 0, f"{prefix}.frame_size",
               "must be an even number >= 16 (H.264 needs even sizes)")
        _check(1 <= self.num_verb_pairs <= 4, f"{prefix}.num_verb_pairs", "must be in 1..4")
        _check(1 <= self.num_shapes <= 5, f"{prefix}.num_shapes", "must be in 1..5")
        _check(0 < self.min_action_sec <= self.max_action_sec, f"{prefix}.min_action_sec",
               "must be > 0 and <= max_action_sec")
        _check(self.max_action_sec < self.min_duration_sec, f"{prefix}.max_action_sec",
               "must be shorter than min_duration_sec")
        _check(self.actions_per_video >= 1, f"{prefix}.actions_per_video", "must be >= 1")
        _check(0 <= self.overlap_prob <= 1, f"{prefix}.overlap_prob", "must be in [0, 1]")
        _check(self.noise_std >= 0, f"{prefix}.noise_std", "must be >= 0")
        _check(self.num_distractors >= 0, f"{prefix}.num_distractors", "must be >= 0")
        _check(self.num_backgrounds >= 0, f"{prefix}.num_backgrounds", "must be >= 0")


@dataclass
class DatasetConfig:
    """Where the annotations and videos are, and which annotation style they follow."""

    source: str = "synthetic"  # "synthetic" (generated, see `synthetic`) or "files" (paths below)
    style: str = "ek100"  # "hacs" (one head, names) or "ek100" (verb and noun heads); picks protocol and format
    # subset name -> annotation file. HACS/ActivityNet JSON holds every subset in one file (name it for each);
    # EK100 has one CSV (or pickle) per subset.
    annotations: dict[str, str] = field(default_factory=dict)
    verb_classes: str = ""  # EK100: EPIC_100_verb_classes.csv (optional: otherwise classes are numbered)
    noun_classes: str = ""  # EK100: EPIC_100_noun_classes.csv
    video_info: str = ""  # EK100: EPIC_100_video_info.csv (per-video duration and native fps)
    class_names: str = ""  # HACS: optional text file, one class name per line (default: sorted labels)
    video_dir: str = ""  # folder holding the videos
    # file name pattern under video_dir; placeholders {video_id} and {participant} (EK100 "P01_11" -> "P01");
    # the extension may be ".*" to take whichever file is found
    video_pattern: str = "{video_id}.*"
    subsets: list[str] = field(default_factory=lambda: ["training", "validation"])  # subsets the run loads
    train_subset: str = "training"  # subset used to train (finetune, bmn)
    val_subset: str = "validation"  # subset used to validate, extract, classify and evaluate
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self, prefix: str) -> None:
        _check_choice(self.source, f"{prefix}.source", ("synthetic", "files"))
        _check_choice(self.style, f"{prefix}.style", ("hacs", "ek100"))
        _check(bool(self.subsets) and all(s in SUBSETS for s in self.subsets), f"{prefix}.subsets",
               f"must be a non-empty list of {list(SUBSETS)}")
        for key in ("train_subset", "val_subset"):
            _check(getattr(self, key) in SUBSETS, f"{prefix}.{key}", f"must be one of {list(SUBSETS)}")
        if self.source == "files":
            missing = [s for s in self.subsets if s not in self.annotations]
            _check(not missing, f"{prefix}.annotations",
                   f"needs a 'subset: file' entry for each of dataset.subsets (missing {missing})")
        self.synthetic.validate(f"{prefix}.synthetic")
        if self.source == "synthetic":
            _check(self.synthetic.style == self.style, f"{prefix}.synthetic.style",
                   f"must equal dataset.style ({self.style!r})")


@dataclass
class RuntimeConfig:
    """Where a run writes, on what device, with what seed."""

    work_dir: str = "../work_dirs/synthetic"  # every stage writes under here (relative to the config file)
    cache_dir: str = "../cache"  # generated synthetic videos (shared between runs, keyed by parameters)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    seed: int = 0
    num_workers: int = 1  # DataLoader worker processes for decoding (extract: 0 = a decoding thread)
    num_threads: int = 0  # torch threads per process (0 = default; extract on CPU leaves cores to decoders)
    # added to the nice value of extraction's decoding worker processes: where decoders outnumber the free
    # cores they then never take the model's core away (the model sets the pace; 0 = the main process's)
    decoder_nice: int = 10

    def validate(self, prefix: str) -> None:
        _check_choice(self.device, f"{prefix}.device", ("auto", "cpu", "cuda"))
        _check(self.num_workers >= 0, f"{prefix}.num_workers", "must be >= 0")
        _check(self.num_threads >= 0, f"{prefix}.num_threads", "must be >= 0")
        _check(0 <= self.decoder_nice <= 19, f"{prefix}.decoder_nice", "must be in 0..19")


@dataclass
class ModelConfig:
    """The clip classifier: TAda2D or the R2D/TSN baseline, and the clips it sees."""

    name: str = "tada2d"  # "tada2d" or "tsn" (R2D: same network without TAdaConv and temporal aggregation)
    depth: int = 18  # ResNet depth: 10 (one block per stage, CPU demos), 18, 34, 50 or 101
    width: int = 64  # channels of the first stage (64 in the standard ResNets; smaller for CPU demos)
    num_frames: int = 8  # frames per clip
    interval: int = 8  # frames between sampled clip frames, on the decode-fps timeline
    dropout: float = 0.5  # before the classifier heads
    route_reduction: int = 4  # route function channel reduction r
    route_kernels: list[int] = field(default_factory=lambda: [3, 3])  # temporal kernel sizes k0, k1
    pretrained: str = ""  # initial weights: torchvision ResNet, official TAdaConv or our checkpoint ("" = none)
    # frame normalisation (x / 255 - mean) / std, RGB, on the 0..1 scale. Empty = auto: the statistics the
    # weights were trained with (official TAdaConv files 0.45 / 0.225, torchvision ImageNet's, our checkpoints
    # what they recorded; ImageNet's for random weights). Give both to override.
    input_mean: list[float] = field(default_factory=list)
    input_std: list[float] = field(default_factory=list)

    def validate(self, prefix: str) -> None:
        _check_choice(self.name, f"{prefix}.name", ("tada2d", "tsn"))
        _check(len(self.input_mean) == len(self.input_std) and len(self.input_mean) in (0, 3),
               f"{prefix}.input_mean", "input_mean and input_std must both be empty (auto) or both 3 values (RGB)")
        _check(all(0 < v for v in self.input_std), f"{prefix}.input_std", "must be > 0")
        _check(self.depth in (10, 18, 34, 50, 101), f"{prefix}.depth",
               f"must be 10, 18, 34, 50 or 101, got {self.depth}")
        _check(self.width >= 4, f"{prefix}.width", "must be >= 4")
        _check(self.num_frames >= 1, f"{prefix}.num_frames", "must be >= 1")
        _check(self.interval >= 1, f"{prefix}.interval", "must be >= 1")
        _check(0 <= self.dropout < 1, f"{prefix}.dropout", "must be in [0, 1)")
        _check(self.route_reduction >= 1, f"{prefix}.route_reduction", "must be >= 1")
        _check(len(self.route_kernels) == 2 and all(k >= 1 and k % 2 == 1 for k in self.route_kernels),
               f"{prefix}.route_kernels", "must be two odd kernel sizes, e.g. [3, 3]")


@dataclass
class FinetuneConfig:
    """Fine-tuning the clip classifier on trimmed action segments (paper appendix C.1)."""

    fps: float = 30.0  # decode-fps timeline for training clips
    epochs: int = 12
    warmup_epochs: int = 1  # linear warm-up, then half-cosine decay to 0
    batch_size: int = 16  # clips per step (per process)
    clips_per_segment: int = 4  # clips drawn from each training segment per epoch (fresh positions each time)
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 2e-3
    weight_decay: float = 0.02
    momentum: float = 0.9  # sgd only
    crop_size: int = 56  # training crop (square), pixels
    short_side_range: list[int] = field(default_factory=lambda: [56, 72])  # random short side before the crop
    flip: bool = False  # random horizontal flip; off when direction is a class (the synthetic move left/right)
    val_short_side: int = 64  # validation: resize short side to this, then center crop (0 = whole frame)
    val_crop_size: int = 0  # 0 = whole frame (no crop)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    log_every: int = 10  # steps between progress-bar updates of loss and clips/s

    def validate(self, prefix: str) -> None:
        _check(self.fps > 0, f"{prefix}.fps", "must be > 0")
        _check(self.epochs >= 1, f"{prefix}.epochs", "must be >= 1")
        _check(0 <= self.warmup_epochs <= self.epochs, f"{prefix}.warmup_epochs", "must be in [0, epochs]")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", "must be >= 1")
        _check(self.clips_per_segment >= 1, f"{prefix}.clips_per_segment", "must be >= 1")
        _check_choice(self.optimizer, f"{prefix}.optimizer", ("adamw", "sgd"))
        _check(self.lr > 0, f"{prefix}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", "must be >= 0")
        _check(self.crop_size >= 8, f"{prefix}.crop_size", "must be >= 8")
        _check(len(self.short_side_range) == 2 and self.crop_size <= self.short_side_range[0]
               <= self.short_side_range[1], f"{prefix}.short_side_range",
               "must be [min, max] with crop_size <= min <= max")
        _check(self.val_short_side >= 0, f"{prefix}.val_short_side", "must be >= 0")
        _check(self.val_crop_size >= 0, f"{prefix}.val_crop_size", "must be >= 0")


@dataclass
class ExtractConfig:
    """Sliding-window clip features to HDF5 (paper appendix C.2)."""

    fps: float = 30.0  # decode-fps timeline (HACS 30, EK100 60), whatever the native fps
    stride: int = 8  # frames between consecutive clip starts, on the decode-fps timeline
    short_side: int = 64  # frames resized to this short side at decode time
    crop: str = "none"  # "none" (whole frame, as the paper) or "center" (square center crop)
    batch_size: int = 16  # clips per forward pass
    clips_per_chunk: int = 64  # clips decoded together; bounds memory for hour-long videos
    dtype: str = "float16"  # storage dtype of the features: "float16" or "float32"
    weights: str = "checkpoint"  # "checkpoint" (the fine-tuned model), "pretrained" (model.pretrained), "random"
    checkpoint: str = ""  # checkpoint to use ("" = <work_dir>/backbone/checkpoint.pt)
    videos: str = ""  # "" = the dataset's videos; else a list file, a glob, or a .tar/.zip archive of videos
    shard: str = ""  # "i/n": extract only share i of n (job arrays); then `python -m features.merge FEATURES_H5`
    overwrite: bool = False  # start afresh when existing features were made with other settings
    channels_last: bool = True  # channels-last model input (CPU and CUDA; faster on both for ResNet-50)
    bf16: bool = True  # bf16 autocast, CUDA only

    def validate(self, prefix: str) -> None:
        _check(self.fps > 0, f"{prefix}.fps", "must be > 0")
        _check(self.stride >= 1, f"{prefix}.stride", "must be >= 1")
        _check(self.short_side >= 16, f"{prefix}.short_side", "must be >= 16")
        _check_choice(self.crop, f"{prefix}.crop", ("none", "center"))
        _check(self.batch_size >= 1, f"{prefix}.batch_size", "must be >= 1")
        _check(self.clips_per_chunk >= 1, f"{prefix}.clips_per_chunk", "must be >= 1")
        _check_choice(self.dtype, f"{prefix}.dtype", ("float16", "float32"))
        _check_choice(self.weights, f"{prefix}.weights", ("checkpoint", "pretrained", "random"))
        if self.shard:
            parts = self.shard.split("/")
            ok = len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) < int(parts[1])
            _check(ok, f"{prefix}.shard", f"must look like 'i/n' with 0 <= i < n, got {self.shard!r}")


@dataclass
class BMNConfig:
    """The Boundary-Matching Network on clip features (Lin et al., ICCV 2019)."""

    input: str = "windows"  # "rescale": whole video rescaled to temporal_scale (HACS); "windows": sliding (EK100)
    temporal_scale: int = 100  # T, feature steps per BMN input
    window_overlap: float = 0.5  # "windows": fraction of T shared by consecutive windows
    max_duration: int = 0  # D, longest proposal in steps (0 = temporal_scale)
    hidden_1d: int = 256
    hidden_2d: int = 128
    hidden_3d: int = 512
    num_sample: int = 32
    num_sample_perbin: int = 3
    prop_boundary_ratio: float = 0.5
    epochs: int = 9
    lr_step: int = 7  # lr x 0.1 after this many epochs
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    soft_nms_alpha: float = 0.4
    soft_nms_low: float = 0.5
    soft_nms_high: float = 0.9
    top_k: int = 100  # proposals kept per video
    n_jobs: int = 2  # processes for post-processing

    def validate(self, prefix: str) -> None:
        _check_choice(self.input, f"{prefix}.input", ("rescale", "windows"))
        _check(self.temporal_scale >= 4, f"{prefix}.temporal_scale", "must be >= 4")
        _check(0 <= self.window_overlap < 1, f"{prefix}.window_overlap", "must be in [0, 1)")
        _check(0 <= self.max_duration <= self.temporal_scale, f"{prefix}.max_duration",
               "must be in [0, temporal_scale]")
        for key in ("hidden_1d", "hidden_2d", "hidden_3d", "num_sample", "num_sample_perbin",
                    "epochs", "batch_size", "top_k", "n_jobs"):
            _check(getattr(self, key) >= 1, f"{prefix}.{key}", "must be >= 1")
        _check(self.lr > 0, f"{prefix}.lr", "must be > 0")
        _check(self.prop_boundary_ratio >= 0, f"{prefix}.prop_boundary_ratio", "must be >= 0")
        _check(self.soft_nms_alpha > 0, f"{prefix}.soft_nms_alpha", "must be > 0")
        _check(0 <= self.soft_nms_low <= self.soft_nms_high <= 1, f"{prefix}.soft_nms_low",
               "need 0 <= soft_nms_low <= soft_nms_high <= 1")


@dataclass
class ClassifyConfig:
    """Turning class-agnostic proposals into scored detections (paper appendix C.2)."""

    mode: str = "features"  # EK-style: "features" (stored clip features) or "clips" (decode 6 clips)
    num_clips: int = 6  # "clips" mode: clips sampled evenly inside each proposal
    top_k_classes: int = 2  # HACS-style: classes per proposal
    top_verbs: int = 5  # EK-style: verbs x nouns combined per proposal
    top_nouns: int = 5
    max_detections_per_video: int = 1000
    proposals_per_video: int = 100  # proposals classified per video (highest scores)
    sls_pt: int = 2  # EK100 submission self-declared supervision levels (0..5)
    sls_tl: int = 3
    sls_td: int = 3

    def validate(self, prefix: str) -> None:
        _check_choice(self.mode, f"{prefix}.mode", ("features", "clips"))
        for key in ("num_clips", "top_k_classes", "top_verbs", "top_nouns", "max_detections_per_video",
                    "proposals_per_video"):
            _check(getattr(self, key) >= 1, f"{prefix}.{key}", "must be >= 1")
        for key in ("sls_pt", "sls_tl", "sls_td"):
            _check(0 <= getattr(self, key) <= 5, f"{prefix}.{key}", "must be an integer in 0..5")


@dataclass
class EvalConfig:
    """Scoring detections and proposals against the ground truth."""

    subset: str = "validation"
    tiou_thresholds: list[float] = field(default_factory=list)  # empty = the dataset's protocol
    report: bool = True  # write report.md and plots

    def validate(self, prefix: str) -> None:
        _check(all(0 < t <= 1 for t in self.tiou_thresholds), f"{prefix}.tiou_thresholds",
               "must be in (0, 1]")


@dataclass
class DetectConfig:
    """Running a trained run (or an exported model.pt) on new, unlabelled videos: `--stage detect`."""

    videos: str = ""  # video file(s): a file, folder, glob, list file or archive (as extract.videos)
    subset: str = ""  # or a dataset split instead of paths, e.g. "testing" (the leaderboards' test sets)
    model: str = ""  # an exported model.pt ("" = this run's checkpoints under runtime.work_dir)
    output: str = ""  # where detections go ("" = <work_dir>/detect)
    annotations: str = ""  # optional ground truth shown in the viewer (HACS JSON / EK100 CSV)
    score_threshold: float = 0.0  # detections scoring below it are dropped
    top_k: int = 0  # detections kept per video, best first (0 = classify.max_detections_per_video)

    def validate(self, prefix: str) -> None:
        _check(not (self.videos and self.subset), f"{prefix}.videos", "give detect.videos or detect.subset, not both")
        _check(not self.subset or self.subset in SUBSETS, f"{prefix}.subset", f"must be one of {list(SUBSETS)}")
        _check(0 <= self.score_threshold <= 1, f"{prefix}.score_threshold", "must be in [0, 1]")
        _check(self.top_k >= 0, f"{prefix}.top_k", "must be >= 0")


@dataclass
class Config:
    """A whole run. `configs.load.load_config` builds and validates one."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    bmn: BMNConfig = field(default_factory=BMNConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def validate(self) -> None:
        for name in ("dataset", "runtime", "model", "finetune", "extract", "bmn", "classify", "eval", "detect"):
            getattr(self, name).validate(name)


# Keys holding file-system paths: relative values resolve against the config file's folder
# (command-line overrides against the current folder, like any command-line path).
PATH_KEYS = (
    "dataset.annotations.*",
    "dataset.verb_classes",
    "dataset.noun_classes",
    "dataset.video_info",
    "dataset.class_names",
    "dataset.video_dir",
    "runtime.work_dir",
    "runtime.cache_dir",
    "model.pretrained",
    "extract.checkpoint",
    "extract.videos",
    "detect.videos",
    "detect.model",
    "detect.output",
    "detect.annotations",
)
