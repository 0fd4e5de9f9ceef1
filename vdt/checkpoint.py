"""Checkpoints on disk: atomic writes, the last few kept, and a fallback past a corrupt one.

Layout: ``DIR/step_0000100.pt`` ... and ``DIR/last.pt`` (the newest). Each file is written to a
temporary name and renamed, so a crash never leaves a half-written checkpoint under a real
name; ``last.pt`` is still checked on load, and a truncated or unreadable one makes the
loader warn and fall back to the newest step file that loads.
"""

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

REQUIRED = ("model", "ema", "optimizer", "step", "config")


def rng_state() -> dict:
    """Every RNG state, saved in the checkpoint (training itself draws from per-step generators)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
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
        atomic_save(state, self.dir / "last.pt")  # first: last.pt is never older than the newest step file
        atomic_save(state, path)
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
