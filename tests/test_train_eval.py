"""Evaluation during training (eval.every): records in the train log, saved samples, exact resume, wall time."""

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics import live_eval, region
from metrics.report_plots import eval_series
from vdt import train
from vdt.config import ConfigError, RunConfig
from vdt.denoiser import Denoiser
from vdt.model import VDT, count_flops

TINY = ["model.preset=cpu-tiny", "data.size=16", "data.frames=8", "train.batch_size=4", "train.log_every=2",
        "train.ckpt_every=4", "train.warmup=2", "eval.every=2", "eval.every_videos=3", "eval.batch_size=2",
        "eval.sample_steps=3", "eval.eta=1.0"]


def tiny(*extra) -> RunConfig:
    return RunConfig().with_overrides(TINY + list(extra))


def read_log(run_dir) -> list:
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def evals(run_dir) -> list:
    return [r for r in read_log(run_dir) if r.get("event") == "eval"]


def test_eval_records_every_n_steps_and_at_the_end(tmp_path):
    cfg = tiny("train.steps=5")
    train.main(cfg, tmp_path, progress=False)
    recs = evals(tmp_path)
    assert [r["step"] for r in recs] == [2, 4, 5]  # every 2 steps, and the final step
    step_flops = count_flops(train.model_for_training(cfg.model), 4)
    for r in recs:
        assert r["split"] == "val" and r["num_videos"] == 3
        assert r["train_flops"] == pytest.approx(step_flops * r["step"])
        assert r["wall_time"] > 0 and r["eval_seconds"] > 0
        scores = r["eval"]["predict"]
        assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] <= 1
        assert {"black", "nearest"} <= set(r["baselines"]["predict"])
    assert [r["wall_time"] for r in recs] == sorted(r["wall_time"] for r in recs)
    # the samples of each evaluation are kept, and score what the record says
    saved = sorted(p.name for p in (tmp_path / "eval_live").glob("*.npz"))
    assert saved == ["step_0000002.npz", "step_0000004.npz", "step_0000005.npz"]
    with np.load(tmp_path / "eval_live" / "step_0000005.npz") as z:
        real, fake, mask = (torch.from_numpy(z[k]) for k in ("real", "fake", "mask"))
    assert real.shape == fake.shape == (3, 8, 3, 16, 16) and mask.shape == (3, 8, 16, 16)
    psnr = region.score_region(fake.float() / 255, real.float() / 255, mask).get("psnr").mean()
    assert float(psnr) == pytest.approx(recs[-1]["eval"]["predict"]["psnr"], abs=0.3)  # uint8 rounding only
    assert torch.equal(real[mask.bool().unsqueeze(2).expand_as(real) == 0],
                       fake[mask.bool().unsqueeze(2).expand_as(real) == 0])  # given pixels are the truth


def test_eval_off_by_default_writes_nothing(tmp_path):
    train.main(tiny("train.steps=2", "eval.every=0"), tmp_path, progress=False)
    assert evals(tmp_path) == [] and not (tmp_path / "eval_live").exists()


def test_records_are_what_the_report_reads(tmp_path):
    train.main(tiny("train.steps=4"), tmp_path, progress=False)

    class Run:
        variant, log = "v", read_log(tmp_path)

    series = eval_series([Run()])
    x, y = series[("predict", "psnr")]["v"][0]
    assert list(x) == [2.0, 4.0] and list(y) == [r["eval"]["predict"]["psnr"] for r in evals(tmp_path)]
    flops, _ = eval_series([Run()], "train_flops")[("predict", "ssim")]["v"][0]
    assert list(flops) == [r["train_flops"] for r in evals(tmp_path)]


