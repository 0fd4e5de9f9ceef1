"""Training-step speed of our VDT against the official architecture, side by side on the CPU.

    python benchmarks/bench_model_speed.py [--threads 2] [--steps 5] [--compile] [--profile] [--peak-gflops G]
                                           [--official-code DIR]

--official-code DIR times the official code itself: ``models.py`` of a checkout of the public RERV/VDT repository
(it imports timm, ``pip install timm``), its ``VDT`` class called as its own sampler calls it, ``model(x, t)``.
Without it the official side is this repository's re-implementation of that architecture
(``tests/official_reference.py``), and the printout says so. The printout names both commits and whether the
trees have uncommitted changes, so a figure can be traced to the code that made it.

One step is a full AdamW update: forward, MSE loss, backward, optimizer step. Both models get the same
config (the comparison config: depth 4, hidden 128, 4 heads, patch 2, 16 frames of 32x32x3, batch 8 = 32,768
tokens), the same inputs, and alternate step by step, so background load hits both alike. Prints the
median step times, the speed-up and the MFU, with the matmul peak it is against beside each MFU: the best of 20
2048² fp32 matmuls measured before the steps (with the load average then), or a peak measured on the idle machine
(--peak-gflops, or $VDT_MATMUL_PEAK_GFLOPS). A peak measured under load is low and makes every MFU too high.

--compile wraps both models in torch.compile (the two untimed warm-up steps compile: minutes on a CPU).
--profile then profiles one more step of each and prints where the time goes, op by op.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.machine import PEAK_ENV_VAR, peak_text
from benchmarks.machine import matmul_peak as measure_peak
from vdt.config import ModelConfig
from vdt.model import VDT, count_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the official re-implementation
from official_reference import OfficialVDT  # noqa: E402

ISSUE_CONFIG = dict(preset="cpu-small", depth=4, hidden=128, heads=4, patch=2, frames=16, size=32, channels=3)


def official_like(cfg: ModelConfig) -> OfficialVDT:
    """The official architecture at the same size (num_classes=1, called with y=0 as its sampler does)."""
    return OfficialVDT(input_size=cfg.size, patch_size=cfg.patch, in_channels=cfg.channels, hidden_size=cfg.hidden,
                       depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, num_classes=1,
                       learn_sigma=cfg.learn_sigma, num_frames=cfg.frames)


def official_code(path: Path, cfg: ModelConfig):
    """The ``VDT`` of the official ``models.py`` in ``path``, at cfg's size (num_classes=1: it feeds y = 0 itself)."""
    models_py = Path(path) / "models.py"
    if not models_py.is_file():
        raise SystemExit(f"--official-code: no models.py in {path} (a checkout of the public RERV/VDT repository)")
    spec = importlib.util.spec_from_file_location("rerv_vdt_models", models_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports timm: pip install timm
    return module.VDT(input_size=cfg.size, patch_size=cfg.patch, in_channels=cfg.channels, hidden_size=cfg.hidden,
                      depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, num_classes=1,
                      learn_sigma=cfg.learn_sigma, num_frames=cfg.frames)


def git_state(path, *files) -> str:
    """'<commit> (clean)' or '<commit> + uncommitted changes' of the git tree at path (or of just ``files``)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True).stdout
    try:
        commit = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *files).strip())
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout (commit unknown)"
    return f"{commit} + uncommitted changes" if dirty else f"{commit} (clean)"


def train_step(model, x, t, *args):
    """A closure doing one AdamW step of model(x, t, *args) towards a fixed random target."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    target = None

    def step():
        nonlocal target
        out = model(x, t, *args)  # (B, T, C_out, H, W)
        if target is None:
            target = torch.randn_like(out)
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, device="cpu") -> tuple:
    """(wall seconds, process CPU seconds) of one call, synchronising the device before each clock read."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_train_step(model, x, t, steps=5, warmup=1, args=()) -> list:
    """Wall seconds of each of `steps` AdamW steps of model(x, t, *args), after `warmup` untimed ones."""
    step = train_step(model, x, t, *args)
    for _ in range(warmup):
        step()
    return [timed(step, x.device)[0] for _ in range(steps)]


def time_side_by_side(steps_by_name: dict, steps=5, warmup=1) -> dict:
    """{name: step closure} -> {name: [(wall, cpu) seconds]}, alternating, so drifting load hits all alike."""
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            times[name].append(timed(step))
    return times


def matmul_peak(given_gflops: float | None = None) -> dict:
    """The fp32 matmul peak MFU is against: given (measured idle), else the best of 20 2048² matmuls now."""
    if given_gflops:
        return {"flops_per_s": given_gflops * 1e9, "n": 2048, "dtype": "float32", "given": True,
                "source": "--peak-gflops"}
    return measure_peak(torch.device("cpu"), sizes=(2048,), reps=20)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model, after one warm-up step")
    parser.add_argument("--batch", type=int, default=8, help="videos per step")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models before timing")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one profiled step of each")
    parser.add_argument("--official-code", type=Path, metavar="DIR",
                        help="time the official models.py in DIR (a RERV/VDT checkout; needs timm) instead of the "
                             "re-implementation in tests/official_reference.py")
    parser.add_argument("--peak-gflops", type=float, help="the fp32 matmul peak for MFU, measured on the idle "
                        f"machine (also ${PEAK_ENV_VAR}); default: measured now, before the steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak(args.peak_gflops)  # before the models exist: their memory doesn't slow it
    mfu_of = peak_text(peak)
    cfg = ModelConfig(**ISSUE_CONFIG)
    x = torch.randn(args.batch, cfg.frames, cfg.channels, cfg.size, cfg.size)
    t = torch.randint(0, 1000, (args.batch,))
    ours = VDT(cfg)
    official = official_code(args.official_code, cfg) if args.official_code else official_like(cfg)
    if args.compile:
        ours, official = torch.compile(ours), torch.compile(official)
    y = torch.zeros(args.batch, dtype=torch.long)
    official_args = () if args.official_code else (y,)  # the official forward builds y = 0 itself
    steps = {"ours": train_step(ours, x, t), "official": train_step(official, x, t, *official_args)}
    times = time_side_by_side(steps, steps=args.steps, warmup=2 if args.compile else 1)  # compile: 2nd call recompiles
    flops = count_flops(cfg, args.batch)
    tokens = args.batch * cfg.frames * (cfg.size // cfg.patch) ** 2
    print(f"device cpu, threads {torch.get_num_threads()}, fp32{', torch.compile' if args.compile else ''}, "
          f"batch {args.batch} ({tokens} tokens), "
          f"depth {cfg.depth}, hidden {cfg.hidden}, heads {cfg.heads}; {flops / 1e9:.1f} GFLOP per step")
    print(f"MFU is {mfu_of}")
    print(f"ours: vdt-bench {git_state(Path(__file__).resolve().parents[1])}")
    if args.official_code:
        import timm
        state = git_state(args.official_code, "models.py")
        print(f"official: the official models.py in {args.official_code}, RERV/VDT {state}, timm {timm.__version__}")
    else:
        print("official: vdt-bench's re-implementation of the official architecture (tests/official_reference.py), "
              "not the official code")
    print(f"load average before the steps: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    wall = {name: statistics.median(w for w, _ in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(c for _, c in ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name:9s} median {wall[name]:.3f} s/step (CPU {cpu[name]:.3f} s)  "
              f"MFU {flops / wall[name] / peak['flops_per_s']:.1%} {mfu_of}  wall {[round(w, 2) for w, _ in ts]}")
    print(f"speed-up {wall['official'] / wall['ours']:.2f}x (median wall), {cpu['official'] / cpu['ours']:.2f}x "
          "(median process CPU time: steadier on a shared machine, with OMP_WAIT_POLICY=PASSIVE)")
    if args.profile:
        for name, step in steps.items():
            print_profile(name, step)


# Where a step's op time goes: the first matching group, by op name; the rest is "other".
OP_GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution"),
    "attention kernels": ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention",
                          "vdt::cpu_attention", "GeneratedBackwardFor_vdt_cpu_attention"),  # vdt's kernel, both ways
    "GELU": ("aten::gelu", "vdt::gelu_tanh", "GeneratedBackwardFor_vdt_gelu_tanh"),
    "copies, cats (rearranges)": ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous"),
    "layer norm": ("aten::native_layer_norm",),
    "elementwise (modulation, residual, grads)": ("aten::mul", "aten::add", "aten::sum", "aten::fill_",
                                                   "aten::div", "aten::sub"),
}


def print_profile(name, step, rows=12):
    """Profile one step and print its op time by group, then its most expensive ops with their input shapes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    groups = dict.fromkeys([*OP_GROUPS, "other"], 0.0)
    for e in events:
        group = next((g for g, prefixes in OP_GROUPS.items() if e.key.startswith(prefixes)), "other")
        groups[group] += e.self_cpu_time_total
    print(f"\n{name}: {total / 1e6:.2f} s of op time (self CPU, all threads' work counted once) in one step")
    for group, us in groups.items():
        print(f"  {us / total:6.1%} {us / 1e6:6.2f} s  {group}")
    print(f"  top {rows} ops:")
    for e in events[:rows]:
        shapes = ", ".join(str(list(s)) for s in e.input_shapes if s)
        print(f"  {e.self_cpu_time_total / total:6.1%} {e.self_cpu_time_total / 1e3:8.1f} ms {e.count:4d}x  "
              f"{e.key[:44]:44s} {shapes[:70]}")


if __name__ == "__main__":
    main()
