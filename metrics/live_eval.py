"""Evaluation during training (``eval.every = N > 0``): the EMA weights scored every N steps on fixed val clips.

``vdt.train`` builds one ``LiveEvaluator`` (rank 0) and calls it at steps N, 2N, ... and at the
final step. Each call samples the generated region of the same ``eval.every_videos`` clips of the
VALIDATION split (never test: curves are what a profile is tuned on) for the run's first task,
``eval.tasks[0]``, with the sampler settings of ``cfg.eval`` (sampler, steps, eta, guidance, seed),
so every point of a curve, every run and every resume uses the same clips, masks and noise. It
scores PSNR and SSIM on the generated region (``metrics.region``) and the margin over the motion
baseline (model minus baseline; ``metrics.baselines``, scored once on the same clips: they don't
change), and the validation loss ``val_loss``: the training objective (``GaussianDiffusion.training_losses``:
the run's prediction target, loss normalisation and VB term, the precision of ``train.precision``) of the
EMA weights on the same clips and task masks, averaged over a fixed grid of ``LOSS_LEVELS`` timesteps per
clip (``loss_timesteps``: one per stratum of [0, diffusion.steps)) with noise seeded by (eval.seed, task,
batch, level), and the labels as given (no label dropout, no guidance). It is one forward pass per level and
batch, and the same draw at every evaluation, so the curve moves only with the weights. LPIPS and FVD
are left to the final evaluation (``metrics/evaluate.py``): FVD on a handful of clips says nothing, and both
cost more than the rest together.

The training log gets one record per evaluation, the one format ``metrics/report_plots.eval_series``
reads (``LiveEvaluator.record`` writes it)::

    {"event": "eval", "step": s, "train_flops": F, "wall_time": seconds of training so far,
     "eval_seconds": ..., "split": "val", "num_videos": n,
     "eval": {task: {"psnr": ..., "ssim": ..., "psnr_margin_motion": ..., "ssim_margin_motion": ...,
                     "val_loss": ...}},
     "baselines": {task: {name: {"psnr": ..., "ssim": ...}}}, "val_loss_protocol": {"levels": 8, ...}}

and the samples go to ``eval_live/step_<s>.npz`` (uint8 real, fake and mask), so a curve outlives the
checkpoints that ``train.keep_ckpts`` deletes.
"""

import os
from pathlib import Path

import numpy as np
import torch

from metrics import region
from metrics.baselines import baseline_fills
from metrics.evaluate import BASELINE_NAMES, parse_task, to_uint8, to_unit
from metrics.frame import SSIM_WINDOW
from metrics.sampling import RunSampler, derive_seed
from vdt.config import ConfigError, RunConfig
from vdt.denoiser import Denoiser

SPLIT = "val"
METRICS = ("psnr", "ssim")
SAMPLER_KEYS = ("sampler", "sample_steps", "eta", "guidance", "seed")  # recorded with each evaluation
MOTION = ("motion", "flow")  # a baseline fill whose name holds one of these is the motion baseline
LOSS_LEVELS = 8  # timesteps per clip of the validation loss, one in each of 8 equal strata of the process


class LiveSampler(RunSampler):
    """``RunSampler``'s sampling over a model in memory (the trainer's EMA) and the val split: no checkpoint, no cache.

    ``RunSampler.__init__`` loads a checkpoint; this attaches the trainer's model instead."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, device):
        self.cfg, self.progress, self.device, self.split = cfg, False, torch.device(device), SPLIT
        self.attach(model, cfg.eval.every_videos, "evaluation during training")


def loss_timesteps(n: int, levels: int, steps: int) -> torch.Tensor:
    """(levels, n) long: clip i's timestep at level k, floor((k + (i + 1/2) / n) * steps / levels); level k's n
    clips spread evenly over the k-th of ``levels`` equal strata of [0, steps) (a stratified, fixed grid)."""
    k = torch.arange(levels)[:, None]
    i = torch.arange(n)[None]
    return ((2 * k * n + 2 * i + 1) * steps) // (2 * n * levels)  # in integers: exact


def motion_name(names) -> str | None:
    """The motion baseline's name among the fills (None when metrics.baselines has none)."""
    return next((n for n in sorted(names) if any(k in n for k in MOTION)), None)


