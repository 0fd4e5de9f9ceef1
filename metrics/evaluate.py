"""Evaluate a trained run on VDT tasks: sample, score, and write ``eval.json``.

    python metrics/evaluate.py --run-dir DIR --task predict [--task interpolate:stride=2 ...]

For each task (a mask kind, optionally with parameters), the EMA weights generate the mask = 1
region of N test clips (DDIM or DDPM). Frame metrics (PSNR, SSIM, LPIPS) are computed on the
generated frames only (frames with any mask = 1 cell), averaged over those frames, then over
videos. FVD is computed on whole clips (given frames included), against real test clips whose
I3D statistics are cached once per dataset and protocol. Two trivial fills of the generated region
(black, and the nearest fully given frame; ``metrics/baselines.py``) are scored with the same frame
protocol and stored beside the model's numbers, under each task's ``baselines``.

A latent run (``data.autoencoder=sd-vae``) is evaluated in pixels too: see ``metrics/sampling.py``.

Bookkeeping (``vdt/layout.py``): each finished task goes to ``DIR/eval_parts/<task>.json`` with the
identity of what made it; ``eval.json`` is written, whole, only when every task of ``eval.tasks``
is done, and it records the evaluation settings that made it (``eval``). Resumable: a killed
evaluation restarts at its first unfinished task, and samples are cached per batch under
``DIR/eval_cache/``, keyed by everything that made them. Missing weights (I3D, the LPIPS AlexNet trunk) make that metric
null with the reason, never a number from a random network — unless ``--allow-random-weights``,
whose FVD is marked ``uncalibrated`` wherever it appears.
"""

import argparse
import dataclasses
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

from metrics import HIGHER_IS_BETTER, frame, fvd, perceptual
from metrics.baselines import baseline_fills
from metrics.i3d import InceptionI3d, load_i3d
from metrics.sampling import RunSampler
from metrics.weights import WeightsMissingError, resolve_i3d_weights, sha256_file
from vdt import cli as vdt_cli
from vdt.config import MASK_KINDS, ConfigError, MaskConfig, RunConfig, coerce, load_config
from vdt.errors import PathError
from vdt.layout import RunLayout, read_json, write_json

