"""Fréchet Video Distance under the StyleGAN-V protocol, with its protocol recorded.

Protocol (StyleGAN-V, universome/stylegan-v `src/metrics/frechet_video_distance.py`, after the TF reference
google-research/google-research `frechet_video_distance/`; docs/metrics.md lists the sources):
    video (B, T, C, H, W), uint8 or float in [0, 1] (rounded to uint8 levels, not truncated)
    -> bilinear squash to 224x224 (align_corners=False, no antialias, no crop)
    -> 2x/255 - 1, i.e. [-1, 1]
    -> TF-Hub I3D, 400 logits averaged over time = the features
    -> float64 mean and unbiased (n-1) covariance, streamed through `FeatureStats`
    -> FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), scipy sqrtm, real part.

Comparability. Two statistics are compared only if their `FVDProtocol`s are equal:
frames, resolution, resize, scaling, features, covariance, weights SHA-256 and
implementation version. The number of videos N is recorded per side on the result but
not enforced, because real and generated sets legitimately differ in size; FD is biased
by N, so report values at equal N. How real clips were chosen (split, stride, seed, ...)
is the `source` of the real statistics: it is part of the real-statistics cache key and a
cached file whose source differs from the request is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from einops import rearrange

from metrics.weights import sha256_file

IMPL_VERSION = "vdt-bench-fvd/2"  # 2: I3D in channels-last (logits differ from 1 by float rounding)


# ----------------------------------------------------------------------------
# Protocol and result records
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FVDProtocol:
    """Everything that must match for two FVD statistics to be comparable."""

    weights_sha256: str
    num_frames: int = 16
    resolution: int = 224
    resize: str = "bilinear squash, align_corners=False, no antialias, no crop"
    scaling: str = "uint8 (floats rounded), 2x/255-1"
    features: str = "i3d logits 400, time mean"
    covariance: str = "float64, unbiased n-1"
    impl_version: str = IMPL_VERSION

    def __post_init__(self):
        if self.num_frames < 9:
            raise ValueError(f"FVDProtocol.num_frames must be >= 9 for I3D; got {self.num_frames}")
        if self.resolution <= 0:
            raise ValueError(f"FVDProtocol.resolution must be positive; got {self.resolution}")

    @classmethod
    def for_weights(cls, weights_path: str | os.PathLike, **kwargs) -> FVDProtocol:
        """The default protocol for the detector weights in `weights_path`."""
        return cls(weights_sha256=sha256_file(weights_path), **kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_same_protocol(a: FVDProtocol, b: FVDProtocol, what: str = "statistics") -> None:
    """Raise ValueError naming every field where two protocols differ."""
    diffs = [
        f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
        for f in dataclasses.fields(FVDProtocol)
        if getattr(a, f.name) != getattr(b, f.name)
    ]
    if diffs:
        raise ValueError(f"Refusing to compare {what} made under different protocols: " + "; ".join(diffs))


@dataclasses.dataclass(frozen=True)
class FVDResult:
    """An FVD value with the protocol that produced it (lower is better)."""

    value: float
    n_real: int
    n_fake: int
    protocol: FVDProtocol
    real_clips: Mapping  # how real clips were chosen, e.g. {"split": "test", "stride": 1, "seed": 0}
    fake_clips: Mapping | None = None  # how the second set was chosen, when it is not generated
    sqrtm_imag: float = 0.0  # |Im| / |Re| of sqrtm(sigma1 @ sigma2), dropped; above SQRTM_IMAG_TOL it was warned

    def to_dict(self) -> dict:
        return {
            "fvd": self.value,
            "n_real": self.n_real,
            "n_fake": self.n_fake,
            "real_clips": dict(self.real_clips),
            **({"fake_clips": dict(self.fake_clips)} if self.fake_clips is not None else {}),
            "sqrtm_imag": self.sqrtm_imag, "sqrtm_imag_dropped_above_tol": self.sqrtm_imag > SQRTM_IMAG_TOL,
            **self.protocol.to_dict(),
        }


# ----------------------------------------------------------------------------
# Fréchet distance and streaming statistics
# ----------------------------------------------------------------------------

SQRTM_IMAG_TOL = 1e-3  # |Im sqrtm| / |Re sqrtm| (Frobenius) above this: warned and recorded, not dropped silently


class SqrtmWarning(UserWarning):
    """sqrtm(sigma1 @ sigma2) had an imaginary part above SQRTM_IMAG_TOL of its real part; FVD kept the real part."""


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    FD = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 @ sigma2)).
    """
    return frechet_distance_and_imag(mu1, sigma1, mu2, sigma2)[0]