def test_resumed_runs_write_the_same_eval_records(tmp_path, monkeypatch):
    """One go == half then a resume == a run whose last checkpoint was lost after its evaluations were logged."""
    def metrics(run_dir):
        return [(r["step"], r["eval"], r["train_flops"]) for r in evals(run_dir)]

    train.main(tiny("train.steps=8"), tmp_path / "once", progress=False)
    train.main(tiny("train.steps=4"), tmp_path / "twice", progress=False)
    train.main(tiny("train.steps=8"), tmp_path / "twice", progress=False)
    assert [s for s, _, _ in metrics(tmp_path / "once")] == [2, 4, 6, 8]
    assert metrics(tmp_path / "twice") == metrics(tmp_path / "once")
    # a crash after the evaluations of steps 6 and 8 were logged, before checkpoint 8 was whole: resume from 4
    shutil.copytree(tmp_path / "once", tmp_path / "lost")
    for name in ("last.pt", "step_0000008.pt"):
        (tmp_path / "lost" / "checkpoints" / name).unlink()
    train.main(tiny("train.steps=8"), tmp_path / "lost", progress=False)
    assert metrics(tmp_path / "lost") == metrics(tmp_path / "once")


def test_evaluation_time_is_not_training_time(tmp_path, monkeypatch):
    real_call = live_eval.LiveEvaluator.__call__

    def slow(self):
        time.sleep(1.5)
        return real_call(self)

    monkeypatch.setattr(live_eval.LiveEvaluator, "__call__", slow)
    train.main(tiny("train.steps=4", "train.log_every=1"), tmp_path, progress=False)
    recs, log = evals(tmp_path), [r for r in read_log(tmp_path) if "loss" in r]
    assert all(r["eval_seconds"] >= 1.5 for r in recs)
    assert log[-1]["wall_time"] < sum(r["eval_seconds"] for r in recs)  # 4 tiny steps take far less than 3 s
    assert all(r["tokens_per_s"] > log[0]["tokens_per_s"] / 20 for r in log)  # no interval holds a 1.5 s wait


def test_margin_over_the_motion_baseline(tmp_path, monkeypatch):
    """The margin is the model's score minus the motion baseline's, on the same clips and masks."""
    real_fills = live_eval.baseline_fills

    def with_motion(real, mask):
        fills = {k: v for k, v in real_fills(real, mask).items() if "motion" not in k}
        m = mask.bool().unsqueeze(2)
        fills["motion"] = torch.where(m, torch.zeros_like(real), real).unsqueeze(0)  # grey: a known stand-in
        return fills

    monkeypatch.setattr(live_eval, "baseline_fills", with_motion)
    train.main(tiny("train.steps=2"), tmp_path, progress=False)
    (rec,) = evals(tmp_path)
    scores, base = rec["eval"]["predict"], rec["baselines"]["predict"]["motion"]
    real = torch.from_numpy(np.load(tmp_path / "eval_live" / "step_0000002.npz")["real"]).float() / 255
    mask = torch.from_numpy(np.load(tmp_path / "eval_live" / "step_0000002.npz")["mask"])
    grey = torch.where(mask.bool().unsqueeze(2), torch.full_like(real, 0.5), real)
    assert base["psnr"] == pytest.approx(float(region.score_region(grey, real, mask)["psnr"].mean()), abs=0.05)
    assert scores["psnr_margin_motion"] == pytest.approx(scores["psnr"] - base["psnr"])
    assert scores["ssim_margin_motion"] == pytest.approx(scores["ssim"] - base["ssim"])
    assert base["psnr"] != pytest.approx(rec["baselines"]["predict"]["black"]["psnr"])


def test_unconditional_first_task_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="eval.every"):
        train.main(tiny("train.steps=2", "eval.tasks=unconditional,predict"), tmp_path, progress=False)


