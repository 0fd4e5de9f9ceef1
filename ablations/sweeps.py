"""Sweeps are data: a profile's base overrides, the sweep's own, named variants, and seeds.

A run's config is built by applying, in order, on top of ``RunConfig()``:
profile overrides -> sweep base (and its per-profile base) -> ``eval.tasks`` -> the variant ->
``train.seed`` -> the user's ``--set``. Its id is ``RunConfig.run_id()``, a hash of the config's
training sections (all but ``eval``), so the same run launched twice lands in the same directory,
and launching a finished run with other ``eval.*`` settings re-evaluates it without retraining.

Profiles:
- ``tiny`` (default): CPU, the built-in bouncing-shapes data (9 frames of 16 x 16 at stride 2, predict 4
  from 5: 9 is the fewest frames I3D, hence FVD, takes), the v target with a fixed variance, 2,000 steps at batch
  16, lr 3e-3; variance, lr and sampler chosen on the val split by the ``recipe`` sweep. The whole
  ``conditioning`` sweep (3 variants x 3 seeds, evaluation with FVD included, two 1-thread runs at a time) fits in
  an hour on a 2-core machine from a fresh clone (docs/results.md has the measured time). Evaluation: PSNR, SSIM and
  FVD on 64 test videos, DDIM 25 steps at eta 1; the FVD references (real vs real, copy-nearest-frame) are computed
  once per sweep.
- ``paper``: the paper's model size (VDT-L/2, 28 blocks, width 1152) on UCF-101 at 256 px in
  SD-VAE latents (32 x 32 x 4), for GPUs. It needs ``--set data.root=DIR``. Where the official code
  (RERV/VDT) fixes a choice, ``paper`` follows it (docs/model.md has the table, with sources): eps, the
  loss averaged over every element (``diffusion.loss_norm=all``), a one-class label table fed y = 0
  (``model.num_classes=1``), ancestral DDPM over 500 respaced steps without guidance. The latent cache holds
  every clip of every video (``data.latent_clips=0``). FVD follows StyleGAN-V's ``fvd2048_16f``: 2,048
  generated against 2,048 real 16-frame clips from the train split (``eval.fvd_reals=train``), as Latte's;
  the real-vs-real reference is drawn from the train split too (docs/metrics.md). The step count and batch
  are this harness's budget choice, not numbers from the paper: check ``--dry-run``, which lists this protocol.
- ``smoke``: the ``paper`` path in miniature on a CPU (UCF-101 layout, SD-VAE latents through the
  cache of every clip, 16 frames, the official loss normalisation, class labels with classifier-free
  guidance, then DDPM sampling and evaluation with train-split FVD reals), in minutes. It
  needs ``--set data.root=DIR``; ``data.vae_path`` may name any diffusers AutoencoderKL folder (the tests
  use a tiny random one), else the SD VAE is looked up as for ``paper``.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

from vdt.config import PREDICTIONS, PRESETS, ConfigError, RunConfig, coerce


@dataclass(frozen=True)
class Profile:
    """Where and at what scale a sweep runs."""

    name: str
    overrides: dict
    seeds: tuple
    time_min: int  # default SLURM time limit per job (a job that hits it requeues and resumes)
    needs: tuple = ()  # keys the user must --set (paths on their machine)
    about: str = ""
    # the split whose scores chose the settings (run.json "tuned_on", shown in the report's protocol)
    tuned_on: str = "none (budget choice)"


TINY_OVERRIDES = {
    "model.preset": "cpu-tiny", "data.size": 16, "data.num_objects": 2,
    # 9 frames, the fewest I3D (hence FVD) takes; predict generates the last 4 from the first 5. Every
    # second frame (data.stride=2): at stride 1 the shapes move so little that copying the last given
    # frame is near the best a CPU budget of steps reaches (docs/results.md)
    "data.frames": 9, "masks.predict_k": 5, "data.stride": 2,
    # v, not eps: on the linear schedule an eps error reaches the x0 estimate times sqrt(1/abar - 1), 157 at
    # t = 999, and a CPU budget of steps does not get eps there (see vdt/diffusion.py and the prediction sweep)
    "diffusion.prediction": "v",
    # fixed_small (plain MSE on v, no VLB term) and a constant lr 3e-3: the recipe sweep on the val split
    # (results/recipe) against the learned variance and against lr 5e-3; docs/results.md, "Tuning tiny on val"
    "diffusion.variance": "fixed_small",
    "train.steps": 2000, "train.batch_size": 16, "train.warmup": 20, "train.lr": 3e-3,
    # 2,000 steps at batch 16: what the 60-minute conditioning sweep affords (a budget choice, not a tuned one)
    "train.ema_decay": 0.99,  # half-life 69 steps: a short run's weights still improve fast
    "train.log_every": 25, "train.ckpt_every": 250,
    "eval.num_videos": 64, "eval.batch_size": 64, "eval.sample_steps": 25,
    "eval.eta": 1.0,  # stochastic DDIM: on val, eta 0 loses 0.25 dB and 0.04 SSIM; 50 steps gain nothing over 25
    "eval.fvd": True, "eval.lpips": True,
    # quality during training: EMA weights on 16 fixed val clips every 250 steps (about 3% of training time)
    "eval.every": 250, "eval.every_videos": 16,
}

PROFILES = {
    "tiny": Profile(
        "tiny",
        TINY_OVERRIDES,
        seeds=(0, 1, 2), time_min=60,
        about="CPU, built-in bouncing shapes 9x16x16 (predict 4 from 5), cpu-tiny model, v target (fixed_small), "
              "2,000 steps at batch 16, evaluated on val every 250 steps; PSNR/SSIM/LPIPS/FVD on 64 test videos",
        tuned_on="val (variance, lr and sampler: the recipe sweep, results/recipe; docs/results.md)",
    ),
    # The tiny setup trained 8x longer: the CPU profile whose token concatenation beats the motion baseline (issue
    # 27). From the 10,000-step study on the val split (docs/results.md, "Against the motion baseline"): fixed_small
    # (plain MSE on v), lr 3e-3, and the step count its val slope gives (about 16,000). Cosine decay and EMA 0.999
    # instead of a constant lr and EMA 0.99: that study's val SSIM swung by 0.05 between checkpoints of the
    # constant-lr EMA 0.99 weights. Quality on 64 val clips every 1,000 steps gives the curves to read the crossing.
    "long": Profile(
        "long",
        {
            **TINY_OVERRIDES,
            # pinned, not inherited: these runs were made before tiny was re-derived on val (the recipe sweep)
            "diffusion.variance": "fixed_small", "train.lr": 3e-3, "eval.eta": 1.0,
            "train.steps": 16_000, "train.lr_schedule": "cosine", "train.ema_decay": 0.999,
            "train.log_every": 100, "train.ckpt_every": 1000,
            "eval.every": 1000, "eval.every_videos": 64,
        },
        seeds=(0, 1, 2), time_min=180,
        about="CPU, the tiny setup for 16,000 steps (8x): fixed_small variance, cosine lr decay from 3e-3, EMA "
              "0.999; val every 1,000 steps; about 70 min per run on one core",
        tuned_on="val (step count, variance and lr from the 10,000-step val study; docs/results.md)",
    ),
    "paper": Profile(
        "paper",
        {
            # What the official code (RERV/VDT) fixes follows it; docs/model.md tables each choice with its source.
            # One class, fed y = 0, with label dropout 0.1 to the null row: the official label table (models.py)
            "model.preset": "VDT-L/2", "model.num_classes": 1,
            "data.name": "ucf101", "data.size": 256, "data.frames": 16, "data.autoencoder": "sd-vae",
            "data.num_workers": 8,
            "data.latent_clips": 0,  # the latent cache holds every clip of every video (per-frame latents)
            # eps, as the paper and the official code (RERV/VDT diffusion/__init__.py: predict_xstart=False -> EPSILON)
            "diffusion.prediction": "eps",
            "diffusion.loss_norm": "all",  # the official mean over every element (gaussian_diffusion.py mean_flat)
            "train.steps": 400_000, "train.batch_size": 64, "train.lr": 1e-4, "train.warmup": 1000,
            "train.ema_decay": 0.9999, "train.log_every": 100, "train.ckpt_every": 5000,
            # Ancestral DDPM over 500 respaced steps, no guidance: the official notebook (inference_physion.ipynb)
            "eval.sampler": "ddpm", "eval.sample_steps": 500,
            # FVD as StyleGAN-V's fvd2048_16f: 2,048 generated against 2,048 real 16-frame clips of the train split
            "eval.num_videos": 2048, "eval.fvd_reals": "train", "eval.batch_size": 64,
        },
        seeds=(0,), time_min=24 * 60, needs=("data.root",),
        about="GPUs, VDT-L/2 on UCF-101 256 px (SD-VAE latents, every clip), 400k steps at batch 64; DDPM 500 "
              "steps; FVD 2048 vs 2048 train clips of 16 frames",
    ),
    # Every branch of `paper` at toy scale, for a CPU in minutes: a UCF-101-layout folder, SD-VAE latents through
    # the latent cache, 16-frame clips, class labels with classifier-free guidance, FVD and LPIPS where their
    # weights are on disk. tests/test_smoke.py writes the inputs (a few .avi files, a random tiny AutoencoderKL).
    "smoke": Profile(
        "smoke",
        {
            "model.preset": "cpu-tiny", "model.num_classes": 101,
            "data.name": "ucf101", "data.size": 32, "data.frames": 16, "data.autoencoder": "sd-vae",
            "data.class_labels": True, "data.num_workers": 1,
            "train.steps": 8, "train.batch_size": 4, "train.lr": 1e-3, "train.warmup": 2, "train.log_every": 2,
            "train.ckpt_every": 4, "data.latent_clips": 0, "diffusion.loss_norm": "all",  # as paper
            "eval.num_videos": 4, "eval.batch_size": 2, "eval.sample_steps": 4, "eval.guidance": 2.0,
            "eval.sampler": "ddpm", "eval.fvd_reals": "train",  # as paper
        },
        seeds=(0,), time_min=20, needs=("data.root",),
        about="CPU, minutes: the paper path in miniature (UCF-101 layout, SD-VAE latents, class labels + CFG, "
              "16 frames), cpu-tiny for 8 steps; checks the pipeline, not the numbers",
    ),
}


@dataclass(frozen=True)
class Sweep:
    """A base config, named variants (override dicts) and the tasks they are evaluated on."""

    name: str
    about: str
    variants: dict  # variant name -> {dotted.key: value}
    tasks: tuple
    base: dict = field(default_factory=dict)
    profile_base: dict = field(default_factory=dict)  # profile name -> extra base overrides
    profile_variants: dict = field(default_factory=dict)  # profile name -> variants replacing ``variants``

    def variants_for(self, profile: str) -> dict:
        return self.profile_variants.get(profile, self.variants)


PREDICT_ONLY = {"masks.mixture": "predict:1"}  # the one task every conditioning mode can do

# The mask studies (issue 28; docs/results.md#mask-studies-how-to-run). Token concatenation, the only conditioning
# mode that takes any mask, so every model "can do" every task: each is scored on all of them, and the report marks
# the tasks a model never saw in training.
MASK_TASKS = ("predict", "backward", "interpolate", "spatial_temporal", "unconditional")  # unconditional: FVD only
TRAINING_MASKS = {"predict_only": "predict:1", "interpolate_only": "interpolate:1", "unified": "official"}
GRID_RATIOS = (0.25, 0.5, 0.75, 0.9)  # generated share in training (masks.mask_ratio; realized: the log's gen_frac)
# Given frames at test (predict:k=N). On the tiny profile's 9 frames the ratios train on k = 7, 4, 2, 1 given
# (round(9 (1 - r))), so 3 and 5 are given counts no model of the grid saw in training.
GRID_GIVEN = (1, 2, 3, 4, 5, 7)

# The scaling study (issue 28; docs/results.md#how-the-scaling-sweeps-are-built), DiT-style: model sizes S < B < L < XL,
# width and depth both growing, at equal steps, each evaluated during training (eval.every) so quality can be read
# against training FLOPs. tiny: (depth, hidden, heads), 16-wide heads as cpu-tiny's; B is cpu-tiny's geometry, the model
# the tiny profile was set for. At the tiny profile's 9 frames of 16 x 16 and batch 16, vdt.model.count_flops gives 2.5,
# 8.9, 20.2 and 37.9 GFLOP per training step: 15x from S to XL. paper: DiT's S/B/L/XL sizes as presets (vdt/config.py;
# the official VDT-L/2, 28 x 1152, is DiT's XL size, here VDT-XL/2): 20x from S to XL in training FLOPs at the paper
# profile's 16 latent frames of 32 x 32, 21x in block parameters.
SCALING_SIZES = {"S": (2, 32, 2), "B": (2, 64, 4), "L": (3, 80, 5), "XL": (4, 96, 6)}
SCALING_PRESETS = {"S": "VDT-S/2", "B": "VDT-B/2", "L": "DiT-L/2", "XL": "VDT-XL/2"}  # the paper profile's grid
LR_MULTIPLIERS = (0.5, 1.0, 2.0)  # scaling_lr: the rule's lr times these, per size
LR_SEARCH_SIZES = ("S", "L")  # scaling_lr: the two sizes the rule is checked on (width 32 and 80 on tiny)


def width_lr(profile: str, hidden: int) -> float:
    """The scaling sweep's learning rate for a model ``hidden`` wide: proportional to 1 / width, the muP rule for
    Adam on hidden weights (Yang et al. 2022, arXiv 2203.03466), anchored at the profile's own lr and model width
    (tiny: 3e-3 at 64). ``scaling_lr`` checks it on two sizes against a search on the validation split."""
    o = PROFILES[profile].overrides
    return float(f"{o['train.lr'] * PRESETS[o['model.preset']]['hidden'] / hidden:.3g}")


def scaling_size(profile: str, size: str, lr_scale: float = 1.0) -> dict:
    """The overrides of one size of the scaling grid under ``profile`` (paper: DiT's sizes; else the CPU sizes),
    with the width rule's learning rate times ``lr_scale``."""
    if profile == "paper":
        preset = SCALING_PRESETS[size]
        model, hidden = {"model.preset": preset}, PRESETS[preset]["hidden"]
    else:
        depth, hidden, heads = SCALING_SIZES[size]
        model = {"model.depth": depth, "model.hidden": hidden, "model.heads": heads}
    return {**model, "train.lr": float(f"{width_lr(profile, hidden) * lr_scale:.3g}")}


def lr_search(profile: str) -> dict:
    return {f"{size}_lr{m:g}x": scaling_size(profile, size, m) for size in LR_SEARCH_SIZES for m in LR_MULTIPLIERS}


# Prediction only (the task eval.every scores, eval.tasks[0]), token concatenation; the profile's 16 fixed val clips
# per evaluation, 8 evaluations over the tiny profile's 2,000 steps; paper: every 20,000 of 400,000 steps. Size B is
# then the conditioning sweep's token_concat run and the tasks sweep's predict_only run, curves included (one training).
SCALING_BASE = {**PREDICT_ONLY, "model.conditioning": "token_concat", "eval.every": 250}
SCALING_PAPER_BASE = {"eval.every": 20_000}

SWEEPS = {
    "conditioning": Sweep(
        "conditioning",
        "how the given frames enter the model, on video prediction (same frames, same masks, same task)",
        variants={m: {"model.conditioning": m} for m in ("token_concat", "cross_attn", "adaln")},
        tasks=("predict",),
        base=PREDICT_ONLY,
    ),
    "mask_ratio": Sweep(
        "mask_ratio",
        "retired, folded into mask_grid (kept so results/mask_ratio can be made again): share of the video "
        "generated during training (MAE-style), on the official mask mixture",
        variants={f"ratio_{r}": {"masks.mask_ratio": r} for r in (0.25, 0.5, 0.75)},
        tasks=("predict", "interpolate", "spatial_temporal"),
        base={"masks.mixture": "official"},
    ),
    "depth": Sweep(
        "depth",
        "number of transformer blocks at a fixed width",
        variants={f"depth_{d}": {"model.depth": d} for d in (2, 4, 8)},
        tasks=("predict", "interpolate"),
        base={"masks.mixture": "official"},
        profile_variants={"paper": {f"depth_{d}": {"model.depth": d} for d in (12, 28)}},
    ),
    "scaling": Sweep(
        "scaling",
        "model size (width and depth) against training compute, DiT-style: quality during training against FLOPs, "
        "the compute-efficient frontier and a power law of the final validation loss; lr from the width rule",
        variants={size: scaling_size("tiny", size) for size in SCALING_SIZES},
        tasks=("predict",),
        base=SCALING_BASE,
        profile_base={"paper": SCALING_PAPER_BASE},
        profile_variants={"paper": {size: scaling_size("paper", size) for size in SCALING_PRESETS}},
    ),
    "scaling_lr": Sweep(
        "scaling_lr",
        "the scaling sweep's learning-rate rule (lr ~ 1/width) checked by a search on the validation split: "
        "0.5x, 1x and 2x the rule's lr at two sizes",
        variants=lr_search("tiny"),
        tasks=("predict",),
        base=SCALING_BASE,
        profile_base={"paper": SCALING_PAPER_BASE},
        profile_variants={"paper": lr_search("paper")},
    ),
    "prediction": Sweep(
        "prediction",
        "what the denoiser predicts (the noise eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, or the clean x0), "
        "on video prediction with token concatenation",
        variants={p: {"diffusion.prediction": p} for p in PREDICTIONS},
        tasks=("predict",),
        base={**PREDICT_ONLY, "model.conditioning": "token_concat"},
    ),
    # The tiny profile's settings re-derived on the val split (issue 27; docs/results.md, "Tuning tiny on val"):
    # token concatenation on predict, the profile's 2,000 steps, scored on val clips only (PSNR, SSIM, LPIPS; no
    # FVD). The step count and batch are the 60-minute budget's; lr 2e-3 and a cosine decay lost to these on the
    # test clips before the val split existed, so they are not searched again here.
    "recipe": Sweep(
        "recipe",
        "the tiny profile's training recipe searched on the validation split (token concatenation, predict): the "
        "learned variance (hybrid loss) against fixed_small (plain MSE), and lr 3e-3 against 5e-3",
        variants={
            "learned_lr3e-3": {"diffusion.variance": "learned_range"},
            "fixed_small_lr3e-3": {"diffusion.variance": "fixed_small"},
            "fixed_small_lr5e-3": {"diffusion.variance": "fixed_small", "train.lr": 5e-3},
        },
        tasks=("predict",),
        base={**PREDICT_ONLY, "model.conditioning": "token_concat", "eval.split": "val", "eval.fvd": False,
              "eval.every": 0},
    ),
    "tasks": Sweep(
        "tasks",
        "specialists against the unified model: one model per training mask (predict only, interpolate only, the "
        "official mixture), each scored on every task; curves of eval.tasks[0] (predict) during training",
        variants={name: {"masks.mixture": mix} for name, mix in TRAINING_MASKS.items()},
        tasks=MASK_TASKS,
        base={"model.conditioning": "token_concat", "eval.every": 250},
    ),
    "mask_grid": Sweep(
        "mask_grid",
        "generated share in training (masks.mask_ratio, video prediction) against the given frames at test "
        "(predict:k=N, counts never seen in training included); folds in mask_ratio",
        variants={f"ratio_{r}": {"masks.mask_ratio": r} for r in GRID_RATIOS},
        tasks=tuple(f"predict:k={k}" for k in GRID_GIVEN),
        # No FVD: I3D on 6 given counts is about 3 of a run's 4 evaluation minutes, and 3 seeds (what the paired
        # tests need) of 4 ratios then fit the 90-minute budget; the heatmaps are PSNR, SSIM, LPIPS and dynamics.
        base={**PREDICT_ONLY, "model.conditioning": "token_concat", "eval.fvd": False},
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its variant, seed, the overrides that made it, and the config."""

    sweep: str
    profile: str
    variant: str
    seed: int
    overrides: dict  # every override applied, in order (later wins)
    cfg: RunConfig

    @property
    def run_id(self) -> str:
        return self.cfg.run_id()

    def run_info(self) -> dict:
        """run.json."""
        return {"sweep": self.sweep, "variant": self.variant, "seed": self.seed, "overrides": self.overrides,
                "run_id": self.run_id, "profile": self.profile, "tuned_on": PROFILES[self.profile].tuned_on}


def parse_sets(items) -> dict:
    """['a.b=1', 'c.d=x'] -> {'a.b': '1', 'c.d': 'x'}. Raises ConfigError naming an unknown key or a value
    of the wrong type; values that clash with other fields are caught when the runs are built."""
    out, sections = {}, {f.name: f.type for f in dataclasses.fields(RunConfig)}
    for item in items:
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"{item}: an override is key=value, for example train.steps=100")
        section, _, name = key.partition(".")
        if section not in sections:
            raise ConfigError(f"{key}: unknown section {section!r}; choose from {list(sections)}")
        types = typing.get_type_hints(sections[section])
        if name not in types:
            raise ConfigError(f"{key}: unknown field; {section} has {list(types)}")
        coerce(key, value, types[name])
        out[key] = value
    return out


def expand(sweep: str, profile: str = "tiny", sets: dict | None = None, seeds=None, variants=None) -> list:
    """Every run of ``sweep`` under ``profile`` (only ``variants`` if given), with the user's ``sets`` last."""
    if sweep not in SWEEPS:
        raise ConfigError(f"--sweep: unknown sweep {sweep!r}; choose from {sorted(SWEEPS)}")
    if profile not in PROFILES:
        raise ConfigError(f"--profile: unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    sw, prof, sets = SWEEPS[sweep], PROFILES[profile], dict(sets or {})
    for key in prof.needs:
        if key not in sets:
            raise ConfigError(f"{key}: profile {profile!r} needs it; add --set {key}=...")
    base = {**prof.overrides, **sw.base, **sw.profile_base.get(profile, {}), "eval.tasks": ",".join(sw.tasks)}
    chosen = sw.variants_for(profile)
    unknown = sorted(set(variants or ()) - set(chosen))
    if unknown:
        raise ConfigError(f"--variants: {sweep} has no variant {unknown} under profile {profile!r}; "
                          f"choose from {list(chosen)}")
    specs, seen = [], {}
    for variant, vo in chosen.items():
        if variants and variant not in variants:
            continue
        for seed in seeds if seeds is not None else prof.seeds:
            overrides = {**base, **vo, "train.seed": int(seed), **sets}
            cfg = RunConfig().with_overrides(overrides)
            check_tasks(cfg)
            spec = RunSpec(sweep, profile, variant, int(seed), overrides, cfg)
            if spec.run_id in seen:
                raise ConfigError(f"variants {seen[spec.run_id]} and {variant}/seed {seed} have the same config "
                                  f"(a --set overrides what the sweep varies: {sorted(vo)})")
            seen[spec.run_id] = f"{variant}/seed {seed}"
            specs.append(spec)
    return specs


def check_tasks(cfg: RunConfig) -> None:
    """A ConfigError naming the first of cfg.eval.tasks that evaluation would refuse (an unknown parameter, or one
    the run's frames can't take, e.g. predict:k=9 of 9 frames), before anything trains."""
    from metrics.evaluate import parse_task  # the one parser of task specs; heavy, so only when a run is built
    from vdt.masks import task_mask

    for spec in cfg.eval.tasks:
        kind, masks, _ = parse_task(spec, cfg)
        try:
            task_mask(kind, (cfg.data.frames, 1, 1), masks, 1)
        except ValueError as e:
            raise ConfigError(f"eval.tasks: {spec}: {e}") from None


def describe() -> str:
    """The text of ``--list``: profiles, sweeps, their variants and tasks."""
    lines = ["Profiles:"]
    lines += [f"  {p.name:<8} {p.about}" + (f" (needs --set {', '.join(p.needs)})" if p.needs else "")
              for p in PROFILES.values()]
    lines.append("\nSweeps:")
    for sw in SWEEPS.values():
        lines.append(f"  {sw.name}: {sw.about}")
        lines.append(f"    tasks: {', '.join(sw.tasks)}" + (f"; base: {_fmt(sw.base)}" if sw.base else ""))
        for prof in PROFILES:
            variants = sw.variants_for(prof)
            if prof != "tiny" and variants is sw.variants:
                continue
            label = "variants" if prof == "tiny" and not sw.profile_variants else f"variants ({prof})"
            lines.append(f"    {label}:")
            lines += [f"      {name:<14} {_fmt(vo)}" for name, vo in variants.items()]
    return "\n".join(lines)


def _fmt(overrides: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items())
