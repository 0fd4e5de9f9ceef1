"""Measure one config's training-step memory in this (fresh) process; prints one JSON line.

    python -m benchmarks.memprobe --impl ours --batch 8 --steps 2 model.preset=cpu-small data.frames=16

baseline_rss_mb: RSS once torch, the model, AdamW and the batch exist. peak_rss_mb: the kernel's high-water mark
(VmHWM) after ``--steps`` training steps. step_mem_mb = peak - baseline: activations, gradients and AdamW state.
"""

import argparse
import json

from benchmarks.machine import peak_rss_mb, rss_mb
from benchmarks.steps import IMPLS, build_step, step_config


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memprobe", description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", choices=IMPLS, default="ours")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args(argv)
    step = build_step(step_config(args.overrides), args.batch, args.impl)
    base = rss_mb()
    for _ in range(args.steps):
        step()
    peak = peak_rss_mb()
    print(json.dumps({"baseline_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
                      "step_mem_mb": round(peak - base, 1), "memory": "cpu rss, fresh process"}))


if __name__ == "__main__":
    main()
