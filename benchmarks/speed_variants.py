"""Speed ideas for our training step that were measured and not adopted, reproducible side by side.

    python benchmarks/speed_variants.py [--steps 5] [--variants temporal-math sigmoid-gelu both] [--pieces]

Each variant is our model with one change, at the issue's config (see bench_model_speed.py). The official
design, our model and the variants share inputs and weights and alternate step by step in one process, so
background load hits all alike. Prints median step times and each one's speed-up over the official design.

Variants:
- ``temporal-math``: the 16-frame temporal attention through SDPA's math backend (batched matmuls)
  instead of its flash CPU kernel.
- ``sigmoid-gelu``: the tanh-GELU written as ``x * sigmoid(2u)`` (the same function to float32 rounding)
  and compiled alone with inductor (needs a C++ compiler; the first steps compile).
- ``both``: the two together.

--pieces first times the two changed pieces alone (forward + backward, one block's worth of tensors).
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_model_speed import ISSUE_CONFIG, official_like, time_side_by_side, train_step  # noqa: E402
from vdt.config import ModelConfig  # noqa: E402
from vdt.model import VDT, VDTBlock, gated_linear, modulated_linear  # noqa: E402

GELU_C = 2 * math.sqrt(2 / math.pi)


def gelu_sigmoid(h):
    """tanh-GELU as h * sigmoid(2u), u = sqrt(2/pi) (h + 0.044715 h^3): 0.5 (1 + tanh u) = sigmoid(2u)."""
    return h * torch.sigmoid(GELU_C * (h + 0.044715 * h * h * h))


class TemporalMathBlock(VDTBlock):
    def temporal(self, x):
        with sdpa_kernel(SDPBackend.MATH):
            return super().temporal(x)


class SigmoidGeluBlock(VDTBlock):
    gelu = None  # set on first use: compiling at import would need the compiler even without this variant

    def ffn(self, x, shift, scale, gate):
        if SigmoidGeluBlock.gelu is None:
            SigmoidGeluBlock.gelu = torch.compile(gelu_sigmoid, dynamic=False)
        h = modulated_linear(x, self.mlp.fc1, shift, scale)  # (B, L, rD)
        return gated_linear(SigmoidGeluBlock.gelu(h), self.mlp.fc2, gate)


class BothBlock(TemporalMathBlock, SigmoidGeluBlock):
    pass


VARIANTS = {"temporal-math": TemporalMathBlock, "sigmoid-gelu": SigmoidGeluBlock, "both": BothBlock}


def variant_model(ours: VDT, block_class) -> VDT:
    """A copy of ``ours`` (same weights) whose blocks run ``block_class``'s methods."""
    model = VDT(ours.cfg)
    model.load_state_dict(ours.state_dict())
    for block in model.blocks:
        block.__class__ = block_class  # same parameters, one method changed
    return model


def fwd_bwd_ms(fn, inputs, repeats=7) -> float:
    """Median milliseconds of fn(*inputs) forward and backward against a fixed random gradient."""
    grad = torch.randn_like(fn(*inputs))
    torch.autograd.grad(fn(*inputs), inputs, grad)  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.autograd.grad(fn(*inputs), inputs, grad)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def time_pieces(cfg: ModelConfig, batch: int) -> None:
    """The changed pieces alone: temporal attention (flash vs math) and the GELU (aten vs compiled sigmoid)."""
    T, N, nh = cfg.frames, (cfg.size // cfg.patch) ** 2, cfg.heads
    qkv = [torch.randn(batch, N * nh, T, cfg.hidden // nh, requires_grad=True) for _ in range(3)]

    def math_sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v)

    flash, math_ms = fwd_bwd_ms(F.scaled_dot_product_attention, qkv), fwd_bwd_ms(math_sdpa, qkv)
    print(f"temporal attention {tuple(qkv[0].shape)}: SDPA default {flash:.1f} ms, math backend {math_ms:.1f} ms "
          f"(fwd+bwd, one block)")
    h = [torch.randn(batch, T * N, int(cfg.hidden * cfg.mlp_ratio), requires_grad=True)]
    aten = fwd_bwd_ms(lambda x: F.gelu(x, approximate="tanh"), h)
    compiled = fwd_bwd_ms(torch.compile(gelu_sigmoid, dynamic=False), h)
    err = (gelu_sigmoid(h[0]) - F.gelu(h[0], approximate="tanh")).abs().max().item()
    print(f"GELU {tuple(h[0].shape)}: aten tanh-GELU {aten:.1f} ms, compiled sigmoid form {compiled:.1f} ms "
          f"(fwd+bwd, one block; max |difference| {err:.1e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model, after two warm-up steps")
    parser.add_argument("--batch", type=int, default=8, help="videos per step")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--pieces", action="store_true", help="first time the changed pieces alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(**ISSUE_CONFIG)
    if args.pieces:
        time_pieces(cfg, args.batch)
    x = torch.randn(args.batch, cfg.frames, cfg.channels, cfg.size, cfg.size)
    t = torch.randint(0, 1000, (args.batch,))
    ours = VDT(cfg)
    models = {"ours": ours, **{v: variant_model(ours, VARIANTS[v]) for v in args.variants}}
    steps = {name: train_step(m, x, t) for name, m in models.items()}
    steps["official"] = train_step(official_like(cfg), x, t, torch.zeros(args.batch, dtype=torch.long))
    times = time_side_by_side(steps, steps=args.steps, warmup=2)
    wall = {name: statistics.median(w for w, _ in ts) for name, ts in times.items()}
    print(f"threads {torch.get_num_threads()}, fp32, batch {args.batch}, median of {args.steps} interleaved steps:")
    for name, seconds in wall.items():
        print(f"  {name:14s} {seconds:.3f} s/step  {wall['official'] / seconds:.3f}x the official design")


if __name__ == "__main__":
    main()
