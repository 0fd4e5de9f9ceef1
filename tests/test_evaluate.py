"""metrics/evaluate.py end to end on a briefly trained tiny run.

The I3D and AlexNet networks here are randomly initialised and saved in the real file formats;
their numbers only prove the pipeline runs, and the FVD is marked uncalibrated.
"""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from metrics import evaluate, region, sampling
from vdt import train
from vdt.config import ConfigError, RunConfig
from vdt.data import build_video_dataset
from vdt.layout import RunLayout, checkpoint_sha256, eval_status, why_not_evaluated

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


def region_psnr(fake, real, mask) -> np.ndarray:
    """Per-video PSNR of uint8 videos (N, T, C, H, W) over the pixels where mask (N, T, H, W) is 1, by hand."""
    se = ((fake.astype(np.float64) - real.astype(np.float64)) / 255) ** 2
    m = np.broadcast_to(mask[:, :, None].astype(bool), se.shape)
    mse = np.array([se[i][m[i]].mean() for i in range(len(se))])
    return 10 * np.log10(1 / mse)


def test_predict_scores_generated_frames_only(run_dir):
    res = evaluate.evaluate_run(run_dir, tasks=["predict"], progress=False)
    task = res["tasks"]["predict"]
    assert task["protocol"]["given_frames_per_video"] == 5  # k = T/2 of 10 frames
    assert len(task["per_video"]["psnr"]) == 3 and np.isfinite(task["per_video"]["psnr"]).all()
    samples = np.load(run_dir / "samples" / "predict.npz")
    real, fake, mask = samples["real"], samples["fake"], samples["mask"]
    assert real.shape == fake.shape == (3, 10, 3, 16, 16) and mask.shape == (3, 10, 16, 16)
    assert (fake[:, :5] == real[:, :5]).all()  # given frames are the real ones
    # PSNR recomputed by hand from the MSE over each video's generated pixels
    np.testing.assert_allclose(task["per_video"]["psnr"], region_psnr(fake, real, mask), rtol=2e-3)  # npz: uint8
    assert task["metrics"]["psnr"] == pytest.approx(np.mean(task["per_video"]["psnr"]), rel=1e-6)
    assert task["metrics"]["fvd"] is None and "disabled" in task["missing"]["fvd"]
    assert all(task["protocol"][k] == rule for k, rule in region.PROTOCOL.items())  # the region rule, recorded
    assert load(run_dir)["env"]["torch"] == torch.__version__
    # The trivial baselines, recomputed by hand on the same clips: black, and a copy of the last given frame.
    black = np.zeros_like(real)
    last = np.broadcast_to(real[:, 4:5], real.shape)
    base = task["baselines"]
    assert set(base) == {"black", "nearest", "motion"} and set(base["black"]) == set(base["motion"]) == {"psnr", "ssim"}
    assert base["black"]["psnr"] == pytest.approx(region_psnr(black, real, mask).mean(), rel=2e-3)
    assert base["nearest"]["psnr"] == pytest.approx(region_psnr(last, real, mask).mean(), rel=2e-3)
    # The one-step x0 diagnostic: an eps model's estimate is fair at t = 50 and poor at t = 999 (error x 157).
    x0 = task["x0_psnr_by_t"]
    assert x0["t"] == [50, 300, 500, 750, 999] and len(x0["psnr"]) == 5 and x0["psnr"][0] > x0["psnr"][-1]


def test_spatial_temporal_scores_the_generated_pixels_only(run_dir):
    task = evaluate.evaluate_run(run_dir, tasks=["spatial_temporal"], progress=False)["tasks"]["spatial_temporal"]
    samples = np.load(RunLayout(run_dir).sample_file("spatial_temporal"))
    real, fake, mask = samples["real"], samples["fake"], samples["mask"]
    partly = (mask.reshape(3, 10, -1).max(-1) == 1) & (mask.reshape(3, 10, -1).min(-1) == 0)
    assert partly.any()  # frames with given and generated pixels: the given ones must not count
    np.testing.assert_allclose(task["per_video"]["psnr"], region_psnr(fake, real, mask), rtol=2e-3)