def frechet_distance_and_imag(mu1, sigma1, mu2, sigma2) -> tuple[float, float]:
    """(``frechet_distance``, |Im sqrtm| / |Re sqrtm|): the share of sqrtm's imaginary part that was dropped,
    with a ``SqrtmWarning`` when it is above SQRTM_IMAG_TOL."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)  # (D,)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)  # (D, D)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance expects mu (D,) and sigma (D, D) for both sides; got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    # sqrtm of a product of PSD matrices has real eigenvalues; the imaginary part is
    # round-off, so keep the real part (StyleGAN-V, MCVD). No `disp=`: gone in SciPy 1.18.
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D), complex when round-off (or worse) gives it a complex part
    covmean = root.real
    if not np.isfinite(covmean).all():
        raise ValueError("sqrtm(sigma1 @ sigma2) is not finite; check the features for NaN/Inf")
    imag = float(np.linalg.norm(np.imag(root)) / max(np.linalg.norm(covmean), np.finfo(np.float64).tiny))
    if imag > SQRTM_IMAG_TOL:
        warnings.warn(f"FVD: sqrtm(sigma1 @ sigma2) has an imaginary part {imag:.3g} of its real part (above "
                      f"{SQRTM_IMAG_TOL:g}); it is dropped, the value is recorded with sqrtm_imag", SqrtmWarning,
                      stacklevel=2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)), imag


class FeatureStats:
    """Running float64 sums of features, so thousands of videos never sit in memory.

    `source` says where the features came from (for real data: dataset, split, stride,
    seed...). It is saved with the sums and compared when a cached file is reused.
    """

    def __init__(self, protocol: FVDProtocol, source: Mapping | None = None):
        self.protocol = protocol
        self.source = dict(source or {})
        self.n = 0
        self.sum: np.ndarray | None = None  # (D,)
        self.sum_outer: np.ndarray | None = None  # (D, D)

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add a batch of features (B, D)."""
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        f = np.asarray(features, np.float64)  # (B, D)
        if f.ndim != 2 or (self.sum is not None and f.shape[1] != self.sum.shape[0]):
            dim = "D" if self.sum is None else self.sum.shape[0]
            raise ValueError(f"FeatureStats.update expects (B, {dim}) features; got {f.shape}")
        if self.sum is None:
            self.sum = np.zeros(f.shape[1])
            self.sum_outer = np.zeros((f.shape[1], f.shape[1]))
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64 mean."""
        if self.n < 1:
            raise ValueError("FeatureStats is empty")
        return self.sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """(D, D) float64 unbiased covariance, (S2 - n mu mu^T) / (n - 1)."""
        if self.n < 2:
            raise ValueError(f"FeatureStats needs at least 2 samples for a covariance; has {self.n}")
        mu = self.mean
        return (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def save(self, path: str | os.PathLike) -> None:
        """Write the sums and their protocol to a .npz, atomically (safe for parallel jobs)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"protocol": self.protocol.to_dict(), "source": self.source}, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, n=self.n, sum=self.sum, sum_outer=self.sum_outer, meta=np.array(meta))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            stats = cls(FVDProtocol(**meta["protocol"]), meta["source"])
            stats.n = int(z["n"])
            stats.sum, stats.sum_outer = z["sum"], z["sum_outer"]
        return stats


def fvd(real: FeatureStats, fake: FeatureStats) -> FVDResult:
    """FVD between real and generated statistics; refuses mismatched protocols."""
    check_same_protocol(real.protocol, fake.protocol, "real and fake statistics")
    value, imag = frechet_distance_and_imag(real.mean, real.cov, fake.mean, fake.cov)
    return FVDResult(value, real.n, fake.n, real.protocol, real.source, sqrtm_imag=imag)


