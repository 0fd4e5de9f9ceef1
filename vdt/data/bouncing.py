"""Bouncing shapes: a procedural video dataset that needs no download.

Each video holds ``cfg.num_objects`` shapes (circle, square, triangle, diamond) of distinct
colours on a black background. Every shape moves at a constant velocity and reflects off the
walls, so the future follows from the past: prediction is learnable and measurable.

Positions have a closed form (a triangle wave folds the straight path into the box), so all
frames are rendered at once from coordinate grids, anti-aliased by a one-pixel ramp on a
signed distance. A 16x32x32 video takes well under a millisecond or two.

An item is a pure function of (seed, split, index, epoch): no global RNG. The test and val
splits are fixed sets of ``TEST_SIZE`` and ``VAL_SIZE`` videos and ignore the epoch; the train
split mixes the epoch in (``set_epoch``), so every epoch shows new videos. Each split draws from
its own seed range, ``default_rng((seed, SPLIT_IDS[split], epoch, index))``, so no two splits
share a stream (val's id 2 came last: train and test clips are those they always were).
"""

from dataclasses import dataclass

import numpy as np
import torch

from vdt.config import DataConfig
from vdt.data.layouts import FIXED_SPLITS

SHAPES = ("circle", "square", "triangle", "diamond")
SPLIT_IDS = {"train": 0, "test": 1, "val": 2, "all": 0}  # 'all' is the train stream: the data is endless
TEST_SIZE = 512
VAL_SIZE = 512
SPEED = (0.02, 0.05)  # frame sides per (unstrided) frame
RADIUS = (0.10, 0.18)  # frame sides
EDGE_COVER = 0.5  # Truth.edge: the coverage of an outer-ring pixel at which an object reaches the frame's edge


@dataclass(frozen=True)
class Scene:
    """One video's objects. Coordinates are in frame sides, (x, y) with y pointing down."""

    shapes: np.ndarray  # (n,) int, index into SHAPES
    radius: np.ndarray  # (n,)
    start: np.ndarray  # (n, 2) centre at time 0
    velocity: np.ndarray  # (n, 2) per unstrided frame
    colour: np.ndarray  # (n, C) in [0, 1]

    def positions(self, times: np.ndarray) -> np.ndarray:
        """Centres at ``times`` (frames, may be fractional): (T, n, 2), reflected off the walls."""
        lo = self.radius[None, :, None]  # (1, n, 1): the centre stays a radius away from each wall
        span = 1.0 - 2.0 * lo
        free = self.start[None] + times[:, None, None] * self.velocity[None] - lo  # (T, n, 2)
        folded = np.mod(free, 2.0 * span)
        return lo + span - np.abs(folded - span)  # triangle wave in [lo, 1 - lo]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) each -> (n, 3), all in [0, 1]."""
    k = np.mod(np.array([5.0, 3.0, 1.0])[None] + h[:, None] * 6.0, 6.0)
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def sample_scene(rng: np.random.Generator, num_objects: int, channels: int) -> Scene:
    """Draw shapes, sizes, start positions, velocities and distinct colours."""
    n = num_objects
    radius = rng.uniform(*RADIUS, size=n)
    start = rng.uniform(radius[:, None], 1.0 - radius[:, None], size=(n, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    speed = rng.uniform(*SPEED, size=n)
    velocity = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
    shapes = rng.integers(0, len(SHAPES), size=n)
    if channels == 3:  # hues evenly spaced from a random start, so no two objects share a colour
        hue = np.mod(rng.uniform() + np.arange(n) / n, 1.0)
        colour = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0, size=n), rng.uniform(0.8, 1.0, size=n))
    else:  # evenly spaced grey levels, shuffled
        colour = rng.permutation(np.linspace(1.0, 0.45, n))[:, None]
    return Scene(shapes, radius, start, velocity, colour)


