"""The Physion readout: roll a model out from the given frames, pool features, fit a logistic regression, score it.

    python metrics/physion_readout.py --run-dir RUN --data physion:/data/Physion [--features model] [--future model]

The protocol of VDT's Physion readout, as Physion defines it (object contact prediction: does the red
object touch the yellow one) and SlotFormer runs it (pairlab/SlotFormer, docs/physion.md): fit the readout
on the rolled-out ``readout`` videos with their labels, score it on the rolled-out ``test`` videos.

1. Clips: the first ``data.frames`` frames of each video at ``data.stride`` (from frame 0: the readout asks
   about the start of the scene, SlotFormer keeps the first 75 frames), resized to ``data.size``.
2. Future (``--future``): ``model`` keeps the first ``masks.predict_k`` frames and samples the rest with the
   run's EMA model (its eval.* sampler settings); ``real`` keeps the true frames (an oracle rollout, the
   ceiling); ``copy`` repeats the last given frame (no dynamics, the floor).
3. Features per frame (``--features``): ``model``, the run's denoiser tokens before its final layer on the
   rolled-out clip at t = 0, mean over space; ``colour``, model-free: the centroids and masses of the red and
   yellow pixels and their distance (``metrics/dynamics.py``'s tracker with Physion's two colours).
4. Pooling: mean, max and min over frames (contact at any time means yes: the extremes over time carry it,
   as the max over time in SlotFormer's readout).
5. Readout: L2-regularised logistic regression on standardised pooled features, fitted by Newton's method
   (``fit_logistic``; SlotFormer trains a small relation head instead, Physion a logistic regression).
6. Report: accuracy on the test videos, beside the class balance and the majority class's share (chance).

Real Physion numbers need the data (about 1 GB of MP4s, docs/data.md#physion) and a GPU for the rollouts.
"""

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from metrics import dynamics
from vdt import cli as vdt_cli
from vdt.config import ConfigError, RunConfig, load_config
from vdt.data.decode import read_frames, resize_crop
from vdt.data.physion import readout_listing
from vdt.errors import PathError

FUTURES = ("model", "real", "copy")
FEATURES = ("model", "colour")
PHYSION_COLOURS = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # the red object and the yellow one
L2 = 1.0  # the readout's ridge penalty, on standardised features


def load_clips(paths: list, frames: int, stride: int, size: int, channels: int = 3) -> torch.Tensor:
    """The first ``frames`` frames at ``stride`` of each video: (N, T, C, size, size) in [-1, 1]."""
    return torch.stack([resize_crop(read_frames(p, range(0, frames * stride, stride)), size, channels)
                        for p in paths])


def copy_future(videos: torch.Tensor, given: int) -> torch.Tensor:
    """Every frame from ``given`` on replaced by the last given frame."""
    out = videos.clone()
    out[:, given:] = videos[:, given - 1:given]
    return out


def colour_features(videos: torch.Tensor, colours: np.ndarray = PHYSION_COLOURS) -> np.ndarray:
    """(N, T, 7) per frame: the two objects' centroids (x, y) and masses, by colour, and their distance (px);
    an object not in a frame gets the frame centre and mass 0, and the distance the frame's diagonal."""
    unit = ((videos.float() + 1) / 2).clamp(0, 1).numpy()
    N, T, C, H, W = unit.shape
    pos, mass = dynamics.track(unit, np.broadcast_to(colours, (N, *colours.shape)))  # (N, T, 2, 2), (N, T, 2)
    missing = ~(mass >= dynamics.MIN_MASS)
    pos = np.where(missing[..., None], np.array([W, H]) / 2, pos)
    dist = np.where(missing.any(-1), np.hypot(H, W), np.linalg.norm(pos[:, :, 0] - pos[:, :, 1], axis=-1))
    return np.concatenate([pos.reshape(N, T, 4), mass, dist[..., None]], axis=-1)


def pool(features: np.ndarray) -> np.ndarray:
    """(N, T, D) per-frame features -> (N, 3D): mean, max and min over frames."""
    return np.concatenate([features.mean(1), features.max(1), features.min(1)], axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 50) -> tuple:
    """L2-regularised logistic regression by Newton's method: (weights (D,), bias, mean (D,), std (D,)).

    x (N, D) is standardised with its own mean and std (kept, to apply to new features); the bias is not
    penalised."""
    mean, std = x.mean(0), x.std(0) + 1e-8
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)  # (N, D + 1)
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], w[-1], mean, std


def predict_logistic(model: tuple, x: np.ndarray) -> np.ndarray:
    """(N,) 0/1 predictions of ``fit_logistic``'s model."""
    w, b, mean, std = model
    return (((x - mean) / std) @ w + b > 0).astype(int)