def test_ddp_rank_0_alone_evaluates_and_writes_tensorboard(tmp_path):
    """Two gloo processes: one set of eval records (rank 0's), the scores of one process, one event file."""
    from test_train import _ddp

    train.main(tiny("train.steps=4"), tmp_path / "single", progress=False)
    for p in _ddp(tmp_path / "ddp", 4, "", TINY[7:]):  # the eval.* settings
        assert p.wait(timeout=300) == 0, p.stderr.read()
    single, ddp = evals(tmp_path / "single"), evals(tmp_path / "ddp")
    assert [r["step"] for r in ddp] == [2, 4]
    for a, b in zip(single, ddp, strict=True):
        assert b["eval"]["predict"] == pytest.approx(a["eval"]["predict"], abs=1e-3)
    files = list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == (1 if importlib.util.find_spec("tensorboard") else 0)


# ---------------------------------------------------------------- the validation loss (val_loss)


def val_losses(run_dir) -> list:
    return [(r["step"], r["eval"]["predict"]["val_loss"]) for r in evals(run_dir)]


def test_loss_timesteps_are_a_stratified_grid():
    t = live_eval.loss_timesteps(5, 4, 1000)
    assert t.shape == (4, 5) and t.dtype == torch.long
    for k in range(4):  # level k: its 5 clips spread over [250 k, 250 (k + 1)), at the strata's centres
        assert t[k].tolist() == [250 * k + 25 + 50 * i for i in range(5)]
    assert len(set(live_eval.loss_timesteps(7, 8, 1000).flatten().tolist())) == 56  # all distinct
    assert torch.equal(live_eval.loss_timesteps(1, 1, 10), torch.tensor([[5]]))


def test_val_loss_falls_with_training_estimates_the_objective_and_reaches_tensorboard(tmp_path):
    """A fast EMA (decay 0.5) learns in 30 steps: the val loss at step 30 is well below step 10's. It is the trainer's
    objective: the EMA of the last checkpoint gives it again exactly, and a Monte Carlo mean of training_losses over
    uniform timesteps and fresh noise on the same clips and masks agrees with it."""
    cfg = tiny("train.steps=30", "eval.every=10", "train.ema_decay=0.5", "train.ckpt_every=10")
    train.main(cfg, tmp_path, progress=False)
    (s1, first), _, (s3, last) = val_losses(tmp_path)
    assert (s1, s3) == (10, 30) and all(np.isfinite([first, last])) and 0 < last < 0.95 * first
    ema = VDT(train.model_for_training(cfg.model))
    ema.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["ema"])
    ev = live_eval.LiveEvaluator(cfg, ema.requires_grad_(False), "cpu")
    assert ev.val_loss() == last  # the same clips, masks, timesteps and noise: bitwise
    g, losses = torch.Generator().manual_seed(123), []
    with torch.no_grad():
        for x0, _, mask in ev.batches:
            fn = Denoiser(ema, cfg.model.conditioning, mask)
            for _ in range(64):
                t = torch.randint(0, cfg.diffusion.steps, (x0.shape[0],), generator=g)
                noise = torch.randn(x0.shape, generator=g)
                losses.append(ev.sampler.diffusion.training_losses(fn, x0, mask, t, noise=noise)["loss"])
    assert float(torch.cat(losses).mean()) == pytest.approx(last, rel=0.05)
    if importlib.util.find_spec("tensorboard"):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
        got = acc.Scalars("val/predict/val_loss")
        assert [(e.step, e.value) for e in got] == [(s, pytest.approx(v, rel=1e-6)) for s, v in val_losses(tmp_path)]


def test_val_loss_of_a_resumed_run_equals_one_go(tmp_path):
    train.main(tiny("train.steps=6"), tmp_path / "once", progress=False)
    train.main(tiny("train.steps=3"), tmp_path / "twice", progress=False)
    train.main(tiny("train.steps=6"), tmp_path / "twice", progress=False)
    once = val_losses(tmp_path / "once")
    assert [s for s, _ in once] == [2, 4, 6] and all(np.isfinite([v for _, v in once]))
    twice = dict(val_losses(tmp_path / "twice"))
    assert sorted(twice) == [2, 3, 4, 6]  # step 3: the first part's final step
    assert [(s, twice[s]) for s in (2, 4, 6)] == once  # bitwise
