"""Evaluate a trained run on VDT tasks: sample, score, and write ``eval.json``.

    python metrics/evaluate.py --run-dir DIR --task predict [--task interpolate:stride=2 ...]

For each task (a mask kind, optionally with parameters), the EMA weights generate the mask = 1
region of N test clips (DDIM or DDPM). Frame metrics (PSNR, SSIM, LPIPS) are computed on the
generated frames only (frames with any mask = 1 cell), averaged over those frames, then over
videos. FVD is computed on whole clips (given frames included), against real test clips whose
I3D statistics are cached once per dataset and protocol. Two trivial fills of the generated region
(black, and the nearest fully given frame; ``metrics/baselines.py``) are scored with the same frame
protocol and stored beside the model's numbers, under each task's ``baselines``.

Resumable: samples and I3D features are cached per batch under ``DIR/eval_cache/``; a killed
evaluation restarts from them. Missing weights (I3D, the LPIPS AlexNet trunk) make that metric
null with the reason, never a number from a random network — unless ``--allow-random-weights``,
whose FVD is marked ``uncalibrated`` wherever it appears.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm import tqdm

from metrics import HIGHER_IS_BETTER, frame, fvd, perceptual
from metrics.baselines import baseline_fills
from metrics.i3d import InceptionI3d, load_i3d
from metrics.weights import WeightsMissingError, resolve_i3d_weights, sha256_file
from vdt import cli as vdt_cli
from vdt.config import MASK_KINDS, ConfigError, MaskConfig, RunConfig, coerce, load_config
from vdt.data import build_dataset
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.errors import PathError
from vdt.masks import task_mask
from vdt.model import VDT

# Task parameters on the command line (predict:k=4) and the MaskConfig field each sets.
TASK_PARAMS = {"k": "predict_k", "stride": "interpolate_stride", "p": "random_p", "ratio": "spatial_ratio"}
LPIPS_MIN_SIDE = 64  # frames smaller than this are upsampled (bilinear) for AlexNet, and the protocol says so
PSNR_CAP_DB = 100.0  # a frame equal to the truth (a black fill of a black region) counts as this, not +inf


def parse_task(spec: str, cfg: RunConfig) -> tuple:
    """'interpolate:stride=2' -> ('interpolate', MaskConfig with interpolate_stride=2, {'stride': 2})."""
    kind, _, rest = spec.partition(":")
    if kind not in MASK_KINDS:
        raise ConfigError(f"--task: unknown kind {kind!r}; choose from {MASK_KINDS}")
    params = dict(p.split("=", 1) for p in rest.split(",") if p)
    unknown = set(params) - set(TASK_PARAMS)
    if unknown:
        raise ConfigError(f"--task {spec}: unknown parameters {sorted(unknown)}; choose from {sorted(TASK_PARAMS)}")
    hints = typing.get_type_hints(MaskConfig)
    typed = {k: coerce(f"--task {spec}: {k}", v, hints[TASK_PARAMS[k]]) for k, v in params.items()}
    masks = dataclasses.replace(cfg.masks, **{TASK_PARAMS[k]: v for k, v in typed.items()})
    return kind, masks, typed


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (to_unit(x) * 255).round().to(torch.uint8)


class Evaluator:
    """One run's model, data and metric detectors; ``run_task`` scores one task."""

    def __init__(self, run_dir, cfg: RunConfig, *, progress=True, i3d_weights=None, allow_random_weights=False,
                 device=None):
        self.run_dir, self.cfg, self.progress = Path(run_dir), cfg, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        if not ckpt_path.exists():
            raise PathError(f"{ckpt_path}: no checkpoint; train first (python -m vdt.train --run-dir "
                                    f"{self.run_dir})")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        self.step, self.ckpt_path = ckpt["step"], ckpt_path
        self.model = VDT(cfg.model)
        self.model.load_state_dict(ckpt["ema"])
        self.model.eval().requires_grad_(False).to(self.device)
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.data = build_dataset(dataclasses.replace(cfg.data, split="test"))
        self.n = min(cfg.eval.num_videos, len(self.data))
        self.vae = None
        if cfg.data.autoencoder == "sd-vae":
            from vdt.autoencoder import load_vae
            self.vae = load_vae(cfg.data.vae_path)
        self.i3d, self.i3d_missing, self.uncalibrated = None, None, False
        if cfg.eval.fvd:
            self._load_i3d(i3d_weights or cfg.eval.i3d_weights, allow_random_weights)

    def _load_i3d(self, path, allow_random: bool) -> None:
        try:
            weights = resolve_i3d_weights(path)
            self.i3d = load_i3d(weights, device=self.device)
            self.i3d_sha = sha256_file(weights)
        except WeightsMissingError as e:
            if not allow_random:
                self.i3d_missing = str(e)
                return
            torch.manual_seed(0)
            self.i3d = InceptionI3d().eval().to(self.device)
            self.i3d_sha, self.uncalibrated = "random-init (uncalibrated smoke mode)", True

    # ---------------------------------------------------------------- data and samples
    def real_batches(self):
        """Test clips (B, T, C, H, W) in [-1, 1], in index order, with labels or None."""
        bs = self.cfg.eval.batch_size
        for start in range(0, self.n, bs):
            items = [self.data[i] for i in range(start, min(start + bs, self.n))]
            if isinstance(items[0], (tuple, list)):
                yield torch.stack([v for v, _ in items]), torch.tensor([y for _, y in items])
            else:
                yield torch.stack(items), None

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.vae is None else self.vae.decode(x)

    def sample_batch(self, x0, y, mask, seed: int) -> torch.Tensor:
        e = self.cfg.eval
        fn = Denoiser(self.model, self.cfg.model.conditioning, mask, y=y, guidance=e.guidance,
                      null_label=self.cfg.model.num_classes)
        g = torch.Generator(device=self.device).manual_seed(seed)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.diffusion.sample(fn, x0, mask, sampler=e.sampler, steps=e.sample_steps, eta=e.eta,
                                         generator=g, progress=False, clip_denoised=self.vae is None)

    def task_samples(self, name: str, kind: str, masks_cfg) -> tuple:
        """(real, fakes (k, N, T, C, H, W), mask (N, T, H, W)) in pixel space, [-1, 1]; cached per batch."""
        e = self.cfg.eval
        T, side = self.cfg.data.frames, self.cfg.data.grid[1]
        key = hashlib.sha256(json.dumps([name, dataclasses.asdict(masks_cfg), dataclasses.asdict(e), self.step],
                                        sort_keys=True, default=str).encode()).hexdigest()[:12]
        cache = self.run_dir / "eval_cache" / f"{name}-{key}"
        cache.mkdir(parents=True, exist_ok=True)
        reals, fakes, masks = [], [], []
        bar = tqdm(total=self.n, desc=f"eval {name}", disable=not self.progress, dynamic_ncols=True)
        for b, (x0, y) in enumerate(self.real_batches()):
            path = cache / f"batch_{b:04d}.pt"
            if path.exists():
                done = torch.load(path, weights_only=True)
            else:
                g = torch.Generator().manual_seed(e.seed * 1_000_003 + b)
                mask = task_mask(kind, (T, side, side), masks_cfg, x0.shape[0], generator=g)
                latents = x0.to(self.device) if self.vae is None else self.vae.encode(x0.to(self.device))
                yd = None if y is None else y.to(self.device)
                outs = [self.sample_batch(latents, yd, mask.to(self.device), seed=(e.seed * 1_000_003 + b) * 64 + j)
                        for j in range(e.best_of)]
                done = {"fake": torch.stack([self.decode(o).cpu() for o in outs]), "mask": mask.cpu()}
                torch.save(done, path.with_suffix(".tmp"))
                os.replace(path.with_suffix(".tmp"), path)
            reals.append(x0)
            fakes.append(done["fake"])
            masks.append(done["mask"])
            bar.update(x0.shape[0])
        bar.close()
        return torch.cat(reals), torch.cat(fakes, dim=1), torch.cat(masks)

    # ---------------------------------------------------------------- metrics
    def pixel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask on the latent grid (VAE runs: 8x smaller) -> on the pixel grid, (N, T, H, W)."""
        return mask if self.vae is None else mask.repeat_interleave(8, -1).repeat_interleave(8, -2)

    def frame_scores(self, real, fakes, mask, kind: str, lpips: bool = True) -> tuple:
        """Per-video PSNR/SSIM/LPIPS over generated frames (best of k per metric), and reasons for missing ones."""
        scores, missing = {}, {}
        if kind == "unconditional":
            for m in ("psnr", "ssim", "lpips"):
                missing[m] = "unconditional generation has no ground truth for the generated frames"
            return scores, missing
        k, N, T = fakes.shape[:3]
        gen = (self.pixel_mask(mask).flatten(2).amax(-1) > 0).float()  # (N, T): frames with anything generated
        ref = to_unit(rearrange(real.unsqueeze(0).expand_as(fakes), "k n t c h w -> (k n t) c h w"))
        out = to_unit(rearrange(fakes, "k n t c h w -> (k n t) c h w"))
        fns = {"psnr": lambda a, b: frame.psnr(a, b).clamp(max=PSNR_CAP_DB), "ssim": frame.ssim}
        if self.cfg.eval.lpips and lpips:
            fns["lpips"] = self._lpips
        else:
            missing["lpips"] = "LPIPS disabled (eval.lpips=false)" if lpips else "not computed for baselines"
        for name, fn in fns.items():
            try:
                per_frame = rearrange(fn(out, ref), "(k n t) -> k n t", k=k, n=N)
            except WeightsMissingError as err:
                missing[name] = str(err)
                continue
            per_frame = torch.where(gen > 0, per_frame, torch.zeros_like(per_frame))  # given frames: PSNR inf
            per_video = per_frame.sum(-1) / gen.sum(-1)  # (k, N)
            best = per_video.amax(0) if HIGHER_IS_BETTER[name] else per_video.amin(0)
            scores[name] = best
        return scores, missing

    @staticmethod
    def _lpips(x, y):
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        if x.shape[-1] < LPIPS_MIN_SIDE:
            size = (LPIPS_MIN_SIDE, LPIPS_MIN_SIDE)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return perceptual.lpips_distance(x, y)

    def fvd_score(self, real, fake) -> tuple:
        """(FVD record or None, reason if missing)."""
        if self.i3d is None:
            return None, self.i3d_missing or "FVD disabled (eval.fvd=false)"
        T = real.shape[1]
        if T < 9:
            return None, f"FVD needs at least 9 frames for I3D; clips have {T}"
        protocol = fvd.FVDProtocol(weights_sha256=self.i3d_sha, num_frames=T)
        real_clips = {"dataset": self.cfg.data.name, "root": self.cfg.data.root, "split": "test",
                      "stride": self.cfg.data.stride, "size": self.cfg.data.size, "seed": self.cfg.data.seed,
                      "first_n": self.n, "selection": "test clips 0..N-1, deterministic offsets"}
        cache_dir = Path(os.environ.get("VDT_STATS_CACHE", Path.home() / ".cache" / "vdt-bench" / "fvd-stats"))
        real_stats = fvd.cached_real_stats(cache_dir, self.cfg.data.name, protocol, real_clips,
                                           lambda: [to_uint8(real)], self.i3d, self.cfg.eval.batch_size)
        fake_stats = fvd.FeatureStats(protocol, real_stats.source)
        fvd.update_stats(fake_stats, to_uint8(fake), self.i3d, self.cfg.eval.batch_size)
        result = fvd.fvd(real_stats, fake_stats).to_dict()
        result["uncalibrated"] = self.uncalibrated
        return result, None

    def run_task(self, spec: str) -> dict:
        kind, masks_cfg, params = parse_task(spec, self.cfg)
        real, fakes, mask = self.task_samples(spec, kind, masks_cfg)
        scores, missing = self.frame_scores(real, fakes, mask, kind)
        fvd_rec, why = self.fvd_score(real, fakes[0])
        if why:
            missing["fvd"] = why
        values = {m: (float(scores[m].mean()) if m in scores else None) for m in ("psnr", "ssim", "lpips")}
        values["fvd"] = fvd_rec["fvd"] if fvd_rec else None
        self._save_samples(spec, real, fakes[0], mask)
        baselines = {name: {m: float(v.mean()) for m, v in self.frame_scores(real, fill, mask, kind, False)[0].items()}
                     for name, fill in baseline_fills(real, self.pixel_mask(mask)).items()}
        e = self.cfg.eval
        protocol = {
            "task": kind, "task_params": params, "sampler": e.sampler, "sample_steps": e.sample_steps, "eta": e.eta,
            "guidance": e.guidance, "num_videos": self.n, "frames": self.cfg.data.frames,
            "resolution": self.cfg.data.size,
            "given_frames_per_video": float((mask.flatten(2).amax(-1) == 0).sum(1).float().mean()),
            "generated_share": float(mask.float().mean()), "best_of": e.best_of,
            "best_of_rule": "per metric and video, the best of k samples (MCVD); FVD uses sample 0",
            "frame_metrics_on": "frames with any generated cell, mean over frames then videos",
            "psnr": f"per frame, data range 1, at most {PSNR_CAP_DB:g} dB (a frame equal to the truth)",
            "ssim": "per frame, Gaussian 11/1.5, per RGB channel, skimage crop",
            "lpips": f"alex v0.1 per frame, inputs under {LPIPS_MIN_SIDE}px upsampled bilinear to {LPIPS_MIN_SIDE}",
            "weights": "ema", "checkpoint_step": self.step, "fvd": fvd_rec, "uncalibrated": self.uncalibrated,
            "real_clips": getattr(self.data, "protocol", lambda: {"dataset": self.cfg.data.name, "split": "test"})(),
        }
        per_video = {m: (scores[m].tolist() if m in scores else None) for m in ("psnr", "ssim", "lpips")}
        return {"metrics": values, "missing": missing, "per_video": per_video, "protocol": protocol,
                "baselines": {k: v for k, v in baselines.items() if v}}

    def _save_samples(self, name, real, fake, mask) -> None:
        out = self.run_dir / "samples"
        out.mkdir(exist_ok=True)
        np.savez_compressed(out / f"{name.replace(':', '_')}.npz", real=to_uint8(real).numpy(),
                            fake=to_uint8(fake).numpy(), mask=mask.to(torch.uint8).numpy())


def environment(device) -> dict:
    """What produced the numbers: git commit, torch version, device, date."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"git_commit": commit, "torch": torch.__version__, "device": f"{device.type}: {name}",
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}