def _signed_distance(shape: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Distance (frame sides, <0 inside) to a shape of 'radius' r centred at the origin."""
    if SHAPES[shape] == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if SHAPES[shape] == "square":  # half-side 0.85 r: about the circle's area
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if SHAPES[shape] == "diamond":
        return (np.abs(dx) + np.abs(dy)) / np.sqrt(2.0) - 0.85 * r
    # triangle pointing up: the largest of three half-plane distances, inradius 0.6 r
    s3 = np.sqrt(3.0) / 2.0
    d = np.maximum(np.maximum(dy, -s3 * dx - 0.5 * dy), s3 * dx - 0.5 * dy)
    return d - 0.6 * r


def render(scene: Scene, times: np.ndarray, size: int) -> np.ndarray:
    """Frames at ``times``: (T, C, H, W) float32 in [0, 1], anti-aliased, later objects on top."""
    centres = scene.positions(times)  # (T, n, 2)
    grid = (np.arange(size) + 0.5) / size  # pixel centres in frame sides
    T, C = len(times), scene.colour.shape[1]
    video = np.zeros((T, C, size, size), dtype=np.float32)
    for i in range(len(scene.shapes)):
        dx = grid[None, None, :] - centres[:, i, 0, None, None]  # (T, 1, W)
        dy = grid[None, :, None] - centres[:, i, 1, None, None]  # (T, H, 1)
        sd = _signed_distance(int(scene.shapes[i]), dx, dy, scene.radius[i])  # (T, H, W)
        alpha = np.clip(0.5 - sd * size, 0.0, 1.0).astype(np.float32)[:, None]  # (T, 1, H, W)
        colour = scene.colour[i].astype(np.float32)[None, :, None, None]  # (1, C, 1, 1)
        video += alpha * (colour - video)
    return video


@dataclass(frozen=True)
class Truth:
    """What the simulator knows of one clip, in pixels: the ground truth of the dynamics readout.

    Pixel coordinates are continuous, (x, y) with y pointing down: pixel (row r, column c) covers
    [c, c + 1) x [r, r + 1), so its centre is (c + 0.5, r + 0.5). An object's collision radius is
    the distance from a wall at which the simulator reflects its centre.
    """

    positions: np.ndarray  # (T, n, 2) centres
    radius: np.ndarray  # (n,) collision radius
    colour: np.ndarray  # (n, C) in [0, 1], as rendered
    shapes: np.ndarray  # (n,) int, index into SHAPES
    touch: np.ndarray  # (T, n, n) bool: the discs of i and j (collision radii) overlap at frame t; diagonal False
    wall_hit: np.ndarray  # (T, n) bool: i reflected off a wall since the previous frame (frame 0: False)
    wall_gap: np.ndarray  # (T, n) distance from i's disc to the nearest wall, >= 0
    edge: np.ndarray  # (T, n) bool: i, rendered alone, covers >= EDGE_COVER of a pixel of the frame's outer ring


def scene_truth(scene: Scene, times: np.ndarray, size: int) -> Truth:
    """Positions, sizes, colours and contact events of ``scene`` at ``times`` (frames), on a ``size``-pixel frame.

    Objects pass through each other (only walls reflect them); a touch is an overlap of their discs.
    """
    centres = scene.positions(times) * size  # (T, n, 2)
    radius = scene.radius * size  # (n,)
    dist = np.linalg.norm(centres[:, :, None] - centres[:, None, :], axis=-1)  # (T, n, n)
    touch = (dist <= radius[:, None] + radius[None, :]) & ~np.eye(len(radius), dtype=bool)
    lo = scene.radius[None, :, None]  # the reflections' count: how many times the free path was folded
    folds = np.floor((scene.start[None] + times[:, None, None] * scene.velocity[None] - lo) / (1.0 - 2.0 * lo))
    wall_hit = np.concatenate([np.zeros((1, len(radius)), bool), (np.diff(folds, axis=0) != 0).any(-1)])
    wall_gap = np.minimum(centres, size - centres).min(-1) - radius[None]  # (T, n)
    ring = np.ones((size, size), bool)
    ring[1:-1, 1:-1] = False
    edge = np.stack([(render(_only(scene, i), times, size)[:, 0] >= EDGE_COVER)[:, ring].any(-1)
                     for i in range(len(radius))], axis=1)  # (T, n)
    return Truth(centres, radius, scene.colour.copy(), scene.shapes.copy(), touch, wall_hit,
                 np.maximum(wall_gap, 0.0), edge)


def _only(scene: Scene, i: int) -> Scene:
    """Object i alone, in white."""
    keep = slice(i, i + 1)
    return Scene(scene.shapes[keep], scene.radius[keep], scene.start[keep], scene.velocity[keep], np.ones((1, 1)))


class BouncingShapes(torch.utils.data.Dataset):
    """Procedural bouncing shapes; items are (T, C, H, W) float32 in [-1, 1]."""

    skipped = None  # procedural: nothing to skip

    def __init__(self, cfg: DataConfig, split: str):
        if split not in SPLIT_IDS:
            raise ValueError(f"split: unknown split {split!r}; choose from {tuple(SPLIT_IDS)}")
        self.cfg, self.split, self.epoch = cfg, split, 0
        self.times = np.arange(cfg.frames, dtype=np.float64) * cfg.stride

    def __len__(self) -> int:
        return {"test": TEST_SIZE, "val": VAL_SIZE}.get(self.split, self.cfg.length)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def scene(self, index: int) -> Scene:
        """The objects of item ``index`` (a pure function of seed, split, index and, for train and all, epoch)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        epoch = 0 if self.split in FIXED_SPLITS else self.epoch
        rng = np.random.default_rng((self.cfg.seed, SPLIT_IDS[self.split], epoch, index))
        return sample_scene(rng, self.cfg.num_objects, self.cfg.channels)

    def __getitem__(self, index: int) -> torch.Tensor:
        video = render(self.scene(index), self.times, self.cfg.size)  # (T, C, H, W) in [0, 1]
        return torch.from_numpy(video * 2.0 - 1.0)

    def truth(self, index: int) -> Truth:
        """The simulator's positions, sizes, colours and contact events of item ``index``'s frames (``Truth``)."""
        return scene_truth(self.scene(index), self.times, self.cfg.size)

    def protocol(self) -> dict:
        """What defines this data, for the metric record."""
        cfg = self.cfg
        return dict(dataset="bouncing", split=self.split, num_clips=len(self), frames=cfg.frames, stride=cfg.stride,
                    resolution=cfg.size, channels=cfg.channels, num_objects=cfg.num_objects, seed=cfg.seed,
                    offset="procedural", epoch_dependent=self.split not in FIXED_SPLITS, range="[-1, 1]")
