"""metrics/baselines.py: the trivial and motion fills that the evaluation scores beside the model."""

import pytest
import torch

from metrics.baselines import baseline_fills, motion_fill, nearest_given
from metrics.region import PSNR_CAP_DB, score_region
from vdt.config import MaskConfig
from vdt.masks import task_mask


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


# ---------------------------------------------------------------- the motion baseline


def moving_discs(T, H, W, C=3, velocity=(1.0, 0.5), start=(8.0, 7.0), radius=4.0):
    """A bright anti-aliased disc moving at constant velocity (px per frame, (x, y)) on black: (1, T, C, H, W)."""
    t = torch.arange(T, dtype=torch.float32)[:, None, None]
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    cx, cy = start[0] + velocity[0] * t, start[1] + velocity[1] * t  # (T, 1, 1)
    alpha = (radius - ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt() + 0.5).clamp(0, 1)  # (T, H, W)
    colour = torch.tensor([0.9, 0.5, 0.2][:C] if C == 3 else [0.8]).view(1, C, 1, 1)
    return (alpha[:, None] * colour * 2 - 1).unsqueeze(0)


def frames_mask(rows, H, W):
    """(N, T) 0/1 rows, 1 = generate -> a (N, T, H, W) pixel mask."""
    return torch.tensor(rows, dtype=torch.float32)[:, :, None, None].expand(-1, -1, H, W).contiguous()


def region_psnr(fill, real, mask):
    return float(score_region((fill + 1) / 2, (real + 1) / 2, mask)["psnr"].mean())


@pytest.mark.parametrize("rows", [[0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]], ids=["predict", "backward"])
def test_motion_continues_constant_velocity_far_better_than_copying(rows):
    real = moving_discs(8, 32, 32)
    mask = frames_mask([rows], 32, 32)
    fills = baseline_fills(real, mask)
    motion, copy = region_psnr(fills["motion"][0], real, mask), region_psnr(fills["nearest_given_frame"][0], real, mask)
    assert motion > copy + 6, (motion, copy)


def test_motion_interpolates_a_linearly_moving_disc_better_than_the_nearest_frame():
    real = moving_discs(9, 32, 32, velocity=(1.5, -0.75), start=(6.0, 24.0))
    mask = frames_mask([[0, 1, 1, 1, 0, 1, 1, 1, 0]], 32, 32)
    fills = baseline_fills(real, mask)
    near = region_psnr(fills["nearest_given_frame"][0], real, mask)
    for how in ("flow", "linear"):
        assert region_psnr(motion_fill(real, mask, how), real, mask) > near + 1, how


def test_motion_keeps_given_pixels_exactly_for_every_task():
    g = torch.Generator().manual_seed(0)
    real = torch.cat([moving_discs(9, 16, 16), torch.rand(2, 9, 3, 16, 16, generator=g) * 2 - 1])  # (3, 9, 3, 16, 16)
    for kind in ("predict", "backward", "interpolate", "one_frame", "random_frames", "spatial_temporal"):
        mask = task_mask(kind, (9, 16, 16), MaskConfig(predict_k=5), 3, generator=g).float()
        fill = motion_fill(real, mask)
        given = ~mask.bool().unsqueeze(2).expand_as(real)
        assert torch.equal(fill[given], real[given]), kind
        assert fill.shape == real.shape and fill.isfinite().all() and fill.abs().max() <= 1, kind


def test_motion_without_a_fully_given_frame_inpaints_each_frame():
    real = torch.full((1, 4, 3, 16, 16), 0.25)
    real[:, :, 1] = -0.5  # a flat colour: the hole is filled with it
    mask = torch.zeros(1, 4, 16, 16)
    mask[:, :, 4:10, 3:12] = 1  # the same hole in every frame (spatial_temporal over all frames)
    fill = motion_fill(real, mask)
    assert (fill - real).abs().max() < 3 / 127.5  # within 3 levels of 8 bits (inpainting works in uint8)
    assert "nearest_given_frame" not in baseline_fills(real, mask)


def test_motion_works_on_grayscale_and_non_square_frames():
    real = moving_discs(8, 20, 36, C=1, velocity=(1.5, 0.5), start=(9.0, 8.0))
    mask = frames_mask([[0, 0, 0, 0, 1, 1, 1, 1]], 20, 36)
    fills = baseline_fills(real, mask)
    assert fills["motion"].shape == (1, *real.shape)
    assert region_psnr(fills["motion"][0], real, mask) > region_psnr(fills["nearest_given_frame"][0], real, mask) + 3


def test_motion_is_undefined_without_given_pixels():
    real, mask = moving_discs(4, 16, 16), torch.ones(1, 4, 16, 16)
    assert "motion" not in baseline_fills(real, mask)
    with pytest.raises(ValueError, match="no given pixel"):
        motion_fill(real, mask)
    with pytest.raises(ValueError, match="expected real"):
        motion_fill(real, torch.zeros(1, 4, 8, 8))


def test_evaluation_names_every_fill():
    from metrics.evaluate import BASELINE_NAMES, FVD_BASELINES

    real, mask = moving_discs(4, 16, 16), frames_mask([[0, 0, 1, 1]], 16, 16)
    assert set(baseline_fills(real, mask)) == {"black_fill", "nearest_given_frame", "motion"} <= set(BASELINE_NAMES)
    assert BASELINE_NAMES["motion"] == "motion" and set(FVD_BASELINES) <= set(BASELINE_NAMES.values())