def readout_accuracy(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, l2: float = L2) -> dict:
    """Fit on the pooled train features, score on the test ones: accuracy, class balance and chance."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    model = fit_logistic(train_x, train_y, l2)
    share = float(test_y.mean())
    return {"accuracy": float((predict_logistic(model, test_x) == test_y).mean()),
            "train_accuracy": float((predict_logistic(model, train_x) == train_y).mean()),
            "positive_share": share, "chance": max(share, 1.0 - share),
            "num_train": int(len(train_y)), "num_test": int(len(test_y)), "l2": l2}


# ---------------------------------------------------------------- the model: rollouts and features
class ModelReadout:
    """A trained run's EMA model (``metrics.sampling.RunSampler``): rollouts from the given frames, and features."""

    def __init__(self, run_dir, cfg: RunConfig, device=None):
        from metrics.sampling import RunSampler  # the model and its data: imported only when a run is read

        self.cfg, self.sampler = cfg, RunSampler(run_dir, cfg, device=device, progress=False)
        self.given = cfg.masks.given_frames(cfg.data.frames)

    def mask(self, n: int) -> torch.Tensor:
        """(n, T, h, w): 1 = generate, every frame from ``given`` on."""
        side = self.cfg.data.grid[1]
        m = torch.zeros(n, self.cfg.data.frames, side, side)
        m[:, self.given:] = 1
        return m

    @torch.no_grad()
    def rollout(self, videos: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """The model's future after the given frames, in pixels; the given frames are the real ones."""
        out, bs = [], self.cfg.eval.batch_size
        for b in range(0, len(videos), bs):
            x = videos[b:b + bs]
            m = self.mask(len(x))
            z = self.sampler.sample_batch(self.sampler.encode(x), None, m.to(self.sampler.device), seed=seed + b)
            out.append(self.sampler.to_pixels(z, x, self.sampler.pixel_mask(m)))
        return torch.cat(out)

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> np.ndarray:
        """(N, T', D): the denoiser's tokens before its final layer at t = 0, mean over space, per frame."""
        model, grabbed = self.sampler.model, []
        hook = model.final_layer.register_forward_pre_hook(lambda mod, args: grabbed.append(args[0].float().cpu()))
        try:
            for b in range(0, len(videos), self.cfg.eval.batch_size):
                x = videos[b:b + self.cfg.eval.batch_size]
                m = self.mask(len(x)).to(self.sampler.device)
                z = self.sampler.encode(x)
                t = torch.zeros(len(x), dtype=torch.long, device=self.sampler.device)
                self.sampler.denoiser(m, None)(z, t)
        finally:
            hook.remove()
        return torch.cat([g.mean(2) for g in grabbed]).numpy()  # (N, T', D)


def run_readout(root, cfg: RunConfig, future: str, features: str, model: ModelReadout | None = None) -> dict:
    """The whole protocol on the Physion root: fit on 'readout', score on 'test'."""
    if (future == "model" or features == "model") and model is None:
        raise ConfigError(f"--future {future} --features {features}: needs a run (--run-dir)")
    d = cfg.data
    given = cfg.masks.given_frames(d.frames)
    pooled = {}
    for subset in ("readout", "test"):
        listing = readout_listing(root, subset)
        videos = load_clips(listing.paths, d.frames, d.stride, d.size, d.channels)
        if future == "model":
            videos = model.rollout(videos)
        elif future == "copy":
            videos = copy_future(videos, given)
        feats = model.features(videos) if features == "model" else colour_features(videos)
        pooled[subset] = (pool(feats), listing.labels)
    result = readout_accuracy(*pooled["readout"], *pooled["test"])
    protocol = {"future": future, "features": features, "given_frames": given, "frames": d.frames,
                "stride": d.stride, "resolution": d.size, "pooling": "mean, max and min over frames",
                "readout": f"logistic regression, L2 {L2} on standardised features, Newton's method",
                "fit_on": "readout subset", "scored_on": "test subset"}
    return {**result, "protocol": protocol}


def get_args_parser() -> argparse.ArgumentParser:
    p = vdt_cli.parser(
        "python metrics/physion_readout.py",
        "The Physion readout: roll the run's model out from the given frames of every readout and test video, pool "
        "features over frames, fit a logistic regression on the readout videos' contact labels, and report its "
        "accuracy on the test videos beside chance.",
        examples=["python metrics/physion_readout.py --run-dir RUN --data physion:/data/Physion",
                  "python metrics/physion_readout.py --data physion:/data/Physion --future real --features colour"],
        notes="layout: docs/data.md#physion. Real numbers need the data and a GPU.\n" + vdt_cli.CONFIG_KEYS
              + "\nexit status: 0 done, 2 an input error (a bad path, layout or label file).")
    p.add_argument("--run-dir", help="a trained run (needed for --future model or --features model)")
    p.add_argument("--future", choices=FUTURES, default="model", help="the frames after the given ones")
    p.add_argument("--features", choices=FEATURES, default="model", help="what the readout sees")
    p.add_argument("--out", help="write the result here as JSON")
    vdt_cli.add_config_args(p, "data.* / masks.* / eval.* overrides", "data.frames=16 masks.predict_k=8")
    return p


def run_cli(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    over = vdt_cli.overrides(args)
    model = None
    if args.run_dir:
        from vdt.layout import RunLayout

        layout = RunLayout(args.run_dir)
        if not layout.config.is_file():
            raise PathError(f"--run-dir {layout.root}: no config.json there; give the directory of a trained run")
        cfg = load_config(layout.config).with_overrides(over)
        model = ModelReadout(layout.root, cfg)
    else:
        cfg = RunConfig().with_overrides(over)
    if cfg.data.name != "physion":
        raise ConfigError(f"data.name={cfg.data.name}: the readout reads Physion; give --data physion:ROOT")
    result = run_readout(cfg.data.root, cfg, args.future, args.features, model)
    print(f"accuracy {result['accuracy']:.3f} (chance {result['chance']:.3f}, positive share "
          f"{result['positive_share']:.3f}; {result['num_train']} readout / {result['num_test']} test videos)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "data": dataclasses.asdict(cfg.data)}, f, indent=1)
    return 0


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
