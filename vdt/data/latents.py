"""A latent cache: a dataset's clips encoded once by the SD VAE, then read from memory-mapped arrays.

Training reads latents and never the videos, so the cache holds a fixed set of clips:
- val and test splits: one clip per video, at the centre (as the pixel dataset);
- train and all: ``cfg.latent_clips`` (K) clips per video, one drawn uniformly from each of K
  equal strata of the possible offsets, from ``default_rng((seed, index, LATENT_STREAM))``.
  The trade-off: pixel training sees a new random offset every epoch; the cache sees only
  these K, so a larger K is closer to pixel training and costs K times the encoding and disk
  (about 128 KiB per 16-frame 256-px clip in float16).
- train and all, ``cfg.latent_clips`` = 0 (``ALL_CLIPS``): every clip of every video, that is every first
  frame 0 .. n - span of a video of n frames, ``cfg.frames`` frames ``cfg.stride`` apart. The SD VAE encodes
  frames independently, so the cache stores each frame of a video once (``layout: frames``) and a clip is a
  strided slice of them: about 8 KiB per 256-px frame in float16, whatever the number of clips. Training
  draws uniformly from all clips, so a long video gives more of them than a short one (pixel training draws
  one clip per video per epoch). A video that fails to read while it is encoded loses its clips (logged).
Items are (T, 4, size/8, size/8) float32 (or ``(latents, label)`` with ``cfg.class_labels``).

On disk, ``<cache>/<key>/`` holds ``latents.npy`` (N, T, 4, s, s) float16 (``layout: frames``: (F, 4, s, s),
one row per source frame, and ``clips.npy``: each clip's first row and its video), ``labels.npy``,
``meta.json``, ``progress.json`` and, last, ``complete.json``. The key hashes the dataset's
protocol, its sources, the clip plan, and the VAE weights' SHA-256. ``<cache>`` is
``cfg.latent_cache``, else ``$VDT_CACHE_DIR/latents``, else ``results/cache/latents``.
The build writes chunks and records progress after each, so a killed build resumes where it
stopped; it holds an ``fcntl.flock`` on ``<cache>/<key>.lock``, so a second job waits and then
reuses what the first built.
"""

import dataclasses
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vdt import signals
from vdt.config import DataConfig
from vdt.data.decode import BAD_DATA_ERRORS, read_frames, resize_crop
from vdt.data.layouts import FIXED_SPLITS
from vdt.data.scan import append_bad_log

ALL_CLIPS = 0  # data.latent_clips: every clip of every video, cached as per-frame latents
LATENT_STREAM = 0x1A7E  # separates the cache's offset draws from the pixel dataset's
CHUNK = 8  # clips encoded between progress records
VERSION = 1


def latent_cache_dir(cfg: DataConfig) -> Path:
    if cfg.latent_cache:
        return Path(cfg.latent_cache).expanduser()
    from vdt.data.scan import cache_root

    return cache_root() / "latents"


