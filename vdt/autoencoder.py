"""Stable Diffusion's VAE (diffusers ``AutoencoderKL``): video <-> scaled latents, loaded offline.

VDT trains in this latent space: 8x downsampling, 4 channels, latents times 0.18215.
``encode`` returns the posterior mean (not a sample), so a latent cache is a deterministic
function of the clips and the weights; the SD VAE's posterior std is tiny, and DiT-style
per-step sampling cannot apply to a cache anyway.

Weights, first match wins (nothing is downloaded):
    1. the path passed (``data.vae_path``),
    2. ``$VDT_SD_VAE``,
    3. ``~/.cache/vdt-bench/sd-vae-ft-ema``.
A path is a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or
``.bin``, as ``save_pretrained`` writes it), or a single ``.safetensors``/``.ckpt`` file in the
original or diffusers format, read with ``from_single_file`` and the SD VAE config (or a
``config.json`` beside the file).
"""

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from einops import rearrange

from vdt.errors import WeightsMissingError

VAE_ENV_VAR = "VDT_SD_VAE"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SINGLE_FILE_EXTS = (".safetensors", ".ckpt", ".pt", ".bin")
# stabilityai/sd-vae-ft-ema's config.json (diffusers' defaults fill the rest, scaling_factor 0.18215 included).
SD_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "sample_size": 256,
}


class VAEWeightsMissingError(WeightsMissingError):
    """The SD-VAE weights are not on disk; the message says what to put where."""


def default_vae_path() -> Path:
    return Path.home() / ".cache" / "vdt-bench" / "sd-vae-ft-ema"


def resolve_vae_path(path=None) -> Path:
    """The weights folder or file: ``path``, else ``$VDT_SD_VAE``, else ``~/.cache/vdt-bench/sd-vae-ft-ema``."""
    where = "data.vae_path" if path else f"${VAE_ENV_VAR}" if os.environ.get(VAE_ENV_VAR) else "the default"
    p = Path(path or os.environ.get(VAE_ENV_VAR) or default_vae_path()).expanduser()
    if p.is_dir() and (p / "config.json").is_file() and any((p / n).is_file() for n in WEIGHT_NAMES):
        return p
    if p.is_file() and p.suffix in SINGLE_FILE_EXTS:
        return p
    raise VAEWeightsMissingError(
        f"No SD-VAE weights at {p} ({where}). Put the diffusers folder of stabilityai/sd-vae-ft-ema "
        f"(config.json + diffusion_pytorch_model.safetensors) at {default_vae_path()}, or set "
        f"data.vae_path=/path/to/that/folder (or a single .safetensors file), or ${VAE_ENV_VAR}. "
        f"Nothing is downloaded."
    )


def weights_sha256(path) -> str:
    """SHA-256 of the weights (a folder: its config.json, then its weight files)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else [path / n for n in ("config.json", *WEIGHT_NAMES) if (path / n).is_file()]
    return _sha256(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _sha256(files: tuple) -> str:  # sizes and mtimes are only cache keys: a rewritten file is hashed again
    digest = hashlib.sha256()
    for name, _, _ in files:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class VAE:
    """An AutoencoderKL over videos: (B, T, 3, H, W) in [-1, 1] <-> (B, T, 4, H/8, W/8) scaled latents."""

    def __init__(self, model, sha256: str, frame_batch: int = 32):
        self.model, self.sha256, self.frame_batch = model.eval().requires_grad_(False), sha256, frame_batch
        self.factor = 2 ** (len(model.config.block_out_channels) - 1)
        self.channels = model.config.latent_channels
        self.scaling = model.config.scaling_factor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "VAE":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> (B, T, 4, H/f, W/f): the posterior mean times the scaling factor."""
        B, T, C, H, W = video.shape
        if C != 3 or H % self.factor or W % self.factor:
            raise ValueError(f"VAE.encode: expected (B, T, 3, H, W) with H, W multiples of {self.factor}, "
                             f"got {tuple(video.shape)}")
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        dtype = next(self.model.parameters()).dtype
        z = [self.model.encode(x.to(self.device, dtype)).latent_dist.mean for x in frames.split(self.frame_batch)]
        z = torch.cat(z).float() * self.scaling  # (B*T, 4, H/f, W/f)
        return rearrange(z, "(b t) c h w -> b t c h w", b=B)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, 4, h, w) scaled latents -> (B, T, 3, h*f, w*f) in [-1, 1]."""
        B, T, C, h, w = latents.shape
        if C != self.channels:
            raise ValueError(f"VAE.decode: expected (B, T, {self.channels}, h, w), got {tuple(latents.shape)}")
        z = rearrange(latents, "b t c h w -> (b t) c h w") / self.scaling
        dtype = next(self.model.parameters()).dtype
        x = [self.model.decode(c.to(self.device, dtype)).sample for c in z.split(self.frame_batch)]
        x = torch.cat(x).float().clamp(-1.0, 1.0)  # (B*T, 3, H, W)
        return rearrange(x, "(b t) c h w -> b t c h w", b=B)


def load_vae(path=None, device="cpu", dtype=torch.float32) -> VAE:
    """The SD VAE from a local folder or file (see the module docstring); raises VAEWeightsMissingError."""
    from diffusers import AutoencoderKL  # heavy import, only when a VAE is used

    p = resolve_vae_path(path)
    if p.is_dir():
        model = AutoencoderKL.from_pretrained(p, local_files_only=True, low_cpu_mem_usage=False, torch_dtype=dtype)
    elif (p.parent / "config.json").is_file():
        model = AutoencoderKL.from_single_file(str(p), config=str(p.parent), local_files_only=True, torch_dtype=dtype)
    else:
        with tempfile.TemporaryDirectory() as config_dir:
            (Path(config_dir) / "config.json").write_text(json.dumps(SD_VAE_CONFIG))
            model = AutoencoderKL.from_single_file(str(p), config=config_dir, local_files_only=True,
                                                   torch_dtype=dtype)
    return VAE(model.to(device), weights_sha256(p))