def test_a_frame_equal_to_the_truth_scores_the_psnr_cap(run_dir):
    ev = evaluate.Evaluator(run_dir, RunConfig().with_overrides(TINY), progress=False)
    real = torch.rand(2, 10, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 10, 16, 16)
    mask[:, 5:] = 1
    fakes = real.unsqueeze(0).clone()
    fakes[0, 1, 9] += 0.1  # video 1: one generated frame off the truth, the other four exact
    scores, _ = ev.frame_scores(real, fakes, mask, "predict")
    assert scores["psnr"][0] == region.PSNR_CAP_DB
    assert 30 < scores["psnr"][1] < region.PSNR_CAP_DB and torch.isfinite(scores["psnr"]).all()


def test_frames_too_small_for_ssim_are_refused(run_dir):
    with pytest.raises(ConfigError, match="data.size.*SSIM"):
        evaluate.Evaluator(run_dir, RunConfig().with_overrides(TINY + ["data.size=8"]), progress=False)


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
    shutil.rmtree(RunLayout(run_dir).eval_parts)  # scored again, from the cached samples
    calls = []
    monkeypatch.setattr(sampling.RunSampler, "sample_batch", lambda *a, **k: calls.append(1))
    evaluate.evaluate_run(run_dir, tasks=["interpolate:stride=3"], progress=False)
    assert calls == []  # every batch came from eval_cache/
    assert load(run_dir)["tasks"]["interpolate:stride=3"]["metrics"] == first["metrics"]


