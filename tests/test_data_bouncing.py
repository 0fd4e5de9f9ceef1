"""The procedural bouncing-shapes dataset: determinism, shapes, range, and learnable motion."""

import numpy as np
import pytest
import torch

from vdt.config import DataConfig
from vdt.data import BouncingShapes, build_dataset
from vdt.data.bouncing import TEST_SIZE


def _ds(split="train", **kw):
    return build_dataset(DataConfig(**kw), split)


@pytest.mark.parametrize("size,channels,frames,objects", [(16, 1, 8, 1), (32, 3, 16, 3), (64, 3, 4, 5), (8, 1, 2, 2)])
def test_shapes_and_range(size, channels, frames, objects):
    ds = _ds(size=size, channels=channels, frames=frames, num_objects=objects)
    x = ds[5]
    assert x.shape == (frames, channels, size, size) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() == -1.0 and x.max() > 0.0  # black background, bright objects


def test_deterministic_per_index_and_seed():
    a, b = _ds(seed=3), _ds(seed=3)
    assert torch.equal(a[7], b[7])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], _ds(seed=4)[7])
    assert not torch.equal(a[7], _ds("test", seed=3)[7])


def test_lengths_and_default_split():
    assert len(_ds(length=40)) == 40
    assert len(_ds("test", length=40)) == TEST_SIZE
    ds = build_dataset(DataConfig(split="test"))
    assert isinstance(ds, BouncingShapes) and ds.split == "test"
    with pytest.raises(IndexError):
        _ds(length=4)[4]


def test_epoch_changes_train_but_not_test():
    train, test = _ds(), _ds("test")
    x0, t0 = train[2], test[2]
    train.set_epoch(1)
    test.set_epoch(1)
    assert not torch.equal(train[2], x0)
    assert torch.equal(test[2], t0)
    train.set_epoch(0)
    assert torch.equal(train[2], x0)


def test_stride_subsamples_the_same_motion():
    full = _ds(frames=16, stride=1)[3]
    strided = _ds(frames=8, stride=2)[3]
    assert torch.allclose(strided, full[::2])


def test_rendered_centroid_follows_constant_velocity_with_reflection():
    """One object: the intensity centroid sits on the analytic centre, which moves linearly between bounces."""
    size = 48
    ds = _ds(size=size, channels=1, frames=24, num_objects=1)
    checked = 0
    for index in range(6):
        video = (ds[index][:, 0].numpy() + 1.0) / 2.0  # (T, H, W) in [0, 1], background 0
        scene = ds.scene(index)
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        mass = video.sum(axis=(1, 2))
        centroid = np.stack([(video * xs).sum((1, 2)) / mass, (video * ys).sum((1, 2)) / mass], axis=1)  # (T, 2) px
        truth = scene.positions(ds.times)[:, 0] * size  # (T, 2) px
        np.testing.assert_allclose(centroid, truth, atol=0.1)
        step = np.diff(truth, axis=0)  # (T-1, 2)
        assert np.abs(step).max() > 0.2  # the video is not static
        # between bounces the velocity is constant: a linear extrapolation predicts the next centre
        r, m = scene.radius[0] * size, np.abs(step).max()
        bounce = (truth[1:] - r < m) | (size - r - truth[1:] < m)  # (T-1, 2): within a step of a wall
        steady = ~(bounce[:-1] | bounce[1:])  # (T-2, 2)
        predicted = 2 * centroid[1:-1] - centroid[:-2]
        err = np.abs(predicted - centroid[2:])[steady]
        assert err.max() < 0.2
        checked += steady.sum()
    assert checked > 50


def test_next_frame_closer_than_other_videos():
    ds = _ds()
    a, b = ds[0], ds[1]
    near = (a[1:] - a[:-1]).pow(2).mean()
    far = (a - b).pow(2).mean()
    assert near < far / 3


def test_dataloader_workers_match_direct_indexing():
    ds = _ds(length=8, size=16, frames=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = torch.cat(list(loader))
    assert torch.equal(batches, torch.stack([ds[i] for i in range(8)]))
