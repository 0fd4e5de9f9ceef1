"""Datasets: procedural bouncing shapes, real videos (UCF101, TaiChi-HD, Sky Time-lapse), cached latents.

``build_dataset(cfg)`` is the one entry point. Every dataset it returns:
- gives ``dataset[i]`` = a (T, C, H, W) float32 video in [-1, 1], or ``(video, label)`` when
  ``cfg.class_labels`` is set (UCF101);
- is a pure function of (index, cfg.seed, split, epoch): no global RNG. Training-time
  randomness (the clip offset) follows ``set_epoch(epoch)`` where a dataset has it (the latent
  cache has none: its clips are fixed); the val and test splits ignore the epoch. Val is disjoint
  from train and test: its own seed range for bouncing, whole groups held out of train for real data
  (docs/data.md);
  With DataLoader workers, call ``set_epoch`` before creating the iterator (workers copy the
  dataset when they start; persistent workers keep the epoch they started with);
- describes itself with ``protocol()``, a dict for the metric record;
- says in ``skipped`` which bad videos it left out (``vdt.data.scan.Skipped``; None for procedural data).
"""

import sys
from pathlib import Path

import torch

from vdt.config import DataConfig
from vdt.data.bouncing import BouncingShapes
from vdt.data.layouts import DatasetLayoutError

__all__ = ["BouncingShapes", "DatasetLayoutError", "announce_skipped", "build_dataset", "build_video_dataset"]


def build_video_dataset(cfg: DataConfig, split: str | None = None, log_dir=None) -> torch.utils.data.Dataset:
    """The pixel-space dataset named by ``cfg.name`` (no autoencoder)."""
    split = cfg.split if split is None else split
    if cfg.name == "bouncing":
        return BouncingShapes(cfg, split)
    from vdt.data.clips import VideoClips  # real videos need PyAV; import it only here

    return VideoClips(cfg, split, log_dir=None if log_dir is None else Path(log_dir))


def build_dataset(cfg: DataConfig, split: str | None = None, log_dir=None) -> torch.utils.data.Dataset:
    """The dataset a run trains or evaluates on: pixels, or cached SD-VAE latents when cfg.autoencoder='sd-vae'.

    split: None means cfg.split. log_dir: where real datasets write ``bad_videos.txt`` (None: the
    scan-index directory under the cache, see vdt/data/clips.py).
    """
    if cfg.autoencoder == "none":
        return build_video_dataset(cfg, split, log_dir)
    from vdt.data.latents import LatentDataset

    return LatentDataset.build(cfg, split if split is not None else cfg.split, log_dir=log_dir)


def announce_skipped(dataset, who: str) -> dict | None:
    """Print one line to stderr when ``dataset`` left out bad videos; their count for run.json (None: procedural).

    who: what is reading the data ("training", "evaluation"), the line's first word.
    """
    skipped = getattr(dataset, "skipped", None)
    if skipped is None:
        return None
    if skipped.count:
        print(skipped.line(who), file=sys.stderr, flush=True)
    return skipped.record()
