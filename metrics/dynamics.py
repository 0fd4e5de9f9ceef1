"""The dynamics readout on the procedural data: is a generated object where the simulator puts it?

At 16 px, PSNR, SSIM and FVD can't tell a ball that moved on from a ball that stopped. This module
finds the objects in generated frames and compares them with the bouncing-shapes simulator
(``vdt.data.bouncing.Truth``), for the model and for the trivial fills alike.

The tracker (``track``): colour segmentation and centroids, vectorised over clips and frames.
- Objects are matched to the simulator's by their known colours (every object of a clip has its own
  colour): there is no assignment step, object j is the pixels explained by colour c_j.
- RGB: the renderer blends an object's colour over black by its coverage a, so a pixel p is explained
  by object j with coverage a_j = clip(<p, c_j> / <c_j, c_j>, 0, 1) and residual |p - a_j c_j|. The pixel
  goes to the object with the smallest residual when that residual is at most ``COLOUR_TOL`` and its
  coverage at least ``MIN_COVER``; its weight is the coverage. Grey (C = 1): a pixel goes to the nearest
  grey level within half the smallest gap between levels (black included), weight 1.
- An object's position is the weighted centroid of its pixels (pixel centres at c + 0.5, as in
  ``Truth``); its mass is the sum of the weights, in pixels.

The scores, over the generated frames (frames with any generated pixel) of each clip:
- ``position_error_px``: the distance between an object's centroid in the generated frame and in the
  real frame, mean over (clip, frame, object), and ``position_error_px_by_frame`` per frame index. The
  tracker is applied to both, so its own bias (an object partly hidden by another) cancels and the real
  future scores exactly 0; how far the tracker is from the simulator on real frames is ``tracker_floor_px``.
- ``lost_share``: an object counts as lost in a generated frame when its mass there is below
  ``LOST_FRACTION`` of its mass in the real frame. Objects hidden in the real frame (mass below
  ``MIN_MASS``) are not scored; lost objects are left out of the position error.
- ``contact``: questions about the generated frames of a clip, each answered from the generated video by
  the tracker and compared with the simulator's answer. Each has its ``accuracy``, ``positive_share``
  (the simulator's share of yes: the class balance), ``chance`` (the majority class's share) and
  ``num_videos`` (the clips asked).
  - ``objects``: do two objects touch? Simulator: their discs (collision radii) overlap in a generated
    frame. Tracker: the same test on the tracked centroids; a lost object touches nothing. A clip whose
    closest approach is within ``OBJECT_BAND_PX`` of touching, or where an object is fully hidden in a real
    generated frame, is not asked: there the centroid of a partly hidden object can't settle it (the real
    future would not score 100%).
  - ``wall``: does an object hit a wall? Simulator: the object rendered alone covers at least half of a
    pixel of the frame's outer ring (``Truth.edge``). Tracker: its segmented weight does.
  - ``any``: either, on the clips asked both.
  The headline ``contact_accuracy`` is ``objects``' accuracy, the question closest to Physion's.
"""

import numpy as np

COLOUR_TOL = 0.3  # largest residual |p - a c| of a pixel explained by an object, in [0, 1] units
MIN_COVER = 0.25  # smallest coverage a of a pixel counted to an object
LOST_FRACTION = 0.25  # lost: mass in the generated frame below this share of the mass in the real frame
MIN_MASS = 0.5  # px: an object with less mass in the real frame is hidden there, and not scored
OBJECT_BAND_PX = 0.3  # objects question: clips whose closest approach is this close to touching are not asked
EDGE_COVER = 0.5  # wall question: the weight of an outer-ring pixel at which an object reaches the wall
HIGHER_IS_BETTER = {"position_error_px": False, "lost_share": False, "contact_accuracy": True}
PROTOCOL = {
    "tracker": "colour segmentation (known object colours, coverage-weighted), weighted centroids",
    "matching": "by colour: object j of the simulator is the pixels explained by its colour",
    "position_error": "px between the tracked centroid in the generated and the real frame, over generated frames "
                      "and objects not lost and not hidden in the real frame",
    "lost": f"mass in the generated frame < {LOST_FRACTION} x mass in the real frame (hidden: real mass < "
            f"{MIN_MASS} px, not scored)",
    "contact": f"over the generated frames; tracker's answer on the video vs the simulator's. objects: two discs "
               f"(collision radii) overlap, not asked within {OBJECT_BAND_PX} px of touching or with an object "
               f"hidden in a real frame; wall: an object covers >= {EDGE_COVER} of an outer-ring pixel; any: either; "
               "contact_accuracy = objects",
    "chance": "share of the majority class of the simulator's answers",
    "colour_tol": COLOUR_TOL, "min_cover": MIN_COVER,
}


