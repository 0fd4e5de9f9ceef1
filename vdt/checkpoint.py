"""Checkpoints on disk: one atomic write per save, the last few kept, and a fallback past a corrupt one.

Layout: ``DIR/step_0000100.pt`` ... and ``DIR/last.pt`` (the newest). A save serialises the state
once, to a temporary name, fsyncs it and renames it to its step file; ``last.pt`` is then a hard
link to that file, swapped in by a rename. So a save costs one write (for VDT-L/2 with AdamW a
second copy would be ~14 GB more), a crash never leaves a half-written checkpoint under a real
name, and the previous ``last.pt`` stays whole until the new one is complete. ``last.pt`` is
still checked on load: a truncated or unreadable one makes the loader warn and fall back to the
newest step file that loads.
"""

import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from vdt import faults

REQUIRED = ("model", "ema", "optimizer", "step", "config")


def rng_state() -> dict:
    """Every RNG state, saved in the checkpoint (training itself draws from per-step generators)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary name in the same folder, fsync, then rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            faults.inject("checkpoint write")  # the fault-injection run's full disk (vdt/faults.py)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    faults.inject("checkpoint before rename")  # its crash between write and rename
    os.replace(tmp, path)


def atomic_link(src: Path, path: Path) -> None:
    """Make ``path`` name the file ``src`` names (a hard link swapped in by a rename).

    Where the filesystem has no hard links, a byte copy stands in (still renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, path)


class CheckpointStore:
    """``last.pt`` plus the newest ``keep`` step checkpoints in one directory."""

    def __init__(self, directory, keep: int = 3):
        self.dir, self.keep = Path(directory), keep

    def step_files(self) -> list:
        """Step checkpoints, newest first."""
        files = [p for p in self.dir.glob("step_*.pt") if re.fullmatch(r"step_\d+\.pt", p.name)]
        return sorted(files, key=lambda p: int(p.stem.split("_")[1]), reverse=True)

    def save(self, state: dict, step: int) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step_{step:07d}.pt"
        atomic_save(state, path)  # the one write
        atomic_link(path, self.dir / "last.pt")  # the old last.pt stays until this rename
        for old in self.step_files()[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> dict | None:
        """The newest checkpoint that loads; warns about each one that doesn't. None if there is none."""
        candidates = [self.dir / "last.pt"] + self.step_files()
        for path in candidates:
            if not path.exists():
                continue
            try:
                ckpt = torch.load(path, map_location=map_location, weights_only=False)
                missing = [k for k in REQUIRED if k not in ckpt]
                if missing:
                    raise ValueError(f"missing keys {missing}")
                return ckpt
            except Exception as e:  # noqa: BLE001 - any unreadable file means: try the previous one
                warnings.warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                              "falling back to the previous one", stacklevel=2)
        return None
