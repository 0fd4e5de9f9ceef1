"""The procedural bouncing-shapes dataset: determinism, shapes, range, and learnable motion."""

import numpy as np
import pytest
import torch

from vdt.config import DataConfig
from vdt.data import BouncingShapes, build_dataset
from vdt.data.bouncing import TEST_SIZE, VAL_SIZE


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


# The tiny profile's data (9 frames of 16x16 at stride 2, 2 objects) as the code made it before the val split was
# added (commit 93eb5c7): (split, epoch, index) -> (sum, sum of squares) of the clip, and the scene's start, velocity.
TINY = dict(size=16, frames=9, stride=2, num_objects=2)
BEFORE_VAL = {
    ("train", 0, 0): (-6181.153671264648, 6397.621490168895,
                      [[0.1795599837, 0.1624946481], [0.7370936076, 0.8123875065]],
                      [[-0.0284593065, -0.022547576], [-0.0061733039, -0.047653978]]),
    ("train", 1, 3): (-6129.277165710926, 6241.412386514294,
                      [[0.4634331848, 0.5190486662], [0.8604535889, 0.7296902628]],
                      [[-0.0176373795, 0.0407373672], [0.0213810528, -0.0307330222]]),
    ("test", 0, 0): (-5811.574607133865, 6107.563227420576,
                     [[0.6978897339, 0.8002225656], [0.1862380944, 0.3126183487]],
                     [[0.0098310643, -0.0405983306], [0.0385629275, 7.46861e-05]]),
    ("test", 0, 511): (-6202.5902970433235, 6312.662555213064,
                       [[0.4798815709, 0.1514058264], [0.3075827196, 0.7788242634]],
                       [[0.0188917066, 0.0193316173], [-0.0211612213, -0.000216318]]),
}


@pytest.mark.parametrize("key", sorted(BEFORE_VAL))
def test_train_and_test_clips_are_those_of_before_the_val_split(key):
    split, epoch, index = key
    total, squares, start, velocity = BEFORE_VAL[key]
    ds = _ds(split, **TINY)
    ds.set_epoch(epoch)
    x, scene = ds[index].double(), ds.scene(index)
    np.testing.assert_allclose([float(x.sum()), float((x * x).sum())], [total, squares], rtol=1e-9)
    np.testing.assert_allclose(scene.start, start, atol=1e-10)
    np.testing.assert_allclose(scene.velocity, velocity, atol=1e-10)


def test_val_split_is_fixed_deterministic_and_disjoint_from_train_and_test():
    val, test, train = _ds("val", **TINY), _ds("test", **TINY), _ds("train", **TINY)
    assert len(val) == VAL_SIZE and val.protocol()["split"] == "val" and not val.protocol()["epoch_dependent"]
    first = val[4]
    val.set_epoch(3)
    assert torch.equal(val[4], first)  # a fixed set: the epoch does not move it
    assert torch.equal(_ds("val", **TINY)[4], first)
    assert not torch.equal(_ds("val", **{**TINY, "seed": 1})[4], first)

    def starts(ds, n):
        return {tuple(ds.scene(i).start.ravel().round(12)) for i in range(n)}

    val_starts = starts(val, VAL_SIZE)
    assert len(val_starts) == VAL_SIZE
    assert not val_starts & starts(test, TEST_SIZE)
    for epoch in (0, 1):
        train.set_epoch(epoch)
        assert not val_starts & starts(train, 2048)
    assert isinstance(build_dataset(DataConfig(split="val")), BouncingShapes)