def stack_truths(truths: list) -> dict:
    """A list of ``Truth`` (one clip each) -> arrays: positions (N, T, n, 2), radius (N, n), colour (N, n, C),
    edge (N, T, n)."""
    return {k: np.stack([getattr(t, k) for t in truths]) for k in ("positions", "radius", "colour", "edge")}


def segment(video: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per-object pixel weights (N, T, n, H, W) of video (N, T, C, H, W) in [0, 1], object colours (N, n, C)."""
    if video.ndim != 5 or colour.ndim != 3 or colour.shape[0] != video.shape[0] or colour.shape[2] != video.shape[2]:
        raise ValueError(f"expected video (N, T, C, H, W) and colours (N, n, C); got {video.shape} and {colour.shape}")
    if video.shape[2] == 1:
        levels = colour[:, :, 0]  # (N, n)
        with_black = np.concatenate([levels, np.zeros_like(levels[:, :1])], axis=1)
        gaps = np.abs(with_black[:, :, None] - with_black[:, None, :]) + np.eye(with_black.shape[1]) * 2
        tol = gaps.min(axis=(1, 2)) / 2  # (N,)
        diff = np.abs(video[:, :, :1] - levels[:, None, :, None, None])  # (N, T, n, H, W)
        best = diff.argmin(axis=2)  # (N, T, H, W)
        near = np.take_along_axis(diff, best[:, :, None], axis=2)[:, :, 0] < tol[:, None, None, None]
        weight = np.zeros_like(diff)
        np.put_along_axis(weight, best[:, :, None], near[:, :, None].astype(diff.dtype), axis=2)
        return weight
    norm2 = (colour ** 2).sum(-1)  # (N, n)
    dot = np.einsum("ntchw,nkc->ntkhw", video, colour)  # (N, T, n, H, W)
    cover = np.clip(dot / norm2[:, None, :, None, None], 0.0, 1.0)
    resid = np.linalg.norm(video[:, :, None] - cover[:, :, :, None] * colour[:, None, :, :, None, None], axis=3)
    best = resid.argmin(axis=2)  # (N, T, H, W)
    take = lambda a: np.take_along_axis(a, best[:, :, None], axis=2)[:, :, 0]  # noqa: E731
    keep = (take(resid) <= COLOUR_TOL) & (take(cover) >= MIN_COVER)
    weight = np.zeros_like(cover)
    np.put_along_axis(weight, best[:, :, None], (take(cover) * keep)[:, :, None], axis=2)
    return weight


def centroids(weight: np.ndarray) -> tuple:
    """(centroids (N, T, n, 2) px, NaN where an object has no pixels; mass (N, T, n) px) of weights (N, T, n, H, W)."""
    H, W = weight.shape[-2:]
    mass = weight.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight.sum(-2) * (np.arange(W) + 0.5)).sum(-1) / mass
        y = (weight.sum(-1) * (np.arange(H) + 0.5)).sum(-1) / mass
    return np.stack([x, y], axis=-1), mass


def track(video: np.ndarray, colour: np.ndarray) -> tuple:
    """(centroids (N, T, n, 2) px, NaN where an object has no pixels; mass (N, T, n) px) of video (N, T, C, H, W)
    in [0, 1] with object colours (N, n, C)."""
    return centroids(segment(np.asarray(video, np.float64), np.asarray(colour, np.float64)))


def touches(positions: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(N, T) closest approach of two discs, px (< 0: they overlap; NaN positions never touch): positions
    (N, T, n, 2) px, radius (N, n) px."""
    dist = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)  # (N, T, n, n)
    gap = dist - radius[:, None, :, None] - radius[:, None, None, :]
    n = positions.shape[2]
    gap = np.where(np.triu(np.ones((n, n), bool), k=1), np.nan_to_num(gap, nan=np.inf), np.inf)
    return gap.min(axis=(-2, -1))


def at_edge(weight: np.ndarray) -> np.ndarray:
    """(N, T, n) bool: an object's weight (N, T, n, H, W) reaches EDGE_COVER on a pixel of the outer ring."""
    ring = np.ones(weight.shape[-2:], bool)
    ring[1:-1, 1:-1] = False
    return (weight[..., ring] >= EDGE_COVER).any(-1)


def _question(answer: np.ndarray, truth: np.ndarray, asked: np.ndarray) -> dict:
    a, t = answer[asked], truth[asked]
    share = float(t.mean()) if t.size else None
    return {"accuracy": float((a == t).mean()) if t.size else None, "positive_share": share,
            "chance": None if share is None else max(share, 1 - share), "num_videos": int(t.size)}


def generated_frames(pixel_mask) -> np.ndarray:
    """(N, T) bool: frames with any generated pixel, from the pixel mask (N, T, H, W), 1 = generate."""
    m = np.asarray(pixel_mask)
    return m.reshape(*m.shape[:2], -1).any(-1)


