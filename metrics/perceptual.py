"""LPIPS distance per frame: the `lpips` package, AlexNet trunk, v0.1 linear heads.

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
def _lpips_alex(backbone: str, device: str) -> lpips.LPIPS:
    """One LPIPS-alex model per (backbone file, device); `backbone` is only a cache key."""
    with warnings.catch_warnings():
        # lpips calls torchvision's deprecated `alexnet(pretrained=True)`; the load itself is fine.
        warnings.filterwarnings("ignore", "The parameter 'pretrained'", UserWarning)
        warnings.filterwarnings("ignore", "Arguments other than a weight enum", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    return model.eval().requires_grad_(False).to(device)


def lpips_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS (alex, v0.1) per image, lower is closer: (N, 3, H, W) in [0, 1] twice -> (N,)."""
    check_image_pair(x, y, "lpips_distance", min_size=MIN_SIZE)
    if x.shape[1] != 3:
        raise ValueError(f"lpips_distance expects RGB (N, 3, H, W); got {tuple(x.shape)}")
    model = _lpips_alex(str(alexnet_backbone_path()), str(x.device))
    with torch.no_grad():
        d = model(x, y, normalize=True)  # (N, 1, 1, 1); normalize=True maps [0, 1] to [-1, 1]
    return d.flatten()  # (N,)