# ----------------------------------------------------------------------------
# Videos -> I3D features
# ----------------------------------------------------------------------------

def preprocess_videos(videos: torch.Tensor, protocol: FVDProtocol) -> torch.Tensor:
    """(B, T, C, H, W) uint8 or float [0, 1] -> (B, 3, T, R, R) float32 in [-1, 1]."""
    B, T, C, H, W = check_videos(videos, protocol)
    if videos.dtype == torch.uint8:
        x = videos.float()
    else:  # generated frames: clamp overshoot, then round to the nearest uint8 level
        x = videos.float().clamp(0, 1).mul(255).round()
    x = rearrange(x, "b t c h w -> (b t) c h w")
    x = F.interpolate(
        x, size=(protocol.resolution,) * 2, mode="bilinear", align_corners=False, antialias=False
    )  # (B*T, C, R, R)
    x = x.expand(-1, 3, -1, -1) if C == 1 else x  # greyscale -> RGB
    x = x * (2 / 255) - 1
    return rearrange(x, "(b t) c h w -> b c t h w", b=B)  # (B, 3, T, R, R)


def check_videos(videos: torch.Tensor, protocol: FVDProtocol) -> tuple[int, int, int, int, int]:
    """Raise ValueError unless videos are (B, T=num_frames, C in {1, 3}, H, W); return the shape."""
    if videos.ndim != 5 or videos.shape[2] not in (1, 3):
        raise ValueError(f"expected videos (B, T, C=1|3, H, W); got {tuple(videos.shape)}")
    if videos.shape[1] != protocol.num_frames:
        raise ValueError(
            f"the FVD protocol uses {protocol.num_frames} frames; got T={videos.shape[1]} "
            f"(choose the clip before calling)"
        )
    if videos.dtype != torch.uint8 and not videos.is_floating_point():
        raise ValueError(f"expected uint8 or float videos; got {videos.dtype}")
    return tuple(videos.shape)


@torch.no_grad()
def video_features(
    videos: torch.Tensor, detector: Callable, protocol: FVDProtocol, batch_size: int = 16
) -> torch.Tensor:
    """Videos (B, T, C, H, W) -> detector features (B, D), float32 on the CPU.

    The detector's device (its first parameter's) is used; batches move there one at a time.
    Its convolutions run in IEEE fp32, not the TF32 that cuDNN uses by default on recent GPUs.
    """
    check_videos(videos, protocol)
    device = _device_of(detector, default=videos.device)
    out = []
    with ieee_fp32_convolutions():
        for start in range(0, videos.shape[0], batch_size):
            batch = videos[start : start + batch_size].to(device)  # (b, T, C, H, W)
            out.append(detector(preprocess_videos(batch, protocol)).float().cpu())  # (b, D)
    return torch.cat(out)


@contextlib.contextmanager
def ieee_fp32_convolutions():
    """Within the block, cuDNN fp32 convolutions are IEEE fp32, not TF32 (10-bit mantissa)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old, conv.fp32_precision = conv.fp32_precision, "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def _device_of(detector: Callable, default: torch.device) -> torch.device:
    """The device of the detector's first parameter; `default` for parameter-free callables."""
    if isinstance(detector, torch.nn.Module):
        for p in detector.parameters():
            return p.device
    return default


def update_stats(
    stats: FeatureStats, videos: torch.Tensor, detector: Callable, batch_size: int = 16
) -> None:
    """Add a batch of videos (B, T, C, H, W) to `stats`, under `stats.protocol`."""
    stats.update(video_features(videos, detector, stats.protocol, batch_size))


# ----------------------------------------------------------------------------
# FVD of a set of videos, and the references printed beside it
# ----------------------------------------------------------------------------

def fvd_of_videos(
    real: FeatureStats, videos: torch.Tensor, detector: Callable, batch_size: int = 16
) -> FVDResult:
    """FVD of videos (N, T, C, H, W) against real statistics, under the real statistics' protocol.

    The model's samples and a baseline fill (e.g. `metrics.baselines` copy-nearest-given-frame)
    go through this same call, so their FVDs are comparable at equal N.
    """
    fake = FeatureStats(real.protocol, real.source)
    update_stats(fake, videos, detector, batch_size)
    return fvd(real, fake)


