"""Training-step speed, memory and MFU: the presets, each conditioning mode, and ours vs the official design.

MFU = count_flops(cfg.model, batch) / median step seconds / matmul peak (benchmarks/machine.py). Tokens and memory:
see benchmarks/steps.py.
"""

import statistics
import time

import pytest
import torch

from benchmarks.machine import median_s, record, refresh_peak, sync
from benchmarks.steps import bench_step, build_step, check_loss, step_config, step_info, step_memory

PREDICT = ("masks.mixture=predict:1", "eval.tasks=predict")
# name: (overrides, batch). Default clips: 16 frames of 32x32x3. VDT-S/2 gets a CPU-feasible clip.
PRESETS = {
    "cpu-tiny": (("model.preset=cpu-tiny",), 8),
    "cpu-small": (("model.preset=cpu-small",), 8),
    "VDT-S2-8f-16px": (("model.preset=VDT-S/2", "data.frames=8", "data.size=16"), 2),
}
QUICK = {"cpu-tiny-8f-16px": (("model.preset=cpu-tiny", "data.frames=8", "data.size=16"), 2)}
MODES = ("token_concat", "cross_attn", "adaln")
# The comparison config: depth 4, hidden 128, 4 heads, patch 2, 16 frames of 32x32x3, batch 8 (32,768 tokens).
OFFICIAL_CFG = ("model.preset=cpu-small", "model.depth=4", "model.hidden=128", "model.heads=4", "model.patch=2",
                "data.frames=16", "data.size=32", "data.channels=3")
OFFICIAL_BATCH = 8


@pytest.mark.quick
@pytest.mark.benchmark(group="matmul peak")
def test_matmul_peak(benchmark, dev, peak):
    """The large matmul that MFU divides by (the session's best rate is ``peak``)."""
    dtype = getattr(torch, peak["dtype"])
    a = torch.randn(peak["n"], peak["n"], device=dev, dtype=dtype)
    b = torch.randn(peak["n"], peak["n"], device=dev, dtype=dtype)

    def mm():
        torch.mm(a, b)
        sync(dev)

    benchmark.pedantic(mm, rounds=5, warmup_rounds=1, iterations=1)
    flops = 2 * peak["n"] ** 3
    record(benchmark, dev, n=peak["n"], matmul_dtype=peak["dtype"], flops=flops, items=flops, unit="FLOP",
           flops_per_s=flops / median_s(benchmark), matmul_peak_flops_per_s=peak["flops_per_s"])


@pytest.mark.benchmark(group="train step: presets")
@pytest.mark.parametrize("name", [*PRESETS, *(pytest.param(k, marks=pytest.mark.quick) for k in QUICK)])
def test_train_step_preset(benchmark, dev, peak, name):
    overrides, batch = {**PRESETS, **QUICK}[name]
    bench_step(benchmark, dev, peak, overrides, batch)
    benchmark.extra_info["preset"] = name


@pytest.mark.benchmark(group="train step: conditioning (cpu-small, batch 4)")
@pytest.mark.parametrize("mode", MODES)
def test_train_step_conditioning(benchmark, dev, peak, mode):
    """Each mode on the same prediction task (8 given + 8 generated frames of 32x32)."""
    bench_step(benchmark, dev, peak, ("model.preset=cpu-small", f"model.conditioning={mode}", *PREDICT), 4)
    benchmark.extra_info["conditioning"] = mode


@pytest.mark.benchmark(group="train step: ours vs official design")
def test_train_step_vs_official(benchmark, dev, peak):
    """Same config, same machine, one run, interleaved: before each timed step of ours, one step of the official
    design runs and is timed by hand, so both see the same background load. Speed-up = official / ours medians."""
    cfg = step_config(OFFICIAL_CFG)
    ours, official = build_step(cfg, OFFICIAL_BATCH, "ours", dev), build_step(cfg, OFFICIAL_BATCH, "official", dev)
    official_s = []

    def official_step():  # pytest-benchmark's per-round setup: untimed by it, timed here
        t0 = time.perf_counter()
        check_loss(official())
        official_s.append(time.perf_counter() - t0)

    rounds, warmup = 7, 1
    refresh_peak(peak, dev)
    check_loss(benchmark.pedantic(ours, setup=official_step, rounds=rounds, warmup_rounds=warmup, iterations=1))
    official_s = official_s[warmup:]
    ours_med, official_med = median_s(benchmark), statistics.median(official_s)
    record(benchmark, dev, OFFICIAL_BATCH, impl="ours", config=" ".join(OFFICIAL_CFG), items=ours.tokens,
           unit="tokens", flops=ours.flops, matmul_peak_flops_per_s=peak["flops_per_s"],
           **step_info(ours, ours_med, peak), **step_memory(ours, OFFICIAL_CFG, OFFICIAL_BATCH, "ours"),
           official_s=official_s, official_median_s=official_med, speedup=official_med / ours_med,
           **step_info(official, official_med, peak, prefix="official_"),
           **{f"official_{k}": v for k, v in step_memory(official, OFFICIAL_CFG, OFFICIAL_BATCH, "official").items()},
           note=f"official {official_med:.2f} s, speed-up {official_med / ours_med:.2f}x")
