"""Masks for VDT's unified spatial-temporal mask modeling.

Convention, for all of vdt-bench: **1 = generate** (noised, predicted, in the loss), **0 = given** (the clean
condition). This is the official code's convention (``x_in = x0 (1 - mask) + x_t mask``), the reverse of the paper's
Eq. 3. Masks live on the model's grid (latent pixels, or patches) as (T, H, W) or (B, T, H, W) float 0/1 tensors, on
the CPU; move them to the data's device yourself.

Kinds (defaults follow the official generator, for T = 16):
    predict            the first k frames given (k = T // 2)
    backward           the last k frames given
    interpolate        frames 0, s, 2s, ... given (s = 4); or ``count`` frames given at floor(i T / count)
    unconditional      nothing given
    one_frame          exactly one frame given: ``frame``, or a random one
    random_frames      each frame generated with probability p = 0.8. Unlike the official code, at least one frame is
                       generated and at least one is given: a draw with none given gets one random frame given back,
                       a draw with none generated gets one random frame generated (so the task always has both)
    spatial_temporal   BEiT-style blocks (>= 4 cells, aspect 0.3-3.3) covering round(r H W) cells of the grid (r =
                       0.5), the same pattern on frames [start, T - end), start and end uniform in 0..3 and clipped to
                       leave at least one frame; other frames are fully given. Blocks are proposed as in BEiT (one
                       block must add 1..budget new cells); where BEiT gives up after 10 failed tries and may stop
                       short, here proposals go on (64 tries, then 64 more with one-cell blocks allowed, then a random
                       top-up, rarely needed), so the count is exact and never 0. The official ``end_idx == 0`` empty
                       slice, which makes a quarter of its masks all given, is not reproduced.

``MaskGenerator`` draws one kind per sample from the mixture (the official generator draws one kind per batch).
``MaskConfig.mask_ratio`` (the mask-ratio sweep), when set, derives each kind's parameters so that about that share is
generated: predict / backward k = round(T (1 - r)) and interpolate count = round(T (1 - r)), both clipped to [1, T - 1];
random_frames p = r (slightly off at the extremes because of the guard above); spatial_temporal ratio r over all
frames. unconditional (share 1) and one_frame (share 1 - 1/T) are fixed by definition.

All randomness comes from a CPU ``torch.Generator``; the same seed gives the same masks. ``generator=None`` means a
fresh generator seeded with 0, never the global RNG.
"""

import math

import numpy as np
import torch

from vdt.config import MASK_KINDS, MaskConfig

LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
MIN_CELLS = 4
SPAN_MAX = 3  # spatial_temporal: start and end frame offsets are drawn from 0..SPAN_MAX


# --------------------------------------------------------------------------------------------------------------------
# Frame-level kinds: (n, T) rows, 1 = generate
# --------------------------------------------------------------------------------------------------------------------

def _check_k(k: int, T: int, kind: str) -> None:
    if not 1 <= k <= T - 1:
        raise ValueError(f"{kind}: k={k} given frames must be in [1, {T - 1}] for {T} frames")


def _uniform(g: torch.Generator, *shape) -> np.ndarray:
    """Uniform [0, 1) float64 numbers from the torch generator, as a numpy array."""
    return torch.rand(*shape, generator=g, dtype=torch.float64).numpy()


def _randint(g: torch.Generator, high: int, n: int) -> np.ndarray:
    return torch.randint(0, high, (n,), generator=g).numpy()


def _predict(n, T, g, k=None):
    k = T // 2 if k is None else k
    _check_k(k, T, "predict")
    rows = np.ones((n, T), np.float32)
    rows[:, :k] = 0
    return rows


def _backward(n, T, g, k=None):
    k = T // 2 if k is None else k
    _check_k(k, T, "backward")
    rows = np.ones((n, T), np.float32)
    rows[:, T - k:] = 0
    return rows


