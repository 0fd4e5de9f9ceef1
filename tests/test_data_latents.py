"""SD-VAE wrapper and the latent cache.

The VAE here is a tiny, randomly initialised diffusers ``AutoencoderKL`` (4 blocks of 8
channels: the SD VAE's 8x downsampling and 4 latent channels), saved with ``save_pretrained``:
the real file format with meaningless weights. Shapes, caching and resuming are what is tested.
"""

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from test_data_real import make_ucf, write_video

from vdt.autoencoder import VAE, VAEWeightsMissingError, load_vae
from vdt.config import DataConfig
from vdt.data import build_dataset
from vdt.data.latents import CHUNK, clip_plan, segment_plan


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def vae_dir(tiny_vae):
    """A tiny random-weight diffusers AutoencoderKL (tests/conftest.py)."""
    return tiny_vae


@pytest.fixture
def calls(monkeypatch):
    """Counts VAE.encode calls; set calls.fail_at = n to raise on the n-th call (a killed build)."""
    log = type("Calls", (), {"n": 0, "fail_at": None, "delay": 0.0})()
    real = VAE.encode

    def counted(self, video):
        log.n += 1
        if log.n == log.fail_at:
            raise RuntimeError("killed")
        time.sleep(log.delay)
        return real(self, video)

    monkeypatch.setattr(VAE, "encode", counted)
    return log


def bouncing(vae_dir, tmp_path, **kw):
    return DataConfig(**{"frames": 4, "size": 32, "length": 20, "autoencoder": "sd-vae", "vae_path": str(vae_dir),
                         "latent_cache": str(tmp_path / "latents"), **kw})


def test_encode_decode_shapes_and_hash(vae_dir):
    vae = load_vae(vae_dir)
    video = torch.rand(2, 3, 3, 32, 64) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (2, 3, 4, 4, 8) and vae.factor == 8 and vae.scaling == 0.18215
    out = vae.decode(z)
    assert out.shape == video.shape and out.abs().max() <= 1.0
    assert torch.allclose(vae.encode(video[:1, :2]), z[:1, :2], atol=1e-5)  # frames are independent
    assert len(vae.sha256) == 64 and load_vae(vae_dir).sha256 == vae.sha256
    single = load_vae(vae_dir / "diffusion_pytorch_model.safetensors")  # a single file, config beside it
    assert torch.allclose(single.encode(video), z, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 2, 3, 20, 32))


def test_missing_weights_say_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv("VDT_SD_VAE", raising=False)
    with pytest.raises(VAEWeightsMissingError, match="sd-vae-ft-ema") as err:
        load_vae(tmp_path / "nowhere")
    assert "data.vae_path" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # a folder without weights
    with pytest.raises(VAEWeightsMissingError):
        build_dataset(DataConfig(autoencoder="sd-vae", vae_path=str(tmp_path / "half"), length=4), "test")