class LiveEvaluator:
    """Scores the model on ``eval.every_videos`` fixed val clips of ``eval.tasks[0]``; one call per evaluation."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, device):
        self.spec = cfg.eval.tasks[0]
        self.kind, masks_cfg, _ = parse_task(self.spec, cfg)
        if self.kind == "unconditional":
            raise ConfigError("eval.every: evaluation during training scores eval.tasks[0], and 'unconditional' has "
                              "no ground truth to score; put a conditional task first in eval.tasks")
        if cfg.data.size < SSIM_WINDOW:
            raise ConfigError(f"eval.every: frames of {cfg.data.size} px (data.size) are smaller than SSIM's "
                              f"{SSIM_WINDOW}-px window")
        self.cfg, self.sampler = cfg, LiveSampler(cfg, model, device)
        # The clips, their masks (seeded by eval.seed, task and batch, as metrics/evaluate.py does) and labels: fixed.
        self.batches = [(x0, y, self.sampler.batch_mask(self.kind, masks_cfg, b, x0.shape[0]))
                        for b, (x0, y) in enumerate(self.sampler.real_batches())]
        self.real = torch.cat([x0 for x0, _, _ in self.batches])  # (N, T, C, H, W) in [-1, 1]
        self.mask = torch.cat([self.sampler.pixel_mask(m) for _, _, m in self.batches])  # (N, T, H, W)
        fills = {BASELINE_NAMES.get(k, k): v[0] for k, v in baseline_fills(self.real, self.mask).items()}
        self.baselines = {name: self.score(fill) for name, fill in fills.items()}
        self.motion = motion_name(self.baselines)
        self.loss_t = loss_timesteps(self.n, LOSS_LEVELS, cfg.diffusion.steps)  # (levels, N)
        t = cfg.train  # the trainer's precision (vdt.train.Trainer.autocast)
        self.bf16 = t.precision == "bf16" or (t.precision == "auto" and self.sampler.device.type == "cuda")

    @property
    def n(self) -> int:
        return self.real.shape[0]

    def score(self, fake: torch.Tensor) -> dict:
        """Mean PSNR and SSIM over the clips, on the generated region; fake (N, T, C, H, W) in [-1, 1]."""
        scores = region.score_region(to_unit(fake), to_unit(self.real), self.mask)
        return {m: float(scores[m].mean()) for m in METRICS}

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """One sample per clip (N, T, C, H, W) in pixels, [-1, 1]; the noise of metrics/evaluate.py's first sample
        (seeded by eval.seed, task and batch), so every evaluation of every run draws the same."""
        fakes, s = [], self.sampler
        for b, (x0, y, mask) in enumerate(self.batches):
            z = s.sample_batch(s.encode(x0), None if y is None else y.to(s.device), mask.to(s.device),
                               seed=derive_seed(self.cfg.eval.seed, "sample", self.spec, b, 0))
            fakes.append(s.to_pixels(z.float().cpu(), x0, mask))
        return torch.cat(fakes)

    @torch.no_grad()
    def val_loss(self) -> float:
        """The training objective of the EMA weights on the fixed clips and task masks: the mean per-sample loss
        over the clips and the ``LOSS_LEVELS`` timesteps of ``loss_timesteps``, with seeded noise (module doc)."""
        s, cfg = self.sampler, self.cfg
        total, first = 0.0, 0
        for b, (x0, y, mask) in enumerate(self.batches):
            z0, md, n = s.encode(x0), mask.to(s.device), x0.shape[0]
            if y is None and cfg.model.num_classes == 1:  # the official unconditional model's label, as in training
                y = torch.zeros(n, dtype=torch.long)
            fn = Denoiser(s.model, cfg.model.conditioning, md, y=None if y is None else y.to(s.device))
            for k in range(LOSS_LEVELS):
                g = torch.Generator().manual_seed(derive_seed(cfg.eval.seed, "val_loss", self.spec, b, k))
                noise = torch.randn(z0.shape, generator=g).to(s.device, z0.dtype)  # CPU draw: same on any device
                t = self.loss_t[k, first:first + n].to(s.device)
                with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    loss = s.diffusion.training_losses(fn, z0, md, t, noise=noise)["loss"]  # (n,)
                total += float(loss.double().sum())
            first += n
        return total / (first * LOSS_LEVELS)

    def __call__(self) -> tuple:
        """(metrics {psnr, ssim, <m>_margin_<motion>, val_loss}, samples (N, T, C, H, W) in [-1, 1])."""
        fake = self.samples()
        metrics = self.score(fake)
        if self.motion is not None:
            base = self.baselines[self.motion]
            metrics.update({f"{m}_margin_{self.motion}": metrics[m] - base[m] for m in METRICS})
        metrics["val_loss"] = self.val_loss()
        return metrics, fake

    def record(self, step: int, metrics: dict, **extra) -> dict:
        """The train-log record of one evaluation (the format ``report_plots.eval_series`` reads)."""
        return {"event": "eval", "step": step, **extra, "split": SPLIT, "num_videos": self.n,
                "sampler": {k: getattr(self.cfg.eval, k) for k in SAMPLER_KEYS},
                "eval": {self.spec: metrics}, "baselines": {self.spec: self.baselines},
                "val_loss_protocol": {"levels": LOSS_LEVELS, "timesteps": "stratified, loss_timesteps",
                             "noise": "seeded by eval.seed, task, batch, level", "labels": "as given"}}

    def save_samples(self, path: Path, fake: torch.Tensor) -> Path:
        """uint8 real, fake (N, T, C, H, W) and the pixel mask (N, T, H, W) to ``path`` (npz, written atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, real=to_uint8(self.real).numpy(), fake=to_uint8(fake).numpy(),
                            mask=self.mask.to(torch.uint8).numpy())
        os.replace(tmp, path)
        return path
