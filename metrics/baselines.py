"""Trivial and motion predictions of a task's generated region, scored beside the model on the same test clips.

A number such as "PSNR 12 dB" means little alone: on mostly black clips, filling the unknown region with
black may score higher. ``metrics/evaluate.py`` scores these fills with the model's own frame protocol and
stores them in ``eval.json`` under each task's ``baselines``; the report prints them under the results.

Fills stay in the data's range ([-1, 1]); map them to [0, 1] to score them like the model, e.g. on the
generated region with ``metrics.region.score_region((fill + 1) / 2, (real + 1) / 2, pixel_mask)``.

- ``black_fill``: every generated pixel black, the given pixels kept.
- ``nearest_given_frame``: every generated pixel copied from the nearest frame of the same video that has
  nothing generated (the earlier one on a tie), the given pixels kept. For prediction this is "copy the
  last given frame". Undefined, so left out, when some video has no fully given frame.
- ``motion`` (``motion_fill``): continue the given frames' motion, with dense optical flow (OpenCV's
  Farnebäck, on the frames' luma). A frame after the last given one is the last given frame warped forward,
  one frame at a time, by the flow between the last two given frames (before the first given one: mirrored,
  from the first two); a frame between two given ones is their blend, weighted by temporal distance (see
  ``INTERPOLATION``). A video with no fully given frame is filled spatially (``cv2.inpaint``) in each frame
  that has given pixels, and those frames then serve as the given ones. Undefined, so left out, when some
  video has no given pixel at all. Written for real video: any size, RGB or grayscale.
"""

import cv2
import numpy as np
import torch

