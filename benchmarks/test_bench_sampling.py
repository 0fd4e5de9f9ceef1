"""Sampling: seconds per video for DDPM (250 steps; the official default is 500) and DDIM (50, 25 steps), with the
prediction PSNR of each beside its time, on a briefly trained tiny model.

The model: cpu-tiny trained on bouncing-shapes prediction (8 frames of 16x16, the first 4 given) for TRAIN_STEPS steps.
The run (about 3 minutes on 2 idle cores) is cached in results/cache/bench/ (git-ignored) and reused. Its raw
weights (after a brief run the EMA still leans on the zero-initialised start) sample the 4 generated frames of
SAMPLE_VIDEOS test videos, from the same starting noise for every sampler.
PSNR is per frame on the generated frames, averaged; ``psnr_copy_last`` scores copying the last given frame, a
reference that a well-trained model beats and a briefly trained one may not.
"""

import pytest
import torch

from benchmarks.machine import ROOT, compute_context, median_s, record, sync
from metrics import psnr
from vdt import train
from vdt.config import RunConfig
from vdt.data import build_dataset
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.masks import frame_mask, task_mask
from vdt.model import VDT

TRAIN = ("model.preset=cpu-tiny", "data.frames=8", "data.size=16", "masks.mixture=predict:1", "eval.tasks=predict",
         "train.batch_size=8", "train.lr=1e-3", "train.log_every=50", "train.ckpt_every=100")
TRAIN_STEPS, QUICK_TRAIN_STEPS = 1000, 20
SAMPLE_VIDEOS = 8
SAMPLERS = [("ddpm", 250, 1), ("ddim", 50, 2), pytest.param("ddim", 25, 2, marks=pytest.mark.quick)]


@pytest.fixture(scope="session")
def tiny_model(dev, quick):
    """(config, trained model on dev, training steps) of the briefly trained tiny model.

    The run directory is named by the config without train.steps, so a longer run continues a shorter one."""
    steps = QUICK_TRAIN_STEPS if quick else TRAIN_STEPS
    run_dir = ROOT / "results" / "cache" / "bench" / f"tiny-{RunConfig().with_overrides(TRAIN).run_id()}"
    cfg = RunConfig().with_overrides([*TRAIN, f"train.steps={steps}"])
    train.main(cfg, run_dir, progress=False)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location=dev, weights_only=False)
    model = VDT(cfg.model).to(dev)
    model.load_state_dict(ckpt["model"])
    return cfg, model.eval(), ckpt["step"]


@pytest.mark.benchmark(group="sampling: cpu-tiny, 8 frames 16x16, predict 4 from 4")
@pytest.mark.parametrize("sampler,steps,rounds", SAMPLERS, ids=["ddpm-250", "ddim-50", "ddim-25"])
def test_sampling(benchmark, dev, tiny_model, sampler, steps, rounds):
    cfg, model, trained = tiny_model
    T, S = cfg.data.frames, cfg.data.grid[1]
    data = build_dataset(cfg.data, split="test")
    x0 = torch.stack([data[i] for i in range(SAMPLE_VIDEOS)]).to(dev)  # (B, T, C, H, W)
    mask = task_mask("predict", (T, S, S), cfg.masks, SAMPLE_VIDEOS).to(dev)  # (B, T, H, W)
    diffusion = GaussianDiffusion(cfg.diffusion)
    fn = Denoiser(model, cfg.model.conditioning, mask)

    def run(steps=steps):
        g = torch.Generator(dev).manual_seed(0)
        with compute_context(dev):
            out = diffusion.sample(fn, x0, mask, sampler=sampler, steps=steps, eta=0.0, generator=g, progress=False)
        sync(dev)
        return out

    run(steps=2)  # warm-up
    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
    gen = frame_mask(mask[0]).nonzero().flatten()  # generated frame indices

    def frame_psnr(video):  # mean per-frame PSNR over the generated frames, images in [0, 1]
        a = ((video[:, gen] + 1) / 2).clamp(0, 1).flatten(0, 1).float()
        b = ((x0[:, gen] + 1) / 2).flatten(0, 1).float()
        return float(psnr(a, b).mean())

    last_given = x0[:, gen.min() - 1: gen.min()].expand(-1, len(gen), -1, -1, -1)
    copy = x0.clone()
    copy[:, gen] = last_given
    sec, quality, floor = median_s(benchmark), frame_psnr(out), frame_psnr(copy)
    record(benchmark, dev, SAMPLE_VIDEOS, sampler=sampler, steps=steps, eta=0.0 if sampler == "ddim" else None,
           items=SAMPLE_VIDEOS, unit="videos", s_per_video=sec / SAMPLE_VIDEOS, psnr=quality,
           psnr_copy_last=floor, trained_steps=trained, model="cpu-tiny (raw weights)",
           note=f"{sec / SAMPLE_VIDEOS:.3g} s/video, PSNR {quality:.2f} dB (copy-last-frame {floor:.2f} dB)")
