"""metrics/evaluate.py end to end on a briefly trained tiny run.

The I3D and AlexNet networks here are randomly initialised and saved in the real file formats;
their numbers only prove the pipeline runs, and the FVD is marked uncalibrated.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from metrics import evaluate
from vdt import train
from vdt.config import ConfigError, RunConfig

TINY = ["model.preset=cpu-tiny", "data.size=16", "data.frames=10", "train.batch_size=4", "train.steps=3",
        "train.log_every=1", "eval.num_videos=3", "eval.batch_size=2", "eval.sample_steps=3", "eval.fvd=false",
        "eval.lpips=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    train.main(RunConfig().with_overrides(TINY), d, progress=False)
    return d


def load(run_dir) -> dict:
    return json.loads((run_dir / "eval.json").read_text())


def test_predict_scores_generated_frames_only(run_dir):
    res = evaluate.evaluate_run(run_dir, tasks=["predict"], progress=False)
    task = res["tasks"]["predict"]
    assert task["protocol"]["given_frames_per_video"] == 5  # k = T/2 of 10 frames
    assert len(task["per_video"]["psnr"]) == 3 and np.isfinite(task["per_video"]["psnr"]).all()
    samples = np.load(run_dir / "samples" / "predict.npz")
    real, fake, mask = samples["real"], samples["fake"], samples["mask"]
    assert real.shape == fake.shape == (3, 10, 3, 16, 16) and mask.shape == (3, 10, 16, 16)
    assert (fake[:, :5] == real[:, :5]).all()  # given frames are the real ones
    # PSNR recomputed by hand over the generated frames only, per frame, then per video
    x, y = fake[:, 5:].astype(np.float64) / 255, real[:, 5:].astype(np.float64) / 255
    mse = ((x - y) ** 2).mean(axis=(2, 3, 4))
    expected = (10 * np.log10(1 / mse)).mean(1)
    np.testing.assert_allclose(task["per_video"]["psnr"], expected, rtol=2e-3)  # npz frames are uint8
    assert task["metrics"]["psnr"] == pytest.approx(np.mean(task["per_video"]["psnr"]), rel=1e-6)
    assert task["metrics"]["fvd"] is None and "disabled" in task["missing"]["fvd"]
    assert load(run_dir)["env"]["torch"] == torch.__version__
    # The trivial baselines, recomputed by hand on the same clips: black, and a copy of the last given frame.
    def psnr(fill):
        return (10 * np.log10(1 / ((fill - y) ** 2).mean(axis=(2, 3, 4)))).mean()

    last = real[:, 4:5].astype(np.float64) / 255
    base = task["baselines"]
    assert set(base) == {"black_fill", "nearest_given_frame"} and set(base["black_fill"]) == {"psnr", "ssim"}
    assert base["black_fill"]["psnr"] == pytest.approx(psnr(np.zeros_like(y)), rel=2e-3)
    assert base["nearest_given_frame"]["psnr"] == pytest.approx(psnr(np.broadcast_to(last, y.shape)), rel=2e-3)


def test_a_frame_equal_to_the_truth_scores_the_psnr_cap(run_dir):
    ev = evaluate.Evaluator(run_dir, RunConfig().with_overrides(TINY), progress=False)
    real = torch.rand(2, 10, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 10, 16, 16)
    mask[:, 5:] = 1
    fakes = real.unsqueeze(0).clone()
    fakes[0, 1, 9] += 0.1  # video 1: one generated frame off the truth, the other four exact
    scores, _ = ev.frame_scores(real, fakes, mask, "predict", lpips=False)
    assert scores["psnr"][0] == evaluate.PSNR_CAP_DB
    assert 40 < scores["psnr"][1] < evaluate.PSNR_CAP_DB and torch.isfinite(scores["psnr"]).all()


def test_unconditional_has_no_frame_metrics(run_dir):
    res = evaluate.evaluate_run(run_dir, tasks=["unconditional"], progress=False)
    task = res["tasks"]["unconditional"]
    assert task["metrics"]["psnr"] is None and "no ground truth" in task["missing"]["psnr"]
    assert task["baselines"] == {}  # nothing is given, so nothing to copy and no ground truth to score
    assert "predict" in load(run_dir)["tasks"]  # earlier tasks of the same checkpoint are kept


def test_resumes_from_cached_samples(run_dir, monkeypatch):
    evaluate.evaluate_run(run_dir, tasks=["interpolate:stride=3"], progress=False)
    first = load(run_dir)["tasks"]["interpolate:stride=3"]
    assert first["protocol"]["given_frames_per_video"] == 4  # frames 0, 3, 6, 9
    calls = []
    monkeypatch.setattr(evaluate.Evaluator, "sample_batch", lambda *a, **k: calls.append(1))
    evaluate.evaluate_run(run_dir, tasks=["interpolate:stride=3"], progress=False)
    assert calls == []  # every batch came from eval_cache/
    assert load(run_dir)["tasks"]["interpolate:stride=3"]["metrics"] == first["metrics"]


def test_missing_weights_are_null_with_reason(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_I3D_WEIGHTS", str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = RunConfig().with_overrides(TINY + ["eval.fvd=true", "eval.lpips=true"])
    task = evaluate.evaluate_run(run_dir, cfg, tasks=["backward"], progress=False)["tasks"]["backward"]
    assert task["metrics"]["fvd"] is None and "nowhere.pt" in task["missing"]["fvd"]
    assert task["metrics"]["lpips"] is None and "alexnet-owt-7be5be79.pth" in task["missing"]["lpips"]
    assert task["metrics"]["ssim"] is not None


def test_random_weights_smoke_mode_is_marked_uncalibrated(run_dir, tmp_path, monkeypatch):
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), torch_home / "hub/checkpoints/alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("VDT_I3D_WEIGHTS", str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("VDT_STATS_CACHE", str(tmp_path / "stats"))
    cfg = RunConfig().with_overrides(TINY + ["eval.fvd=true", "eval.lpips=true", "eval.num_videos=2"])
    task = evaluate.evaluate_run(run_dir, cfg, tasks=["one_frame"], progress=False,
                                 allow_random_weights=True)["tasks"]["one_frame"]
    assert task["metrics"]["lpips"] >= 0 and np.isfinite(task["metrics"]["fvd"])
    assert task["protocol"]["uncalibrated"] is True and task["protocol"]["fvd"]["uncalibrated"] is True
    assert task["protocol"]["fvd"]["n_real"] == 2 and task["protocol"]["fvd"]["num_frames"] == 10
    assert list((tmp_path / "stats").glob("*.npz"))  # real statistics cached for the next evaluation


def test_parse_task_and_bad_input(run_dir):
    cfg = RunConfig().with_overrides(TINY)
    kind, masks, params = evaluate.parse_task("predict:k=3", cfg)
    assert kind == "predict" and masks.predict_k == 3 and params == {"k": 3}
    with pytest.raises(ConfigError, match="teleport"):
        evaluate.parse_task("teleport", cfg)
    with pytest.raises(ConfigError, match="zoom"):
        evaluate.parse_task("predict:zoom=2", cfg)
    out = subprocess.run([sys.executable, "metrics/evaluate.py", "--run-dir", str(run_dir), "--task", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "nope" in out.stderr
    out = subprocess.run([sys.executable, "metrics/evaluate.py", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--allow-random-weights" in out.stdout