def _interpolate(n, T, g, stride=4, count=None):
    if count is None:
        if stride < 1:
            raise ValueError(f"interpolate: stride={stride} must be >= 1")
        given = list(range(0, T, stride))
    else:
        if not 1 <= count <= T:
            raise ValueError(f"interpolate: count={count} must be in [1, {T}]")
        given = [i * T // count for i in range(count)]
    rows = np.ones((n, T), np.float32)
    rows[:, given] = 0
    return rows


def _unconditional(n, T, g):
    return np.ones((n, T), np.float32)


def _one_frame(n, T, g, frame=None):
    if frame is not None and not -T <= frame < T:
        raise ValueError(f"one_frame: frame={frame} is outside {T} frames")
    idx = _randint(g, T, n) if frame is None else np.full(n, frame % T)
    rows = np.ones((n, T), np.float32)
    rows[np.arange(n), idx] = 0
    return rows


def _random_frames(n, T, g, p=0.8):
    if not 0.0 < p <= 1.0 or T < 2:
        raise ValueError(f"random_frames: needs p in (0, 1] and at least 2 frames, got p={p}, T={T}")
    rows = (_uniform(g, n, T) < p).astype(np.float32)
    fix = _randint(g, T, n)                                           # one frame per row to flip if needed
    all_gen, none_gen = rows.sum(1) == T, rows.sum(1) == 0
    rows[all_gen, fix[all_gen]] = 0                                   # keep one frame given
    rows[none_gen, fix[none_gen]] = 1                                 # keep one frame generated
    return rows


FRAME_KINDS = {
    "predict": _predict, "backward": _backward, "interpolate": _interpolate, "unconditional": _unconditional,
    "one_frame": _one_frame, "random_frames": _random_frames,
}


# --------------------------------------------------------------------------------------------------------------------
# spatial_temporal: BEiT-style block masks
# --------------------------------------------------------------------------------------------------------------------

def block_masks(n: int, H: int, W: int, ratio: float, g: torch.Generator, min_cells: int = MIN_CELLS,
                attempts: int = 64) -> np.ndarray:
    """n BEiT-style block masks (n, H, W) bool, each with exactly max(1, round(ratio H W)) cells covered.

    Every attempt proposes one block per unfinished mask (area uniform in [min_cells, budget], log-uniform aspect,
    uniform position) and keeps it if it adds 1..budget new cells, budget being the cells still missing. After
    ``attempts`` attempts the minimum block drops to one cell for as many again; a mask still short after that is
    topped up with random single cells. Vectorised over the n masks (numpy, one generator call per attempt)."""
    target = min(max(1, round(ratio * H * W)), H * W)
    grid = np.zeros((n, H, W), dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    rows, cols = np.arange(H), np.arange(W)
    for a in range(2 * attempts):
        budget = target - count                                           # (n,)
        if not (budget > 0).any():
            break
        lo = np.minimum(budget, min_cells if a < attempts else 1)
        u = _uniform(g, n, 4)                                             # area, aspect, top, left
        area = lo + (budget - lo) * u[:, 0]
        aspect = np.exp(LOG_ASPECT[0] + (LOG_ASPECT[1] - LOG_ASPECT[0]) * u[:, 1])
        h, w = np.rint(np.sqrt(area * aspect)).astype(np.int64), np.rint(np.sqrt(area / aspect)).astype(np.int64)
        top = np.floor(u[:, 2] * (H - h + 1)).astype(np.int64)
        left = np.floor(u[:, 3] * (W - w + 1)).astype(np.int64)
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])    # (n, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (n, W)
        block = in_rows[:, :, None] & in_cols[:, None, :]                 # (n, H, W)
        added = (block & ~grid).sum((1, 2))
        ok = (h >= 1) & (h <= H) & (w >= 1) & (w <= W) & (added > 0) & (added <= budget)
        grid |= block & ok[:, None, None]
        count += added * ok
    missing = target - count                                              # rare: top up with random free cells
    if (missing > 0).any():
        score = np.where(grid.reshape(n, -1), 2.0, _uniform(g, n, H * W))
        rank = score.argsort(1, kind="stable").argsort(1, kind="stable")
        grid |= (rank < missing[:, None]).reshape(n, H, W)
    return grid


def _spatial_temporal(n, shape, g, ratio=0.5, start=None, end=None, min_cells=MIN_CELLS):
    T, H, W = shape
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"spatial_temporal: ratio={ratio} must be in (0, 1]")
    starts = _randint(g, SPAN_MAX + 1, n) if start is None else np.full(n, start)
    ends = _randint(g, SPAN_MAX + 1, n) if end is None else np.full(n, end)
    starts = np.clip(starts, 0, T - 1)
    ends = np.clip(ends, 0, T - 1 - starts)                               # the span [start, T - end) keeps >= 1 frame
    frames = np.arange(T)
    span = (frames >= starts[:, None]) & (frames < (T - ends)[:, None])   # (n, T)
    grids = block_masks(n, H, W, ratio, g, min_cells)                     # (n, H, W)
    return (span[:, :, None, None] & grids[:, None]).astype(np.float32)   # (n, T, H, W)


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------