def test_cache_matches_encoder_and_is_reused(vae_dir, tmp_path, calls):
    cfg = bouncing(vae_dir, tmp_path)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 20 and ds[3].shape == (4, 4, 4, 4) and ds[3].dtype == torch.float32
    assert calls.n == -(-20 // CHUNK)
    pixels = build_dataset(DataConfig(frames=4, size=32, length=20), "train")
    expected = load_vae(vae_dir).encode(pixels[3][None])[0]
    assert torch.allclose(ds[3], expected, atol=2e-3)  # stored as float16
    calls.n = 0
    again = build_dataset(cfg, "train")
    assert calls.n == 0 and torch.equal(again[7], ds[7])  # the second run reads the cache
    assert again.protocol()["vae_sha256"] == load_vae(vae_dir).sha256
    loaded = torch.cat(list(torch.utils.data.DataLoader(again, batch_size=10, num_workers=2)))
    assert torch.equal(loaded, torch.stack([again[i] for i in range(20)]))
    build_dataset(bouncing(vae_dir, tmp_path, seed=1), "train")
    assert calls.n > 0  # another clip set is another cache


def test_killed_build_resumes(vae_dir, tmp_path, calls):
    calls.fail_at = 2
    with pytest.raises(RuntimeError, match="killed"):
        build_dataset(bouncing(vae_dir, tmp_path), "train")
    calls.n, calls.fail_at = 0, None
    resumed = build_dataset(bouncing(vae_dir, tmp_path), "train")
    assert calls.n == -(-(20 - CHUNK) // CHUNK)  # only the chunks after the first
    fresh = build_dataset(bouncing(vae_dir, tmp_path / "other"), "train")
    assert torch.equal(torch.stack(list(resumed)), torch.stack(list(fresh)))


def test_second_job_waits_then_reuses(vae_dir, tmp_path, calls):
    calls.delay = 0.2
    cfg = bouncing(vae_dir, tmp_path)
    results = {}
    first = threading.Thread(target=lambda: results.update(a=build_dataset(cfg, "train")))
    first.start()
    while not list((tmp_path / "latents").glob("*/progress.json")):  # the first job holds the lock
        time.sleep(0.02)
    n_first = -(-20 // CHUNK)
    second = build_dataset(cfg, "train")  # blocks on the lock until the first finishes
    first.join()
    assert calls.n == n_first
    assert torch.equal(second[5], results["a"][5])


def test_real_videos_k_clips_per_video_and_labels(vae_dir, tmp_path, calls):
    root = make_ucf(tmp_path / "ucf", frames=24)
    cfg = DataConfig(name="ucf101", root=str(root), frames=4, size=16, autoencoder="sd-vae", vae_path=str(vae_dir),
                     latent_cache=str(tmp_path / "latents"), latent_clips=3, class_labels=True)
    train, val, test = build_dataset(cfg, "train"), build_dataset(cfg, "val"), build_dataset(cfg, "test")
    assert len(train) == 9 and len(val) == len(test) == 3  # fold 1 trains on g02; g03 is val (one centred clip)
    z, label = train[4]
    assert z.shape == (4, 4, 2, 2) and label == train.labels[4]
    assert train.labels.tolist() == [i // 3 for i in range(9)]  # 3 clips x 1 video per class
    assert val.protocol()["offset"] == "centre of the video" and val.protocol()["clips_per_video"] == 1
    pixels = build_dataset(cfg.__class__(name="ucf101", root=str(root), frames=4, size=16), "train")
    starts = [s for i, s in clip_plan(pixels, "train", 3, 0) if i == 0]
    assert starts == sorted(starts) and len(set(starts)) == 3 and max(starts) <= 24 - 4  # one per stratum
    assert test.protocol()["offset"] == "centre of the video" and train.protocol()["clips_per_video"] == 3


def test_cache_key_follows_the_videos(vae_dir, tmp_path, calls):
    (tmp_path / "tc" / "test").mkdir(parents=True)
    for k in range(2):
        write_video(tmp_path / "tc" / "test" / f"v{k}.mp4", 8)
    cfg = DataConfig(name="taichi", root=str(tmp_path / "tc"), frames=4, size=16, autoencoder="sd-vae",
                     vae_path=str(vae_dir), latent_cache=str(tmp_path / "latents"))
    build_dataset(cfg, "test")
    n = calls.n
    write_video(tmp_path / "tc" / "test" / "v2.mp4", 8)
    assert len(build_dataset(cfg, "test")) == 3 and calls.n > n
    assert np.all(np.isfinite(build_dataset(cfg, "test")[2].numpy()))


def test_all_clips_are_strided_slices_of_per_frame_latents(vae_dir, tmp_path, calls):
    """data.latent_clips=0: every first frame of every video, read from frames encoded once each."""
    root = make_ucf(tmp_path / "ucf", frames=24)
    kw = dict(name="ucf101", root=str(root), frames=5, stride=2, size=16, class_labels=True)
    cfg = DataConfig(**kw, autoencoder="sd-vae", vae_path=str(vae_dir), latent_cache=str(tmp_path / "latents"),
                     latent_clips=0)
    train = build_dataset(cfg, "train")
    pixels = build_dataset(DataConfig(**kw), "train")
    span = (5 - 1) * 2 + 1
    assert len(pixels) > 1 and len(train) == len(pixels) * (24 - span + 1)
    segments = segment_plan(pixels)
    assert [a for i, a in segments if i == 0] == [0, 5, 10, 15, 19]  # the last segment ends at the last frame
    assert calls.n == -(-len(segments) // CHUNK)  # each frame encoded once (the overlap twice), not once per clip
    vae = load_vae(vae_dir)
    for index in (0, 15, 16, 16 + 5 + 3, len(train) - 1):  # first and last clip of a video, clips in the overlap
        source, start = divmod(index, 16)
        z, label = train[index]
        expected = vae.encode(pixels.load(source, start)[None])[0]
        assert z.shape == (5, 4, 2, 2) and label == pixels.labels[source]
        assert torch.allclose(z, expected, atol=2e-3), index  # stored as float16
    p = train.protocol()
    assert p["clips_per_video"] == "all" and p["num_clips"] == len(train) and p["latent_frames"] == len(pixels) * 24
    assert build_dataset(cfg, "test").protocol()["clips_per_video"] == 1  # evaluation clips: one per video
    one = build_dataset(dataclasses.replace(cfg, latent_clips=1), "train")
    assert len(one) == len(pixels) and one.folder != train.folder and not (one.folder / "clips.npy").exists()


def test_all_clips_build_resumes_after_a_kill(vae_dir, tmp_path, calls):
    root = make_ucf(tmp_path / "ucf", frames=24)
    cfg = DataConfig(name="ucf101", root=str(root), frames=4, size=16, autoencoder="sd-vae", vae_path=str(vae_dir),
                     latent_cache=str(tmp_path / "latents"), latent_clips=0)
    calls.fail_at = 2
    with pytest.raises(RuntimeError, match="killed"):
        build_dataset(cfg, "train")
    calls.n, calls.fail_at = 0, None
    resumed = build_dataset(cfg, "train")
    videos = len(build_dataset(dataclasses.replace(cfg, autoencoder="none"), "train"))
    assert calls.n == -(-videos * 6 // CHUNK) - 1  # 6 segments of 4 frames per video; the chunks after the first
    fresh = build_dataset(dataclasses.replace(cfg, latent_cache=str(tmp_path / "other")), "train")
    assert len(resumed) == videos * 21 and torch.equal(torch.stack(list(resumed)), torch.stack(list(fresh)))
