"""One training step of VDT-S/2 and VDT-L/2 on a GPU, ours against the official design, with MFU.

    python benchmarks/bench_gpu.py                          # what `nox -s gpu` runs (about a minute on an H200)
    python benchmarks/bench_gpu.py --model VDT-L/2:4 --steps 20
    python benchmarks/bench_gpu.py --device cpu --tiny --out /tmp/gpu.json   # dry run of the same code on the CPU

A step is benchmarks/steps.py's: forward, masked diffusion loss, backward and AdamW on a fixed random batch, in bf16
autocast with SDPA restricted to its fused kernels (benchmarks/machine.py ``compute_context``: a fallback to the
math kernel is an error). The clips have the paper's latent geometry: 16 frames of 256x256 RGB through the SD VAE,
so the model sees 4 x 32 x 32 latents, 16 x 256 = 4,096 tokens per clip. Both designs get the same config, batch
and inputs; each is warmed up, then timed step by step, the clock read after ``torch.cuda.synchronize``; the median
counts.

MFU = ``vdt.model.count_flops(cfg.model, batch)`` (forward + backward; the official design computes the same
function) / median step seconds, against two peaks: the card's dense bf16 tensor-core peak from its datasheet
(``ablations.cost.GPU_PEAK_FLOPS``) and the best bf16 matmul rate measured here (``benchmarks.machine.matmul_peak``,
8192^2). Printed, and written as JSON to ``results/bench/<machine-id>/gpu.json`` (``--out`` to change).

``--tiny`` swaps in a CPU-sized config, two steps and a small matmul peak, so the whole script runs on the CPU in
seconds (tests/test_gpu.py does, on every ``nox -s tests``); it writes only where ``--out`` says.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/bench_gpu.py` puts benchmarks/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ablations.cost import GPU_PEAK_FLOPS  # noqa: E402
from benchmarks.bench_model_speed import timed  # noqa: E402
from benchmarks.machine import device_name, dtype_name, machine_id, matmul_peak  # noqa: E402
from benchmarks.steps import IMPLS, build_step, check_loss, clip_tokens, step_config  # noqa: E402
from vdt.config import ConfigError  # noqa: E402
from vdt.model import count_flops  # noqa: E402

# The paper's clips: 16 frames of 256x256 RGB, encoded by the SD VAE to 4 x 32 x 32 (the VAE itself is not run).
PAPER_CLIPS = ("data.autoencoder=sd-vae", "data.size=256", "data.frames=16")
# (preset, batch): VDT-L/2's batch 2 (8,192 tokens) leaves room for the official design's extra copies.
MODELS = (("VDT-S/2", 8), ("VDT-L/2", 2))
# --tiny: the same code on a CPU-sized model and clip.
TINY_CLIPS = ("data.size=16", "data.frames=4")
TINY_MODELS = (("cpu-tiny", 2),)
# Datasheet peaks that hold for the SXM card only: the PCIe and NVL cards run slower clocks.
SXM_ONLY = ("H100", "H200")


def datasheet_peak(name: str) -> tuple:
    """(datasheet key, dense bf16 FLOP/s) for a device name, or (None, reason) when ablations/cost.py has none."""
    upper = name.upper()
    for key, flops in GPU_PEAK_FLOPS.items():
        if key in upper:
            if key in SXM_ONLY and ("PCIE" in upper or "NVL" in upper):
                return None, f"{name}: GPU_PEAK_FLOPS holds the {key} SXM peak; this card's is lower"
            return key, flops
    return None, f"{name}: no datasheet peak in ablations/cost.py GPU_PEAK_FLOPS ({', '.join(GPU_PEAK_FLOPS)})"


def parse_model(spec: str) -> tuple:
    """'VDT-L/2:4' -> ('VDT-L/2', 4)."""
    preset, sep, batch = spec.rpartition(":")
    if not sep or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"--model {spec!r}: expected PRESET:BATCH, for example VDT-L/2:4")
    return preset, int(batch)


def time_impl(overrides, batch: int, impl: str, dev: torch.device, steps: int, warmup: int) -> dict:
    """Median seconds of one training step of ``impl`` (after ``warmup`` untimed steps), its loss and peak memory."""
    step = build_step(step_config(overrides), batch, impl, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    times = [timed(step, dev)[0] for _ in range(steps)]
    loss = step()
    check_loss(loss)
    median = statistics.median(times)
    return {"step_s_median": median, "step_s": times, "tokens_per_s": step.tokens / median, "loss": float(loss),
            "params": sum(p.numel() for p in step.model.parameters()),
            "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}


def bench_model(preset: str, batch: int, clips, dev, steps: int, warmup: int, peaks: dict) -> dict:
    """Both designs at one preset and batch; MFU against every peak in ``peaks`` ({name: FLOP/s})."""
    overrides = (f"model.preset={preset}", *clips)
    cfg = step_config(overrides)
    flops = float(count_flops(cfg.model, batch))
    row = {"preset": preset, "batch": batch, "tokens": clip_tokens(cfg, batch), "flops_per_step": flops,
           "config": " ".join(overrides)}
    for impl in IMPLS:
        try:
            r = time_impl(overrides, batch, impl, dev, steps, warmup)
        except torch.cuda.OutOfMemoryError:
            r = {"error": f"CUDA out of memory at batch {batch}; try --model {preset}:{max(1, batch // 2)}"}
        else:
            r.update({f"mfu_{name}": flops / r["step_s_median"] / peak for name, peak in peaks.items() if peak})
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        row[impl] = r
    if all("step_s_median" in row[impl] for impl in IMPLS):
        row["speedup"] = row["official"]["step_s_median"] / row["ours"]["step_s_median"]
    return row


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run(dev: torch.device, models, clips, steps: int, warmup: int, matmul_sizes=None) -> dict:
    """The whole benchmark as one JSON-able dict."""
    measured = matmul_peak(dev, sizes=matmul_sizes)
    key, sheet = datasheet_peak(device_name(dev)) if dev.type == "cuda" else (None, "not a GPU")
    peaks = {"datasheet": sheet if key else None, "matmul": measured["flops_per_s"]}
    return {
        "machine_id": machine_id(dev), "device": device_name(dev), "dtype": dtype_name(dev),
        "attention": "SDPA restricted to flash / mem-efficient / cuDNN" if dev.type == "cuda" else "default",
        "torch": torch.__version__, "cuda": torch.version.cuda, "git_commit": git_commit(),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps": steps, "warmup": warmup,
        "matmul_peak": measured,
        "datasheet_peak": {"gpu": key, "flops_per_s": sheet, "source": "ablations/cost.py GPU_PEAK_FLOPS, dense bf16"}
        if key else {"missing": sheet},
        "flops": "vdt.model.count_flops(cfg.model, batch): forward + backward, backward = 2x forward",
        "models": [bench_model(preset, batch, clips, dev, steps, warmup, peaks) for preset, batch in models],
    }


def print_report(res: dict) -> None:
    sheet = res["datasheet_peak"]
    print(f"{res['device']}, {res['dtype']}, attention: {res['attention']}, torch {res['torch']}")
    print(f"matmul peak {res['matmul_peak']['flops_per_s'] / 1e12:.1f} TFLOP/s "
          f"({res['matmul_peak']['n']}^2 {res['matmul_peak']['dtype']}); datasheet: "
          + (f"{sheet['flops_per_s'] / 1e12:.0f} TFLOP/s ({sheet['gpu']}, dense bf16)" if "gpu" in sheet
             else sheet["missing"]))
    for row in res["models"]:
        print(f"{row['preset']} batch {row['batch']} ({row['tokens']} tokens, {row['flops_per_step'] / 1e12:.2f} "
              f"TFLOP per step)")
        for impl in IMPLS:
            r = row[impl]
            if "error" in r:
                print(f"  {impl:9s} {r['error']}")
                continue
            mfu = "  ".join(f"MFU {k.removeprefix('mfu_')} {v:.1%}" for k, v in r.items() if k.startswith("mfu_"))
            mem = f"  peak {r['peak_mem_mb'] / 1024:.1f} GiB" if r["peak_mem_mb"] is not None else ""
            print(f"  {impl:9s} {r['step_s_median'] * 1e3:8.1f} ms/step  {r['tokens_per_s']:,.0f} tokens/s  "
                  f"{mfu}{mem}")
        if "speedup" in row:
            print(f"  speed-up {row['speedup']:.2f}x (official / ours, median step)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_gpu.py", description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for what a step is and how MFU is computed.")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only makes sense with --tiny)")
    p.add_argument("--model", type=parse_model, action="append", metavar="PRESET:BATCH",
                   help="preset and batch to time (repeatable; default VDT-S/2:8 and VDT-L/2:2)")
    p.add_argument("--steps", type=int, help="timed steps per design (default 10; --tiny 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3; --tiny 1)")
    p.add_argument("--tiny", action="store_true", help="a CPU-sized config: a dry run of this script's logic")
    p.add_argument("--out", type=Path, help="JSON file (default results/bench/<machine-id>/gpu.json; --tiny: none)")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU (dry run on the CPU: --device cpu --tiny)",
              file=sys.stderr)
        return 2
    models = args.model or (TINY_MODELS if args.tiny else MODELS)
    clips = TINY_CLIPS if args.tiny else PAPER_CLIPS
    try:
        for preset, _ in models:
            step_config((f"model.preset={preset}", *clips))
    except ConfigError as e:
        print(f"error: --model: {e}", file=sys.stderr)
        return 2
    steps = args.steps if args.steps is not None else (2 if args.tiny else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    if steps < 1 or warmup < 0:
        print(f"error: --steps must be >= 1 and --warmup >= 0 (got {steps}, {warmup})", file=sys.stderr)
        return 2
    res = run(dev, models, clips, steps=steps, warmup=warmup, matmul_sizes=(256,) if args.tiny else None)
    print_report(res)
    out = args.out or (None if args.tiny else ROOT / "results" / "bench" / res["machine_id"] / "gpu.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
    failed = [f"{row['preset']} {impl}" for row in res["models"] for impl in IMPLS if "error" in row[impl]]
    if failed:
        print(f"error: no timing for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
