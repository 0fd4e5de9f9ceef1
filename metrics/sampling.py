"""Samples for evaluation: a trained run's EMA model on a device, its pixel test clips, and a sample cache.

Evaluation always reads PIXEL test clips, also for a latent run (``data.autoencoder=sd-vae``): the
VAE, on the run's device, encodes the clips, the model samples the generated region in latent
space, and the VAE decodes the result. What leaves this module is in pixel space, [-1, 1]:

- ``real``  (N, T, C, H, W)     the test clips, in index order;
- ``fakes`` (k, N, T, C, H, W)  k = eval.best_of samples per clip; the given pixels are the real ones
                                (a latent run's decoded samples are pasted into the generated region);
- ``mask``  (N, T, H, W)        on the pixel grid, 1 = generate (a latent cell covers 8x8 pixels).

Samples are cached per batch in ``eval_cache/<task>-<key>/`` on the model's grid (latents for a
latent run: small, decoded again on load). The key hashes everything that made them: the task
and its mask parameters, the data, model and diffusion configs (the prediction target included),
the checkpoint (its step and the SHA-256 of its EMA weights), the VAE's weights, and every
sampling setting (sampler, steps, eta, guidance, best_of, num_videos, batch size, seed). Any
change misses the cache; nothing stale is ever served.
"""

import dataclasses
import hashlib
import json
import os

import torch
from tqdm import tqdm

from vdt.config import RunConfig
from vdt.data import announce_skipped, build_video_dataset
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.errors import PathError
from vdt.layout import RunLayout
from vdt.masks import task_mask
from vdt.model import VDT

SEED_STRIDE = 1_000_003  # batch b of seed s draws from seed s * SEED_STRIDE + b (masks) and (...) * 64 + j (sample j)
SAMPLING_KEYS = ("sampler", "sample_steps", "eta", "guidance", "best_of", "seed", "batch_size")


