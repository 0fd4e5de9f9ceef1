"""vdt/masks.py: the mask kinds, the training mixture, the mask-ratio knob and the evaluation masks."""

import numpy as np
import pytest
import torch

from vdt.config import MASK_KINDS, MaskConfig
from vdt.masks import MaskGenerator, block_masks, frame_mask, given_frames, make_mask, task_mask

SHAPE = (16, 4, 4)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _given(mask: torch.Tensor) -> list:
    """Indices of the fully given frames of a (T, H, W) mask."""
    return torch.nonzero(given_frames(mask)).flatten().tolist()


# ---- each kind -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,params,given", [
    ("predict", {}, list(range(8))),
    ("predict", {"k": 3}, [0, 1, 2]),
    ("backward", {}, list(range(8, 16))),
    ("backward", {"k": 2}, [14, 15]),
    ("interpolate", {}, [0, 4, 8, 12]),
    ("interpolate", {"stride": 3}, [0, 3, 6, 9, 12, 15]),
    ("interpolate", {"count": 5}, [0, 3, 6, 9, 12]),
    ("unconditional", {}, []),
    ("one_frame", {"frame": 5}, [5]),
    ("one_frame", {"frame": -1}, [15]),
])
def test_frame_kinds_give_exactly_these_frames(kind, params, given):
    m = make_mask(kind, SHAPE, **params)
    assert m.shape == SHAPE and m.dtype == torch.float32
    assert _given(m) == given
    assert torch.equal(frame_mask(m), ~given_frames(m))              # frame kinds: every frame all 0 or all 1


def test_random_one_frame_gives_one_frame():
    masks = torch.stack([make_mask("one_frame", SHAPE, generator=_g(s)) for s in range(40)])
    assert torch.all(given_frames(masks).sum(1) == 1)
    assert len({tuple(_given(m)) for m in masks}) > 5                  # the index really is random


def test_random_frames_keep_at_least_one_given_and_one_generated():
    cfg = MaskConfig(mixture="random_frames:1")
    masks = MaskGenerator(cfg, SHAPE)(4000, _g())
    gen = frame_mask(masks)
    assert torch.equal(gen, ~given_frames(masks))
    assert torch.all(gen.sum(1) >= 1) and torch.all(gen.sum(1) <= 15)
    assert gen.float().mean() == pytest.approx(0.8, abs=0.02)
    always = torch.stack([make_mask("random_frames", SHAPE, p=1.0, generator=_g(s)) for s in range(10)])
    assert torch.all(given_frames(always).sum(1) == 1)               # p = 1: one frame is given back
    rare = torch.stack([make_mask("random_frames", SHAPE, p=1e-9, generator=_g(s)) for s in range(10)])
    assert torch.all(frame_mask(rare).sum(1) == 1)                   # p ~ 0: one frame is generated


def test_spatial_temporal_blocks_span_and_ratio():
    n, T, H, W = 2000, 16, 16, 16
    masks = task_mask("spatial_temporal", (T, H, W), MaskConfig(), n, _g(3))
    assert masks.shape == (n, T, H, W)
    in_span = masks.flatten(2).amax(2) > 0                           # (n, T)
    first = in_span.float().argmax(1)
    last = T - 1 - in_span.flip(1).float().argmax(1)
    assert torch.all(in_span.sum(1) == last - first + 1)             # one contiguous span, never empty
    assert set(first.tolist()) == {0, 1, 2, 3} and set((T - 1 - last).tolist()) == {0, 1, 2, 3}
    for offset in (first, T - 1 - last):                             # start and end uniform over 0..3
        freq = torch.bincount(offset, minlength=4).float() / n
        assert torch.all((freq - 0.25).abs() < 0.04)
    spans = masks[torch.arange(n), first]                            # (n, H, W) the spatial pattern
    assert torch.all(spans.flatten(1).sum(1) == 128)                 # exactly round(0.5 * 16 * 16) cells
    assert torch.all((masks == spans[:, None]) | (masks == 0))       # the same pattern on every frame of the span
    assert torch.all(masks.flatten(1).sum(1) > 0)
    # blocks, not scattered cells: almost every covered cell has a covered 4-neighbour
    g = torch.nn.functional.pad(spans, (1, 1, 1, 1))
    neighbour = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]) > 0
    assert (neighbour & (spans > 0)).sum() / spans.sum() > 0.97


@pytest.mark.parametrize("H,W,ratio", [(4, 4, 0.5), (3, 7, 0.1), (8, 8, 1.0), (16, 16, 0.9), (32, 32, 0.25)])
def test_block_masks_hit_the_cell_count(H, W, ratio):
    grids = block_masks(300, H, W, ratio, _g(1))
    assert grids.shape == (300, H, W)
    assert np.all(grids.sum((1, 2)) == min(max(1, round(ratio * H * W)), H * W))


def test_spatial_temporal_on_few_frames_is_never_empty():
    masks = task_mask("spatial_temporal", (2, 4, 4), MaskConfig(), 400, _g())
    cells = masks.flatten(1).sum(1)                                  # span clipped to 1 or 2 frames of 8 cells
    assert set(cells.tolist()) == {8.0, 16.0}
    assert (cells == 8).float().mean() > 0.8                         # P(start = end = 0) = 1/16 for the full span