def score(fake: np.ndarray, real: np.ndarray, frames: np.ndarray, truth: dict) -> dict:
    """The readout of one set of generated videos.

    fake, real: (N, T, C, H, W) in [0, 1]; frames (N, T) bool, the generated frames; truth: ``stack_truths``.
    """
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    if fake.shape != real.shape or frames.shape != real.shape[:2]:
        raise ValueError(f"score: fake {fake.shape}, real {real.shape} and frames {frames.shape} must agree")
    w_f, w_r = segment(fake, truth["colour"]), segment(real, truth["colour"])
    (pos_f, mass_f), (pos_r, mass_r) = centroids(w_f), centroids(w_r)
    scored = frames[:, :, None] & (mass_r >= MIN_MASS)  # (N, T, n)
    lost = scored & (mass_f < LOST_FRACTION * mass_r)
    kept = scored & ~lost
    err = np.linalg.norm(pos_f - pos_r, axis=-1)  # (N, T, n)
    by_frame = [float(err[:, t][kept[:, t]].mean()) if kept[:, t].any() else None for t in range(real.shape[1])]
    gone = lost | (mass_f < MIN_MASS)
    pos_f = np.where(gone[..., None], np.nan, pos_f)
    frames_in = lambda a: np.where(frames, a, np.inf).min(1)  # noqa: E731  (N,): the closest over generated frames
    sim_gap, seen_gap = frames_in(touches(truth["positions"], truth["radius"])), frames_in(touches(pos_f,
                                                                                                     truth["radius"]))
    hidden = (frames[:, :, None] & (mass_r < MIN_MASS)).any((1, 2))
    asked = (np.abs(sim_gap) >= OBJECT_BAND_PX) & ~hidden
    sim = {"objects": sim_gap <= 0, "wall": (truth["edge"] & frames[:, :, None]).any((1, 2))}
    seen = {"objects": seen_gap <= 0, "wall": (at_edge(w_f) & ~gone & frames[:, :, None]).any((1, 2))}
    sim["any"], seen["any"] = sim["objects"] | sim["wall"], seen["objects"] | seen["wall"]
    every = np.ones_like(asked)
    contact = {q: _question(seen[q], sim[q], every if q == "wall" else asked) for q in sim}
    return {"position_error_px": float(err[kept].mean()) if kept.any() else None,
            "position_error_px_by_frame": by_frame,
            "lost_share": float(lost.sum() / scored.sum()) if scored.any() else None,
            "contact_accuracy": contact["objects"]["accuracy"], "contact": contact,
            "scored_objects": int(scored.sum()), "num_videos": int(real.shape[0])}


def tracker_floor(real: np.ndarray, frames: np.ndarray, truth: dict) -> dict:
    """How far the tracker is from the simulator on the real frames: the floor under every position error."""
    pos, mass = track(real, truth["colour"])
    seen = frames[:, :, None] & (mass >= MIN_MASS)
    err = np.linalg.norm(pos - truth["positions"], axis=-1)[seen]
    return {"tracker_floor_px": float(err.mean()) if err.size else None,
            "tracker_floor_px_max": float(err.max()) if err.size else None}


def readout(model: np.ndarray | None, baselines: dict, real: np.ndarray, frames: np.ndarray, truth: dict) -> dict:
    """eval.json's "dynamics" of one task, every set scored the same way.

    model: the model's videos (N, T, C, H, W) in [0, 1] (None: left out); baselines: {name: videos}; real: the test
    clips; frames (N, T): the generated frames; truth: ``stack_truths`` of the same clips. "real" is the real future
    scored as a generated one (0 px, 0 lost, accuracy 1 unless the tracker fails) with the tracker's floor.
    """
    out = {"model": None if model is None else score(model, real, frames, truth),
           "baselines": {name: score(v, real, frames, truth) for name, v in baselines.items()},
           "real": {**score(real, real, frames, truth), **tracker_floor(real, frames, truth)}}
    return {**out, "protocol": PROTOCOL}


def evaluate_task(dataset, kind: str, real, fake, fills: dict, pixel_mask) -> dict | None:
    """The readout of one evaluated task (``metrics/evaluate.py``); None where it does not apply.

    dataset: the test clips (their simulator ``truth(i)``; only the procedural data has one); real, fake (N, T, C, H,
    W) and fills {name: (1, N, T, C, H, W)} in [-1, 1], torch or numpy; pixel_mask (N, T, H, W), 1 = generate.
    Applies when some frame is generated and some pixel given (the given frames fix which objects to follow).
    """
    frames = generated_frames(pixel_mask)
    if not hasattr(dataset, "truth") or kind == "unconditional" or not frames.any() or np.asarray(pixel_mask).all():
        return None
    unit = lambda x: np.clip((np.asarray(x, np.float64) + 1.0) / 2.0, 0.0, 1.0)  # noqa: E731
    truth = stack_truths([dataset.truth(i) for i in range(len(real))])
    return readout(unit(fake), {k: unit(v[0]) for k, v in fills.items()}, unit(real), frames, truth)
