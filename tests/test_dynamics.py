"""The dynamics readout (metrics/dynamics.py) and the simulator's ground truth it reads (vdt/data/bouncing.py)."""

import numpy as np
import pytest
import torch

from metrics import dynamics
from vdt.config import DataConfig
from vdt.data.bouncing import BouncingShapes, Scene, render, scene_truth

CFG = DataConfig(size=16, num_objects=2, frames=9, stride=2)  # the tiny profile's clips
GIVEN = 5


@pytest.fixture(scope="module")
def clips():
    ds = BouncingShapes(CFG, "test")
    n = 128
    real = np.stack([(ds[i].numpy() + 1) / 2 for i in range(n)])  # (N, T, C, H, W) in [0, 1]
    truth = dynamics.stack_truths([ds.truth(i) for i in range(n)])
    frames = np.zeros(real.shape[:2], bool)
    frames[:, GIVEN:] = True
    return real, truth, frames


def test_truth_matches_the_rendered_frames():
    ds = BouncingShapes(CFG, "test")
    t = ds.truth(3)
    scene = ds.scene(3)
    assert np.allclose(t.positions, scene.positions(ds.times) * CFG.size)
    assert np.allclose(t.radius, scene.radius * CFG.size) and np.allclose(t.colour, scene.colour)
    assert (t.touch == t.touch.transpose(0, 2, 1)).all() and not t.touch[:, 0, 0].any()
    # finely sampled, the direction of motion flips on some axis exactly around each reflection
    fine = scene_truth(scene, np.arange(0.0, 60.0, 0.05), CFG.size)
    step = np.sign(np.diff(fine.positions, axis=0))  # (K - 1, n, 2)
    flip = (step[1:] != step[:-1]).any(-1)  # (K - 2, n): the direction changed around position k + 1
    hit = fine.wall_hit[1:-1] | fine.wall_hit[2:]
    assert fine.wall_hit.sum() >= 2 and (flip <= hit).all() and (hit.sum(0) >= flip.sum(0)).all()
    assert abs(int(flip.sum()) - int(fine.wall_hit.sum())) <= 2  # reflections in the first or last step: unseen
    assert torch.equal(ds[3], torch.from_numpy(render(scene, ds.times, CFG.size) * 2 - 1))


def test_tracker_finds_a_lone_disc_where_it_was_drawn():
    scene = Scene(np.array([0]), np.array([0.15]), np.array([[0.37, 0.61]]), np.zeros((1, 2)),
                  np.array([[0.9, 0.2, 0.3]]))
    video = render(scene, np.zeros(1), 32)[None]  # (1, 1, 3, 32, 32)
    pos, mass = dynamics.track(video, scene.colour[None])
    assert np.allclose(pos[0, 0, 0], [0.37 * 32, 0.61 * 32], atol=0.05)  # edge pixels below MIN_COVER dropped
    assert mass[0, 0, 0] == pytest.approx(np.pi * (0.15 * 32) ** 2, rel=0.02)


def test_real_future_scores_zero_error_and_full_accuracy(clips):
    real, truth, frames = clips
    s = dynamics.score(real, real, frames, truth)
    assert s["position_error_px"] == 0.0 and s["lost_share"] == 0.0
    for q in ("objects", "wall", "any"):
        assert s["contact"][q]["accuracy"] == 1.0, q
        assert 0.2 < s["contact"][q]["positive_share"] < 0.95  # both classes occur
    assert s["contact"]["objects"]["num_videos"] > 0.8 * len(real)  # few clips too close to call


def test_shuffled_and_displaced_futures_score_worse(clips):
    real, truth, frames = clips
    shuffled = real.copy()
    shuffled[:, GIVEN:] = real[:, GIVEN:][:, ::-1]  # the generated frames in reverse order
    displaced = real.copy()
    displaced[:, GIVEN:] = np.roll(real[:, GIVEN:], 5, axis=-1)  # every object moved 5 px right (wrapping)
    s = dynamics.score(shuffled, real, frames, truth)
    assert s["position_error_px"] > 1.0  # the contact questions ask about the frames as a set: unchanged
    by_frame = s["position_error_px_by_frame"]
    assert by_frame[:GIVEN] == [None] * GIVEN and all(e > 0.5 for e in by_frame[GIVEN:])
    s = dynamics.score(displaced, real, frames, truth)
    assert s["position_error_px"] > 1.0
    assert s["contact"]["any"]["accuracy"] < 0.9 and s["contact_accuracy"] < 0.9


def test_black_fill_loses_every_object(clips):
    real, truth, frames = clips
    black = real.copy()
    black[:, GIVEN:] = 0
    s = dynamics.score(black, real, frames, truth)
    assert s["lost_share"] == 1.0 and s["position_error_px"] is None
    assert s["contact"]["objects"]["accuracy"] == pytest.approx(1 - s["contact"]["objects"]["positive_share"])


def test_evaluate_task_scores_model_and_fills_alike(clips):
    ds = BouncingShapes(CFG, "test")
    real = torch.stack([ds[i] for i in range(8)])
    mask = torch.zeros(8, CFG.frames, CFG.size, CFG.size)
    mask[:, GIVEN:] = 1
    fills = {"black": torch.where(mask.bool()[:, :, None], -1.0, real)[None], "copy": real[None]}
    out = dynamics.evaluate_task(ds, "predict", real, real, fills, mask)
    assert out["model"]["position_error_px"] == 0.0 and set(out["baselines"]) == {"black", "copy"}
    assert out["baselines"]["black"]["lost_share"] == 1.0 and out["real"]["tracker_floor_px"] < 0.5
    assert dynamics.evaluate_task(ds, "unconditional", real, real, fills, torch.ones_like(mask)) is None
    assert dynamics.evaluate_task(object(), "predict", real, real, fills, mask) is None


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected video"):
        dynamics.track(np.zeros((2, 3, 16, 16)), np.zeros((2, 2, 3)))


def test_scene_truth_of_grey_scenes():
    t = scene_truth(BouncingShapes(DataConfig(channels=1, num_objects=3), "test").scene(0), np.arange(4.0), 32)
    assert t.colour.shape == (3, 1) and t.edge.shape == (4, 3)


def test_evaluate_writes_the_readout_for_model_and_baselines(tmp_path):
    from metrics import evaluate
    from vdt import train
    from vdt.config import RunConfig

    cfg = RunConfig().with_overrides(["model.preset=cpu-tiny", "data.size=16", "data.frames=9", "data.num_objects=2",
                                      "train.batch_size=2", "train.steps=2", "eval.num_videos=4", "eval.batch_size=4",
                                      "eval.sample_steps=2", "eval.fvd=false", "eval.lpips=false",
                                      "eval.tasks=[predict]"])
    train.main(cfg, tmp_path, progress=False)
    task = evaluate.evaluate_run(tmp_path, tasks=["predict", "unconditional"], progress=False)["tasks"]
    dyn = task["predict"]["dynamics"]
    assert set(dyn) == {"model", "baselines", "real", "protocol"} and dyn["real"]["position_error_px"] == 0.0
    assert {"black", "nearest"} <= set(dyn["baselines"]) and dyn["baselines"]["black"]["lost_share"] == 1.0
    assert dyn["model"]["num_videos"] == 4 and 0 <= dyn["model"]["contact"]["wall"]["accuracy"] <= 1
    assert task["unconditional"]["dynamics"] is None
