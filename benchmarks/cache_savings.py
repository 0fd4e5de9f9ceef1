"""What the latent cache saves per epoch: decode + SD-VAE encode per clip, against a cached-latent read.

    python benchmarks/cache_savings.py [--size 128] [--frames 16] [--clips 9537]

The VAE is diffusers' AutoencoderKL with the Stable Diffusion VAE architecture (4 levels of
128/256/512/512 channels, 2 ResNet layers each), randomly initialised: the weights don't change
its cost, and the real ones can't be downloaded here. The video is a synthetic UCF101-like
320x240 MPEG-4 .avi written with PyAV. Prints a Markdown table for the README.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.test_bench_data import write_video
from vdt.data.decode import read_frames, resize_crop


def sd_vae():
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512)).eval()


def best_of(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="training frame side in pixels")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--clips", type=int, default=9537, help="clips per epoch (UCF101 split-1 train: 9537)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "v_Demo_g01_c01.avi"
        write_video(video, "mpeg4", 320, 240, 64)
        idx = list(range(0, args.frames))
        decode = best_of(lambda: resize_crop(read_frames(video, idx), args.size, 3), 3)
        clip = torch.rand(args.frames, 3, args.size, args.size) * 2 - 1
        vae = sd_vae()
        with torch.no_grad():
            vae.encode(clip[:1])  # warm-up
            encode = best_of(lambda: vae.encode(clip).latent_dist.mean, 1)
        side = args.size // 8
        lat = np.lib.format.open_memmap(Path(tmp) / "latents.npy", mode="w+", dtype=np.float16,
                                        shape=(64, args.frames, 4, side, side))
        lat[:] = 0
        lat.flush()
        cached = np.load(Path(tmp) / "latents.npy", mmap_mode="r")
        read = best_of(lambda: [torch.from_numpy(np.asarray(cached[i], dtype=np.float32)) for i in range(64)], 5) / 64
    per_clip = decode + encode
    print(f"{args.frames} frames at {args.size} px, {args.threads} threads, {args.clips} clips per epoch\n")
    print("| per clip | decode + resize | SD-VAE encode | total without cache | cached latent read |")
    print("|---|---:|---:|---:|---:|")
    print(f"| seconds | {decode:.3f} | {encode:.2f} | {per_clip:.2f} | {read * 1e3:.3f} ms |")
    print(f"| per epoch | {decode * args.clips / 60:.1f} min | {encode * args.clips / 3600:.1f} h | "
          f"{per_clip * args.clips / 3600:.1f} h | {read * args.clips:.1f} s |")


if __name__ == "__main__":
    main()
