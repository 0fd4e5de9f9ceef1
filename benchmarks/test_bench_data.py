"""Data throughput: procedural items/s, video decoding frames/s (PyAV), cached-latent reads clips/s.

Decoding runs on synthetic videos written here with PyAV in the community layouts' codecs: a UCF101-like 320x240
MPEG-4 Part 2 .avi and a TaiChi-like 256x256 H.264 .mp4, both 25 fps. The latent cache is built by the real code path
(``LatentDataset.build``) with a tiny random-init AutoencoderKL (8x downsampling, 4 channels, as the SD VAE), so its
read speed is that of real latents of the same shape: 16 frames of 128 px clips -> (16, 4, 16, 16) float16.
"""

import av
import numpy as np
import pytest
import torch

from benchmarks.machine import median_s, record
from vdt.config import DataConfig
from vdt.data import build_dataset
from vdt.data.decode import read_frames, resize_crop

CPU = torch.device("cpu")  # data loading runs on the CPU whatever the training device
ITEMS = 64
VIDEO_FRAMES = 64
VIDEOS = {"ucf-avi-mpeg4-320x240": ("mpeg4", "avi", 320, 240), "taichi-mp4-h264-256x256": ("libx264", "mp4", 256, 256)}


@pytest.mark.quick
@pytest.mark.benchmark(group="data")
@pytest.mark.parametrize("side", [32, 64])
def test_procedural_items(benchmark, side):
    data = build_dataset(DataConfig(frames=16, size=side))

    def run():
        return [data[i] for i in range(ITEMS)]

    items = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    if items[0].shape != (16, 3, side, side):
        raise AssertionError(f"bouncing item has shape {tuple(items[0].shape)}")
    record(benchmark, CPU, ITEMS, dtype="fp32", clip=f"16x3x{side}x{side}", items=ITEMS, unit="items",
           items_per_s=ITEMS / median_s(benchmark))


def write_video(path, codec: str, width: int, height: int, frames: int) -> None:
    """A moving colour pattern with some texture, so the encoder has real motion to code."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 40, (height, width, 1), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            phase = [np.sin((x + 4 * i) / 23 + c) * np.cos((y - 3 * i) / 17 - c) for c in (0.0, 2.1, 4.2)]
            rgb = (np.stack(phase, -1) * 100 + 128).astype(np.uint8) + texture
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.benchmark(group="data")
@pytest.mark.parametrize("video", list(VIDEOS))
@pytest.mark.parametrize("resize", [None, 64], ids=["decode", "decode+resize64"])
def test_video_decoding(benchmark, tmp_path, video, resize):
    codec, ext, width, height = VIDEOS[video]
    path = tmp_path / f"clip.{ext}"
    write_video(path, codec, width, height, VIDEO_FRAMES)
    indices = range(VIDEO_FRAMES)

    def run():
        frames = read_frames(str(path), indices)  # (n, H, W, 3) uint8
        return frames if resize is None else resize_crop(frames, resize)

    out = benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    if len(out) != VIDEO_FRAMES:
        raise AssertionError(f"decoded {len(out)} of {VIDEO_FRAMES} frames")
    record(benchmark, CPU, dtype="uint8" if resize is None else "fp32", video=f"{codec} {width}x{height}",
           resize=resize, items=VIDEO_FRAMES, unit="frames", frames_per_s=VIDEO_FRAMES / median_s(benchmark),
           threads_decoder="PyAV thread_type=AUTO")


@pytest.fixture
def latent_dataset(tmp_path):
    """A finished latent cache of 16 bouncing clips (16 x 128 px) built with a tiny random AutoencoderKL."""
    from diffusers import AutoencoderKL

    from vdt.autoencoder import VAE
    from vdt.data.latents import LatentDataset

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4,
                          latent_channels=4, sample_size=32)
    cfg = DataConfig(frames=16, size=128, length=16, autoencoder="sd-vae", latent_cache=str(tmp_path / "latents"))
    return LatentDataset.build(cfg, "train", vae=VAE(model, sha256="benchmark-random-init"))


@pytest.mark.benchmark(group="data")
def test_latent_cache_reads(benchmark, latent_dataset):
    n = len(latent_dataset)

    def run():
        return [latent_dataset[i] for i in range(n)]

    clips = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    if clips[0].shape != (16, 4, 16, 16):
        raise AssertionError(f"latent clip has shape {tuple(clips[0].shape)}, expected (16, 4, 16, 16)")
    record(benchmark, CPU, dtype="float16 on disk -> fp32", clip="16x4x16x16 (128 px clips)", items=n,
           unit="clips", clips_per_s=n / median_s(benchmark), note="memory-mapped; page cache warm after warm-up")
