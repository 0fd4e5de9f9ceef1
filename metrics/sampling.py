"""Samples for evaluation: a trained run's EMA model on a device, its pixel test clips, and a sample cache.

Evaluation always reads PIXEL test clips, also for a latent run (``data.autoencoder=sd-vae``): the
VAE, on the run's device, encodes the clips, the model samples the generated region in latent
space, and the VAE decodes the result. What leaves this module is in pixel space, [-1, 1]:

- ``real``  (N, T, C, H, W)     the test clips, in index order;
- ``fakes`` (k, N, T, C, H, W)  k = eval.best_of samples per clip; the given pixels are the real ones
                                (a latent run's decoded samples are pasted into the generated region);
- ``mask``  (N, T, H, W)        on the pixel grid, 1 = generate (a latent cell covers 8x8 pixels).

The model is bound to its checkpoint (``bind_to_checkpoint``): model, diffusion, masks and the
training data config are the ones it was trained with; an evaluation may change only ``eval.*``,
where the data lives (``EVAL_MAY_SET``) and which split is scored (``split``, default test).

Samples are cached per batch in ``eval_cache/<task>-<key>/`` on the model's grid (latents for a
latent run: small, decoded again on load). The key hashes everything that made them: the task
and its mask parameters, the data config and the list of clips actually scored (``clip_signature``:
a rescan that drops a video changes it), the model and diffusion configs (the prediction target
included), the checkpoint (its step and the SHA-256 of its EMA weights), the VAE's weights, and
every sampling setting (sampler, steps, eta, guidance, best_of, num_videos, batch size, seed). Any
change misses the cache; nothing stale is ever served.

Seeds (``derive_seed``) are a hash of what they are for: (eval.seed, task, batch) for a batch's
mask, plus the sample index for its noise, plus t for the one-step x0 diagnostic's noise; distinct
inputs never share a stream, for any best_of or t. They don't depend on the run: every run of a
sweep is scored on the same clips, masks and noise.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from tqdm import tqdm

from vdt.config import NOT_IN_RUN_ID, ConfigError, RunConfig
from vdt.data import announce_skipped, build_video_dataset
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.errors import PathError
from vdt.layout import RunLayout
from vdt.masks import task_mask
from vdt.model import VDT

SEED_RULE = "sha256(eval.seed, kind, task, batch, sample | t)"  # in the cache key: another rule, other samples
SAMPLING_KEYS = ("sampler", "sample_steps", "eta", "guidance", "best_of", "seed", "batch_size")
# What an evaluation may set besides eval.*: the data fields left out of the run id (where the data lives: data.root,
# the latent cache, the VAE folder, paths whose contents are checked by the clip signature and the VAE's SHA-256; how
# it is read: workers, the bad-video threshold), and which split is scored (data.split: test by default, not the
# split the run was trained on).
DATA_LOCATION = tuple(k.split(".", 1)[1] for k in NOT_IN_RUN_ID if k.startswith("data."))  # not in any key
EVAL_MAY_SET = ("data.split", *(f"data.{k}" for k in DATA_LOCATION))


def derive_seed(*parts) -> int:
    """A 63-bit seed from a hash of ``parts`` (ints and strings): distinct parts, distinct streams."""
    blob = json.dumps(["vdt-bench eval", *parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def bind_to_checkpoint(cfg: RunConfig, trained: dict, where: str) -> RunConfig:
    """The config to evaluate a checkpoint with: its training config (``trained``, the ``config`` it stores) with
    ``cfg``'s eval settings and data location. Any other difference is a ConfigError naming the key and the
    trained value (``train.steps`` may differ: a continued run's config.json is ahead of its checkpoint)."""
    try:
        ckpt_cfg = RunConfig.from_dict(trained)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: the config stored in the checkpoint doesn't load ({e})") from None
    was, now = _flat(ckpt_cfg.training_dict()), _flat(cfg.training_dict())
    diff = [k for k in sorted(was.keys() | now.keys()) if k != "train.steps" and was.get(k) != now.get(k)]
    if diff:
        said = "; ".join(f"{k}={now.get(k)!r} but {where} was trained with {k}={was.get(k)!r}" for k in diff)
        raise ConfigError(f"{said}. Evaluation takes model, diffusion, masks and data from its checkpoint; it may "
                          f"change only eval.* and {', '.join(EVAL_MAY_SET)}")
    data = dataclasses.replace(ckpt_cfg.data, **{k: getattr(cfg.data, k) for k in DATA_LOCATION})
    return dataclasses.replace(ckpt_cfg, data=data, eval=cfg.eval)


def _flat(sections: dict) -> dict:
    return {f"{s}.{k}": v for s, sec in sections.items() for k, v in sec.items()}


def clip_signature(data, start: int, stop: int) -> str:
    """SHA-256 of the clips start..stop-1 of a dataset: what defines them (dataset, split, frames, stride, size...)
    and, for real videos, each clip's source (its path under data.root), first frame and label. The same clips
    under another data.root give the same signature; a rescan that drops a video gives another one."""
    protocol = {k: v for k, v in data.protocol().items()
                if k not in ("root", "bad_log", "epoch", "num_bad", "num_sources", "num_clips")}
    items = [start, stop]
    if hasattr(data, "paths") and hasattr(data, "clip_start"):
        root = Path(data.cfg.root).expanduser()
        rel = [os.path.relpath(Path(data.paths[i]).expanduser(), root) for i in range(start, stop)]
        items = [[r, data.clip_start(i), data.labels[i]] for r, i in zip(rel, range(start, stop), strict=True)]
    blob = json.dumps({"protocol": protocol, "clips": items}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def state_sha256(state: dict) -> str:
    """SHA-256 of a state dict's content: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RunSampler:
    """One run's EMA model (and VAE) on ``device``, the pixel clips of ``split``, and cached samples of a task.

    ``cfg`` must match the checkpoint's training config (``bind_to_checkpoint``); ``self.cfg`` is the bound one."""

    def __init__(self, run_dir, cfg: RunConfig, *, device=None, progress: bool = True, split: str = "test"):
        self.layout, self.progress, self.split = RunLayout(run_dir), progress, split
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ckpt, sha = self._load_checkpoint(self.layout.last_ckpt)
        self.cfg = cfg = bind_to_checkpoint(cfg, ckpt["config"], f"checkpoint {self.layout.last_ckpt}")
        self.checkpoint = {"path": str(self.layout.last_ckpt), "step": ckpt["step"], "sha256": sha,
                           "ema_sha256": state_sha256(ckpt["ema"])}
        model = VDT(cfg.model)
        model.load_state_dict(ckpt["ema"])
        model.eval().requires_grad_(False).to(self.device)
        del ckpt
        self.attach(model, cfg.eval.num_videos, "evaluation")
        self.clips_sha256 = clip_signature(self.data, 0, self.n)

    def attach(self, model, num_videos: int, purpose: str) -> None:
        """Sample with ``model`` from the first ``num_videos`` clips of ``self.split`` (needs cfg, device, split)."""
        cfg = self.cfg
        self.model = model
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        # Pixel clips, also for a latent run: the latent cache is for training only.
        self.data = build_video_dataset(dataclasses.replace(cfg.data, autoencoder="none", split=self.split), self.split)
        announce_skipped(self.data, purpose)
        self.n = min(num_videos, len(self.data))
        self.vae = None
        if cfg.data.autoencoder == "sd-vae":
            from vdt.autoencoder import load_vae
            self.vae = load_vae(cfg.data.vae_path, device=self.device)

    def _load_checkpoint(self, path) -> tuple:
        """(the checkpoint, the SHA-256 of its file), both from one open file: a save in between can't mix them."""
        if not path.exists():
            raise PathError(f"{path}: no checkpoint; train first (python -m vdt.train --run-dir "
                            f"{self.layout.root})")
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
                f.seek(0)
                ckpt = torch.load(f, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError) as e:  # IsADirectory, truncated zip, bad pickle
            raise PathError(f"{path}: the checkpoint can't be read ({type(e).__name__}: {e}); resume training to "
                            f"write it again (python -m vdt.train --run-dir {self.layout.root})") from None
        missing = [k for k in ("ema", "step", "config") if not isinstance(ckpt, dict) or k not in ckpt]
        if missing:
            raise PathError(f"{path}: not a vdt-bench checkpoint (no {', '.join(missing)})")
        return ckpt, digest.hexdigest()

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
        """How the real clips start..stop-1 were chosen (the FVD statistics' source), with their signature."""
        return {**self._data_protocol(), "first": start, "stop": stop,
                "selection": f"pixel {self.split} clips {start}..{stop - 1} in index order",
                "clips_sha256": clip_signature(self.data, start, stop)}

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
        """The task's mask of batch b, (B, T, h, w) on the model's grid; a pure function of (eval.seed, task, b)."""
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.eval.seed, "mask", kind, b))
        side = self.cfg.data.grid[1]
        return task_mask(kind, (self.cfg.data.frames, side, side), masks_cfg, batch, generator=gen)

    def denoiser(self, mask: torch.Tensor, y) -> Denoiser:
        return Denoiser(self.model, self.cfg.model.conditioning, mask, y=y, guidance=self.cfg.eval.guidance,
                        null_label=self.cfg.model.num_classes)

    def sample_batch(self, z0, y, mask, seed: int) -> torch.Tensor:
        """One sample of the mask = 1 region of z0 (B, T, C', h, w), on the device."""
        ev = self.cfg.eval
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.diffusion.sample(self.denoiser(mask, y), z0, mask, sampler=ev.sampler, steps=ev.sample_steps,
                                         eta=ev.eta, generator=gen, progress=False, clip_denoised=self.vae is None)

    def sample_key(self, spec: str, masks_cfg) -> str:
        """Hash of everything that made a task's samples (see the module docstring)."""
        cfg = self.cfg
        data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in DATA_LOCATION}
        blob = {"task": spec, "masks": dataclasses.asdict(masks_cfg), "data": data, "split": self.split,
                "clips_sha256": self.clips_sha256, "seeds": SEED_RULE,
                "model": dataclasses.asdict(cfg.model), "diffusion": dataclasses.asdict(cfg.diffusion),
                "checkpoint": {"step": self.step, "ema_sha256": self.checkpoint["ema_sha256"]},
                "vae_sha256": None if self.vae is None else self.vae.sha256, "num_videos": self.n,
                "sampling": {k: getattr(cfg.eval, k) for k in SAMPLING_KEYS}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def task_samples(self, spec: str, kind: str, masks_cfg) -> tuple:
        """(real (N, T, C, H, W), fakes (k, N, T, C, H, W), pixel mask (N, T, H, W)), pixels in [-1, 1]."""
        ev = self.cfg.eval
        name = spec.replace(":", "_").replace("/", "_")
        cache = self.layout.eval_cache / f"{name}-{self.sample_key(spec, masks_cfg)}"
        cache.mkdir(parents=True, exist_ok=True)
        reals, fakes, masks = [], [], []
        bar = tqdm(total=self.n, desc=f"eval {spec}", disable=not self.progress, dynamic_ncols=True)
        for b, (x0, y) in enumerate(self.real_batches()):
            path = cache / f"batch_{b:04d}.pt"
            cached = self._load_cached(path)
            if cached is None:
                mask = self.batch_mask(kind, masks_cfg, b, x0.shape[0])
                z0, md = self.encode(x0), mask.to(self.device)
                yd = None if y is None else y.to(self.device)
                outs = [self.sample_batch(z0, yd, md, seed=derive_seed(ev.seed, "sample", spec, b, j))
                        for j in range(ev.best_of)]
                cached = {"sample": torch.stack([o.float().cpu() for o in outs]), "mask": mask}
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                torch.save(cached, tmp)
                os.replace(tmp, path)
            reals.append(x0)
            fakes.append(torch.stack([self.to_pixels(s, x0, cached["mask"]) for s in cached["sample"]]))
            masks.append(self.pixel_mask(cached["mask"]))
            bar.update(x0.shape[0])
        bar.close()
        return torch.cat(reals), torch.cat(fakes, dim=1), torch.cat(masks)

    @staticmethod
    def _load_cached(path):
        """A cached batch of samples, or None when there is none or it is unreadable (then it is sampled again)."""
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):  # a torn or corrupt file: sample it again
            return None

    # ---------------------------------------------------------------- the one-step diagnostic
    @torch.no_grad()
    def one_step_x0(self, kind: str, masks_cfg, t: int) -> torch.Tensor:
        """The model's one-step clean-clip estimate at noise level t, in pixels (N, T, C, H, W), given pixels real.

        Each clip is noised to x_t (the given region kept clean, as in training) with noise from a
        generator seeded by (eval.seed, task, batch, t); the masks are the task's, as in ``task_samples``.
        """
        out = []
        for b, (x0, y) in enumerate(self.real_batches()):
            mask = self.batch_mask(kind, masks_cfg, b, x0.shape[0])
            z0, md = self.encode(x0), mask.to(self.device)
            gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.eval.seed, "x0", kind, b, t))
            noise = torch.randn(z0.shape, generator=gen, device=self.device, dtype=z0.dtype)
            tt = torch.full((z0.shape[0],), t, device=self.device, dtype=torch.long)
            m = md.unsqueeze(2).to(z0.dtype)  # (B, T, 1, h, w)
            x_in = z0 * (1 - m) + self.diffusion.q_sample(z0, tt, noise) * m
            yd = None if y is None else y.to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                model_out = self.denoiser(md, yd)(x_in, tt)
            z0_hat = self.diffusion.pred_x0(model_out, x_in, tt, clip=self.vae is None)
            out.append(self.to_pixels(z0_hat, x0, mask))
        return torch.cat(out)