def evaluate_run(run_dir, cfg: RunConfig | None = None, *, tasks=None, progress: bool = True, i3d_weights=None,
                 allow_random_weights: bool = False, device=None) -> dict:
    """Evaluate ``run_dir`` on ``tasks`` (default cfg.eval.tasks); writes and returns eval.json's content."""
    run_dir = Path(run_dir)
    cfg = cfg or load_config(run_dir / "config.json")
    ev = Evaluator(run_dir, cfg, progress=progress, i3d_weights=i3d_weights,
                   allow_random_weights=allow_random_weights, device=device)
    path = run_dir / "eval.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if result.get("step") != ev.step:  # results of an older checkpoint are dropped
        result = {"tasks": {}}
    result.update(step=ev.step, checkpoint=str(ev.ckpt_path), weights="ema", higher_is_better=HIGHER_IS_BETTER,
                  env=environment(ev.device))
    for spec in tasks or cfg.eval.tasks:
        result["tasks"][spec] = ev.run_task(spec)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, path)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = vdt_cli.parser(
        "python metrics/evaluate.py",
        "Sample from a trained run and score it (PSNR, SSIM, LPIPS on generated frames; FVD on clips). Writes "
        "DIR/eval.json and DIR/samples/<task>.npz. Rerunning resumes from DIR/eval_cache/.",
        examples=["python metrics/evaluate.py --run-dir RUN --task predict --task interpolate:stride=2",
                  "python metrics/evaluate.py --run-dir RUN --num-videos 256 --i3d-weights ~/i3d_pretrained_400.pt",
                  "python metrics/evaluate.py --run-dir RUN --data ucf101:/data/UCF-101 --set eval.fvd=true"],
        notes="tasks: predict backward interpolate unconditional one_frame random_frames spatial_temporal, with "
              "optional parameters: predict:k=4, backward:k=4, interpolate:stride=2, random_frames:p=0.5, "
              "spatial_temporal:ratio=0.5.\nweights: I3D from --i3d-weights, $VDT_I3D_WEIGHTS or ~/.cache/vdt-bench/ "
              "(i3d_pretrained_400.pt or i3d_torchscript.pt); LPIPS AlexNet from "
              "$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth. Missing weights give null metrics with the "
              "reason (an explicit --i3d-weights that is missing is an error).\n" + vdt_cli.CONFIG_KEYS
              + "; here eval.* and data.*.\nexit status: 0 done, 2 an input error (bad --run-dir, --set, data path "
                "or layout, missing weights).")
    p.add_argument("--run-dir", required=True, help="a trained run (config.json, checkpoints/last.pt)")
    p.add_argument("--task", action="append", help="task to evaluate (repeatable); default: the run's eval.tasks")
    p.add_argument("--num-videos", type=int, help="test videos (eval.num_videos)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), help="eval.sampler")
    p.add_argument("--steps", type=int, help="sampling steps (eval.sample_steps)")
    p.add_argument("--eta", type=float, help="DDIM eta (eval.eta)")
    p.add_argument("--best-of", type=int, help="samples per video, best per metric (eval.best_of)")
    p.add_argument("--i3d-weights", help="I3D weights file (piergiaj layout or StyleGAN-V TorchScript)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="smoke mode: a random-init I3D when weights are missing; FVD is marked uncalibrated")
    vdt_cli.add_config_args(p, "eval.* / data.* overrides", "eval.num_videos=256 eval.guidance=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run_cli(argv=None) -> int:
    """``python metrics/evaluate.py``: input errors propagate to ``vdt.cli.run`` (exit 2)."""
    args = get_args_parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise PathError(f"--run-dir {run_dir}: no config.json there; give the directory of a trained run")
    cfg = load_config(run_dir / "config.json")
    over = vdt_cli.overrides(args)
    for flag, key in (("num_videos", "eval.num_videos"), ("sampler", "eval.sampler"),
                      ("steps", "eval.sample_steps"), ("eta", "eval.eta"), ("best_of", "eval.best_of")):
        if getattr(args, flag) is not None:
            over.append(f"{key}={getattr(args, flag)}")
    for spec in args.task or ():
        parse_task(spec, cfg)
    cfg = cfg.with_overrides(over)
    result = evaluate_run(run_dir, cfg, tasks=args.task, progress=not args.no_progress,
                          i3d_weights=args.i3d_weights, allow_random_weights=args.allow_random_weights)
    for task, r in result["tasks"].items():
        vals = "  ".join(f"{m}={'null' if v is None else f'{v:.4g}'}" for m, v in r["metrics"].items())
        print(f"{task}: {vals}")
        for m, why in r["missing"].items():
            print(f"  {m} missing: {why}")
    print(f"wrote {run_dir / 'eval.json'}")
    return 0


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
