"""Report videos: an animated GIF per (variant, task) of a few test videos, side by side.

Each row is one test video; the columns are the condition (what the model was given, the
generated region greyed out), the ground truth and the generated frames. The border of every
panel tells the frame's role (mask convention: 1 = generate, 0 = given): green for a given
frame, orange for a partly given one (spatial masks), grey for a generated one. Tiny frames are
upscaled with nearest-neighbour; one shared palette keeps the file small enough to commit.
"""

import io
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger("report")
COLUMNS = ("condition", "ground truth", "generated")
BORDER_COLOURS = np.array([(40, 170, 70), (240, 150, 30), (110, 110, 110)], dtype=np.uint8)  # given, partial, gen
HIDDEN = 128  # grey where the condition column hides what the model had to generate
BORDER, GAP, LEFT, HEAD, FOOT = 3, 4, 24, 30, 16
MS_PER_FRAME, MS_LAST = 250, 1000


def load_samples(path: Path) -> tuple:
    """real, fake (N, T, C, H, W) uint8 and mask (N, T, H, W) uint8 from samples/<task>.npz, checked."""
    with np.load(path) as z:
        real, fake, mask = z["real"], z["fake"], z["mask"]
    if real.dtype != np.uint8 or fake.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 real and fake, got {real.dtype}, {fake.dtype}")
    if real.ndim != 5 or real.shape != fake.shape:
        raise ValueError(f"{path}: expected real and fake of one shape (N, T, C, H, W), got {real.shape}, {fake.shape}")
    if real.shape[2] not in (1, 3):
        raise ValueError(f"{path}: expected 1 or 3 channels at axis 2 of (N, T, C, H, W), got {real.shape}")
    if mask.ndim != 4 or mask.shape[:2] != real.shape[:2]:
        raise ValueError(f"{path}: expected mask (N, T, H, W) with N, T = {real.shape[:2]}, got {mask.shape}")
    return real, fake, mask


def to_hwc(video: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) uint8 -> (N, T, H, W, 3) uint8; grey videos get three equal channels."""
    video = np.moveaxis(video, 2, -1)
    return np.repeat(video, 3, axis=-1) if video.shape[-1] == 1 else video


def resize_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, T, h', w') -> (N, T, h, w) by nearest neighbour (a latent-grid mask on pixel frames)."""
    rows = np.arange(h) * mask.shape[2] // h
    cols = np.arange(w) * mask.shape[3] // w
    return mask[:, :, rows][:, :, :, cols]


def frame_roles(mask: np.ndarray) -> np.ndarray:
    """(N, T, H, W) mask -> (N, T) role: 0 given, 1 partly given, 2 generated."""
    share = mask.reshape(*mask.shape[:2], -1).astype(bool).mean(axis=-1)  # (N, T) generated share
    return np.where(share == 0, 0, np.where(share == 1, 2, 1))


def text_font():
    return ImageFont.load_default()


def base_canvas(n_videos: int, panel: int, title: str) -> np.ndarray:
    """The static part of every frame: title, column names, row numbers and the border legend."""
    width = LEFT + len(COLUMNS) * (panel + GAP)
    height = HEAD + n_videos * (panel + GAP) + FOOT
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), text_font()
    while len(title) > 4 and draw.textlength(title, font=font) > width - 70:  # leave room for the frame counter
        title = title[:-4] + "..."
    draw.text((4, 2), title, fill="black", font=font)
    for j, name in enumerate(COLUMNS):
        draw.text((LEFT + j * (panel + GAP), HEAD - 13), name, fill="black", font=font)
    for i in range(n_videos):
        draw.text((4, HEAD + i * (panel + GAP) + panel // 2 - 6), f"#{i + 1}", fill="black", font=font)
    legend_y = height - FOOT + 2
    x = 4
    for label, colour in zip(("given", "partial", "generated"), BORDER_COLOURS, strict=True):
        draw.rectangle((x, legend_y + 2, x + 8, legend_y + 10), fill=tuple(int(c) for c in colour))
        draw.text((x + 11, legend_y), label, fill="black", font=font)
        x += 14 + int(draw.textlength(label, font=font)) + 8
    return np.asarray(img).copy()


def render_frames(real, fake, mask, scale: int, title: str) -> list:
    """Real, fake (N, T, H, W, 3) and mask (N, T, H, W) -> T canvases (height, width, 3) uint8."""
    n, t, h, w, _ = real.shape
    side = max(h, w) * scale
    panel = side + 2 * BORDER
    condition = np.where(mask[..., None].astype(bool), np.uint8(HIDDEN), real)  # (N, T, H, W, 3)
    roles = frame_roles(mask)  # (N, T)
    base = base_canvas(n, panel, title)
    frames = []
    for k in range(t):
        canvas = base.copy()
        for i in range(n):
            top = HEAD + i * (panel + GAP)
            for j, video in enumerate((condition, real, fake)):
                left = LEFT + j * (panel + GAP)
                canvas[top:top + panel, left:left + panel] = BORDER_COLOURS[roles[i, k]]
                big = video[i, k].repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, 3)
                canvas[top + BORDER:top + BORDER + h * scale, left + BORDER:left + BORDER + w * scale] = big
        img = Image.fromarray(canvas)
        counter = f"frame {k + 1}/{t}"
        draw = ImageDraw.Draw(img)
        draw.text((canvas.shape[1] - 6 - draw.textlength(counter, font=text_font()), 2), counter, fill="black",
                  font=text_font())
        frames.append(np.asarray(img))
    return frames


def encode_gif(frames: list) -> bytes:
    """Frames (H, W, 3) uint8 -> GIF bytes, with one palette shared by every frame and no dithering."""
    pick = np.linspace(0, len(frames) - 1, min(len(frames), 8)).round().astype(int)
    palette = Image.fromarray(np.concatenate([frames[i] for i in pick], axis=0)).quantize(
        colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [MS_PER_FRAME] * (len(images) - 1) + [MS_LAST]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buf.getvalue()


def sample_gif(npz_path: Path, out_path: Path, *, title: str, max_videos: int = 4, max_frames: int = 32,
               max_bytes: int = 1_000_000, min_side: int = 96) -> dict:
    """Write the GIF grid of samples/<task>.npz; shrink (fewer videos, then smaller upscale) to stay under max_bytes."""
    real, fake, mask = load_samples(npz_path)
    n, t, _, h, w = real.shape
    keep = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))  # frames shown
    real, fake = to_hwc(real)[:, keep], to_hwc(fake)[:, keep]
    mask = resize_nearest(mask[:, keep], h, w) if mask.shape[2:] != (h, w) else mask[:, keep]
    top_scale = max(1, math.ceil(min_side / max(h, w)))
    videos = min(n, max_videos)
    tries = [(k, s) for s in range(top_scale, 0, -1) for k in dict.fromkeys([videos, max(1, videos // 2), 1])]
    for k, s in tries:
        data = encode_gif(render_frames(real[:k], fake[:k], mask[:k], s, title))
        if len(data) <= max_bytes:
            break
    else:
        log.warning("%s: %d bytes even with one video at scale 1 (limit %d)", out_path, len(data), max_bytes)
    out_path.write_bytes(data)
    return {"path": out_path, "videos": k, "frames": len(keep), "scale": s, "bytes": len(data)}