def clip_plan(base, split: str, clips: int, seed: int) -> list:
    """[(source index, first frame or None)] for every cached clip, K per source for train and all."""
    if not hasattr(base, "num_frames"):  # procedural data: item i is the clip
        return [(i, None) for i in range(len(base))]
    if split in FIXED_SPLITS:
        return [(i, base.clip_start(i)) for i in range(len(base))]
    plan = []
    for i in range(len(base)):
        rng = np.random.default_rng((seed, i, LATENT_STREAM))
        starts = base.num_frames[i] - base.span + 1  # possible offsets
        for k in range(clips):
            lo = k * starts // clips
            hi = max(lo + 1, (k + 1) * starts // clips)
            plan.append((i, min(int(rng.integers(lo, hi)), starts - 1)))
    return plan


def segment_plan(base) -> list:
    """[(source index, first frame)] of segments covering every frame of every source, for per-frame
    latents: ``cfg.frames`` consecutive frames each, the last one ending at the source's last frame."""
    width, plan = base.cfg.frames, []
    for i, n in enumerate(base.num_frames):
        starts = list(range(0, n - width + 1, width))
        if starts[-1] + width < n:
            starts.append(n - width)  # overlaps the previous segment: its shared frames are encoded twice, alike
        plan += [(i, a) for a in starts]
    return plan


def all_clips(num_frames: list, span: int, failed=()) -> np.ndarray:
    """(N, 2) int64, one row per clip of every source not in ``failed``: its first row in the per-frame
    latents (sources stored one after another) and its source index."""
    rows = np.concatenate([[0], np.cumsum(num_frames)[:-1]]).astype(np.int64)
    skip = set(failed)
    out = [np.stack([rows[i] + np.arange(n - span + 1), np.full(n - span + 1, i)], axis=1)
           for i, n in enumerate(num_frames) if i not in skip]
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


class _PlannedClips(torch.utils.data.Dataset):
    """The planned clips of a pixel dataset, as (video, label) for the encoding DataLoader."""

    def __init__(self, base, plan: list, first: int):
        self.base, self.plan, self.first = base, plan, first

    def __len__(self) -> int:
        return len(self.plan) - self.first

    def __getitem__(self, i: int) -> tuple:
        index, start = self.plan[self.first + i]
        if start is None:
            return self.base[index], -1
        video, label, _ = self.base.read(index, start)
        return video, label


class _Segments(_PlannedClips):
    """Planned frame segments of a pixel dataset, as (frames, label, ok). A source that fails to read gives
    zeros and ok = False, never a substitute: the rows belong to that source, whose clips are then dropped."""

    def __getitem__(self, i: int) -> tuple:
        index, start = self.plan[self.first + i]
        c = self.base.cfg
        try:
            frames = read_frames(self.base.paths[index], range(start, start + c.frames))  # (T, H, W, 3)
            return resize_crop(frames, c.size, c.channels), self.base.labels[index], True
        except BAD_DATA_ERRORS as e:
            append_bad_log(self.base.bad_log, self.base.paths[index], f"failed when read: {type(e).__name__}: {e}")
            return torch.zeros(c.frames, c.channels, c.size, c.size), self.base.labels[index], False


class LatentDataset(torch.utils.data.Dataset):
    """Cached latents of a finished cache folder; the arrays are opened lazily in each process."""

    def __init__(self, folder: Path, class_labels: bool = False, skipped=None):
        self.folder, self.class_labels = Path(folder), class_labels
        self.skipped = skipped  # the bad videos the pixel dataset left out (vdt.data.scan.Skipped), None if procedural
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.labels = np.load(self.folder / "labels.npy")
        self.frames = self.meta.get("layout") == "frames"  # per-frame latents: a clip is a strided slice
        self.clips = np.load(self.folder / "clips.npy") if self.frames else None  # (N, 2): first row, source
        self._latents = None

    def __getstate__(self):  # never pickle the memory map into DataLoader workers
        return {**self.__dict__, "_latents": None}

    def __len__(self) -> int:
        return len(self.clips) if self.frames else self.meta["shape"][0]

    def __getitem__(self, index: int):
        if self._latents is None:
            self._latents = np.load(self.folder / "latents.npy", mmap_mode="r")
        if self.frames:
            first, source = self.clips[index]
            rows = first + self.meta["stride"] * np.arange(self.meta["clip_frames"])
            z, label = torch.from_numpy(self._latents[rows].astype(np.float32)), self.labels[source]  # (T, 4, s, s)
        else:
            z, label = torch.from_numpy(self._latents[index].astype(np.float32)), self.labels[index]  # (T, 4, s, s)
        return (z, int(label)) if self.class_labels else z

    def protocol(self) -> dict:
        return dict(self.meta["protocol"])

    @classmethod
    def build(cls, cfg: DataConfig, split: str, log_dir=None, vae=None, device=None) -> "LatentDataset":
        """The latent dataset of (cfg, split): from the cache, or encoded into it first (loads the VAE only then)."""
        from vdt.autoencoder import load_vae, resolve_vae_path, weights_sha256
        from vdt.data import build_video_dataset

        base = build_video_dataset(dataclasses.replace(cfg, autoencoder="none"), split, log_dir)
        frames = cfg.latent_clips == ALL_CLIPS and split not in FIXED_SPLITS and hasattr(base, "num_frames")
        plan = segment_plan(base) if frames else clip_plan(base, split, cfg.latent_clips, cfg.seed)
        vae_sha = vae.sha256 if vae is not None else weights_sha256(resolve_vae_path(cfg.vae_path))
        protocol = {k: v for k, v in base.protocol().items() if k not in ("epoch", "bad_log")}
        sources = getattr(base, "paths", None), getattr(base, "num_frames", None)
        what = dict(version=VERSION, protocol=protocol, sources=sources, plan=plan, vae=vae_sha)
        blob = json.dumps({**what, "layout": "frames"} if frames else what, sort_keys=True)  # K clips: keys as before
        key = f"{cfg.name}-{split}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
        folder = latent_cache_dir(cfg) / key
        protocol.update(autoencoder="sd-vae", vae_sha256=vae_sha, latent_scaling=0.18215, num_clips=len(plan),
                        clips_per_video=1 if split in FIXED_SPLITS else cfg.latent_clips, latent_cache=str(folder),
                        offset=protocol["offset"] if split in FIXED_SPLITS else
                        f"fixed at cache time: stratified random, default_rng((seed, index, {LATENT_STREAM}))")
        if frames:
            protocol.update(clips_per_video="all", num_clips=len(all_clips(base.num_frames, base.span)),
                            offset="every first frame: all clips of every video, from per-frame latents",
                            latent_frames=int(sum(base.num_frames)))
        if not (folder / "complete.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            with open(folder.parent / f"{key}.lock", "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"waiting for another job building the latent cache {folder}", file=sys.stderr)
                    fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if not (folder / "complete.json").is_file():  # the other job may have finished it
                        if vae is None:
                            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
                            vae = load_vae(cfg.vae_path, device=device)
                        (_encode_frames if frames else _encode)(folder, base, plan, vae, cfg, protocol)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        return cls(folder, cfg.class_labels, skipped=getattr(base, "skipped", None))


def _encode(folder: Path, base, plan: list, vae, cfg: DataConfig, protocol: dict) -> None:
    """Encode the planned clips into ``folder``, resuming from progress.json."""
    if (vae.channels, vae.factor) != (4, 8):
        raise ValueError(f"data.autoencoder=sd-vae expects 4 latent channels at 8x downsampling; "
                         f"the VAE has {vae.channels} at {vae.factor}x")
    side = cfg.size // 8
    shape = (len(plan), cfg.frames, 4, side, side)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "meta.json", dict(shape=shape, dtype="float16", protocol=protocol))
    progress = folder / "progress.json"
    done = json.loads(progress.read_text())["done"] if progress.is_file() else 0
    mode = "r+" if done and (folder / "latents.npy").is_file() else "w+"
    latents = np.lib.format.open_memmap(folder / "latents.npy", mode=mode, dtype=np.float16, shape=shape)
    if latents.shape != shape:
        raise ValueError(f"{folder}/latents.npy has shape {latents.shape}, expected {shape}: delete the folder")
    labels = np.load(folder / "labels.npy") if mode == "r+" else np.full(len(plan), -1, np.int64)
    done = done if mode == "r+" else 0
    loader = torch.utils.data.DataLoader(_PlannedClips(base, plan, done), batch_size=CHUNK,
                                         num_workers=cfg.num_workers)
    with tqdm(total=len(plan), initial=done, desc=f"encoding {folder.name}", unit="clip") as bar:
        for video, label in loader:  # (b, T, 3, H, W), (b,)
            z = vae.encode(video)  # (b, T, 4, H/8, W/8)
            latents[done:done + len(z)] = z.cpu().numpy().astype(np.float16)
            labels[done:done + len(z)] = label.numpy()
            done += len(z)
            latents.flush()
            _save_npy(folder / "labels.npy", labels)  # whole or not at all: a kill here must not tear it
            _write_json(progress, {"done": done})  # only after the chunk is on disk
            bar.update(len(z))
            signals.check("latent encoding")  # a stop here loses nothing: the next build resumes at `done`
    del latents
    np.save(folder / "labels.npy", labels)
    _write_json(folder / "complete.json", {"clips": len(plan), "read_failures": getattr(base, "read_failures", 0)})


