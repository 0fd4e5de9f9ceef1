"""LPIPS distance per frame, or its spatial map: the `lpips` package, AlexNet trunk, v0.1 linear heads.

The linear heads ship inside the lpips wheel. The AlexNet trunk is torchvision's
`alexnet-owt-7be5be79.pth`, which lpips would download if missing; we check for it first
and raise `WeightsMissingError` instead, so nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import warnings

import lpips
import torch

from metrics.frame import check_image_pair
from metrics.weights import alexnet_backbone_path

MIN_SIZE = 32  # AlexNet's five stages need at least 32x32 input


@functools.lru_cache(maxsize=4)
def _lpips_alex(backbone: str, device: str, spatial: bool = False) -> lpips.LPIPS:
    """One LPIPS-alex model per (backbone file, device, spatial); `backbone` is only a cache key."""
    with warnings.catch_warnings():
        # lpips calls torchvision's deprecated `alexnet(pretrained=True)`; the load itself is fine.
        warnings.filterwarnings("ignore", "The parameter 'pretrained'", UserWarning)
        warnings.filterwarnings("ignore", "Arguments other than a weight enum", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", spatial=spatial, verbose=False)
    return model.eval().requires_grad_(False).to(device)


def lpips_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS (alex, v0.1) per image, lower is closer: (N, 3, H, W) in [0, 1] twice -> (N,)."""
    return _lpips(x, y, "lpips_distance", spatial=False).flatten()  # (N,)


def lpips_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS (alex, v0.1) at every pixel, lpips' `spatial=True`: (N, 3, H, W) in [0, 1] twice -> (N, H, W).

    Each stage's distance map is upsampled (bilinear) to H x W and the stages are summed; its
    mean is the image's LPIPS up to about 1e-5.
    """
    return _lpips(x, y, "lpips_map", spatial=True)[:, 0]  # (N, H, W)


def _lpips(x: torch.Tensor, y: torch.Tensor, name: str, spatial: bool) -> torch.Tensor:
    check_image_pair(x, y, name, min_size=MIN_SIZE)
    if x.shape[1] != 3:
        raise ValueError(f"{name} expects RGB (N, 3, H, W); got {tuple(x.shape)}")
    model = _lpips_alex(str(alexnet_backbone_path()), str(x.device), spatial)
    with torch.no_grad():
        return model(x, y, normalize=True)  # (N, 1, 1, 1) or (N, 1, H, W); normalize: [0, 1] -> [-1, 1]
