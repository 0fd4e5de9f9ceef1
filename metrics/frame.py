"""Per-frame PSNR and SSIM on (N, C, H, W) floats in [0, 1]; one value per image, never pooled.

For video, flatten (B, T, C, H, W) to (B*T, C, H, W) and average the (B*T,) result. Scores restricted
to a task's generated pixels live in `metrics.region`, built on `ssim_map` here.

PSNR: 10 log10(1 / MSE) with one MSE per image (torchmetrics' `dim=(1, 2, 3)`; its default `dim=None`
pools the batch into one MSE, which one poor image dominates), at most `PSNR_CAP_DB`. Written out
here rather than imported: importing torchmetrics costs every evaluation process about 10 s.

The cap, `PSNR_CAP_DB` = 20 log10(255) = 48.13 dB, is the PSNR of an RMS error of one 8-bit grey level:
videos are stored in 8 bits, so closer than that is exact. An exact match (identical images, or a trivial
baseline's fill of a region it happens to equal, e.g. black over black) would otherwise score +inf, or an
arbitrary ceiling such as 100 dB that lifts a mean over videos by (ceiling - typical) / N. Every score,
the model's and the baselines', goes through the same cap (`metrics.region` uses it too).

SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1,
population statistics, per RGB channel. `ssim_map` is the per-pixel map of
`skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, full=True)`: the Gaussian filter is
scipy.ndimage's, with its "reflect" border (the edge pixel repeated, d c b a | a b c d).
`ssim` is skimage's score: the map's mean after cropping (win - 1) / 2 = 5 border pixels,
averaged over channels. Frames smaller than the window are refused, not cropped to nothing.
"""

from __future__ import annotations

import functools
import math

import torch

# 48.13 dB: an RMS error of one 8-bit level (see the module docstring); rounded to float32, so that scores
# computed in float64 and returned in float32 equal it exactly.
PSNR_CAP_DB = float(torch.tensor(20 * math.log10(255), dtype=torch.float32))
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # skimage: radius int(truncate 3.5 * sigma 1.5 + 0.5) = 5
SSIM_CROP = (SSIM_WINDOW - 1) // 2  # 5 pixels, skimage's border crop
SSIM_K1, SSIM_K2 = 0.01, 0.03


def check_image_pair(x: torch.Tensor, y: torch.Tensor, name: str, min_size: int = 1) -> None:
    """Raise ValueError unless x and y are equal-shaped float (N, C, H, W) with H, W >= min_size."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"{name} expects two (N, C, H, W) tensors of equal shape; "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"{name} expects float images in [0, 1]; got {x.dtype} and {y.dtype}")
    if min(x.shape[2:]) < min_size:
        raise ValueError(f"{name} needs H, W >= {min_size}; got {tuple(x.shape[2:])}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, data range 1, at most PSNR_CAP_DB: (N, C, H, W), (N, C, H, W) -> (N,)."""
    check_image_pair(x, y, "psnr")
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))  # (N,)
    return psnr_from_mse(mse)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / mse) (data range 1), capped at PSNR_CAP_DB (mse 0 included); NaN stays NaN."""
    return (10.0 * torch.log10(1.0 / mse)).clamp(max=PSNR_CAP_DB)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image, skimage's Gaussian variant: (N, C, H, W), (N, C, H, W) -> (N,)."""
    c = SSIM_CROP
    # Equal-sized channels, so the mean over (C, H', W') is the mean of per-channel means.
    return ssim_map(x, y)[..., c:-c, c:-c].mean(dim=(1, 2, 3))  # (N,)


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM at every pixel and channel, skimage's full map: (N, C, H, W) twice -> (N, C, H, W).

    Computed in float64 (the variances are differences of close numbers), returned in x's dtype.
    """
    check_image_pair(x, y, "ssim_map")
    if min(x.shape[2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its Gaussian window, "
            f"sigma {SSIM_SIGMA}); got {x.shape[2]}x{x.shape[3]}. Score larger frames; no border is cropped away."
        )
    a, b = x.double(), y.double()
    mu_a, mu_b = _gaussian_blur(a), _gaussian_blur(b)
    var_a = _gaussian_blur(a * a) - mu_a**2  # population (co)variances, as Wang et al.
    var_b = _gaussian_blur(b * b) - mu_b**2
    cov = _gaussian_blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.to(x.dtype)


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage's Gaussian filter (sigma 1.5, radius 5, "reflect" border) of (N, C, H, W); same shape."""
    H, W = x.shape[-2:]
    return _blur_matrix(H, x.device) @ x @ _blur_matrix(W, x.device).T  # along H, then along W


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, device: torch.device) -> torch.Tensor:
    """(n, n) float64 B with (B @ v)[i] = sum_k w[k] v[reflect(i + k - 5)], w the normalised 11-tap Gaussian.

    scipy's "reflect" repeats the edge pixel (d c b a | a b c d); one reflection suffices for n > 5.
    """
    r = SSIM_CROP
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / SSIM_SIGMA) ** 2)
    w = w / w.sum()
    i = torch.arange(n)[:, None]
    j = i + torch.arange(-r, r + 1)[None]  # (n, 11) source index of each tap
    j = torch.where(j < 0, -j - 1, j)
    j = torch.where(j >= n, 2 * n - 1 - j, j)
    b = torch.zeros(n, n, dtype=torch.float64)
    b.index_put_((i.expand_as(j), j), w.expand_as(j), accumulate=True)
    return b.to(device)
