"""What upsampling small frames for LPIPS does to the scores: region LPIPS of fills at several sizes.

    python benchmarks/lpips_small_frames.py [--videos 64] [--net alex] [--sides 32 64 128]

The tiny profile scores 16-px frames, under AlexNet's 31-px minimum. `metrics.region` upsamples them
(bilinear, by an integer factor) to at least `LPIPS_MIN_SIDE`. This script scores, on the tiny profile's test
clips and predict mask (5 given frames, 4 generated), four fills of the generated region at each upsampled side:
black, the last given frame copied, the truth plus Gaussian noise (sigma 0.1), and the truth of another test clip.
It prints the mean LPIPS of each fill, how often (over videos) two choices order black and copy the same way, and
the seconds each choice takes. Numbers in docs/metrics.md ("Frames smaller than AlexNet").
"""

import argparse
import dataclasses
import time

import torch

from ablations.sweeps import PROFILES
from metrics.baselines import baseline_fills
from metrics.region import region_lpips
from vdt.config import RunConfig
from vdt.data import build_video_dataset
from vdt.masks import task_mask


def tiny_clips(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny profile's first n test clips (N, T, C, H, W) in [0, 1] and its predict mask (N, T, H, W)."""
    cfg = RunConfig().with_overrides([f"{k}={v}" for k, v in PROFILES["tiny"].overrides.items()])
    data = build_video_dataset(dataclasses.replace(cfg.data, autoencoder="none"), "test")
    real = torch.stack([data[i] if not isinstance(data[i], tuple) else data[i][0] for i in range(n)])
    mask = task_mask("predict", (cfg.data.frames, cfg.data.size, cfg.data.size), cfg.masks, n)
    return (real + 1) / 2, mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=64)
    p.add_argument("--net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128])
    args = p.parse_args()
    real, mask = tiny_clips(args.videos)
    fills = {k: (v[0] + 1) / 2 for k, v in baseline_fills(real * 2 - 1, mask).items()}
    g = torch.Generator().manual_seed(0)
    fills["noise_0.1"] = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    m = mask.bool().unsqueeze(2)
    fills["other_clip"] = torch.where(m, real.roll(1, 0), real)
    gen = mask > 0
    scores, seconds = {}, {}
    for side in args.sides:
        t0 = time.perf_counter()
        scores[side] = {k: region_lpips(f, real, gen, args.net, min_side=side) for k, f in fills.items()}
        seconds[side] = time.perf_counter() - t0
    print(f"{args.videos} test clips of the tiny profile, {tuple(real.shape[1:])}, predict mask; net {args.net}")
    print("| side | " + " | ".join(fills) + " | s |")
    for side in args.sides:
        print(f"| {side} | " + " | ".join(f"{float(scores[side][k].mean()):.4f}" for k in fills)
              + f" | {seconds[side]:.1f} |")
    for a in args.sides:
        for b in args.sides:
            if a < b:
                oa = scores[a]["black_fill"] < scores[a]["nearest_given_frame"]
                ob = scores[b]["black_fill"] < scores[b]["nearest_given_frame"]
                corr = torch.corrcoef(torch.stack([scores[a]["nearest_given_frame"],
                                                   scores[b]["nearest_given_frame"]]))[0, 1]
                print(f"{a} vs {b}: black-vs-copy order agrees on {float((oa == ob).float().mean()):.0%} of videos; "
                      f"per-video copy LPIPS correlation {float(corr):.3f}")


if __name__ == "__main__":
    main()
