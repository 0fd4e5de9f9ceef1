"""The GPU path: a bf16-autocast training step, fused attention, DDP over NCCL, and a run on the GPU end to end.

The tests marked ``cuda`` need a CUDA GPU: without one they skip (CI has none), unless VDT_REQUIRE_GPU=1, which
``nox -s gpu`` sets, so that a machine where torch sees no GPU fails them instead of passing by skipping. The last
tests run benchmarks/bench_gpu.py's logic on the CPU, on every ``nox -s tests``.
"""

import json
import math
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel

from benchmarks import bench_gpu
from metrics import evaluate
from vdt import train
from vdt.config import RunConfig
from vdt.layout import RunLayout
from vdt.model import VDT

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda:0")
SMALL = ["model.preset=cpu-small", "data.size=16", "data.frames=8", "train.batch_size=4", "train.warmup=2",
         "train.log_every=1", "train.ckpt_every=100"]
# The paper's clips as the model sees them: 16 frames of 4 x 32 x 32 SD-VAE latents (the VAE is not run here).
PAPER_CLIPS = ["data.autoencoder=sd-vae", "data.size=256", "data.frames=16"]


@pytest.fixture(autouse=True)
def require_cuda(request):
    cuda_gate(request.node.get_closest_marker("cuda") is not None)


def cuda_gate(marked: bool) -> None:
    """Skip a cuda-marked test without a GPU, or fail it when VDT_REQUIRE_GPU=1."""
    if not marked or torch.cuda.is_available():
        return
    if os.environ.get("VDT_REQUIRE_GPU") == "1":
        pytest.fail("VDT_REQUIRE_GPU=1 but torch sees no CUDA GPU (torch.cuda.is_available() is False; "
                    f"torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    pytest.skip("needs a CUDA GPU (nox -s gpu on a GPU machine)")


def small(*extra) -> RunConfig:
    return RunConfig().with_overrides(SMALL + list(extra))


def open_branches(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every zero-initialised weight (adaLN-Zero gates, the output layer) small random values, so each
    attention output reaches the model's output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# ----------------------------------------------------------------------------------------------------------------------
# bf16 autocast
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_bf16_autocast_training_step(tmp_path):
    """train.precision=auto on CUDA: the forward runs in bf16 autocast, weights and gradients stay fp32."""
    trainer = train.Trainer(small(), tmp_path, progress=False)
    assert trainer.device == CUDA
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    out_dtypes = []
    hook = trainer.model.register_forward_hook(lambda module, args, out: out_dtypes.append(out.dtype))
    losses = [trainer.train_step(step) for step in range(3)]
    hook.remove()
    assert out_dtypes == [torch.bfloat16] * 3  # an fp32 model gives bf16 outputs only under autocast
    assert all(math.isfinite(loss) and math.isfinite(gnorm) and gnorm > 0 for loss, gnorm in losses), losses
    changed = [k for k, p in trainer.model.named_parameters() if not torch.equal(p, before[k])]
    assert len(changed) == len(before), sorted(set(before) - set(changed))
    for k, p in trainer.model.named_parameters():
        assert p.dtype == torch.float32 and p.device == CUDA, k
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), k


# ----------------------------------------------------------------------------------------------------------------------
# Fused attention
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["VDT-S/2", "VDT-L/2"])  # head width 64 and 72
def test_fused_attention_runs_and_matches_math(preset):
    """At the paper's shapes, SDPA restricted to flash / mem-efficient runs our forward and backward (it raises when
    neither kernel takes the inputs) and matches the math kernel to bf16 tolerance."""
    cfg = RunConfig().with_overrides([f"model.preset={preset}", "model.depth=2", *PAPER_CLIPS]).model
    torch.manual_seed(0)
    model = open_branches(VDT(cfg)).to(CUDA)
    x = torch.randn(2, cfg.frames, cfg.channels, cfg.size, cfg.size, device=CUDA)  # (B, T, C, H, W)
    t = torch.randint(0, 1000, (2,), device=CUDA)
    outs, grads = {}, {}
    for name, backends in (("fused", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
                           ("math", [SDPBackend.MATH])):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(backends):
            with torch.autocast(CUDA.type, dtype=torch.bfloat16):
                out = model(x, t)  # (B, T, 2C, H, W)
            out.float().square().mean().backward()
        outs[name] = out.detach().float()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert outs["math"].abs().mean() > 0.01  # the branches are open: attention reaches the output
    assert torch.isfinite(outs["fused"]).all() and torch.isfinite(grads["fused"]).all()
    assert rel_err(outs["fused"], outs["math"]) < 2e-2
    assert rel_err(grads["fused"], grads["math"]) < 5e-2


# ----------------------------------------------------------------------------------------------------------------------
# DDP over NCCL
# ----------------------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cuda
def test_ddp_nccl_one_process_equals_plain(tmp_path):
    """A trainer whose network is DDP over NCCL (world size 1) takes the same steps as one without DDP.

    Trainer wraps in DDP only for world size > 1, which one GPU can't host over NCCL, so the test wraps as it does.
    Equal up to the GPU's non-deterministic reductions: the same losses, and weights whose difference is a small
    part of how far they moved."""
    steps, cfg = 3, small()
    plain = train.Trainer(cfg, tmp_path / "plain", progress=False)
    start = {k: v.clone() for k, v in plain.model.state_dict().items()}
    plain_losses = [plain.train_step(s)[0] for s in range(steps)]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=timedelta(seconds=60))
    try:
        assert dist.get_backend() == "nccl"
        ddp = train.Trainer(cfg, tmp_path / "ddp", progress=False)
        ddp.net = DistributedDataParallel(ddp.model, device_ids=[CUDA.index])  # as Trainer does for world > 1
        ddp_losses = [ddp.train_step(s)[0] for s in range(steps)]
    finally:
        dist.destroy_process_group()
    np.testing.assert_allclose(ddp_losses, plain_losses, rtol=1e-3)
    a, b = plain.model.state_dict(), ddp.model.state_dict()
    moved = sum(float((a[k] - start[k]).float().norm() ** 2) for k in a) ** 0.5
    diff = sum(float((a[k] - b[k]).float().norm() ** 2) for k in a) ** 0.5
    assert moved > 0 and diff < 1e-2 * moved, (diff, moved)


