"""Fréchet distance, streaming statistics, FVD protocol records and the real-stats cache.

The Fréchet distance is checked against a closed form (commuting covariances) and an
independent SVD route. Most FVD tests use a small fixed feature extractor so they run in
milliseconds; one end-to-end test runs a randomly initialised I3D saved in the real
piergiaj file format (random weights: checks plumbing, not published FVD values).
"""

import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from metrics import (
    FeatureStats,
    FVDProtocol,
    cached_real_stats,
    frechet_distance,
    load_i3d,
    preprocess_videos,
    update_stats,
    video_features,
)
from metrics.fvd import fvd, fvd_between, fvd_of_videos
from metrics.i3d import InceptionI3d

PROTOCOL = FVDProtocol(weights_sha256="0" * 64, num_frames=9)


def fd_svd(mu1, s1, mu2, s2) -> float:
    """TF-GAN's route: Tr sqrt(S1 S2) = Tr sqrt(A S2 A), A = sqrt(S1), via SVDs."""
    u, s, _ = np.linalg.svd(s1)
    a = (u * np.sqrt(s)) @ u.T  # sqrt of the symmetric PSD S1
    sv = np.linalg.svd(a @ s2 @ a, compute_uv=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(sv).sum())


def test_frechet_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 12
    q = scipy.stats.ortho_group.rvs(d, random_state=0)  # shared eigenvectors: S1, S2 commute
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_agrees_with_svd_route():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40))
    y = rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)) + 0.5
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance(*args) == pytest.approx(fd_svd(*args), rel=1e-9)


def test_frechet_checks_shapes():
    with pytest.raises(ValueError, match=r"mu \(D,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats_stream_and_round_trip(tmp_path):
    feats = np.random.default_rng(2).normal(3, 2, size=(50, 7))
    stats = FeatureStats(PROTOCOL, {"split": "test"})
    for chunk in np.array_split(feats, 4):  # streamed in uneven batches
        stats.update(torch.from_numpy(chunk).float() if len(chunk) % 2 else chunk)
    assert stats.n == 50
    f32 = np.concatenate([c.astype(np.float32) if len(c) % 2 else c for c in np.array_split(feats, 4)])
    np.testing.assert_allclose(stats.mean, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(f32, rowvar=False, ddof=1), rtol=1e-9, atol=1e-12)
    stats.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.protocol == PROTOCOL and back.source == {"split": "test"} and back.n == 50
    np.testing.assert_array_equal(back.cov, stats.cov)
    with pytest.raises(ValueError, match=r"\(B, 7\)"):
        stats.update(np.zeros((2, 8)))


# ----------------------------------------------------------------------------
# Videos -> features -> FVD, with a small fixed extractor
# ----------------------------------------------------------------------------

class PoolExtractor:
    """Fixed stand-in for I3D: (B, 3, T, 224, 224) -> (B, 12) pooled pixels; counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return F.adaptive_avg_pool3d(x, (1, 2, 2)).flatten(1)  # (B, 3*1*2*2)


def random_videos(n, seed, offset=0.0):
    """(n, 9, 3, 32, 32) uint8 videos with per-video brightness and noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 3, 4, 4, generator=g).repeat_interleave(8, 3).repeat_interleave(8, 4)
    x = base + 0.2 * torch.rand(n, 9, 3, 32, 32, generator=g) + offset
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def stats_of(videos, extractor=None, protocol=PROTOCOL):
    stats = FeatureStats(protocol)
    update_stats(stats, videos, extractor or PoolExtractor(), batch_size=7)
    return stats


def test_fvd_self_zero_and_symmetric():
    x, y = stats_of(random_videos(32, 0)), stats_of(random_videos(32, 1, offset=0.1))
    assert abs(fvd(x, x).value) < 1e-6
    xy, yx = fvd(x, y), fvd(y, x)
    assert xy.value > 0.01
    assert xy.value == pytest.approx(yx.value, rel=1e-8)
    record = xy.to_dict()
    assert record["n_real"] == 32 and record["n_fake"] == 32 and record["num_frames"] == 9
    assert record["impl_version"] == "vdt-bench-fvd/2" and record["resolution"] == 224


def test_package_fvd_is_the_module():
    import metrics

    assert metrics.fvd.fvd is fvd  # the function must not shadow the submodule


def test_fvd_refuses_different_protocols():
    videos = random_videos(4, 0)
    x = stats_of(videos)
    other = dataclasses.replace(PROTOCOL, weights_sha256="1" * 64, num_frames=16)
    y = FeatureStats(other)
    y.update(video_features(videos, PoolExtractor(), PROTOCOL))
    with pytest.raises(ValueError, match="weights_sha256") as err:
        fvd(x, y)
    assert "num_frames" in str(err.value)