def _encode_frames(folder: Path, base, plan: list, vae, cfg: DataConfig, protocol: dict) -> None:
    """Encode every frame of every source (the segments of ``plan``) into ``folder``, one row per frame,
    resuming from progress.json; then list every clip of the sources that read (clips.npy)."""
    if (vae.channels, vae.factor) != (4, 8):
        raise ValueError(f"data.autoencoder=sd-vae expects 4 latent channels at 8x downsampling; "
                         f"the VAE has {vae.channels} at {vae.factor}x")
    side = cfg.size // 8
    rows = np.concatenate([[0], np.cumsum(base.num_frames)[:-1]]).astype(np.int64)  # first row of each source
    shape = (int(sum(base.num_frames)), 4, side, side)
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(shape=shape, dtype="float16", protocol=protocol, layout="frames", clip_frames=cfg.frames,
                stride=cfg.stride)
    _write_json(folder / "meta.json", meta)
    progress = folder / "progress.json"
    state = json.loads(progress.read_text()) if progress.is_file() else {"done": 0, "failed": []}
    mode = "r+" if state["done"] and (folder / "latents.npy").is_file() else "w+"
    latents = np.lib.format.open_memmap(folder / "latents.npy", mode=mode, dtype=np.float16, shape=shape)
    if latents.shape != shape:
        raise ValueError(f"{folder}/latents.npy has shape {latents.shape}, expected {shape}: delete the folder")
    done, failed = (state["done"], set(state["failed"])) if mode == "r+" else (0, set())
    loader = torch.utils.data.DataLoader(_Segments(base, plan, done), batch_size=CHUNK, num_workers=cfg.num_workers)
    with tqdm(total=len(plan), initial=done, desc=f"encoding {folder.name} (frames)", unit="segment") as bar:
        for video, _, ok in loader:  # (b, T, 3, H, W), labels, (b,) read without error
            z = vae.encode(video).cpu().numpy().astype(np.float16)  # (b, T, 4, H/8, W/8)
            for k, (source, start) in enumerate(plan[done:done + len(z)]):
                latents[rows[source] + start:rows[source] + start + cfg.frames] = z[k]
                if not ok[k]:
                    failed.add(source)
            done += len(z)
            latents.flush()
            _write_json(progress, {"done": done, "failed": sorted(failed)})  # only after the chunk is on disk
            bar.update(len(z))
            signals.check("latent encoding")  # a stop here loses nothing: the next build resumes at `done`
    del latents
    clips = all_clips(base.num_frames, base.span, failed)
    np.save(folder / "clips.npy", clips)
    np.save(folder / "labels.npy", np.asarray(base.labels, np.int64))  # per source
    _write_json(folder / "meta.json", {**meta, "protocol": {**protocol, "num_clips": len(clips)}})
    _write_json(folder / "complete.json", {"clips": len(clips), "frames": shape[0], "read_failures": len(failed),
                                           "failed_sources": sorted(failed)})


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then a rename (a reader sees the old array or the new one)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _write_json(path: Path, blob: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(blob))
    os.replace(tmp, path)
