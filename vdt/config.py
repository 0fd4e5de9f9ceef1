"""Frozen run configuration: one dataclass per part, and the run that holds them.

Data flows one way: sweep -> job -> ``train.main(cfg)`` -> checkpoint -> evaluate.
Each module takes its own part (``VDT(cfg.model)``, ``GaussianDiffusion(cfg.diffusion)``).
Every dataclass validates itself in ``__post_init__`` and names the bad field.
Nothing mutates a config after it is built: overrides build a new one.
"""

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field

from vdt.errors import ConfigError

# (depth, hidden, heads, patch) per preset. VDT-S/2 and VDT-L/2 are the official sizes (RERV/VDT models.py); the
# official "L" (28 blocks, 1152 wide) is DiT's XL size. For the `scaling` sweep's S/B/L/XL grid, DiT's sizes (Peebles
# & Xie 2023, table 1) in the VDT architecture: VDT-B/2 is DiT-B, DiT-L/2 is DiT-L (24, 1024, 16; the official VDT
# code has no such size), VDT-XL/2 is DiT-XL, the official VDT-L/2's geometry under DiT's name (docs/model.md).
PRESETS = {
    "VDT-S/2": dict(depth=12, hidden=384, heads=6, patch=2),
    "VDT-L/2": dict(depth=28, hidden=1152, heads=16, patch=2),
    "VDT-B/2": dict(depth=12, hidden=768, heads=12, patch=2),
    "DiT-L/2": dict(depth=24, hidden=1024, heads=16, patch=2),
    "VDT-XL/2": dict(depth=28, hidden=1152, heads=16, patch=2),
    "cpu-tiny": dict(depth=2, hidden=64, heads=4, patch=2),
    "cpu-small": dict(depth=4, hidden=128, heads=4, patch=2),
}
LR_SCHEDULES = ("constant", "cosine")
CONDITIONING = ("token_concat", "cross_attn", "adaln")
MASK_KINDS = (
    "predict", "backward", "interpolate", "unconditional",
    "one_frame", "random_frames", "spatial_temporal",
)
TEMPORAL_KINDS = MASK_KINDS[:6]
# The official training mixture: 20% spatial-temporal, the rest uniform over the six temporal kinds.
OFFICIAL_MIXTURE = ",".join([f"{k}:{0.8 / 6:.10g}" for k in TEMPORAL_KINDS] + ["spatial_temporal:0.2"])
DATASETS = ("bouncing", "ucf101", "taichi", "sky", "physion")
SPLITS = ("train", "val", "test", "all")
AUTOENCODERS = ("none", "sd-vae")
EVAL_SECTIONS = ("eval",)  # RunConfig sections that don't change the trained weights (left out of the run id)
# Training fields that can't change the trained weights, also left out of the run id (docs/model.md#the-run-id):
# cadence (when to log and checkpoint, how many to keep), loading (workers read the same items in the same order;
# the bad-video threshold only decides whether training starts), and paths (where the files are, not what they hold).
NOT_IN_RUN_ID = ("train.log_every", "train.ckpt_every", "train.keep_ckpts", "data.num_workers",
                 "data.max_bad_fraction", "data.root", "data.latent_cache", "data.vae_path")
PREDICTIONS = ("eps", "v", "x0")  # what the denoiser's output estimates; see vdt/diffusion.py


# Model fields that RunConfig derives from the other sections, with what to set instead.
DERIVED = {
    "model.frames": "derived from data.frames (and masks.predict_k for cross_attn/adaln); set those",
    "model.size": "derived from data.size (and data.autoencoder); set those",
    "model.channels": "derived from data.channels (and data.autoencoder); set those",
    "model.cond_frames": "derived from masks.predict_k; set that",
    "model.learn_sigma": "derived from diffusion.variance; set that",
}


