"""Sweeps are data: a profile's base overrides, the sweep's own, named variants, and seeds.

A run's config is built by applying, in order, on top of ``RunConfig()``:
profile overrides -> sweep base (and its per-profile base) -> ``eval.tasks`` -> the variant ->
``train.seed`` -> the user's ``--set``. Its id is ``RunConfig.run_id()``, a hash of the config's
training sections (all but ``eval``), so the same run launched twice lands in the same directory,
and launching a finished run with other ``eval.*`` settings re-evaluates it without retraining.

Profiles:
- ``tiny`` (default): CPU, the built-in bouncing-shapes data (9 frames of 16 x 16 at stride 2, predict 4
  from 5: 9 is the fewest frames I3D, hence FVD, takes), the v target, 2,000 steps at batch 16, lr 3e-3. Token
  concatenation then beats copying the last given frame in PSNR, SSIM and FVD, significantly over 3 seeds; the whole
  ``conditioning`` sweep (3 variants x 3 seeds, evaluation with FVD included, two 1-thread runs at a time) fits in
  an hour on a 2-core machine from a fresh clone (docs/results.md has the measured time). Evaluation: PSNR, SSIM and
  FVD on 64 test videos, DDIM 25 steps at eta 1; the FVD references (real vs real, copy-nearest-frame) are computed
  once per sweep.
- ``paper``: the paper's model size (VDT-L/2, 28 blocks, width 1152) on UCF-101 at 256 px in
  SD-VAE latents (32 x 32 x 4), for GPUs. It needs ``--set data.root=DIR``. The step count and
  batch are this harness's budget choice, not numbers from the paper: check ``--dry-run``.
- ``smoke``: the ``paper`` path in miniature on a CPU (UCF-101 layout, SD-VAE latents through the
  cache, 16 frames, class labels with classifier-free guidance, then evaluation), in minutes. It
  needs ``--set data.root=DIR``; ``data.vae_path`` may name any diffusers AutoencoderKL folder (the tests
  use a tiny random one), else the SD VAE is looked up as for ``paper``.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

from vdt.config import PREDICTIONS, ConfigError, RunConfig, coerce


@dataclass(frozen=True)
class Profile:
    """Where and at what scale a sweep runs."""

    name: str
    overrides: dict
    seeds: tuple
    time_min: int  # default SLURM time limit per job (a job that hits it requeues and resumes)
    needs: tuple = ()  # keys the user must --set (paths on their machine)
    about: str = ""


PROFILES = {
    "tiny": Profile(
        "tiny",
        {
            "model.preset": "cpu-tiny", "data.size": 16, "data.num_objects": 2,
            # 9 frames, the fewest I3D (hence FVD) takes; predict generates the last 4 from the first 5. Every
            # second frame (data.stride=2): at stride 1 the shapes move so little that copying the last given
            # frame is near the best a CPU budget of steps reaches (docs/results.md)
            "data.frames": 9, "masks.predict_k": 5, "data.stride": 2,
            # v, not eps: on the linear schedule an eps error reaches the x0 estimate times sqrt(1/abar - 1), 157 at
            # t = 999, and a CPU budget of steps does not get eps there (see vdt/diffusion.py and the prediction sweep)
            "diffusion.prediction": "v",
            "train.steps": 2000, "train.batch_size": 16, "train.warmup": 20, "train.lr": 3e-3,
            # 2,000 steps, not 1,500: at 1,500 token concat's SSIM over 3 seeds (0.493 to 0.556) still straddles
            # copying's 0.514; at 2,000 every seed is above it (0.530 to 0.571). lr 3e-3: the model is under-trained
            # at this budget, and a larger constant step helps. Token concat seeds 1 and 2 at 1,500 steps, SSIM:
            # 0.468 and 0.516 at 2e-3, 0.493 and 0.556 at 3e-3, 0.452 and 0.448 with a cosine decay from 2e-3
            # (docs/results.md)
            "train.ema_decay": 0.99,  # half-life 69 steps: a short run's weights still improve fast
            "train.log_every": 25, "train.ckpt_every": 250,
            "eval.num_videos": 64, "eval.batch_size": 64, "eval.sample_steps": 25,
            "eval.eta": 1.0,  # stochastic DDIM: its samples' black backgrounds are cleaner than eta 0's (SSIM)
            "eval.fvd": True, "eval.lpips": False,
        },
        seeds=(0, 1, 2), time_min=60,
        about="CPU, built-in bouncing shapes 9x16x16 (predict 4 from 5), cpu-tiny model, v target, 2,000 steps "
              "at batch 16; PSNR/SSIM/FVD on 64 videos",
    ),
    "paper": Profile(
        "paper",
        {
            "model.preset": "VDT-L/2", "data.name": "ucf101", "data.size": 256, "data.frames": 16,
            "data.autoencoder": "sd-vae", "data.num_workers": 8,
            # eps, as the paper and the official code (RERV/VDT diffusion/__init__.py: predict_xstart=False -> EPSILON)
            "diffusion.prediction": "eps",
            "train.steps": 400_000, "train.batch_size": 64, "train.lr": 1e-4, "train.warmup": 1000,
            "train.ema_decay": 0.9999, "train.log_every": 100, "train.ckpt_every": 5000,
            "eval.num_videos": 2048, "eval.batch_size": 64, "eval.sample_steps": 100,
        },
        seeds=(0,), time_min=24 * 60, needs=("data.root",),
        about="GPUs, VDT-L/2 on UCF-101 256 px (SD-VAE latents), 400k steps at batch 64; FVD on 2048 videos",
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
            "train.ckpt_every": 4,
            "eval.num_videos": 4, "eval.batch_size": 2, "eval.sample_steps": 4, "eval.guidance": 2.0,
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
        "share of the video generated during training (MAE-style), on the official mask mixture",
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
    "prediction": Sweep(
        "prediction",
        "what the denoiser predicts (the noise eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, or the clean x0), "
        "on video prediction with token concatenation",
        variants={p: {"diffusion.prediction": p} for p in PREDICTIONS},
        tasks=("predict",),
        base={**PREDICT_ONLY, "model.conditioning": "token_concat"},
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
                "run_id": self.run_id, "profile": self.profile}


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
            spec = RunSpec(sweep, profile, variant, int(seed), overrides, cfg)
            if spec.run_id in seen:
                raise ConfigError(f"variants {seen[spec.run_id]} and {variant}/seed {seed} have the same config "
                                  f"(a --set overrides what the sweep varies: {sorted(vo)})")
            seen[spec.run_id] = f"{variant}/seed {seed}"
            specs.append(spec)
    return specs


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