# Task parameters on the command line (predict:k=4) and the MaskConfig field each sets.
TASK_PARAMS = {"k": "predict_k", "stride": "interpolate_stride", "p": "random_p", "ratio": "spatial_ratio"}
LPIPS_MIN_SIDE = 64  # frames smaller than this are upsampled (bilinear) for AlexNet, and the protocol says so
PSNR_CAP_DB = 100.0  # a frame equal to the truth (a black fill of a black region) counts as this, not +inf
PROTOCOL_VERSION = 2  # of the scoring rules; a finished task part of another version is evaluated again


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
    """One run's samples (``metrics.sampling.RunSampler``) and metric detectors; ``run_task`` scores one task."""

    def __init__(self, run_dir, cfg: RunConfig, *, progress=True, i3d_weights=None, allow_random_weights=False,
                 device=None):
        self.cfg = cfg
        self.sampler = RunSampler(run_dir, cfg, device=device, progress=progress)
        self.device, self.n = self.sampler.device, self.sampler.n
        self.i3d, self.i3d_sha, self.i3d_missing, self.uncalibrated = None, None, None, False
        if cfg.eval.fvd:
            self._load_i3d(i3d_weights or cfg.eval.i3d_weights, allow_random_weights)

    @property
    def step(self) -> int:
        return self.sampler.step

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

    def identity(self, spec: str) -> dict:
        """Everything that made a task's result: its samples' key, the scoring settings, the detector weights."""
        kind, masks_cfg, _ = parse_task(spec, self.cfg)
        scoring = {k: v for k, v in dataclasses.asdict(self.cfg.eval).items() if k != "tasks"}
        return {"task": spec, "samples": self.sampler.sample_key(spec, masks_cfg), "eval": scoring,
                "checkpoint": {k: self.sampler.checkpoint[k] for k in ("step", "ema_sha256")},
                "i3d_sha256": self.i3d_sha, "protocol_version": PROTOCOL_VERSION}

    # ---------------------------------------------------------------- metrics
    def frame_scores(self, real, fakes, mask, kind: str, lpips: bool = True) -> tuple:
        """Per-video PSNR/SSIM/LPIPS over generated frames (best of k per metric), and reasons for missing ones."""
        scores, missing = {}, {}
        if kind == "unconditional":
            for m in ("psnr", "ssim", "lpips"):
                missing[m] = "unconditional generation has no ground truth for the generated frames"
            return scores, missing
        k, N, T = fakes.shape[:3]
        gen = (mask.flatten(2).amax(-1) > 0).float()  # (N, T): frames with anything generated
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
        real_clips = self.sampler.real_clips(0, self.n)
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
        real, fakes, mask = self.sampler.task_samples(spec, kind, masks_cfg)
        scores, missing = self.frame_scores(real, fakes, mask, kind)
        fvd_rec, why = self.fvd_score(real, fakes[0])
        if why:
            missing["fvd"] = why
        values = {m: (float(scores[m].mean()) if m in scores else None) for m in ("psnr", "ssim", "lpips")}
        values["fvd"] = fvd_rec["fvd"] if fvd_rec else None
        self._save_samples(spec, real, fakes[0], mask)
        baselines = {name: {m: float(v.mean()) for m, v in self.frame_scores(real, fill, mask, kind, False)[0].items()}
                     for name, fill in baseline_fills(real, mask).items()}
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
            "real_clips": self.sampler.real_clips(0, self.n), "space": self._space(),
        }
        per_video = {m: (scores[m].tolist() if m in scores else None) for m in ("psnr", "ssim", "lpips")}
        return {"metrics": values, "missing": missing, "per_video": per_video, "protocol": protocol,
                "baselines": {k: v for k, v in baselines.items() if v}}

    def _space(self) -> str:
        if self.sampler.vae is None:
            return "pixels: sampled and scored on the test clips' pixels"
        return (f"latent: pixel test clips encoded by the VAE (sha256 {self.sampler.vae.sha256[:12]}), sampled in "
                "latent space, decoded; scored in pixels, given pixels the real ones")

    def _save_samples(self, name, real, fake, mask) -> None:
        path = self.sampler.layout.sample_file(name)
        path.parent.mkdir(exist_ok=True)
        np.savez_compressed(path, real=to_uint8(real).numpy(), fake=to_uint8(fake).numpy(),
                            mask=mask.to(torch.uint8).numpy())

    # ---------------------------------------------------------------- finished tasks
    def load_part(self, spec: str) -> dict | None:
        """The finished result of ``spec`` in eval_parts/, if one was made by this exact evaluation."""
        part = read_json(self.sampler.layout.eval_part(spec))
        if part is None or part.get("identity") != json.loads(json.dumps(self.identity(spec))):
            return None
        return part["result"]

    def save_part(self, spec: str, result: dict) -> None:
        path = self.sampler.layout.eval_part(spec)
        path.parent.mkdir(exist_ok=True)
        write_json(path, {"identity": self.identity(spec), "result": result})


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
    """Evaluate ``run_dir`` on ``tasks`` (default cfg.eval.tasks); returns eval.json's content and "complete".

    eval.json is written only when every task of cfg.eval.tasks is done (``complete``).
    Each finished task goes to eval_parts/<task>.json first, with the identity of what made it (samples, checkpoint,
    evaluation settings, detector weights); a task whose part matches is not evaluated again, so a killed evaluation
    resumes at its first unfinished task. eval.json holds every task of this evaluation: cfg.eval.tasks and any other
    task (``tasks``) with a matching part.
    """
    layout = RunLayout(run_dir)
    cfg = cfg or load_config(layout.config)
    ev = Evaluator(run_dir, cfg, progress=progress, i3d_weights=i3d_weights,
                   allow_random_weights=allow_random_weights, device=device)
    for spec in tasks or cfg.eval.tasks:
        if ev.load_part(spec) is None:
            ev.save_part(spec, ev.run_task(spec))
    parts = {spec: ev.load_part(spec) for spec in dict.fromkeys([*cfg.eval.tasks, *(tasks or ())])}
    record = {"step": ev.step, "checkpoint": ev.sampler.checkpoint, "weights": "ema",
              "higher_is_better": HIGHER_IS_BETTER, "env": environment(ev.device),
              "eval": dataclasses.asdict(cfg.eval), "tasks": {k: v for k, v in parts.items() if v is not None}}
    complete = all(v is not None for v in parts.values())
    if complete:
        write_json(layout.eval_json, record)
    return {**record, "complete": complete}


def is_complete(result: dict | None, cfg: RunConfig, step: int) -> bool:
    """Whether eval.json's content ``result`` is a complete evaluation of ``step`` under cfg.eval's settings."""
    if not result or result.get("step") != step:
        return False
    made_by = result.get("eval") or {}
    return (made_by == json.loads(json.dumps(dataclasses.asdict(cfg.eval)))
            and set(cfg.eval.tasks) <= set(result.get("tasks", {})))


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
    layout = RunLayout(args.run_dir)
    if not layout.config.is_file():
        raise PathError(f"--run-dir {layout.root}: no config.json there; give the directory of a trained run")
    cfg = load_config(layout.config)
    over = vdt_cli.overrides(args)
    for flag, key in (("num_videos", "eval.num_videos"), ("sampler", "eval.sampler"),
                      ("steps", "eval.sample_steps"), ("eta", "eval.eta"), ("best_of", "eval.best_of")):
        if getattr(args, flag) is not None:
            over.append(f"{key}={getattr(args, flag)}")
    for spec in args.task or ():
        parse_task(spec, cfg)
    cfg = cfg.with_overrides(over)
    result = evaluate_run(layout.root, cfg, tasks=args.task, progress=not args.no_progress,
                          i3d_weights=args.i3d_weights, allow_random_weights=args.allow_random_weights)
    for task, r in result["tasks"].items():
        vals = "  ".join(f"{m}={'null' if v is None else f'{v:.4g}'}" for m, v in r["metrics"].items())
        print(f"{task}: {vals}")
        for m, why in r["missing"].items():
            print(f"  {m} missing: {why}")
    if result["complete"]:
        print(f"wrote {layout.eval_json}")
    else:
        todo = [t for t in cfg.eval.tasks if t not in result["tasks"]]
        print(f"{layout.eval_json} not written: eval.tasks {todo} are not done yet (finished tasks are in "
              f"{layout.eval_parts})")
    return 0


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