def test_missing_weights_are_null_with_reason(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_I3D_WEIGHTS", str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("VDT_LPIPS_WEIGHTS", str(tmp_path / "nowhere" / "alexnet.ckpt"))
    cfg = RunConfig().with_overrides(TINY + ["eval.fvd=true", "eval.lpips=true"])
    task = evaluate.evaluate_run(run_dir, cfg, tasks=["backward"], progress=False)["tasks"]["backward"]
    assert task["metrics"]["fvd"] is None and "nowhere.pt" in task["missing"]["fvd"]
    assert task["metrics"]["lpips"] is None and "nowhere/alexnet.ckpt" in task["missing"]["lpips"]
    assert task["metrics"]["ssim"] is not None


def test_random_weights_smoke_mode_is_marked_uncalibrated(run_dir, tmp_path, monkeypatch, random_lpips_weights):
    monkeypatch.setenv("VDT_I3D_WEIGHTS", str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("VDT_STATS_CACHE", str(tmp_path / "stats"))
    cfg = RunConfig().with_overrides(TINY + ["eval.fvd=true", "eval.lpips=true", "eval.num_videos=2",
                                             "eval.fvd_ref_draws=2"])
    task = evaluate.evaluate_run(run_dir, cfg, tasks=["one_frame"], progress=False,
                                 allow_random_weights=True)["tasks"]["one_frame"]
    assert task["metrics"]["lpips"] >= 0 and np.isfinite(task["metrics"]["fvd"])
    assert task["protocol"]["uncalibrated"] is True and task["protocol"]["fvd"]["uncalibrated"] is True
    assert task["protocol"]["fvd"]["n_real"] == 2 and task["protocol"]["fvd"]["num_frames"] == 10
    assert task["protocol"]["lpips_weights"]["file"] == str(random_lpips_weights)
    assert task["protocol"]["lpips_weights"]["net"] == "alex" and len(task["protocol"]["lpips_weights"]["sha256"]) == 64
    # FVD beside its references, same protocol and N: real-vs-real draws (FVD's reals, clips 0..1, against the
    # disjoint clips 2..3 and 4..5), and the copy-nearest-frame fill
    refs, band = task["protocol"]["fvd_references"], task["references"]["fvd_real_vs_real"]
    assert len(band["draws"]) == 2 and band["n"] == 2 and np.isfinite(band["draws"]).all()
    assert band["min"] <= band["mean"] == band["fvd"] <= band["max"] and band["min"] < band["max"]
    assert np.isfinite(task["baselines"]["nearest"]["fvd"])
    assert refs["real_vs_real"]["real_clips"]["first"] == 0 and refs["real_vs_real"]["fake_clips"]["first"] == 2
    assert [d["fake_clips"]["first"] for d in refs["real_vs_real"]["draws"]] == [2, 4]
    assert refs["real_vs_real"]["band"] == band and "evaluated clips" in task["protocol"]["fvd_reals"]
    assert refs["real_vs_real"]["n_fake"] == refs["nearest"]["n_fake"] == 2
    assert refs["real_vs_real"]["weights_sha256"] == task["protocol"]["fvd"]["weights_sha256"]
    assert "lpips" in task["baselines"]["black"]  # the baselines are scored like the model
    assert refs["nearest"]["fake_clips"]["fill"] == "nearest given frame"
    assert refs["motion"]["fake_clips"]["fill"] == "motion" and np.isfinite(task["baselines"]["motion"]["fvd"])
    # The real sets and the fills depend on no model: cached once for every run of a sweep.
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 5
    # eval.fvd_reals=train: FVD's reals and the draws are disjoint train-split sets, the fill still the test clips'
    cfg = cfg.with_overrides(["eval.fvd_reals=train"])
    task = evaluate.evaluate_run(run_dir, cfg, tasks=["one_frame"], progress=False,
                                 allow_random_weights=True)["tasks"]["one_frame"]
    refs = task["protocol"]["fvd_references"]
    assert task["protocol"]["fvd"]["real_clips"]["split"] == "train" and "train" in task["protocol"]["fvd_reals"]
    sets = [task["protocol"]["fvd"]["real_clips"]] + [d["fake_clips"] for d in refs["real_vs_real"]["draws"]]
    assert len({c["clips_sha256"] for c in sets}) == 3 and all(c["split"] == "train" for c in sets)
    assert refs["nearest"]["fake_clips"]["split"] == "test"
    assert task["references"]["fvd_real_vs_real"]["draws"] != band["draws"]


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


# ---------------------------------------------------------------- latent runs
@pytest.fixture(scope="module")
def vae_dir(tiny_vae):
    """A tiny random-weight diffusers AutoencoderKL (tests/conftest.py)."""
    return tiny_vae


def test_latent_run_is_scored_in_pixels(vae_dir, tmp_path, monkeypatch):
    """data.autoencoder=sd-vae: pixel test clips, encoded, sampled in latent space, decoded, scored in pixels."""
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = RunConfig().with_overrides(TINY + ["data.autoencoder=sd-vae", f"data.vae_path={vae_dir}", "data.size=32",
                                             "data.length=8"])
    run = tmp_path / "latent-run"
    train.main(cfg, run, progress=False)
    ev = evaluate.Evaluator(run, cfg, progress=False)
    assert ev.sampler.vae.device == ev.device  # the VAE runs on the run's device
    task = evaluate.evaluate_run(run, cfg, tasks=["predict"], progress=False)["tasks"]["predict"]
    samples = np.load(RunLayout(run).sample_file("predict"))
    real, fake, mask = samples["real"], samples["fake"], samples["mask"]
    assert real.shape == fake.shape == (3, 10, 3, 32, 32) and mask.shape == (3, 10, 32, 32)  # pixels, not latents
    pixels = build_video_dataset(dataclasses.replace(cfg.data, autoencoder="none"), "test")
    assert (real == evaluate.to_uint8(torch.stack([pixels[i] for i in range(3)])).numpy()).all()
    assert (fake[:, :5] == real[:, :5]).all() and (mask[:, :5] == 0).all() and (mask[:, 5:] == 1).all()
    # PSNR against the pixels (the npz frames are uint8: within 0.05 dB)
    np.testing.assert_allclose(task["per_video"]["psnr"], region_psnr(fake, real, mask), atol=0.05)
    assert task["protocol"]["space"].startswith("latent") and task["protocol"]["real_clips"]["resolution"] == 32
    assert not list((tmp_path / "cache" / "latents").glob("*-test-*"))  # the latent cache is for training only


# ---------------------------------------------------------------- bookkeeping
def fresh_run(run_dir, tmp_path):
    """A copy of the trained run with no evaluation results."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval*", "samples"))
    return copy


def test_half_done_evaluation_leaves_no_eval_json_and_resumes(run_dir, tmp_path, monkeypatch):
    run = fresh_run(run_dir, tmp_path)
    cfg = RunConfig().with_overrides(TINY + ["eval.tasks=predict,backward"])
    real_run_task, calls = evaluate.Evaluator.run_task, []

    def killed_at_backward(self, spec):
        calls.append(spec)
        if spec == "backward":
            raise KeyboardInterrupt("killed")
        return real_run_task(self, spec)

    monkeypatch.setattr(evaluate.Evaluator, "run_task", killed_at_backward)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_run(run, cfg, progress=False)
    layout = RunLayout(run)
    assert not layout.eval_json.exists() and layout.eval_part("predict").exists()
    calls.clear()
    monkeypatch.setattr(evaluate.Evaluator, "run_task", lambda ev, spec: calls.append(spec) or real_run_task(ev, spec))
    res = evaluate.evaluate_run(run, cfg, progress=False)
    assert calls == ["backward"]  # resumed at the first unfinished task
    assert res["complete"] and set(load(run)["tasks"]) == {"predict", "backward"}
    # An evaluation of a task outside eval.tasks alone doesn't make eval.json either.
    other = fresh_run(run_dir, tmp_path / "other")
    out = evaluate.evaluate_run(other, cfg, tasks=["predict"], progress=False)
    assert not out["complete"] and not RunLayout(other).eval_json.exists()


def test_eval_json_records_its_settings_and_re_evaluates_when_they_change(run_dir, tmp_path):
    run = fresh_run(run_dir, tmp_path)
    cfg = RunConfig().with_overrides(TINY)
    evaluate.evaluate_run(run, cfg, progress=False)
    first = load(run)
    assert first["eval"] == json.loads(json.dumps(dataclasses.asdict(cfg.eval))) and first["eval"]["num_videos"] == 3
    sha = checkpoint_sha256(RunLayout(run).last_ckpt)
    assert why_not_evaluated(first, cfg.to_dict(), sha) is None
    fewer = RunConfig().with_overrides(TINY + ["eval.num_videos=2"])
    assert "other eval settings" in why_not_evaluated(first, fewer.to_dict(), sha)
    assert "final step" in why_not_evaluated({**first, "step": 99}, cfg.to_dict(), sha)
    ckpt = RunLayout(run).last_ckpt.read_bytes()
    evaluate.evaluate_run(run, fewer, progress=False)
    again = load(run)
    assert again["eval"]["num_videos"] == 2 and len(again["tasks"]["predict"]["per_video"]["psnr"]) == 2
    assert RunLayout(run).last_ckpt.read_bytes() == ckpt and why_not_evaluated(again, fewer.to_dict(), sha) is None


def test_eval_json_is_bound_to_its_checkpoint_file_and_clips(run_dir, tmp_path):
    """eval.json and each part record the checkpoint's SHA-256 and the clip-list signature; another checkpoint
    (same step, other bytes) makes the eval.json not current."""
    run = fresh_run(run_dir, tmp_path)
    cfg = RunConfig().with_overrides(TINY)
    evaluate.evaluate_run(run, cfg, progress=False)
    record, layout = load(run), RunLayout(run)
    import hashlib
    assert record["checkpoint"]["sha256"] == hashlib.sha256(layout.last_ckpt.read_bytes()).hexdigest()
    part = json.loads(layout.eval_part("predict").read_text())
    assert part["identity"]["checkpoint"]["sha256"] == record["checkpoint"]["sha256"]
    assert len(record["clips_sha256"]) == 64 and part["identity"]["clips_sha256"] == record["clips_sha256"]
    assert part["result"]["protocol"]["real_clips"]["clips_sha256"] == record["clips_sha256"]
    assert eval_status(run) is None
    ckpt = torch.load(layout.last_ckpt, weights_only=False)
    ckpt["ema"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    torch.save(ckpt, layout.last_ckpt)  # the same step and config, other weights
    assert "another checkpoint" in eval_status(run)
    assert "no checkpoint" in why_not_evaluated(record, cfg.to_dict(), None)
    assert "older vdt-bench" in why_not_evaluated({**record, "checkpoint": {"step": 3}}, cfg.to_dict(), "x")
    evaluate.evaluate_run(run, cfg, progress=False)
    assert eval_status(run) is None and load(run)["checkpoint"]["sha256"] != record["checkpoint"]["sha256"]


@pytest.mark.parametrize("key,value,trained", [("diffusion.prediction", "v", "'eps'"), ("model.depth", "3", "2"),
                                               ("data.size", "32", "16"), ("data.stride", "2", "1"),
                                               ("train.lr", "0.1", "0.0003")])
def test_evaluation_refuses_to_change_what_the_checkpoint_was_trained_with(run_dir, tmp_path, capsys, key, value,
                                                                           trained):
    run = fresh_run(run_dir, tmp_path)
    with pytest.raises(ConfigError, match=rf"{key}.*trained with {key}={trained}"):
        evaluate.evaluate_run(run, RunConfig().with_overrides(TINY + [f"{key}={value}"]), progress=False)
    code = evaluate.cli(["--run-dir", str(run), "--no-progress", "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and f"{key}={value}" in err and f"trained with {key}={trained}" in err, err
    assert not RunLayout(run).eval_json.exists() and not RunLayout(run).eval_parts.exists()


def test_evaluation_may_change_where_the_data_lives_and_the_split(run_dir, tmp_path, capsys):
    run = fresh_run(run_dir, tmp_path)
    code = evaluate.cli(["--run-dir", str(run), "--no-progress", "--set", "data.root=/moved", "data.num_workers=2",
                         "data.split=all", "data.size=16"])  # data.size as trained: allowed
    assert code == 0, capsys.readouterr().err
    layout = RunLayout(run)
    assert not layout.eval_json.exists()  # another split than test: its own file, eval.json stays the test's
    other = json.loads(layout.eval_result("all").read_text())
    assert other["split"] == "all" and other["tasks"]["predict"]["protocol"]["split"] == "all"
    code = evaluate.cli(["--run-dir", str(run), "--no-progress", "--set", "data.split=holdout"])
    assert code == 2 and "data.split" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["same", "root", "clips", "checkpoint", "eta", "guidance", "seed"])
def test_sample_cache_key_covers_what_made_the_samples(run_dir, tmp_path, monkeypatch, change):
    run = fresh_run(run_dir, tmp_path)
    evaluate.evaluate_run(run, RunConfig().with_overrides(TINY), progress=False)
    shutil.rmtree(RunLayout(run).eval_parts)  # only the sample cache is left to reuse
    over = {"same": [], "root": ["data.root=/moved"], "clips": [], "checkpoint": [], "eta": ["eval.eta=0.5"],
            "guidance": ["eval.guidance=2"], "seed": ["eval.seed=1"]}
    if change == "checkpoint":  # the same step, other weights
        ckpt = torch.load(RunLayout(run).last_ckpt, weights_only=False)
        ckpt["ema"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
        torch.save(ckpt, RunLayout(run).last_ckpt)
    if change == "clips":  # the same data config, another list of clips (a rescan that dropped a video)
        signature = sampling.clip_signature
        monkeypatch.setattr(sampling, "clip_signature", lambda data, a, b: signature(data, a + 1, b + 1))
    calls = []
    real = sampling.RunSampler.sample_batch
    monkeypatch.setattr(sampling.RunSampler, "sample_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    evaluate.evaluate_run(run, RunConfig().with_overrides(TINY + over[change]), progress=False)
    assert (len(calls) == 0) == (change in ("same", "root")), change  # moving the data keeps its samples


def test_clip_signature_names_the_clips_not_where_they_are(smoke_ucf, tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = RunConfig().with_overrides(["data.name=ucf101", f"data.root={smoke_ucf}", "data.frames=8", "data.size=16"])
    data = build_video_dataset(cfg.data, "test")
    moved = tmp_path / "moved"
    shutil.copytree(smoke_ucf, moved)
    same = build_video_dataset(dataclasses.replace(cfg.data, root=str(moved)), "test")
    assert sampling.clip_signature(data, 0, 3) == sampling.clip_signature(same, 0, 3)
    assert sampling.clip_signature(data, 0, 3) != sampling.clip_signature(data, 0, 2)
    first = moved / "UCF-101" / "OneShape" / "v_OneShape_g01_c01.avi"
    assert str(first) == same.paths[0]
    first.unlink()  # a rescan without the first test video: every index shifts
    rescanned = build_video_dataset(dataclasses.replace(cfg.data, root=str(moved), max_bad_fraction=1.0), "test")
    assert sampling.clip_signature(rescanned, 0, 3) != sampling.clip_signature(data, 0, 3)


def test_sample_seeds_never_collide(run_dir, tmp_path, monkeypatch):
    """best_of above 64 and several batches: every (batch, sample) draws from its own seed; the same again."""
    run = fresh_run(run_dir, tmp_path)
    ev = evaluate.Evaluator(run, RunConfig().with_overrides(TINY + ["eval.best_of=65"]), progress=False)
    seeds = []
    monkeypatch.setattr(sampling.RunSampler, "sample_batch", lambda self, z0, y, mask, seed: seeds.append(seed) or z0)
    _, masks_cfg, _ = evaluate.parse_task("predict", ev.cfg)
    ev.sampler.task_samples("predict", "predict", masks_cfg)
    assert len(seeds) == 2 * 65 and len(set(seeds)) == len(seeds)  # 3 videos in batches of 2
    x0 = {sampling.derive_seed(0, "x0", "predict", b, t) for b in range(3) for t in range(5000)}
    assert len(x0) == 3 * 5000  # t beyond 4096 too
    assert sampling.derive_seed(0, "sample", "predict", 1, 0) == seeds[65] and all(0 <= s < 2**63 for s in seeds)
