"""Read frames: videos with PyAV, frame folders with Pillow; resize by the shorter side and centre-crop.

Nothing here keeps a file open between calls, so datasets built on it survive a fork into
DataLoader workers. These functions are also what the decoding benchmark times.
"""

import os

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vdt.data.layouts import list_frames

# What a broken file can raise; anything else (MemoryError, KeyboardInterrupt, bugs) propagates.
BAD_DATA_ERRORS = (OSError, ValueError, RuntimeError, EOFError, IndexError, av.error.FFmpegError)
TRUNCATED_SHARE = 0.95  # fewer packets than this share of the header's frame count: truncated


def probe(path: str) -> int:
    """Frames in a video file or frame folder; raises a BAD_DATA_ERRORS error if it can't be read.

    A video is demuxed to the end (cheap: no decoding, only reads) and its first frame decoded,
    which catches garbage and truncated files at scan time rather than half-way through an epoch.
    """
    if os.path.isdir(path):
        names = list_frames(path)
        if names:
            with Image.open(os.path.join(path, names[0])) as im:
                im.load()
        return len(names)
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        declared, packets, decoded = stream.frames, 0, False
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            packets += 1
            if not decoded and packets <= 64:  # decoders may buffer a few packets before the first frame
                decoded = len(packet.decode()) > 0
        if not decoded:
            raise ValueError("no decodable frame")
    if declared > 0 and packets < TRUNCATED_SHARE * declared:
        raise ValueError(f"truncated: the header says {declared} frames, the file holds {packets}")
    return packets


def read_frames(path: str, indices) -> np.ndarray:
    """Frames ``indices`` (ascending) of a video or frame folder: (n, H, W, 3) uint8 RGB."""
    indices = [int(i) for i in indices]
    if os.path.isdir(path):
        names = list_frames(path)
        frames = []
        for i in indices:
            with Image.open(os.path.join(path, names[i])) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    wanted, last, found = set(indices), max(indices), {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):  # sequential: exact frame indices, no seek drift
            if i in wanted:
                found[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    if len(found) < len(wanted):
        raise EOFError(f"decoded {len(found)} of {len(wanted)} frames: the file ends at frame {max(found, default=-1)}")
    return np.stack([found[i] for i in indices])


def resize_crop(frames: np.ndarray, size: int, channels: int = 3) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, C, size, size) float32 in [-1, 1].

    The shorter side goes to ``size`` (bilinear, antialiased), then the centre square is cut.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W) in [0, 255]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]  # (T, 3, size, size)
    if channels == 1:
        x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # (T, 1, size, size), ITU-R 601 luma
    return (x / 127.5 - 1.0).clamp(-1.0, 1.0).contiguous()
