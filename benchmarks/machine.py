"""The machine a benchmark runs on: its id, the device and precision, the clock, memory, and the matmul peak.

MFU (model FLOPs utilisation) divides a model's FLOPs per second by ``matmul_peak``: the best rate of a large dense
matmul measured on the same device, in the same precision. It is an achieved peak, not the data sheet's, so an MFU of
1.0 means "as fast as this machine multiplies big matrices". Measured under load, the peak comes out low and every MFU
too high, so a peak measured on the idle machine can be given in ``$VDT_MATMUL_PEAK_GFLOPS`` (then it is used as is);
otherwise it is measured in the session, with the load average beside it. ``peak_text`` says which, next to each MFU.
"""

import contextlib
import os
import platform
import re
import resource
import time
from pathlib import Path

import psutil
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
FUSED_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]


def device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_id(dev: torch.device) -> str:
    """A stable, readable folder name: ``cuda-<gpu name>`` or ``cpu-<n>core-<cpu model>`` (no host name)."""
    if dev.type == "cuda":
        return f"cuda-{slug(torch.cuda.get_device_name(dev))}"
    return f"cpu-{os.cpu_count()}core-{slug(cpu_model())}"


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def sync(dev: torch.device) -> None:
    """Wait for queued device work, so the clock read next covers it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def dtype_name(dev: torch.device) -> str:
    return "bf16-autocast" if dev.type == "cuda" else "fp32"


def compute_context(dev: torch.device):
    """bf16 autocast and fused attention kernels only (flash / mem-efficient / cuDNN) on CUDA; fp32 on the CPU.

    Restricting SDPA to the fused backends makes a silent fallback to the math kernel an error instead."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel(FUSED_ATTENTION))
    return stack


def env_info(dev: torch.device, batch: int | None = None) -> dict:
    """What every benchmark records in extra_info: device, dtype, batch, threads, torch version, and the 1-minute
    load average when it finished (other processes on the machine slow a CPU benchmark down)."""
    info = {"device": device_name(dev), "dtype": dtype_name(dev), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_avg_1m": round(os.getloadavg()[0], 2)}
    if batch is not None:
        info["batch"] = batch
    return info


def record(benchmark, dev: torch.device, batch: int | None = None, **info) -> None:
    """Merge the environment and ``info`` into the benchmark's extra_info."""
    benchmark.extra_info.update(env_info(dev, batch))
    benchmark.extra_info.update(info)


def median_s(benchmark) -> float:
    """The median seconds per round of a finished benchmark."""
    return float(benchmark.stats.stats.median)


# ----------------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------------

def rss_mb() -> float:
    """This process's resident set size now, MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size (the kernel's high-water mark), MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own address space. Not ru_maxrss: a
    child started by fork + exec inherits its parent's maximum there, so a probe launched from a big process would
    report the parent's peak. Elsewhere, ru_maxrss (KiB on Linux, bytes on macOS; only the Linux case is used)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------------------
# The matmul peak
# ----------------------------------------------------------------------------------------------------------------------

PEAK_ENV_VAR = "VDT_MATMUL_PEAK_GFLOPS"


def peak_text(peak: dict) -> str:
    """What an MFU is against, printed beside it: 'against a 136 GFLOP/s fp32 matmul peak (2048², best of 20 calls,
    load 0.1)', or '(given in $VDT_MATMUL_PEAK_GFLOPS)'."""
    how = (f"given in {peak.get('source', '$' + PEAK_ENV_VAR)}" if peak.get("given") else
           f"{peak['n']}², best of {peak['calls']} calls, 1-min load {peak['load_avg_1m']:.1f}")
    return f"against a {peak['flops_per_s'] / 1e9:.0f} GFLOP/s {peak['dtype']} matmul peak ({how})"


def refresh_peak(peak: dict, dev: torch.device) -> dict:
    """Re-measure the peak at the largest size (a couple of calls) and keep the best rate seen in the session.

    Called before each training benchmark: on a machine shared with other processes, a peak measured once at the
    start can be slower than the machine is later, and MFU would exceed 100%. A given peak stays."""
    if peak.get("given"):
        return peak
    now = matmul_peak(dev, sizes=(peak["n"],), reps=2)
    if now["flops_per_s"] > peak["flops_per_s"]:
        peak.update(now)
    return peak


def matmul_peak(dev: torch.device, sizes=None, reps: int | None = None) -> dict:
    """The best FLOP/s of square matmuls (2 n^3 FLOPs each) in the benchmarks' precision.

    CPU: fp32 at n = 1024 and 2048; CUDA: bf16 at n = 8192. One untimed call per size warms up; the fastest
    timed call wins, the clock being read after a device sync. ``$VDT_MATMUL_PEAK_GFLOPS`` (a peak measured on the
    idle machine) replaces the measurement."""
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if os.environ.get(PEAK_ENV_VAR):
        return {"flops_per_s": float(os.environ[PEAK_ENV_VAR]) * 1e9, "n": 2048, "dtype": str(dtype).removeprefix(
            "torch."), "given": True}
    sizes = sizes or ((8192,) if cuda else (1024, 2048))
    reps = reps or (20 if cuda else 4)
    best = {"flops_per_s": 0.0}
    for n in sizes:
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        torch.mm(a, b)
        sync(dev)
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(dev)
            rate = 2 * n**3 / (time.perf_counter() - t0)
            if rate > best["flops_per_s"]:
                best = {"flops_per_s": rate, "n": n, "dtype": str(dtype).removeprefix("torch.")}
    best.update(calls=reps, load_avg_1m=round(os.getloadavg()[0], 2))
    return best