def _check_shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"mask shape: expected (T, H, W) with positive sizes, got {shape}")
    return shape


def _masks(kind: str, n: int, shape: tuple, g: torch.Generator, params: dict) -> np.ndarray:
    """n masks of one kind, (n, T, H, W) float32 numpy (numpy: small ops, no thread-pool overhead)."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {MASK_KINDS}")
    if kind == "spatial_temporal":
        return _spatial_temporal(n, shape, g, **params)
    T, H, W = shape
    rows = FRAME_KINDS[kind](n, T, g, **params)                       # (n, T)
    return np.broadcast_to(rows[:, :, None, None], (n, T, H, W))


def _generator(generator):
    return generator if generator is not None else torch.Generator().manual_seed(0)


def make_mask(kind: str, shape, *, generator: torch.Generator | None = None, **params) -> torch.Tensor:
    """One mask (T, H, W) of ``kind`` (see the module docstring for kinds and params); 1 = generate."""
    return torch.from_numpy(np.array(_masks(kind, 1, _check_shape(shape), _generator(generator), params)[0]))


def mask_params(kind: str, cfg: MaskConfig, frames: int, ratio: float | None = None) -> dict:
    """The keyword parameters of ``kind`` under cfg; ``ratio`` (a generated share) overrides them where it can."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {MASK_KINDS}")
    if ratio is None:
        return {"predict": {"k": cfg.given_frames(frames)}, "backward": {"k": cfg.given_frames(frames)},
                "interpolate": {"stride": cfg.interpolate_stride}, "random_frames": {"p": cfg.random_p},
                "spatial_temporal": {"ratio": cfg.spatial_ratio}}.get(kind, {})
    given = min(max(round(frames * (1 - ratio)), 1), frames - 1)
    return {"predict": {"k": given}, "backward": {"k": given}, "interpolate": {"count": given},
            "random_frames": {"p": ratio}, "spatial_temporal": {"ratio": ratio, "start": 0, "end": 0}}.get(kind, {})


class MaskGenerator:
    """Training masks: one kind per sample from cfg's mixture, each with its parameters from cfg."""

    def __init__(self, cfg: MaskConfig, shape=(16, 16, 16)):
        self.cfg, self.shape = cfg, _check_shape(shape)
        probs = cfg.probabilities()
        self.kinds = tuple(k for k in MASK_KINDS if probs.get(k, 0.0) > 0)
        self.probs = torch.tensor([probs[k] for k in self.kinds], dtype=torch.float64)
        self.params = {k: mask_params(k, cfg, self.shape[0], cfg.mask_ratio) for k in self.kinds}

    def draw(self, batch: int, generator: torch.Generator) -> tuple:
        """(masks (B, T, H, W), kinds: the kind of each sample, a tuple of B names)."""
        choice = torch.multinomial(self.probs, batch, replacement=True, generator=generator)   # (B,)
        choice = choice.numpy()
        masks = np.empty((batch, *self.shape), np.float32)
        for i, kind in enumerate(self.kinds):
            idx = np.flatnonzero(choice == i)
            if len(idx):
                masks[idx] = _masks(kind, len(idx), self.shape, generator, self.params[kind])
        return torch.from_numpy(masks), tuple(self.kinds[i] for i in choice.tolist())

    def __call__(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, T, H, W) masks, 1 = generate."""
        return self.draw(batch, generator)[0]


def task_mask(kind: str, shape, cfg: MaskConfig, batch: int, generator: torch.Generator | None = None):
    """The canonical evaluation mask of a task, (B, T, H, W): cfg's own parameters (mask_ratio ignored, so runs of a
    mask-ratio sweep are scored on the same task), one_frame gives frame 0, the random kinds use ``generator``
    (default: seed 0)."""
    shape = _check_shape(shape)
    params = {"frame": 0} if kind == "one_frame" else mask_params(kind, cfg, shape[0])
    return torch.from_numpy(np.array(_masks(kind, batch, shape, _generator(generator), params)))


def frame_mask(mask: torch.Tensor) -> torch.Tensor:
    """(..., T, H, W) mask -> (..., T) bool, True where the whole frame is generated."""
    return mask.flatten(-2).amin(-1) > 0.5


def given_frames(mask: torch.Tensor) -> torch.Tensor:
    """(..., T, H, W) mask -> (..., T) bool, True where the whole frame is given."""
    return mask.flatten(-2).amax(-1) < 0.5
