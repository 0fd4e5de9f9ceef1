"""vdt's CPU kernels against PyTorch's, op by op, at the comparison config (one block's worth of work).

    python benchmarks/bench_kernels.py [--threads 2] [--repeats 5] [--config comparison|tiny]

--config: the comparison config (depth-4/hidden-128, 32-wide heads, 16 frames of 32x32), or the tiny sweep
profile's training batch (cpu-tiny: hidden 64, 16-wide heads; 16 clips of 9 frames of 16x16).

For each op, forward and backward, median milliseconds of `repeats` calls after one warm-up, the
candidates alternating call by call:
- spatial attention: (B*T, heads, N, hd) strided views of one qkv, as VDTBlock.spatial passes them; vdt's
  kernel against SDPA's math backend (what vdt uses where N <= 64 without the kernels) and its flash CPU kernel;
- temporal attention: (B, N*heads, T, hd) views of (B, T, N, D), as VDTBlock.temporal passes them; vdt's
  kernel against SDPA's math backend (what vdt used before, faster there than flash) and flash;
- the tanh-GELU on the MLP's (B, T*N, 4D) activation: vdt's kernel against aten's.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel

from vdt import cpu_kernels


def fwd_bwd_ms(fn, inputs, repeats):
    """[(forward ms, backward ms)] of fn(*inputs) and its backward against a fixed random gradient."""
    grad = None
    times = []
    for _ in range(repeats + 1):
        leaves = [x.detach().requires_grad_() for x in inputs]
        t0 = time.perf_counter()
        out = fn(*leaves)
        t1 = time.perf_counter()
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad)
        times.append(((t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3))
    return times[1:]


def compare(title, candidates, inputs, repeats):
    """Time each candidate, alternating call by call, and print the medians."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name] += fwd_bwd_ms(fn, inputs, 1)
    print(f"\n{title}")
    for name, ts in times.items():
        f, b = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        print(f"  {name:24s} forward {f:7.1f} ms  backward {b:7.1f} ms  total {f + b:7.1f} ms")


CONFIGS = {  # name -> (B, T, N, D, heads)
    "comparison": (8, 16, 256, 128, 4),  # depth-4/hidden-128: 16 frames of 32x32, patch 2
    "tiny": (16, 9, 64, 64, 4),  # the tiny profile's step: cpu-tiny, batch 16, 9 frames of 16x16, patch 2
}


def math_sdpa(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per candidate")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="comparison",
                        help="the shapes: the comparison config, or the tiny profile's batch (default comparison)")
    args = parser.parse_args(argv)
    if not cpu_kernels.available():
        raise SystemExit("vdt's CPU kernels are not available here (see the warning above, or VDT_CPU_KERNELS)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, N, D, heads = CONFIGS[args.config]
    print(f"threads {torch.get_num_threads()}, fp32; B {B}, T {T}, N {N}, D {D}, heads {heads} (hd {D // heads})")

    def spatial(attend):
        def run(qkv):  # (B, T*N, 3D) -> (B, T*N, D)
            q, k, v = rearrange(qkv, "b (t n) (three h d) -> three (b t) h n d", t=T, three=3, h=heads)
            return rearrange(attend(q, k, v), "(b t) h n d -> b (t n) (h d)", t=T)
        return run

    def temporal(attend):
        def run(q, k, v):  # (B, T, N, D) each -> (B, T, N, D)
            q, k, v = (x.view(B, T, N * heads, D // heads).transpose(1, 2) for x in (q, k, v))
            return attend(q, k, v).transpose(1, 2).reshape(B, T, N, D)
        return run

    compare("spatial attention (per block)",
            {"vdt kernel": spatial(cpu_kernels.attention), "SDPA math backend": spatial(math_sdpa),
             "SDPA (flash)": spatial(F.scaled_dot_product_attention)},
            [torch.randn(B, T * N, 3 * D)], args.repeats)
    compare("temporal attention (per block)",
            {"vdt kernel": temporal(cpu_kernels.attention), "SDPA math backend": temporal(math_sdpa),
             "SDPA (flash)": temporal(F.scaled_dot_product_attention)},
            [torch.randn(B, T, N, D) for _ in range(3)], args.repeats)
    compare("tanh-GELU on (B, T*N, 4D) (per block)",
            {"vdt kernel": cpu_kernels.gelu_tanh, "aten": lambda h: F.gelu(h, approximate="tanh")},
            [torch.randn(B, T * N, 4 * D)], args.repeats)


if __name__ == "__main__":
    main()