# ----------------------------------------------------------------------------------------------------------------------
# A run on the GPU, end to end
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_train_and_evaluate_on_gpu(tmp_path, monkeypatch):
    """vdt.train.main then metrics.evaluate.evaluate_run on the built-in data, on the GPU (FVD on a random I3D)."""
    monkeypatch.setenv("VDT_I3D_WEIGHTS", str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("VDT_STATS_CACHE", str(tmp_path / "stats"))
    cfg = RunConfig().with_overrides([
        "model.preset=cpu-small", "data.size=32", "data.frames=10", "train.batch_size=8", "train.steps=20",
        "train.log_every=5", "train.ckpt_every=10", "eval.num_videos=4", "eval.batch_size=2", "eval.sample_steps=5",
        "eval.fvd=true", "eval.lpips=false", "eval.tasks=predict,interpolate"])
    layout = RunLayout(tmp_path / "run")
    result = train.main(cfg, layout.root, progress=False)
    assert result["step"] == 20 and math.isfinite(result["loss"])
    log = [json.loads(line) for line in layout.train_log.read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20] and all(r["tokens_per_s"] > 0 for r in log)
    res = evaluate.evaluate_run(layout.root, cfg, progress=False, allow_random_weights=True, device=CUDA)
    assert res["env"]["device"].startswith(CUDA.type) and res["step"] == 20
    for spec in ("predict", "interpolate"):
        task = res["tasks"][spec]
        for metric in ("psnr", "ssim", "fvd"):
            assert math.isfinite(task["metrics"][metric]), (spec, metric, task["missing"])
        assert task["protocol"]["uncalibrated"] is True  # a random I3D: the FVD says so
        samples = np.load(layout.sample_file(spec))
        given = samples["mask"].reshape(*samples["mask"].shape[:2], -1).max(-1) == 0  # (N, T) frames given
        assert given.any() and (samples["fake"][given] == samples["real"][given]).all()


# ----------------------------------------------------------------------------------------------------------------------
# benchmarks/bench_gpu.py, on the CPU
# ----------------------------------------------------------------------------------------------------------------------

def test_bench_gpu_dry_run_on_cpu(tmp_path, capsys):
    """--device cpu --tiny runs the benchmark's code path end to end and writes consistent numbers."""
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["device"] and res["dtype"] == "fp32" and res["matmul_peak"]["flops_per_s"] > 0
    assert "missing" in res["datasheet_peak"]  # no datasheet MFU on a CPU
    (row,) = res["models"]
    assert row["preset"] == "cpu-tiny" and row["tokens"] == 2 * 4 * 8 * 8  # batch x frames x (16 / 2)^2
    for impl in ("ours", "official"):
        r = row[impl]
        assert len(r["step_s"]) == 2 and r["step_s_median"] == pytest.approx(float(np.median(r["step_s"])))
        assert r["mfu_matmul"] == pytest.approx(row["flops_per_step"] / r["step_s_median"]
                                                / res["matmul_peak"]["flops_per_s"])
        assert "mfu_datasheet" not in r and math.isfinite(r["loss"])
    assert row["speedup"] == pytest.approx(row["official"]["step_s_median"] / row["ours"]["step_s_median"])
    printed = capsys.readouterr().out
    assert "speed-up" in printed and f"wrote {out}" in printed


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"), ("NVIDIA L40S", "L40S"), ("NVIDIA H100 PCIe", None), ("NVIDIA H200 NVL", None),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_datasheet_peak_by_device_name(name, key):
    found, value = bench_gpu.datasheet_peak(name)
    assert found == key
    assert (value > 1e14) if key else (name in value)


def test_bench_gpu_cli_help_and_errors(monkeypatch, capsys):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--tiny" in out.stdout and "PRESET:BATCH" in out.stdout
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main(["--model", "VDT-S/2"])
    assert exit_.value.code == 2 and "PRESET:BATCH" in capsys.readouterr().err
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--model", "VDT-XL/9:2"]) == 2
    assert "model.preset" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_cuda_gate_skips_or_fails_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("VDT_REQUIRE_GPU", raising=False)
    cuda_gate(marked=False)  # unmarked tests run anywhere
    with pytest.raises(pytest.skip.Exception, match="needs a CUDA GPU"):
        cuda_gate(marked=True)
    monkeypatch.setenv("VDT_REQUIRE_GPU", "1")
    with pytest.raises(pytest.fail.Exception, match="VDT_REQUIRE_GPU=1"):
        cuda_gate(marked=True)


def test_bench_gpu_records_out_of_memory_and_fails(tmp_path, monkeypatch):
    """A design that runs out of GPU memory is recorded with a hint, the other still timed, and the exit code is 1."""
    time_impl = bench_gpu.time_impl

    def official_oom(overrides, batch, impl, *args):
        if impl == "official":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return time_impl(overrides, batch, impl, *args)

    monkeypatch.setattr(bench_gpu, "time_impl", official_oom)
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--steps", "1", "--out", str(out)]) == 1
    (row,) = json.loads(out.read_text())["models"]
    assert "cpu-tiny:1" in row["official"]["error"] and row["ours"]["step_s_median"] > 0 and "speedup" not in row