# Farnebäck's parameters: OpenCV's documented example values, but for the window (flow_window).
FARNEBACK = dict(pyr_scale=0.5, levels=3, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
WINDOW = (5, 15)  # px, the range of Farnebäck's averaging window; see flow_window
# How motion_fill fills a frame between two given ones: "linear" (blend the two) or "flow" (warp each toward the
# frame along the flow between them, then blend). Chosen on the validation split (docs/metrics.md#baselines).
INTERPOLATION = "flow"
INPAINT_RADIUS = 3  # px, cv2.inpaint (Telea) for videos without a fully given frame
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, the flow's input for RGB frames
# What defines motion_fill's output, for the protocol record and the key of its cached FVD statistics.
MOTION_PROTOCOL = {"version": 1, "flow": f"OpenCV {cv2.__version__} calcOpticalFlowFarneback on BT.601 luma",
                   "farneback": dict(FARNEBACK), "window": f"min(H, W) // 4, odd, within {WINDOW}",
                   "extrapolate": "warp the last given frame by the per-frame flow, one frame at a time",
                   "interpolate": INTERPOLATION, "inpaint": f"cv2.INPAINT_TELEA, radius {INPAINT_RADIUS}"}


def nearest_given(gen: torch.Tensor) -> torch.Tensor | None:
    """(N, T) bool frames with anything generated -> (N, T) index of the nearest fully given frame, or None."""
    N, T = gen.shape
    if bool(gen.all(dim=1).any()):
        return None
    t = torch.arange(T)
    dist = (t[:, None] - t[None, :]).abs().expand(N, T, T).clone()  # (N, target frame, source frame)
    dist.masked_fill_(gen[:, None, :], T + 1)  # a partly generated frame is no source
    return dist.argmin(dim=-1)  # ties: the first minimum, the earlier frame


# ---------------------------------------------------------------- the motion baseline


def _to_u8(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) in [-1, 1] -> (H, W, C) uint8."""
    return np.clip(np.rint((frame + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _luma(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) in [-1, 1] -> (H, W) uint8, the flow's input."""
    grey = frame[..., 0] if frame.shape[-1] == 1 else frame @ LUMA
    return _to_u8(grey[..., None])[..., 0]


def flow_window(H: int, W: int) -> int:
    """Farnebäck's averaging window: a quarter of the shorter side, odd, within WINDOW (5 px at 16, 15 from 60 up).

    Chosen on the validation split of the bouncing shapes at 16, 32 and 64 px (docs/metrics.md#baselines): OpenCV's
    15 px spans a whole 16-px frame and costs 1.3 dB there."""
    return int(np.clip(min(H, W) // 4 // 2 * 2 + 1, *WINDOW))


def optical_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Farnebäck flow (H, W, 2) float32, (dx, dy) in pixels, with src(y) ~ dst(y + flow(y)); frames (H, W, C)."""
    return cv2.calcOpticalFlowFarneback(_luma(src), _luma(dst), None, winsize=flow_window(*src.shape[:2]),
                                        **FARNEBACK)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image(y + flow(y)), bilinear, borders replicated: (H, W, C) float32 -> (H, W, C)."""
    H, W, C = image.shape
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    out = cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(H, W, C)  # remap drops a single channel axis


def extrapolate(anchor: np.ndarray, neighbour: np.ndarray | None, gap: int, steps: int) -> list:
    """``steps`` frames continuing the motion from ``neighbour`` (``gap`` frames away) to ``anchor``, one at a time.

    The flow from the anchor to its neighbour, per frame, is where each anchor pixel was one frame earlier, hence
    (constant velocity) where the next frame's pixel comes from: each step warps the last frame by it. (Carrying the
    flow field along with the content scored 0.04 dB lower on validation, one warp by n times the flow 0.46 dB
    lower.) No neighbour: the anchor, copied."""
    back = np.zeros((*anchor.shape[:2], 2), np.float32) if neighbour is None else optical_flow(anchor, neighbour) / gap
    frames, cur = [], anchor
    for _ in range(steps):
        cur = warp(cur, back)
        frames.append(cur)
    return frames


def interpolate(a: np.ndarray, b: np.ndarray, w: float, how: str) -> np.ndarray:
    """The frame a fraction ``w`` of the way from frame ``a`` to frame ``b`` (both (H, W, C))."""
    if how == "linear":
        return (1.0 - w) * a + w * b
    ab, ba = optical_flow(a, b), optical_flow(b, a)
    to_a = -(1.0 - w) * w * ab + w * w * ba  # the intermediate frame's flows to a and to b, from the two
    to_b = (1.0 - w) ** 2 * ab - w * (1.0 - w) * ba  # flows between them (a linear-motion approximation)
    return (1.0 - w) * warp(a, to_a) + w * warp(b, to_b)


def _inpaint(frame: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """(H, W, C) in [-1, 1] with the (H, W) bool hole filled from its surroundings (cv2.inpaint, Telea)."""
    H, W, C = frame.shape
    out = cv2.inpaint(_to_u8(frame), hole.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return np.where(hole[..., None], out.reshape(H, W, C).astype(np.float32) / 127.5 - 1.0, frame)


def _motion_video(video: np.ndarray, hole: np.ndarray, how: str) -> np.ndarray:
    """One video (T, H, W, C) and its (T, H, W) bool generated region -> the estimate of every frame."""
    T = len(video)
    anchors = [t for t in range(T) if not hole[t].any()]  # the given frames
    frames = list(video)
    if not anchors:  # no fully given frame: fill each frame with given pixels spatially, then use those
        anchors = [t for t in range(T) if not hole[t].all()]
        for t in anchors:
            frames[t] = _inpaint(video[t], hole[t])
    out = list(frames)
    first, last = anchors[0], anchors[-1]
    if len(anchors) == 1:  # one given frame: nothing moves
        out[last + 1:] = extrapolate(frames[last], None, 1, T - 1 - last)
        out[:first] = extrapolate(frames[first], None, 1, first)
    else:
        prev, nxt = anchors[-2], anchors[1]
        out[last + 1:] = extrapolate(frames[last], frames[prev], last - prev, T - 1 - last)  # after the last
        out[:first] = extrapolate(frames[first], frames[nxt], nxt - first, first)[::-1]  # before the first: mirrored
    for a, b in zip(anchors, anchors[1:], strict=False):  # between two given frames
        for t in range(a + 1, b):
            out[t] = interpolate(frames[a], frames[b], (t - a) / (b - a), how)
    return np.stack(out)


def motion_fill(real: torch.Tensor, pixel_mask: torch.Tensor, interpolation: str = INTERPOLATION) -> torch.Tensor:
    """The motion baseline: real (N, T, C, H, W) in [-1, 1], pixel_mask (N, T, H, W) 1 = generate -> (N, T, C, H, W).

    Given pixels are kept exactly. Raises ValueError when some video has no given pixel (nothing to continue)."""
    if real.dim() != 5 or pixel_mask.shape != (*real.shape[:2], *real.shape[3:]):
        raise ValueError(f"motion_fill: expected real (N, T, C, H, W) and pixel_mask (N, T, H, W), got "
                         f"{tuple(real.shape)} and {tuple(pixel_mask.shape)}")
    if interpolation not in ("linear", "flow"):
        raise ValueError(f"motion_fill: interpolation={interpolation!r}; choose linear or flow")
    hole = pixel_mask.bool()
    if bool(hole.flatten(1).all(1).any()):
        raise ValueError("motion_fill: a video has no given pixel, so there is no motion to continue")
    videos = real.detach().float().cpu().permute(0, 1, 3, 4, 2).numpy()  # (N, T, H, W, C)
    est = np.stack([_motion_video(v, h, interpolation) for v, h in zip(videos, hole.cpu().numpy(), strict=True)])
    est = torch.from_numpy(est).permute(0, 1, 4, 2, 3).to(real.dtype).clamp(-1, 1)  # (N, T, C, H, W)
    return torch.where(hole.unsqueeze(2), est.to(real.device), real)


# ---------------------------------------------------------------- all fills


def baseline_fills(real: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """{name: (1, N, T, C, H, W) fake} for real (N, T, C, H, W) in [-1, 1] and pixel_mask (N, T, H, W), 1 = generate.

    Names: black_fill, nearest_given_frame (left out when a video has no fully given frame) and motion (left out
    when a video has no given pixel)."""
    m = pixel_mask.bool().unsqueeze(2)  # (N, T, 1, H, W)
    fills = {"black_fill": torch.where(m, torch.full_like(real, -1.0), real)}
    idx = nearest_given(pixel_mask.flatten(2).any(-1))
    if idx is not None:
        source = torch.gather(real, 1, idx[:, :, None, None, None].expand_as(real))  # (N, T, C, H, W)
        fills["nearest_given_frame"] = torch.where(m, source, real)
    if not bool(pixel_mask.bool().flatten(1).all(1).any()):
        fills["motion"] = motion_fill(real, pixel_mask)
    return {name: fake.unsqueeze(0) for name, fake in fills.items()}