def _check(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {msg}")


def parse_mixture(spec: str) -> dict:
    """'predict:0.5,interpolate:0.5' -> {'predict': 0.5, 'interpolate': 0.5}; 'official' -> the official mixture."""
    if spec == "official":
        spec = OFFICIAL_MIXTURE
    out = {}
    for part in spec.split(","):
        kind, _, p = part.strip().partition(":")
        _check(kind in MASK_KINDS, "masks.mixture", f"unknown mask kind {kind!r}; choose from {MASK_KINDS}")
        try:
            out[kind] = float(p) if p else 1.0
        except ValueError:
            raise ConfigError(f"masks.mixture: probability {p!r} of {kind!r} is not a number") from None
        _check(out[kind] >= 0, "masks.mixture", f"negative probability for {kind!r}")
    _check(abs(sum(out.values()) - 1.0) < 1e-6, "masks.mixture", f"probabilities sum to {sum(out.values()):.6g}, not 1")
    return out


@dataclass(frozen=True)
class ModelConfig:
    """The denoiser. Geometry (frames, size, channels) is filled from the data by RunConfig."""

    preset: str = "cpu-small"
    depth: int | None = None  # None: from the preset
    hidden: int | None = None
    heads: int | None = None
    patch: int | None = None
    mlp_ratio: float = 4.0
    conditioning: str = "token_concat"
    cond_frames: int | None = None  # clean condition frames for cross_attn/adaln; None: set by RunConfig
    learn_sigma: bool = True  # 2C outputs: the prediction (eps, v or x0) and the variance interpolation
    num_classes: int = 0  # >0: class-conditional, label embedding with classifier-free dropout
    class_dropout: float = 0.1
    frames: int = 16  # frames the model sees (token_concat: all; others: the generated ones)
    size: int = 32  # frame side on the model's grid (latent side with a VAE)
    channels: int = 3

    def __post_init__(self):
        _check(self.preset in PRESETS, "model.preset", f"unknown preset {self.preset!r}; choose from {list(PRESETS)}")
        for k, v in PRESETS[self.preset].items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        _check(self.conditioning in CONDITIONING, "model.conditioning",
               f"unknown mode {self.conditioning!r}; choose from {CONDITIONING}")
        for k in ("depth", "hidden", "heads", "patch", "frames", "size", "channels"):
            _check(getattr(self, k) >= 1, f"model.{k}", "must be >= 1")
        _check(self.hidden % self.heads == 0, "model.hidden", f"{self.hidden} is not divisible by heads={self.heads}")
        _check(self.size % self.patch == 0, "model.patch", f"patch {self.patch} does not divide frame size {self.size}")
        _check(self.conditioning == "token_concat" or self.cond_frames is None or self.cond_frames >= 1,
               "model.cond_frames",
               f"conditioning={self.conditioning!r} needs at least one condition frame")
        _check(0.0 <= self.class_dropout < 1.0, "model.class_dropout", "must be in [0, 1)")
        _check(self.mlp_ratio > 0, "model.mlp_ratio", "must be > 0")
        _check(self.num_classes >= 0, "model.num_classes", "must be >= 0 (0: unconditional)")


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise process and the training objective."""

    steps: int = 1000
    schedule: str = "linear"  # linear (the paper's, beta 1e-4 -> 0.02) | cosine
    variance: str = "learned_range"  # learned_range (hybrid loss MSE + VLB) | fixed_small | fixed_large
    loss_norm: str = "masked"  # masked: mean over mask=1 elements | all: the official mean over every element
    prediction: str = "eps"  # eps (the paper's and the official code's) | v (Salimans & Ho 2022) | x0

    def __post_init__(self):
        _check(self.steps >= 2, "diffusion.steps", "must be >= 2")
        _check(self.schedule in ("linear", "cosine"), "diffusion.schedule", f"unknown schedule {self.schedule!r}")
        _check(self.variance in ("learned_range", "fixed_small", "fixed_large"), "diffusion.variance",
               f"unknown variance {self.variance!r}")
        _check(self.loss_norm in ("masked", "all"), "diffusion.loss_norm", f"unknown loss_norm {self.loss_norm!r}")
        _check(self.prediction in PREDICTIONS, "diffusion.prediction",
               f"unknown prediction {self.prediction!r}; choose from {PREDICTIONS}")

    @property
    def learn_sigma(self) -> bool:
        return self.variance == "learned_range"


@dataclass(frozen=True)
class MaskConfig:
    """Training masks (1 = generate, 0 = given). See vdt/masks.py."""

    mixture: str = "official"  # 'official' or 'kind:p,kind:p,...'
    predict_k: int | None = None  # given frames for predict/backward; None: half the frames (8 of 16)
    interpolate_stride: int = 4
    random_p: float = 0.8
    spatial_ratio: float = 0.5
    mask_ratio: float | None = None  # None: the kinds' own parameters; else the generated share for every kind

    def __post_init__(self):
        parse_mixture(self.mixture)
        _check(self.predict_k is None or self.predict_k >= 1, "masks.predict_k", "must be >= 1")
        _check(self.interpolate_stride >= 2, "masks.interpolate_stride", "must be >= 2")
        _check(0.0 < self.random_p <= 1.0, "masks.random_p", "must be in (0, 1]")
        _check(0.0 < self.spatial_ratio <= 1.0, "masks.spatial_ratio", "must be in (0, 1]")
        _check(self.mask_ratio is None or 0.0 < self.mask_ratio < 1.0, "masks.mask_ratio", "must be in (0, 1)")

    def probabilities(self) -> dict:
        return parse_mixture(self.mixture)

    def given_frames(self, frames: int) -> int:
        """k for predict/backward at this frame count."""
        return self.predict_k if self.predict_k is not None else frames // 2


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they are cut."""

    name: str = "bouncing"
    root: str | None = None
    frames: int = 16
    size: int = 32
    channels: int = 3
    stride: int = 1  # frame stride inside a clip
    split: str = "train"  # train | val | test | all (evaluation reports test; tuning reads val only; docs/data.md)
    fold: int = 1  # UCF101 split 1, 2 or 3
    num_objects: int = 3  # bouncing
    length: int = 100_000  # bouncing: items per epoch (the data is procedural)
    seed: int = 0
    num_workers: int = 0
    autoencoder: str = "none"  # none | sd-vae
    vae_path: str | None = None
    latent_cache: str | None = None  # dir of cached latents; None: $VDT_CACHE_DIR/latents or results/cache/latents
    latent_clips: int = 1  # sd-vae, train/all: clips cached per video at offsets fixed at build time; 0: every clip
    max_bad_fraction: float = 0.01
    class_labels: bool = False

    def __post_init__(self):
        _check(self.name in DATASETS, "data.name", f"unknown dataset {self.name!r}; choose from {DATASETS}")
        _check(self.name == "bouncing" or self.root, "data.root", f"dataset {self.name!r} needs data.root")
        _check(self.frames >= 2, "data.frames", "must be >= 2")
        _check(8 <= self.size <= 1024, "data.size", "must be in [8, 1024]")
        _check(self.channels in (1, 3), "data.channels", "must be 1 or 3")
        _check(self.stride >= 1, "data.stride", "must be >= 1")
        _check(self.split in SPLITS, "data.split", f"unknown split {self.split!r}; choose from {SPLITS}")
        _check(self.fold in (1, 2, 3), "data.fold", "must be 1, 2 or 3")
        _check(self.autoencoder in AUTOENCODERS, "data.autoencoder", f"choose from {AUTOENCODERS}")
        _check(self.autoencoder == "none" or self.size % 8 == 0, "data.size", "must be a multiple of 8 with sd-vae")
        _check(0.0 <= self.max_bad_fraction <= 1.0, "data.max_bad_fraction", "must be in [0, 1]")
        _check(self.num_objects >= 1, "data.num_objects", "must be >= 1")
        _check(not self.class_labels or self.name == "ucf101", "data.class_labels", "only ucf101 has class labels")
        _check(self.autoencoder == "none" or self.channels == 3, "data.channels", "sd-vae encodes RGB: set 3")
        _check(self.length >= 1, "data.length", "must be >= 1")
        _check(self.seed >= 0, "data.seed", "must be >= 0")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        _check(self.latent_clips >= 0, "data.latent_clips", "must be >= 0 (0: every clip of every video)")

    @property
    def grid(self) -> tuple:
        """(channels, side) of what the model sees: pixels, or SD-VAE latents (4 channels, /8)."""
        return (4, self.size // 8) if self.autoencoder == "sd-vae" else (self.channels, self.size)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpoints."""

    steps: int = 300
    batch_size: int = 8  # global batch, split over DDP ranks
    lr: float = 3e-4
    warmup: int = 20
    lr_schedule: str = "constant"  # after warmup: constant | cosine (to 0 at train.steps)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    log_every: int = 10
    ckpt_every: int = 100
    keep_ckpts: int = 3
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False

    def __post_init__(self):
        for k in ("steps", "batch_size", "log_every", "ckpt_every", "keep_ckpts"):
            _check(getattr(self, k) >= 1, f"train.{k}", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.warmup >= 0, "train.warmup", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.grad_clip > 0, "train.grad_clip", "must be > 0")
        _check(self.seed >= 0, "train.seed", "must be >= 0")
        _check(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
               f"unknown schedule {self.lr_schedule!r}; choose from {LR_SCHEDULES}")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
        _check(self.precision in ("auto", "fp32", "bf16"), "train.precision", f"unknown {self.precision!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after training: tasks, sampler, metrics."""

    tasks: tuple = ("predict",)
    num_videos: int = 32
    batch_size: int = 16
    sampler: str = "ddim"  # ddim | ddpm
    sample_steps: int = 50
    eta: float = 0.0
    best_of: int = 1
    seed: int = 0
    fvd: bool = True
    lpips: bool = True
    i3d_weights: str | None = None
    guidance: float = 1.0
    lpips_net: str = "alex"  # alex (the LPIPS paper's default) | vgg
    fvd_reals: str = "test"  # the split FVD's real clips come from: test | train (StyleGAN-V's fvd2048_16f)
    fvd_ref_draws: int = 5  # real-vs-real FVD draws at the same N: the noise band
    every: int = 0  # >0: evaluate the EMA weights on the val split every N training steps (0: off)
    every_videos: int = 16  # clips of the in-training evaluation (a fixed val set)
    split: str = "test"  # the split evaluation scores: test (eval.json, what reports read) | val (eval-val.json)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        _check(self.lpips_net in ("alex", "vgg"), "eval.lpips_net",
               f"unknown net {self.lpips_net!r}; choose alex or vgg")
        _check(self.fvd_reals in ("test", "train"), "eval.fvd_reals", f"unknown split {self.fvd_reals!r}")
        _check(self.fvd_ref_draws >= 1, "eval.fvd_ref_draws", "must be >= 1")
        _check(self.every >= 0, "eval.every", "must be >= 0 (0: off)")
        _check(self.every_videos >= 1, "eval.every_videos", "must be >= 1")
        _check(self.split in ("test", "val"), "eval.split", f"unknown split {self.split!r}; choose test or val")
        for t in self.tasks:  # a kind, or kind:name=value as evaluate's --task (predict:k=3; checked there)
            _check(t.partition(":")[0] in MASK_KINDS, "eval.tasks",
                   f"unknown mask kind {t!r}; choose from {MASK_KINDS}")
        _check(self.sampler in ("ddim", "ddpm"), "eval.sampler", f"unknown sampler {self.sampler!r}")
        for k in ("num_videos", "batch_size", "sample_steps", "best_of"):
            _check(getattr(self, k) >= 1, f"eval.{k}", "must be >= 1")
        _check(0.0 <= self.eta <= 1.0, "eval.eta", "must be in [0, 1]")
        _check(self.seed >= 0, "eval.seed", "must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs. The hash of its training sections is the run's id."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        # The model's geometry follows the data; non-concat modes see only the generated frames.
        channels, side = self.data.grid
        m = self.model
        cond = self.masks.given_frames(self.data.frames) if m.conditioning != "token_concat" else 0
        _check(self.masks.given_frames(self.data.frames) < self.data.frames, "masks.predict_k",
               f"{self.masks.predict_k} given frames leave none to generate of data.frames={self.data.frames}")
        if m.conditioning != "token_concat":
            _check(self.masks.probabilities() == {"predict": 1.0}, "masks.mixture",
                   f"conditioning={m.conditioning!r} only does video prediction; set masks.mixture=predict:1")
            _check(set(self.eval.tasks) <= {"predict"}, "eval.tasks",
                   f"conditioning={m.conditioning!r} only does video prediction; set eval.tasks=predict")
            _check(cond < self.data.frames, "masks.predict_k", "must leave at least one frame to generate")
        derived = dataclasses.replace(
            m, frames=self.data.frames - cond, size=side, channels=channels, cond_frames=cond,
            learn_sigma=self.diffusion.learn_sigma,
        )
        object.__setattr__(self, "model", derived)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        parts = {}
        for f in dataclasses.fields(cls):
            sub = dict(d.get(f.name, {}))
            known = {g.name for g in dataclasses.fields(f.type)}
            unknown = set(sub) - known
            _check(not unknown, f.name, f"unknown keys {sorted(unknown)}")
            parts[f.name] = f.type(**sub)
        _check(not (set(d) - set(parts)), "config", f"unknown sections {sorted(set(d) - set(parts))}")
        return cls(**parts)

    def with_overrides(self, overrides) -> "RunConfig":
        """A new config with ``["model.depth=8", ...]`` (or a {key: value} dict) applied."""
        if isinstance(overrides, dict):
            overrides = [f"{k}={v}" if isinstance(v, str) else f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        d = self.to_dict()
        explicit = set()
        for item in overrides:
            key, sep, raw = item.partition("=")
            _check(bool(sep), item, "an override is key=value, for example model.depth=8")
            section, _, name = key.strip().partition(".")
            _check(section in d, key, f"unknown section {section!r}; choose from {list(d)}")
            types = typing.get_type_hints(type(getattr(self, section)))
            _check(name in types, key, f"unknown field; {section} has {list(types)}")
            _check(f"{section}.{name}" not in DERIVED, key, DERIVED.get(f"{section}.{name}", ""))
            d[section][name] = coerce(key, raw.strip(), types[name])
            explicit.add(key.strip())
        if "model.preset" in explicit:  # a new preset brings its own sizes unless they are set too
            for k in PRESETS[d["model"]["preset"]] if d["model"]["preset"] in PRESETS else ():
                if f"model.{k}" not in explicit:
                    d["model"][k] = None
        # The geometry is derived: rebuild it from the data, not from the old model values.
        for k in ("frames", "size", "channels", "cond_frames", "learn_sigma"):
            d["model"].pop(k, None)
        return RunConfig.from_dict(d)

    def training_dict(self) -> dict:
        """What determines the trained weights: every section but ``eval``, without the ``NOT_IN_RUN_ID`` fields."""
        return {k: {f: v for f, v in sec.items() if f"{k}.{f}" not in NOT_IN_RUN_ID}
                for k, sec in self.to_dict().items() if k not in EVAL_SECTIONS}

    def run_id(self) -> str:
        """A short hash of ``training_dict()``: the run's directory name.

        Evaluation settings, cadence, workers and paths are left out, so a finished run asked for
        other ones (more test videos, another sampler, the data moved) keeps its directory and
        weights and is only re-evaluated.
        """
        blob = json.dumps(self.training_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def legacy_run_id(self) -> str:
        """The run id before ``NOT_IN_RUN_ID`` was left out (every section but ``eval``): finds old run folders."""
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k not in EVAL_SECTIONS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def coerce(key: str, raw: str, tp) -> object:
    """Parse a command-line value into the field's annotated type, or raise naming the key."""
    args = typing.get_args(tp)
    if type(None) in args:  # X | None
        if raw.lower() in ("none", "null", ""):
            return None
        tp = next(a for a in args if a is not type(None))
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is tuple or typing.get_origin(tp) is tuple:
            return tuple(s.strip() for s in raw.strip("[]()").split(",") if s.strip())
        return raw
    except ValueError:
        raise ConfigError(f"{key}: {raw!r} is not a valid {getattr(tp, '__name__', tp)}") from None


def load_config(path) -> RunConfig:
    """The RunConfig in a config.json; an unreadable, corrupt or invalid file is a ConfigError naming it."""
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config.json") from None
    except OSError as e:
        raise ConfigError(f"{path}: can't be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); the file is corrupt: restore it or use a new run "
                          "directory") from None
    if not isinstance(d, dict) or not all(isinstance(v, dict) for v in d.values()):
        raise ConfigError(f"{path}: expected a JSON object of sections (model, diffusion, ...), each an object")
    try:
        return RunConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:  # a value of the wrong JSON type, e.g. "depth": "eight"
        raise ConfigError(f"{path}: invalid config ({e})") from None
