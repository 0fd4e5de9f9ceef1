"""Clips of real videos (UCF101, TaiChi-HD, Sky Time-lapse): one clip per usable video per epoch.

A clip is ``cfg.frames`` frames, ``cfg.stride`` apart. Its first frame is
- train and all: random, from ``default_rng((seed, epoch, index))`` (``set_epoch`` moves it);
- val and test: the centre of the video, the same at every epoch (deterministic evaluation clips).
Val is held out of the train split by whole groups (``vdt/data/layouts.py``, docs/data.md).
Frames are resized by the shorter side (bilinear, antialiased) and centre-cropped to
``cfg.size``. ``protocol()`` records all of this for the metrics.

Bad data. At construction every source is probed (``vdt/data/scan.py``, cached). Missing,
unreadable, truncated and too-short sources are skipped and listed with their reason in
``bad_videos.txt``: in ``log_dir`` if given, else ``<cache>/index/<dataset>-<split>-bad_videos.txt``.
More than ``cfg.max_bad_fraction`` bad stops with a ``BadDataError``. A source that still fails
when read is replaced by a deterministic other index, counted in ``read_failures`` and appended
to the log, so an epoch never dies half-way.
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch

from vdt.config import SPLITS, DataConfig
from vdt.data.decode import BAD_DATA_ERRORS, read_frames, resize_crop
from vdt.data.layouts import FIXED_SPLITS, find_sources
from vdt.data.scan import Skipped, append_bad_log, cache_root, check_bad_fraction, dataset_key, scan, write_bad_log

MAX_SUBSTITUTES = 16
SUBSTITUTE_STEP = 7919  # a prime: successive substitutes spread over the dataset


class VideoClips(torch.utils.data.Dataset):
    """Real-video clips; items are (T, C, H, W) float32 in [-1, 1], or (video, label) with cfg.class_labels."""

    def __init__(self, cfg: DataConfig, split: str, log_dir: Path | None = None):
        if split not in SPLITS:
            raise ValueError(f"split: unknown split {split!r}; choose from {SPLITS}")
        if cfg.autoencoder != "none":  # pixels only; the latent dataset reads through its own copy
            cfg = dataclasses.replace(cfg, autoencoder="none")
        self.cfg, self.split, self.epoch, self.read_failures = cfg, split, 0, 0
        self.span = (cfg.frames - 1) * cfg.stride + 1  # frames a clip covers in the source
        listing = find_sources(cfg.name, cfg.root, split, cfg.fold)
        key = dataset_key(cfg.name, cfg.root)
        probed = scan(listing.paths, cache_root() / "index" / f"{key}.json")
        bad = [(p, "missing: listed in the split file, not on disk") for p in listing.missing]
        self.paths, self.labels, self.num_frames = [], [], []
        for path, label in zip(listing.paths, listing.labels, strict=True):
            entry = probed[path]
            if entry["error"]:
                bad.append((path, entry["error"]))
            elif entry["frames"] < self.span:
                bad.append((path, f"too short: {entry['frames']} frames, a clip needs {self.span}"))
            else:
                self.paths.append(path)
                self.labels.append(label)
                self.num_frames.append(entry["frames"])
        self.classes = listing.classes
        self.num_sources, self.bad = len(listing.paths) + len(listing.missing), bad
        fold = f"-fold{cfg.fold}" if cfg.name == "ucf101" else ""
        name = "bad_videos.txt" if log_dir is not None else f"{key}-{split}{fold}-stride{cfg.stride}-bad_videos.txt"
        self.bad_log = (Path(log_dir) if log_dir is not None else cache_root() / "index") / name
        write_bad_log(self.bad_log, f"{cfg.name} {cfg.root} split={split}{fold}: {len(bad)} of "
                      f"{self.num_sources} bad (clips of {cfg.frames} frames at stride {cfg.stride})", bad)
        check_bad_fraction(bad, self.num_sources, cfg.max_bad_fraction, self.bad_log)
        self.skipped = Skipped(len(bad), self.num_sources, str(self.bad_log))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def clip_start(self, index: int) -> int:
        """First source frame of item ``index``'s clip this epoch."""
        room = self.num_frames[index] - self.span
        if self.split in FIXED_SPLITS:
            return room // 2
        rng = np.random.default_rng((self.cfg.seed, self.epoch, index))
        return int(rng.integers(0, room + 1))

    def load(self, index: int, start: int) -> torch.Tensor:
        """The clip of source ``index`` starting at frame ``start``: (T, C, size, size) in [-1, 1]."""
        frames = read_frames(self.paths[index], range(start, start + self.span, self.cfg.stride))  # (T, H, W, 3)
        return resize_crop(frames, self.cfg.size, self.cfg.channels)

    def read(self, index: int, start=None) -> tuple:
        """(video, label, source index): the clip, or a deterministic substitute if the source fails."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        for attempt in range(MAX_SUBSTITUTES):
            j = (index + attempt * SUBSTITUTE_STEP) % len(self)
            try:
                clip_start = self.clip_start(j) if start is None or attempt else start
                return self.load(j, clip_start), self.labels[j], j
            except BAD_DATA_ERRORS as e:
                self.read_failures += 1
                append_bad_log(self.bad_log, self.paths[j], f"failed when read: {type(e).__name__}: {e}")
        raise RuntimeError(f"{MAX_SUBSTITUTES} sources in a row failed to read, starting at {self.paths[index]}; "
                           f"see {self.bad_log}")

    def __getitem__(self, index: int):
        video, label, _ = self.read(index)
        return (video, label) if self.cfg.class_labels else video

    def protocol(self) -> dict:
        """What defines these clips, for the metric record."""
        cfg = self.cfg
        offset = "centre of the video" if self.split in FIXED_SPLITS else "random, default_rng((seed, epoch, index))"
        return dict(dataset=cfg.name, root=str(cfg.root), split=self.split,
                    fold=cfg.fold if cfg.name == "ucf101" else None,
                    frames=cfg.frames, stride=cfg.stride, offset=offset, seed=cfg.seed, epoch=self.epoch,
                    num_clips=len(self), clips_per_video=1, num_sources=self.num_sources, num_bad=len(self.bad),
                    resolution=cfg.size, channels=cfg.channels, range="[-1, 1]",
                    resize="shorter side to resolution (bilinear, antialias), centre crop",
                    num_classes=self.num_classes if cfg.class_labels else 0, bad_log=str(self.bad_log))
