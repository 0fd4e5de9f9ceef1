"""Where metric weights live on disk, and their SHA-256.

Nothing here downloads. Each metric that needs a network asks this module for a path
and gets either an existing file or a `WeightsMissingError` that names the file and
where to put it.

I3D weights, first match wins:
    1. the path the caller passes (the `--i3d-weights PATH` flag),
    2. the environment variable `VDT_I3D_WEIGHTS`,
    3. `~/.cache/vdt-bench/i3d_pretrained_400.pt`, then `~/.cache/vdt-bench/i3d_torchscript.pt`.

LPIPS backbone: `alexnet-owt-7be5be79.pth` in `$TORCH_HOME/hub/checkpoints`
(torch.hub's own rule: `$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

from vdt.errors import WeightsMissingError

I3D_ENV_VAR = "VDT_I3D_WEIGHTS"
# Both hold the TF-Hub Kinetics-400 I3D, so FVD values from either are comparable.
I3D_FILENAMES = ("i3d_pretrained_400.pt", "i3d_torchscript.pt")
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"


def default_cache_dir() -> Path:
    """The vdt-bench weights folder, `~/.cache/vdt-bench`."""
    return Path.home() / ".cache" / "vdt-bench"


def resolve_i3d_weights(path: str | os.PathLike | None = None) -> Path:
    """Return the I3D weights file: `path`, else `$VDT_I3D_WEIGHTS`, else the cache folder."""
    if path is not None:
        return _existing(Path(path), "--i3d-weights")
    if os.environ.get(I3D_ENV_VAR):
        return _existing(Path(os.environ[I3D_ENV_VAR]), f"${I3D_ENV_VAR}")
    cache = default_cache_dir()
    for name in I3D_FILENAMES:
        if (cache / name).is_file():
            return cache / name
    raise WeightsMissingError(
        f"No I3D weights found: looked for {' and '.join(I3D_FILENAMES)} in {cache}. "
        f"Put i3d_pretrained_400.pt (TF-Hub Kinetics-400 I3D in the piergiaj/pytorch-i3d "
        f"layout) or StyleGAN-V's i3d_torchscript.pt there, or pass --i3d-weights PATH, "
        f"or set {I3D_ENV_VAR}=PATH. Nothing is downloaded."
    )


def alexnet_backbone_path() -> Path:
    """Return the AlexNet file LPIPS needs, or raise before lpips tries to download it."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME
    if not path.is_file():
        raise WeightsMissingError(
            f"LPIPS needs the torchvision AlexNet backbone {ALEXNET_FILENAME}, not found at "
            f"{path}. Copy it there (the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME "
            f"defaults to ~/.cache/torch). Nothing is downloaded."
        )
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, cached per (path, size, mtime) so a big file is hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime_ns are only cache keys: a rewritten file gets hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing(path: Path, source: str) -> Path:
    """Return `path` if it is a file, else raise naming where the path came from."""
    path = path.expanduser()
    if not path.is_file():
        raise WeightsMissingError(
            f"I3D weights file {path} (from {source}) does not exist. Expected "
            f"{' or '.join(I3D_FILENAMES)}; the default folder is {default_cache_dir()}."
        )
    return path