def fvd_between(
    videos_a: torch.Tensor,
    videos_b: torch.Tensor,
    detector: Callable,
    protocol: FVDProtocol,
    batch_size: int = 16,
    sources: tuple[Mapping, Mapping] = ({}, {}),
) -> FVDResult:
    """FVD between two sets of videos (N, T, C, H, W), e.g. two disjoint sets of real clips.

    Two disjoint real sets of the evaluation's N give the floor that sampling alone produces:
    a model whose FVD is near it is as close to the data as this N can tell. `sources` say how
    each set was chosen; they are recorded as `real_clips` and `fake_clips`.
    """
    stats = []
    for videos, source in zip((videos_a, videos_b), sources, strict=True):
        stats.append(FeatureStats(protocol, source))
        update_stats(stats[-1], videos, detector, batch_size)
    return dataclasses.replace(fvd(*stats), fake_clips=dict(sources[1]))


def fvd_band(draws: Iterable[float], n: int) -> dict:
    """The real-vs-real reference as a band over its draws (FVDs between disjoint real sets of `n` clips each):
    {"fvd": mean, "mean", "min", "max", "draws": [each draw], "n": n}. "fvd" is the mean, for readers of one value."""
    values = [float(v) for v in draws]
    if not values:
        raise ValueError("fvd_band needs at least one draw")
    mean = float(np.mean(values))
    return {"fvd": mean, "mean": mean, "min": min(values), "max": max(values), "draws": values, "n": int(n)}


# ----------------------------------------------------------------------------
# Real-data statistics cache
# ----------------------------------------------------------------------------

def real_stats_path(cache_dir: str | os.PathLike, dataset: str, protocol: FVDProtocol, real_clips: Mapping) -> Path:
    """Cache file for one (dataset, protocol, real-clip selection): `<dataset>-<hash>.npz`."""
    key = json.dumps(
        {"dataset": dataset, "protocol": protocol.to_dict(), "real_clips": dict(real_clips)},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', dataset)}-{digest}.npz"


def cached_real_stats(
    cache_dir: str | os.PathLike,
    dataset: str,
    protocol: FVDProtocol,
    real_clips: Mapping,
    videos: Callable[[], Iterable[torch.Tensor]],
    detector: Callable,
    batch_size: int = 16,
    wait: bool = True,
) -> FeatureStats | None:
    """Real-data statistics, computed once per (dataset, protocol, real_clips) and cached.

    `videos()` yields batches (B, T, C, H, W) of real clips; it is only called on a cache
    miss. `real_clips` says how those clips were chosen (split, stride, seed, ...).

    Jobs of one sweep share the work: the file is computed under an exclusive lock
    (`<file>.lock`), so two jobs that need it at once compute it once. With `wait=False`,
    returns None when another process holds that lock, i.e. is computing the file now; the
    caller can do other work and come back with `wait=True`, which blocks until the file is
    there. Where the file system has no locks, each job computes its own copy, as without one.
    """
    source = {"dataset": dataset, **dict(real_clips)}
    path = real_stats_path(cache_dir, dataset, protocol, real_clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock"), wait) as held:
        if not held:
            return None
        if path.is_file():
            stats = FeatureStats.load(path)
            check_same_protocol(stats.protocol, protocol, f"cached real statistics {path}")
            if stats.source != json.loads(json.dumps(source)):
                raise ValueError(f"cached real statistics {path} were made from {stats.source}, not {source}")
            return stats
        stats = FeatureStats(protocol, source)
        for batch in videos():
            update_stats(stats, batch, detector, batch_size)
        stats.save(path)
        return stats


@contextlib.contextmanager
def _file_lock(path: Path, wait: bool):
    """An exclusive flock on `path` for the block; yields False if `wait` is False and another process holds it.
    Where flock is not supported (some network file systems), yields True without a lock."""
    with open(path, "a") as f:
        held, locked = True, True
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            held = locked = False
        except OSError:  # ENOLCK, EINVAL: no locks on this file system
            locked = False
        try:
            yield held
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)