def state_sha256(state: dict) -> str:
    """SHA-256 of a state dict's content: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RunSampler:
    """One run's EMA model (and VAE) on ``device``, its pixel test clips, and cached samples of a task."""

    def __init__(self, run_dir, cfg: RunConfig, *, device=None, progress: bool = True):
        self.layout, self.cfg, self.progress = RunLayout(run_dir), cfg, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = self.layout.last_ckpt
        if not path.exists():
            raise PathError(f"{path}: no checkpoint; train first (python -m vdt.train --run-dir "
                                    f"{self.layout.root})")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        self.checkpoint = {"path": str(path), "step": ckpt["step"], "ema_sha256": state_sha256(ckpt["ema"])}
        self.model = VDT(cfg.model)
        self.model.load_state_dict(ckpt["ema"])
        self.model.eval().requires_grad_(False).to(self.device)
        del ckpt
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        # Pixel clips, also for a latent run: the latent cache is for training only.
        self.data = build_video_dataset(dataclasses.replace(cfg.data, autoencoder="none"), "test")
        announce_skipped(self.data, "evaluation")
        self.n = min(cfg.eval.num_videos, len(self.data))
        self.vae = None
        if cfg.data.autoencoder == "sd-vae":
            from vdt.autoencoder import load_vae
            self.vae = load_vae(cfg.data.vae_path, device=self.device)

    @property
    def step(self) -> int:
        return self.checkpoint["step"]

    # ---------------------------------------------------------------- data
    def real_batches(self, start: int = 0, stop: int | None = None):
        """Pixel test clips start..stop-1 as batches (B, T, C, H, W) in [-1, 1], with labels (B,) or None."""
        stop = self.n if stop is None else stop
        bs = self.cfg.eval.batch_size
        for first in range(start, stop, bs):
            items = [self.data[i] for i in range(first, min(first + bs, stop))]
            if isinstance(items[0], (tuple, list)):
                yield torch.stack([v for v, _ in items]), torch.tensor([y for _, y in items])
            else:
                yield torch.stack(items), None

    def real_clips(self, start: int, stop: int) -> dict:
        """How the real clips start..stop-1 were chosen (the FVD statistics' source)."""
        return {**self._data_protocol(), "first": start, "stop": stop,
                "selection": f"pixel test clips {start}..{stop - 1} in index order"}

    def _data_protocol(self) -> dict:
        return {k: v for k, v in self.data.protocol().items() if k not in ("epoch", "bad_log")}

    # ---------------------------------------------------------------- model grid <-> pixels
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel clips (B, T, C, H, W) -> the model's grid on the device (latents for a latent run)."""
        x = x.to(self.device)
        return x if self.vae is None else self.vae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The model's grid (B, T, C', h, w) -> pixels (B, T, C, H, W) on the CPU."""
        return (z if self.vae is None else self.vae.decode(z.to(self.device))).float().cpu()

    def pixel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A mask on the model's grid (N, T, h, w) -> on the pixel grid (N, T, H, W)."""
        if self.vae is None:
            return mask
        return mask.repeat_interleave(self.vae.factor, -1).repeat_interleave(self.vae.factor, -2)

    def to_pixels(self, z: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Model-grid samples (B, T, C', h, w) -> pixels (B, T, C, H, W): decoded where generated, real where given."""
        m = self.pixel_mask(mask).bool().unsqueeze(2)  # (B, T, 1, H, W)
        return torch.where(m, self.decode(z), real)

    # ---------------------------------------------------------------- samples
    def batch_mask(self, kind: str, masks_cfg, b: int, batch: int) -> torch.Tensor:
        """The task's mask of batch b, (B, T, h, w) on the model's grid; a pure function of (eval.seed, b)."""
        g = torch.Generator().manual_seed(self.cfg.eval.seed * SEED_STRIDE + b)
        side = self.cfg.data.grid[1]
        return task_mask(kind, (self.cfg.data.frames, side, side), masks_cfg, batch, generator=g)

    def denoiser(self, mask: torch.Tensor, y) -> Denoiser:
        return Denoiser(self.model, self.cfg.model.conditioning, mask, y=y, guidance=self.cfg.eval.guidance,
                        null_label=self.cfg.model.num_classes)

    def sample_batch(self, z0, y, mask, seed: int) -> torch.Tensor:
        """One sample of the mask = 1 region of z0 (B, T, C', h, w), on the device."""
        e = self.cfg.eval
        g = torch.Generator(device=self.device).manual_seed(seed)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.diffusion.sample(self.denoiser(mask, y), z0, mask, sampler=e.sampler, steps=e.sample_steps,
                                         eta=e.eta, generator=g, progress=False, clip_denoised=self.vae is None)

    def sample_key(self, spec: str, masks_cfg) -> str:
        """Hash of everything that made a task's samples (see the module docstring)."""
        c = self.cfg
        blob = {"task": spec, "masks": dataclasses.asdict(masks_cfg), "data": dataclasses.asdict(c.data),
                "model": dataclasses.asdict(c.model), "diffusion": dataclasses.asdict(c.diffusion),
                "checkpoint": {"step": self.step, "ema_sha256": self.checkpoint["ema_sha256"]},
                "vae_sha256": None if self.vae is None else self.vae.sha256, "num_videos": self.n,
                "sampling": {k: getattr(c.eval, k) for k in SAMPLING_KEYS}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def task_samples(self, spec: str, kind: str, masks_cfg) -> tuple:
        """(real (N, T, C, H, W), fakes (k, N, T, C, H, W), pixel mask (N, T, H, W)), pixels in [-1, 1]."""
        e = self.cfg.eval
        name = spec.replace(":", "_").replace("/", "_")
        cache = self.layout.eval_cache / f"{name}-{self.sample_key(spec, masks_cfg)}"
        cache.mkdir(parents=True, exist_ok=True)
        reals, fakes, masks = [], [], []
        bar = tqdm(total=self.n, desc=f"eval {spec}", disable=not self.progress, dynamic_ncols=True)
        for b, (x0, y) in enumerate(self.real_batches()):
            path = cache / f"batch_{b:04d}.pt"
            if path.exists():
                done = torch.load(path, weights_only=True)
            else:
                mask = self.batch_mask(kind, masks_cfg, b, x0.shape[0])
                z0, md = self.encode(x0), mask.to(self.device)
                yd = None if y is None else y.to(self.device)
                outs = [self.sample_batch(z0, yd, md, seed=(e.seed * SEED_STRIDE + b) * 64 + j)
                        for j in range(e.best_of)]
                done = {"sample": torch.stack([o.float().cpu() for o in outs]), "mask": mask}
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                torch.save(done, tmp)
                os.replace(tmp, path)
            reals.append(x0)
            fakes.append(torch.stack([self.to_pixels(s, x0, done["mask"]) for s in done["sample"]]))
            masks.append(self.pixel_mask(done["mask"]))
            bar.update(x0.shape[0])
        bar.close()
        return torch.cat(reals), torch.cat(fakes, dim=1), torch.cat(masks)

    # ---------------------------------------------------------------- the one-step diagnostic
    @torch.no_grad()
    def one_step_x0(self, kind: str, masks_cfg, t: int) -> torch.Tensor:
        """The model's one-step clean-clip estimate at noise level t, in pixels (N, T, C, H, W), given pixels real.

        Each clip is noised to x_t (the given region kept clean, as in training) with noise from a
        generator seeded by (eval.seed, batch, t); the masks are the task's, as in ``task_samples``.
        """
        out = []
        for b, (x0, y) in enumerate(self.real_batches()):
            mask = self.batch_mask(kind, masks_cfg, b, x0.shape[0])
            z0, md = self.encode(x0), mask.to(self.device)
            g = torch.Generator(device=self.device).manual_seed((self.cfg.eval.seed * SEED_STRIDE + b) * 4096 + t)
            noise = torch.randn(z0.shape, generator=g, device=self.device, dtype=z0.dtype)
            tt = torch.full((z0.shape[0],), t, device=self.device, dtype=torch.long)
            m = md.unsqueeze(2).to(z0.dtype)  # (B, T, 1, h, w)
            x_in = z0 * (1 - m) + self.diffusion.q_sample(z0, tt, noise) * m
            yd = None if y is None else y.to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                model_out = self.denoiser(md, yd)(x_in, tt)
            z0_hat = self.diffusion.pred_x0(model_out, x_in, tt, clip=self.vae is None)
            out.append(self.to_pixels(z0_hat, x0, mask))
        return torch.cat(out)
