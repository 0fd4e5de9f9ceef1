"""Official VDT checkpoints (RERV/VDT ``models.py``, class VDT, video mode) loaded into ``vdt.model.VDT``.

Our module names follow the official ones, so the weights map key for key. What the official state dict
holds besides: ``pos_embed`` (1, N, D) and ``time_embed`` (1, T, D), fixed sin-cos tables kept as frozen
parameters; ours are derived from the config, so they are checked against ours and not loaded. The
official model always has a label table (``y_embedder.embedding_table``, num_classes + 1 rows with the
null row of label dropout); its released models use num_classes = 1 and are called with y = 0, which
``VDT`` implies when num_classes == 1 and y is omitted. So ``load_official(...)(x, t)`` gives the official
``model(x, t, y=0)``.

Which weights: a checkpoint of the official train.py holds {"model", "ema", "opt", "args"}; like the
official sampler (utils.load_checkpoint) we take "ema" when present, else "model", else the dict itself.
A "module." (DDP) or "_orig_mod." (torch.compile) prefix is stripped.
"""

import os
import re

import torch

from vdt.config import PRESETS, ModelConfig
from vdt.model import VDT

# Heads can't be read from shapes: take them from the preset with the same hidden size (384 -> 6, 1152 -> 16).
HEADS_BY_HIDDEN = {p["hidden"]: p["heads"] for p in PRESETS.values()}
FIXED_TABLES = ("pos_embed", "time_embed")


def load_official(state_dict_or_path, heads: int | None = None) -> VDT:
    """Our VDT holding an official checkpoint's weights, in eval mode; config inferred from the shapes."""
    sd = unwrap(state_dict_or_path)
    cfg = infer_config(sd, heads)
    model = VDT(cfg)
    for name in FIXED_TABLES:  # ours: (1, L, D) buffers; the official tables must be the same numbers
        ours = getattr(model, name)
        if not torch.allclose(sd[name].float().reshape(ours.shape), ours, atol=1e-5):
            raise ValueError(f"official checkpoint: {name} is not the fixed sin-cos table that VDT uses")
    weights = {k: v for k, v in sd.items() if k not in FIXED_TABLES}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"official checkpoint does not match the inferred {cfg}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {[(k, tuple(weights[k].shape)) for k in wrong[:5]]}"
        )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def unwrap(state_dict_or_path) -> dict:
    """A path or a checkpoint dict -> the flat state dict ("ema" first, then "model"), prefixes stripped."""
    obj = state_dict_or_path
    if isinstance(obj, (str, os.PathLike)):
        obj = torch.load(obj, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"official checkpoint: expected a state dict or a path, got {type(obj).__name__}")
    for key in ("ema", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in obj.items()}


def infer_config(sd: dict, heads: int | None = None) -> ModelConfig:
    """depth, hidden, patch, channels, frames, size, learn_sigma, num_classes, mlp_ratio from tensor shapes."""
    need = ("x_embedder.proj.weight", "pos_embed", "time_embed", "final_layer.linear.weight",
            "blocks.0.mlp.fc1.weight", "y_embedder.embedding_table.weight")
    absent = [k for k in need if k not in sd]
    if absent:
        raise ValueError(f"not an official VDT (video mode) state dict: missing {absent}")
    hidden, channels, patch, _ = sd["x_embedder.proj.weight"].shape  # Conv2d (D, C, p, p)
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    tokens, frames = sd["pos_embed"].shape[-2], sd["time_embed"].shape[-2]
    side = round(tokens ** 0.5)
    if side * side != tokens:
        raise ValueError(f"official checkpoint: pos_embed has {tokens} tokens, not a square grid")
    out = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out not in (channels, 2 * channels):
        raise ValueError(f"official checkpoint: final layer gives {out} channels per pixel for {channels} inputs")
    if heads is None:
        if hidden not in HEADS_BY_HIDDEN:
            raise ValueError(f"official checkpoint: hidden={hidden} matches no preset; pass heads= explicitly")
        heads = HEADS_BY_HIDDEN[hidden]
    rows = sd["y_embedder.embedding_table.weight"].shape[0]
    if rows < 2:
        raise ValueError("official checkpoint: the label table has no null row (trained without label dropout)")
    geometry = dict(depth=depth, hidden=hidden, heads=heads, patch=patch)
    preset = next((name for name, p in PRESETS.items() if p == geometry), "cpu-small")
    return ModelConfig(
        preset=preset, **geometry, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
        conditioning="token_concat", learn_sigma=out == 2 * channels, num_classes=rows - 1,
        frames=frames, size=side * patch, channels=channels,
    )