def test_preprocess_rounds_resizes_and_scales():
    levels = torch.tensor([0, 101, 255], dtype=torch.uint8).view(3, 1, 1, 1, 1).expand(3, 9, 3, 20, 30)
    out = preprocess_videos(levels, PROTOCOL)
    assert out.shape == (3, 3, 9, 224, 224)  # squashed to 224x224: no crop
    expected = torch.tensor([-1.0, 2 * 101 / 255 - 1, 1.0]).view(3, 1, 1, 1, 1)
    torch.testing.assert_close(out, expected.expand_as(out))
    # Floats round to the nearest uint8 level (100.6 -> 101), they are not truncated.
    as_float = torch.full((1, 9, 3, 20, 30), 100.6 / 255)
    torch.testing.assert_close(preprocess_videos(as_float, PROTOCOL), out[1:2])
    grey = preprocess_videos(levels[:, :, :1], PROTOCOL)  # (B, T, 1, H, W) -> RGB
    torch.testing.assert_close(grey, out)
    with pytest.raises(ValueError, match="9 frames"):
        preprocess_videos(levels[:, :8], PROTOCOL)


def test_detector_runs_without_tf32():
    seen = []

    def detector(x):
        seen.append(torch.backends.cudnn.conv.fp32_precision)
        return x.mean(dim=(2, 3, 4))  # (B, 3)

    before = torch.backends.cudnn.conv.fp32_precision
    video_features(random_videos(2, 0), detector, PROTOCOL, batch_size=1)
    assert seen == ["ieee", "ieee"] and torch.backends.cudnn.conv.fp32_precision == before


def test_fvd_between_two_sets_and_fvd_of_videos_agree():
    a, b = random_videos(12, 0), random_videos(12, 1, offset=0.1)
    ab = fvd_between(a, b, PoolExtractor(), PROTOCOL, batch_size=5, sources=({"first_n": 12}, {"offset": 12}))
    assert ab.value == pytest.approx(fvd(stats_of(a), stats_of(b)).value, rel=1e-12)
    record = ab.to_dict()
    assert record["real_clips"] == {"first_n": 12} and record["fake_clips"] == {"offset": 12}
    assert record["n_real"] == record["n_fake"] == 12 and record["weights_sha256"] == PROTOCOL.weights_sha256
    # The model's samples and a baseline fill go through fvd_of_videos against the cached real stats.
    real = FeatureStats(PROTOCOL, {"split": "test"})
    update_stats(real, a, PoolExtractor())
    of = fvd_of_videos(real, b, PoolExtractor(), batch_size=4)
    assert of.value == pytest.approx(ab.value, rel=1e-12) and of.real_clips == {"split": "test"}
    assert "fake_clips" not in of.to_dict()


def test_real_stats_cache_computes_once(tmp_path):
    extractor = PoolExtractor()
    batches = lambda: (random_videos(5, s) for s in range(3))
    clips = {"split": "test", "stride": 1, "seed": 0}
    first = cached_real_stats(tmp_path, "ucf101", PROTOCOL, clips, batches, extractor, batch_size=4)
    calls = extractor.calls
    assert calls > 0 and first.n == 15 and len(list(tmp_path.glob("ucf101-*.npz"))) == 1
    second = cached_real_stats(tmp_path, "ucf101", PROTOCOL, clips, batches, extractor, batch_size=4)
    assert extractor.calls == calls  # loaded, not recomputed
    np.testing.assert_array_equal(second.cov, first.cov)
    assert second.source == {"dataset": "ucf101", **clips}
    # Another real-clip selection is another cache entry.
    cached_real_stats(tmp_path, "ucf101", PROTOCOL, {**clips, "seed": 1}, batches, extractor)
    assert extractor.calls > calls and len(list(tmp_path.glob("ucf101-*.npz"))) == 2


