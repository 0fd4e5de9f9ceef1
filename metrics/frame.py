"""Per-frame PSNR and SSIM on (N, C, H, W) floats in [0, 1]; one value per image, never pooled.

For video, flatten (B, T, C, H, W) to (B*T, C, H, W) and average the (B*T,) result.

PSNR: torchmetrics with `dim=(1, 2, 3)` so each image gets its own MSE (the default
`dim=None` pools the batch into one MSE, which one poor image dominates). Identical images
give +inf.

SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1,
population statistics, per RGB channel then averaged. torchmetrics reflect-pads and keeps
the border; skimage crops (win - 1) / 2 = 5 pixels on each side. We take torchmetrics'
full SSIM map and crop it the skimage way, which matches
`skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)` to well within 1e-3.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # torchmetrics and skimage both derive 11 from sigma 1.5 (truncate 3.5)
SSIM_CROP = (SSIM_WINDOW - 1) // 2  # 5 pixels, skimage's border crop


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
    """PSNR in dB per image, data range 1: (N, C, H, W), (N, C, H, W) -> (N,)."""
    check_image_pair(x, y, "psnr")
    return peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image, skimage's Gaussian variant: (N, C, H, W), (N, C, H, W) -> (N,)."""
    check_image_pair(x, y, "ssim", min_size=SSIM_WINDOW)
    _, ssim_map = structural_similarity_index_measure(
        x, y, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW,
        data_range=1.0, k1=0.01, k2=0.03, reduction="none", return_full_image=True,
    )  # (N, C, H, W)
    c = SSIM_CROP
    # Equal-sized channels, so the mean over (C, H', W') is the mean of per-channel means.
    return ssim_map[..., c:-c, c:-c].mean(dim=(1, 2, 3))  # (N,)
