"""One training step (forward, masked diffusion loss, backward, AdamW), ours or the official design, and its memory.

A step is built from a RunConfig and a batch size on a fixed random batch, so the timing measures the model and the
optimiser, not the data. Every mode does the same task (video prediction: the first k frames given), so the modes
and the two implementations do the same work per clip.

Tokens per step: batch x clip frames x (frame side / patch)^2, the whole clip (given frames included), as the trainer
counts them. FLOPs per step: ``vdt.model.count_flops(cfg.model, batch)`` (forward + backward); the official design
computes the same function, so it gets the same count.

Peak memory. CUDA: ``torch.cuda.max_memory_allocated`` over the timed rounds. CPU: the allocator returns little to
the OS and the peak RSS of a process only grows, so each config is measured in a fresh subprocess
(``python -m benchmarks.memprobe``): RSS after the model, optimiser and batch are built (baseline), then the kernel's
high-water mark (VmHWM) after two steps; the step's memory is the difference (activations, gradients, AdamW
state).
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from benchmarks.bench_model_speed import official_like
from benchmarks.machine import ROOT, compute_context, median_s, record, refresh_peak, sync
from vdt.config import RunConfig
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.masks import task_mask
from vdt.model import VDT, count_flops

IMPLS = ("ours", "official")


def official_model(cfg: RunConfig) -> torch.nn.Module:
    """The official VDT at cfg's size (token_concat only: the official model has no other mode)."""
    if cfg.model.conditioning != "token_concat":
        raise ValueError(f"the official design has only token_concat conditioning, not {cfg.model.conditioning!r}")
    return official_like(cfg.model)


def clip_tokens(cfg: RunConfig, batch: int) -> int:
    """Tokens of ``batch`` whole clips on the model's grid."""
    return batch * cfg.data.frames * (cfg.model.size // cfg.model.patch) ** 2


@dataclass
class TrainStep:
    """A callable that runs one training step on a fixed batch; ``tokens`` and ``flops`` describe one step."""

    cfg: RunConfig
    batch: int
    impl: str
    dev: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    diffusion: GaussianDiffusion
    x0: torch.Tensor  # (B, T, C, H, W) in [-1, 1]
    mask: torch.Tensor  # (B, T, H, W), 1 = generate
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, T, C, H, W)

    @property
    def tokens(self) -> int:
        return clip_tokens(self.cfg, self.batch)

    @property
    def flops(self) -> float:
        return float(count_flops(self.cfg.model, self.batch))

    def model_fn(self):
        if self.impl == "official":
            y = torch.zeros(self.batch, dtype=torch.long, device=self.dev)
            return lambda x_in, t: self.model(x_in, t, y)
        return Denoiser(self.model, self.cfg.model.conditioning, self.mask)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        with compute_context(self.dev):
            loss = self.diffusion.training_losses(self.model_fn(), self.x0, self.mask, self.t, noise=self.noise)
            loss = loss["loss"].float().mean()
        loss.backward()
        self.opt.step()
        sync(self.dev)
        return loss.detach()


def build_step(cfg: RunConfig, batch: int, impl: str = "ours", dev: torch.device | None = None,
               seed: int = 0) -> TrainStep:
    """A training step of ``impl`` at cfg's model and clip size, on a seeded random batch."""
    if impl not in IMPLS:
        raise ValueError(f"impl: unknown {impl!r}; choose from {IMPLS}")
    dev = dev or torch.device("cpu")
    torch.manual_seed(seed)
    model = (VDT(cfg.model) if impl == "ours" else official_model(cfg)).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]  # the official sin-cos tables are frozen parameters
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    g = torch.Generator().manual_seed(seed)
    T, (C, S) = cfg.data.frames, cfg.data.grid
    x0 = (torch.rand(batch, T, C, S, S, generator=g) * 2 - 1).to(dev)
    mask = task_mask("predict", (T, S, S), cfg.masks, batch, generator=g).to(dev)
    t = torch.randint(0, cfg.diffusion.steps, (batch,), generator=g).to(dev)
    noise = torch.randn(batch, T, C, S, S, generator=g).to(dev)
    return TrainStep(cfg, batch, impl, dev, model, opt, GaussianDiffusion(cfg.diffusion), x0, mask, t, noise)


def step_config(overrides) -> RunConfig:
    """RunConfig defaults with ``overrides`` (``["model.preset=cpu-tiny", ...]``)."""
    return RunConfig().with_overrides(list(overrides))


def subprocess_memory(overrides, batch: int, impl: str = "ours", steps: int = 2) -> dict:
    """CPU step memory of a config, measured in a fresh process; see the module docstring."""
    cmd = [sys.executable, "-m", "benchmarks.memprobe", "--impl", impl, "--batch", str(batch), "--steps", str(steps),
           *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed ({' '.join(cmd)}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_memory(step: TrainStep, rounds: int = 2) -> dict:
    """CUDA peak allocated over ``rounds`` steps, after the model and optimiser state exist."""
    step()
    torch.cuda.reset_peak_memory_stats(step.dev)
    base = torch.cuda.memory_allocated(step.dev)
    for _ in range(rounds):
        step()
    peak = torch.cuda.max_memory_allocated(step.dev)
    return {"peak_mem_mb": peak / 2**20, "step_mem_mb": (peak - base) / 2**20, "memory": "cuda max_memory_allocated"}


def step_memory(step: TrainStep, overrides, batch: int, impl: str = "ours") -> dict:
    """The memory record of a step: in-process on CUDA, a fresh subprocess on the CPU."""
    if step.dev.type == "cuda":
        return cuda_memory(step)
    return subprocess_memory(overrides, batch, impl)


def step_info(step: TrainStep, sec: float, peak: dict, prefix: str = "") -> dict:
    """Throughput and MFU of ``step`` at ``sec`` seconds per step (keys prefixed by ``prefix``)."""
    rate = step.flops / sec
    info = {"tokens_per_s": step.tokens / sec, "flops_per_s": rate, "mfu": rate / peak["flops_per_s"]}
    return {prefix + k: v for k, v in info.items()}


def bench_step(benchmark, dev, peak, overrides, batch, impl="ours", rounds=3, warmup=1) -> None:
    """Time one training step (median of ``rounds`` after ``warmup``), then record tokens/s, MFU and memory."""
    step = build_step(step_config(overrides), batch, impl, dev)
    refresh_peak(peak, dev)
    check_loss(benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup, iterations=1))
    record(benchmark, dev, batch, impl=impl, config=" ".join(overrides), items=step.tokens, unit="tokens",
           params=sum(p.numel() for p in step.model.parameters()), flops=step.flops,
           matmul_peak_flops_per_s=peak["flops_per_s"], **step_info(step, median_s(benchmark), peak),
           **step_memory(step, overrides, batch, impl))


def check_loss(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} in the benchmarked step")
