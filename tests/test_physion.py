"""The physion layout (vdt/data/physion.py) and the readout protocol (metrics/physion_readout.py), on a miniature
fixture in Physion's layout: bouncing-shapes clips drawn in Physion's red and yellow, labelled by the simulator's
contact events (do the two objects touch)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import physion_readout as pr
from vdt.config import DataConfig, RunConfig
from vdt.data.bouncing import BouncingShapes, render
from vdt.data.layouts import DatasetLayoutError, find_sources
from vdt.data.physion import PhysionLayoutError, readout_listing, video_key
from vdt.errors import PathError

FRAMES, SIZE = 9, 16


def _write_video(folder, scene, times):
    """A video as a frame folder (SlotFormer's extracted frames: 000000.jpg ...; PNG here, lossless)."""
    folder.mkdir(parents=True)
    frames = render(scene, times, SIZE)  # (T, 3, H, W) in [0, 1]
    for t, f in enumerate(frames):
        Image.fromarray((f.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{t:06d}.png")


def write_fixture(root, per_subset=48):
    """Physion's layout; labels: do the two objects' discs touch in any frame (the simulator's contact events)."""
    ds = BouncingShapes(DataConfig(size=SIZE, num_objects=2, frames=FRAMES, stride=2), "train")
    rows = {"readout": [], "test": []}
    index = 0
    for subset in ("readout", "test", "training"):
        for k in range(per_subset if subset != "training" else 4):
            scene = dataclasses.replace(ds.scene(index), colour=pr.PHYSION_COLOURS)
            label = bool(ds.truth(index).touch.any())
            index += 1
            stim = f"pilot_fixture_{'ab'[k % 2]}"
            if subset == "test":
                _write_video(root / "PhysionTestMP4s" / "Collide" / "mp4s-redyellow" /
                             f"{stim}-redyellow_{k:04d}_img", scene, ds.times)
                rows["test"].append(f"{stim}_{k:04d}_img,{label}")
            else:
                _write_video(root / "PhysionTrainMP4s" / f"Collide_{subset}_MP4s" / f"{stim}_{k:04d}_img", scene,
                             ds.times)
                if subset == "readout":
                    rows["readout"].append(f"{stim}_{k:04d},{label}")
    (root / "PhysionTrainMP4s" / "readout_labels.csv").write_text(",ground truth outcome\n" +
                                                                   "\n".join(rows["readout"]) + "\n")
    (root / "PhysionTestMP4s" / "labels.csv").write_text(",ground truth outcome\n" + "\n".join(rows["test"]) + "\n")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("physion"))


def cfg_for(root):
    return RunConfig().with_overrides(["data.name=physion", f"data.root={root}", f"data.frames={FRAMES}",
                                       f"data.size={SIZE}", "data.stride=1", "masks.predict_k=5"])


def test_layout_lists_videos_and_labels(root):
    readout, test = readout_listing(root, "readout"), readout_listing(root, "test")
    assert len(readout.paths) == len(test.paths) == 48
    assert 0.15 < np.mean(test.labels) < 0.85 and set(readout.labels) == {0, 1}
    assert video_key("pilot_x-redyellow_0003_img.mp4") == video_key("pilot_x_0003") == "pilot_x_0003"
    train, val = find_sources("physion", root, "train"), find_sources("physion", root, "val")
    assert len(train.paths) + len(val.paths) == 4 and not set(train.paths) & set(val.paths)
    assert len(find_sources("physion", root, "test").paths) == 48


def test_readout_on_real_futures_beats_chance(root):
    cfg = cfg_for(root)
    real = pr.run_readout(root, cfg, "real", "colour")
    assert real["num_train"] == real["num_test"] == 48
    assert real["accuracy"] >= real["chance"] + 0.1, real
    copy = pr.run_readout(root, cfg, "copy", "colour")
    assert copy["accuracy"] < real["accuracy"]


def test_logistic_regression_matches_a_separable_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - 0.5 * x[:, 2] > 0).astype(int)
    model = pr.fit_logistic(x[:100], y[:100], l2=1e-3)
    assert (pr.predict_logistic(model, x[100:]) == y[100:]).mean() > 0.95


def test_bad_layouts_name_the_bad_path(tmp_path, root):
    with pytest.raises(PathError, match="PhysionTrainMP4s"):
        readout_listing(tmp_path, "readout")
    (tmp_path / "PhysionTrainMP4s" / "Collide_readout_MP4s" / "pilot_a_0000_img").mkdir(parents=True)
    with pytest.raises(PathError, match="readout_labels.csv"):
        readout_listing(tmp_path, "readout")
    (tmp_path / "PhysionTrainMP4s" / "readout_labels.csv").write_text(",ground truth outcome\npilot_b_0000,True\n")
    with pytest.raises(PhysionLayoutError, match="pilot_a_0000_img"):
        readout_listing(tmp_path, "readout")
    with pytest.raises(DatasetLayoutError, match="PhysionTestMP4s"):
        find_sources("physion", tmp_path, "test")
    with pytest.raises(DatasetLayoutError, match="no-such-root"):
        find_sources("physion", tmp_path / "no-such-root", "train")


def test_a_run_rolls_out_and_reads_out_through_its_own_features(root, tmp_path):
    from vdt import train

    cfg = cfg_for(root).with_overrides(["model.preset=cpu-tiny", "train.batch_size=2", "train.steps=2",
                                        "eval.batch_size=16", "eval.sample_steps=2"])
    train.main(cfg, tmp_path, progress=False)
    model = pr.ModelReadout(tmp_path, cfg)
    videos = pr.load_clips(readout_listing(root, "test").paths[:3], FRAMES, 1, SIZE)
    rolled = model.rollout(videos)
    assert torch.equal(rolled[:, :5], videos[:, :5]) and not torch.equal(rolled[:, 5:], videos[:, 5:])
    feats = model.features(rolled)
    assert feats.shape[0] == 3 and feats.shape[2] == model.sampler.model.final_layer.linear.in_features
    out = pr.run_readout(root, cfg, "model", "model", model)
    assert out["num_test"] == 48 and 0.0 <= out["accuracy"] <= 1.0 and out["protocol"]["future"] == "model"
