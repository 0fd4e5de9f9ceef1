"""How a training step's time and memory grow with frames T and frame size (cpu-small, batch 2).

Two series share the point (16 frames, 32 px): T in {4, 8, 16, 32} at 32x32, and sides {16, 32, 64} at 16 frames.
benchmarks/scaling_plot.py fits the exponent of step time in T (log-log least squares) and draws the plot.
Factorised attention costs T x N^2 (spatial) + N x T^2 (temporal) per block, so with T << N it grows about linearly
in T and about quadratically in the spatial tokens N once attention dominates.
"""

import pytest

from benchmarks.steps import bench_step

FRAMES = (4, 8, 16, 32)
SIDES = (16, 32, 64)
POINTS = sorted({(t, 32) for t in FRAMES} | {(16, s) for s in SIDES})
BATCH = 2


@pytest.mark.benchmark(group="scaling: cpu-small, batch 2")
@pytest.mark.parametrize("frames,side", POINTS, ids=[f"T{t}-{s}px" for t, s in POINTS])
def test_scaling(benchmark, dev, peak, frames, side):
    bench_step(benchmark, dev, peak, ("model.preset=cpu-small", f"data.frames={frames}", f"data.size={side}"), BATCH,
               rounds=3 if frames * side * side <= 16 * 32 * 32 else 2)
    benchmark.extra_info.update(frames=frames, side=side, spatial_tokens=(side // 2) ** 2,
                                series=[s for s, ok in (("T", side == 32), ("side", frames == 16)) if ok])