def test_real_stats_computed_once_by_jobs_that_need_them_at_once(tmp_path):
    """A sweep's two evaluation jobs need the same references: one computes a file under its lock; the other, not
    waiting, gets None and does other work; waiting, it blocks until the file is there and loads it."""
    import fcntl
    import threading

    from metrics.fvd import real_stats_path

    clips, batches = {"split": "test", "seed": 0}, lambda: [random_videos(3, 0)]
    path = real_stats_path(tmp_path, "sky", PROTOCOL, clips)
    extractor = PoolExtractor()
    with open(path.with_name(path.name + ".lock"), "a") as other_job:  # another open file: another lock owner
        fcntl.flock(other_job, fcntl.LOCK_EX)
        assert cached_real_stats(tmp_path, "sky", PROTOCOL, clips, batches, extractor, wait=False) is None
        got = []
        waiter = threading.Thread(target=lambda: got.append(
            cached_real_stats(tmp_path, "sky", PROTOCOL, clips, batches, extractor, wait=True)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and not got  # blocked on the lock
        written = FeatureStats(PROTOCOL, {"dataset": "sky", **clips})  # what the other job computes
        written.update(np.arange(24.0).reshape(2, 12) ** 0.5)
        written.save(path)
        fcntl.flock(other_job, fcntl.LOCK_UN)
        waiter.join(timeout=30)
    assert extractor.calls == 0  # neither call ran I3D: the first gave up, the second loaded the other job's file
    np.testing.assert_array_equal(got[0].mean, written.mean)
    # Unlocked and cached: wait=False loads it too.
    assert cached_real_stats(tmp_path, "sky", PROTOCOL, clips, batches, extractor, wait=False).n == 2


def test_real_stats_cache_refuses_tampered_file(tmp_path):
    clips = {"split": "test", "seed": 0}
    batches = lambda: [random_videos(3, 0)]
    fresh = cached_real_stats(tmp_path, "sky", PROTOCOL, clips, batches, PoolExtractor())
    # Overwrite the cache entry with statistics from an older implementation.
    stale = FeatureStats(dataclasses.replace(PROTOCOL, impl_version="vdt-bench-fvd/0"), fresh.source)
    stale.update(np.zeros((2, 12)))
    stale.save(next(tmp_path.glob("sky-*.npz")))
    with pytest.raises(ValueError, match="impl_version"):
        cached_real_stats(tmp_path, "sky", PROTOCOL, clips, batches, PoolExtractor())


# ----------------------------------------------------------------------------
# One tiny end-to-end run through a random-init I3D in the real file format
# ----------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 2 clips per side: singular
def test_fvd_end_to_end_random_i3d(tmp_path):
    torch.manual_seed(0)
    state = {k: v for k, v in InceptionI3d().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "i3d_pretrained_400.pt")
    detector = load_i3d(tmp_path / "i3d_pretrained_400.pt")
    protocol = FVDProtocol.for_weights(tmp_path / "i3d_pretrained_400.pt", num_frames=9)
    videos = random_videos(3, 3)  # (3, 9, 3, 32, 32), one I3D batch: ~1 s per clip on CPU
    feats = video_features(videos, detector, protocol, batch_size=3)
    assert feats.shape == (3, 400) and torch.isfinite(feats).all()
    real, fake = FeatureStats(protocol), FeatureStats(protocol)
    real.update(feats[:2])  # clips 0, 1
    fake.update(feats[1:])  # clips 1, 2
    assert abs(fvd(real, real).value) < 1e-6 * np.trace(real.cov) + 1e-9
    assert fvd(real, fake).value == pytest.approx(fvd(fake, real).value, rel=1e-6)
    assert fvd(real, fake).to_dict()["weights_sha256"] == protocol.weights_sha256


def test_sqrtm_imaginary_part_is_warned_and_recorded():
    """A covariance product whose square root is complex (here a non-PSD sigma2): the real part is kept, with a
    SqrtmWarning and the dropped share on the result; a PSD pair drops nothing and warns nothing."""
    import warnings

    from metrics.fvd import SQRTM_IMAG_TOL, SqrtmWarning, frechet_distance_and_imag

    mu, eye = np.zeros(2), np.eye(2)
    with pytest.warns(SqrtmWarning, match="imaginary part"):
        _, imag = frechet_distance_and_imag(mu, eye, mu, np.diag([-1.0, 1.0]))
    assert imag == pytest.approx(1.0)  # sqrtm(diag(-1, 1)) = diag(i, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SqrtmWarning)
        value, imag = frechet_distance_and_imag(mu, eye, mu + 1, 2 * eye)
    assert imag <= SQRTM_IMAG_TOL and value == pytest.approx(2 + 2 + 4 - 2 * 2 * np.sqrt(2))


def test_fvd_band_of_real_vs_real_draws():
    """The band over draws: mean (also under "fvd", for readers of one value), min, max and every draw."""
    from metrics.fvd import fvd_band

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(40, 6)) for _ in range(4)]  # set 0 and three disjoint draws of one distribution
    stats = []
    for f in feats:
        stats.append(FeatureStats(PROTOCOL))
        stats[-1].update(f)
    values = [fvd(stats[0], s).value for s in stats[1:]]
    band = fvd_band(values, n=40)
    assert band["draws"] == values and band["n"] == 40
    assert band["min"] == min(values) < band["mean"] == band["fvd"] < band["max"] == max(values)
    assert band["mean"] == pytest.approx(np.mean(values))
    assert fvd_band([3.0], 8) == {"fvd": 3.0, "mean": 3.0, "min": 3.0, "max": 3.0, "draws": [3.0], "n": 8}
    with pytest.raises(ValueError, match="at least one draw"):
        fvd_band([], 8)