# ---- errors, shapes, seeds -------------------------------------------------------------------------------------------

def test_bad_kind_shape_and_params_raise():
    with pytest.raises(ValueError, match="unknown mask kind 'fwd'"):
        make_mask("fwd", SHAPE)
    with pytest.raises(ValueError, match="unknown mask kind"):
        task_mask("fwd", SHAPE, MaskConfig(), 2)
    with pytest.raises(ValueError, match="shape"):
        make_mask("predict", (16, 4))
    with pytest.raises(ValueError, match="k=16"):
        make_mask("predict", SHAPE, k=16)
    with pytest.raises(ValueError, match="frame=16"):
        make_mask("one_frame", SHAPE, frame=16)
    with pytest.raises(TypeError):
        make_mask("predict", SHAPE, stride=2)


def test_masks_are_seeded():
    mg = MaskGenerator(MaskConfig(), SHAPE)
    a, b, c = mg(64, _g(11)), mg(64, _g(11)), mg(64, _g(12))
    assert a.shape == (64, *SHAPE) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(make_mask("spatial_temporal", SHAPE, generator=_g(5)),
                       make_mask("spatial_temporal", SHAPE, generator=_g(5)))
    assert set(a.unique().tolist()) <= {0.0, 1.0}


# ---- the training mixture --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mixture", ["official", "predict:0.3,interpolate:0.7"])
def test_mixture_frequencies_one_kind_per_sample(mixture):
    cfg = MaskConfig(mixture=mixture)
    n = 20000
    masks, kinds = MaskGenerator(cfg, (8, 4, 4)).draw(n, _g(2))
    for kind, p in cfg.probabilities().items():
        freq = sum(k == kind for k in kinds) / n
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (kind, freq, p)
    # every sample's mask is of its own kind
    idx = {k: [i for i, kk in enumerate(kinds) if kk == k] for k in set(kinds)}
    if "predict" in idx:
        assert torch.all(masks[idx["predict"]] == make_mask("predict", (8, 4, 4), k=4))
    if "interpolate" in idx:
        assert torch.all(masks[idx["interpolate"]] == make_mask("interpolate", (8, 4, 4), stride=4))
    assert len(set(kinds[:32])) > 1                                   # kinds vary inside one batch


def test_generator_uses_config_parameters():
    cfg = MaskConfig(mixture="predict:0.5,interpolate:0.5", predict_k=3, interpolate_stride=2)
    masks, kinds = MaskGenerator(cfg, SHAPE).draw(50, _g())
    for m, k in zip(masks, kinds, strict=True):
        assert _given(m) == ([0, 1, 2] if k == "predict" else list(range(0, 16, 2)))


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_mask_ratio_knob_sets_the_generated_share(ratio):
    n, T = 3000, 16
    expected = {"predict": ratio, "backward": ratio, "interpolate": ratio, "random_frames": ratio,
                "spatial_temporal": ratio, "unconditional": 1.0, "one_frame": 1 - 1 / T}
    tol = {"random_frames": 0.02}
    for kind in MASK_KINDS:
        cfg = MaskConfig(mixture=f"{kind}:1", mask_ratio=ratio)
        share = MaskGenerator(cfg, (T, 8, 8))(n, _g(4)).mean().item()
        assert share == pytest.approx(expected[kind], abs=tol.get(kind, 1e-6)), kind


def test_mask_ratio_clips_to_one_given_frame():
    masks = MaskGenerator(MaskConfig(mixture="predict:1", mask_ratio=0.99), SHAPE)(4, _g())
    assert all(_given(m) == [0] for m in masks)


# ---- evaluation masks and helpers ------------------------------------------------------------------------------------

def test_task_masks_are_canonical():
    cfg = MaskConfig(mask_ratio=0.25, predict_k=4)                   # mask_ratio does not change the task
    assert all(_given(m) == [0, 1, 2, 3] for m in task_mask("predict", SHAPE, cfg, 3))
    assert all(_given(m) == [0] for m in task_mask("one_frame", SHAPE, cfg, 3))
    assert all(_given(m) == [0, 4, 8, 12] for m in task_mask("interpolate", SHAPE, cfg, 3))
    a = task_mask("spatial_temporal", SHAPE, cfg, 8)
    assert torch.equal(a, task_mask("spatial_temporal", SHAPE, cfg, 8))  # seeded by default
    b = task_mask("random_frames", SHAPE, cfg, 8, _g(9))
    assert torch.equal(b, task_mask("random_frames", SHAPE, cfg, 8, _g(9)))


def test_frame_helpers():
    m = torch.zeros(2, 4, 2, 2)
    m[0, 1] = 1                                                      # frame 1 generated
    m[0, 2, 0, 0] = 1                                                # frame 2 partly generated
    m[1] = 1
    assert frame_mask(m).tolist() == [[False, True, False, False], [True] * 4]
    assert given_frames(m).tolist() == [[True, False, False, True], [False] * 4]
    assert frame_mask(m[0]).shape == (4,)
