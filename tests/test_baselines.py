"""metrics/baselines.py: the trivial fills that the evaluation scores beside the model."""

import pytest
import torch

from metrics.baselines import baseline_fills, nearest_given
from metrics.region import PSNR_CAP_DB, score_region


def test_nearest_given_frame_prefers_the_earlier_on_ties():
    gen = torch.tensor([[0, 1, 1, 1, 0],   # interpolation: frames 1..3 between given 0 and 4
                        [1, 1, 0, 0, 1],   # given in the middle: backward and forward copies
                        [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert nearest_given(gen).tolist() == [[0, 0, 0, 4, 4], [2, 2, 2, 3, 3], [0, 1, 2, 3, 4]]


def test_nearest_given_frame_is_undefined_without_a_given_frame():
    assert nearest_given(torch.tensor([[0, 1], [1, 1]], dtype=torch.bool)) is None


def test_fills_keep_given_pixels_and_fill_the_generated_region():
    N, T, C, H, W = 2, 4, 3, 4, 4
    real = torch.linspace(-0.9, 0.9, T).view(1, T, 1, 1, 1).expand(N, T, C, H, W).clone()  # frame t: one grey
    mask = torch.zeros(N, T, H, W)
    mask[:, 2:] = 1  # predict: frames 0, 1 given
    mask[1, 0, :2] = 1  # video 1: frame 0 partly generated, so it is no source
    fills = baseline_fills(real, mask)
    black, near = fills["black_fill"][0], fills["nearest_given_frame"][0]
    assert black.shape == near.shape == real.shape
    given = ~mask.bool().unsqueeze(2).expand_as(real)
    assert torch.equal(black[given], real[given]) and torch.equal(near[given], real[given])
    assert (black[~given] == -1).all()
    assert torch.equal(near[:, 2:], real[:, 1:2].expand(N, 2, C, H, W))  # the last given frame, copied
    assert torch.equal(near[1, 0, :, :2], real[1, 1, :, :2])  # frame 0's hole comes from frame 1
    assert near[0, 0].tolist() == real[0, 0].tolist()


def test_no_copy_baseline_when_a_video_has_no_given_frame():
    real, mask = torch.zeros(1, 3, 1, 2, 2), torch.ones(1, 3, 2, 2)
    assert set(baseline_fills(real, mask)) == {"black_fill"}
    with pytest.raises(RuntimeError):  # shapes must agree: a mask of another size is an error, not a silent fill
        baseline_fills(real, torch.ones(1, 3, 4, 4))


def test_fills_are_scored_on_the_generated_region():
    """Fills are in the data's [-1, 1]; mapped to [0, 1] they go through metrics.region.score_region."""
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 1, 3, 16, 16, generator=g) * 2 - 1
    real = frame.expand(2, 4, 3, 16, 16).clone()  # a still scene: copying a given frame is exact
    mask = torch.zeros(2, 4, 16, 16)
    mask[:, 2:] = 1  # predict: frames 0, 1 given
    mask[1, 3, :, :8] = 0  # video 1: the left half of its last frame is given
    fills = baseline_fills(real, mask)
    unit = lambda v: (v + 1) / 2
    near = score_region(unit(fills["nearest_given_frame"][0]), unit(real), mask)
    assert near["psnr"].tolist() == [PSNR_CAP_DB] * 2
    torch.testing.assert_close(near["ssim"], torch.ones(2))
    black = score_region(unit(fills["black_fill"][0]), unit(real), mask)
    truth = unit(real).permute(0, 1, 3, 4, 2)[mask.bool()]  # (generated pixels, C); black fill = 0
    expected = [10 * torch.log10(1 / (truth[:512] ** 2).mean()), 10 * torch.log10(1 / (truth[512:] ** 2).mean())]
    torch.testing.assert_close(black["psnr"], torch.stack(expected), rtol=1e-5, atol=0)
    assert (black["ssim"] < 0.5).all()
