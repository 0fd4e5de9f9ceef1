"""Video metrics: pure functions on tensors, each with its direction and protocol.

    psnr(x, y), ssim(x, y)        (N, C, H, W) in [0, 1] -> (N,)       metrics.frame
    ssim_map(x, y)                (N, C, H, W) -> (N, C, H, W)         metrics.frame
    lpips_distance(x, y)          (N, 3, H, W) in [0, 1] -> (N,)       metrics.perceptual
    lpips_map(x, y)               (N, 3, H, W) -> (N, H, W)            metrics.perceptual
    score_region(fake, real, m)   (N, T, C, H, W), (N, T, H, W) -> {name: (N,)} on generated pixels
                                                                       metrics.region
    frechet_distance(mu, S, ...)  float64 -> float                     metrics.fvd
    FeatureStats, fvd.fvd, ...    streamed I3D statistics -> FVDResult metrics.fvd
    fvd_of_videos, fvd_between    videos -> FVDResult (model, baselines, real-vs-real floor)
                                                                       metrics.fvd
    load_i3d(path)                (B, 3, T>=9, 224, 224) -> (B, 400)   metrics.i3d

The function `metrics.fvd.fvd` is not re-exported: binding it here would shadow the
submodule, and `from metrics import fvd` must give the module.

The names are imported lazily (PEP 562 ``__getattr__``): ``metrics/report.py`` reads result
files only and must not pay for torch and lpips by importing this package.

Weights are never downloaded; a missing file raises `WeightsMissingError` (metrics.weights).
"""

import importlib

# Direction of each metric, for reports and model selection.
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "fvd": False}

# Public name -> the submodule that defines it.
_EXPORTS = {
    "psnr": "frame", "ssim": "frame", "ssim_map": "frame",
    "lpips_distance": "perceptual", "lpips_map": "perceptual",
    "score_region": "region",
    "IMPL_VERSION": "fvd", "FVDProtocol": "fvd", "FVDResult": "fvd", "FeatureStats": "fvd",
    "cached_real_stats": "fvd", "check_same_protocol": "fvd", "frechet_distance": "fvd",
    "preprocess_videos": "fvd", "update_stats": "fvd", "video_features": "fvd",
    "fvd_between": "fvd", "fvd_of_videos": "fvd",
    "InceptionI3d": "i3d", "load_i3d": "i3d",
    "WeightsMissingError": "weights", "resolve_i3d_weights": "weights", "sha256_file": "weights",
}

__all__ = ["HIGHER_IS_BETTER", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
