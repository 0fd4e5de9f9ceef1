"""Sweeps as data: expansion, run ids, profiles, --set checking, cost estimates. No training here."""

import json

import pytest

from ablations import cost, sweeps
from vdt.config import ConfigError, RunConfig


def test_conditioning_expands_to_three_modes_on_the_same_task():
    specs = sweeps.expand("conditioning")
    assert [(s.variant, s.seed) for s in specs] == [
        (m, seed) for m in ("token_concat", "cross_attn", "adaln") for seed in sweeps.PROFILES["tiny"].seeds]
    assert len(sweeps.PROFILES["tiny"].seeds) >= 3
    for s in specs:
        assert s.cfg.model.conditioning == s.variant
        assert s.cfg.masks.probabilities() == {"predict": 1.0}
        assert s.cfg.eval.tasks == ("predict",)
        assert s.cfg.train.seed == s.seed
    # Same data, frames and training budget for every variant: only the conditioning and the seed differ.
    flat = [{f"{k}.{f}": v for k, sec in s.cfg.to_dict().items() for f, v in sec.items()} for s in specs]
    varying = {k for k in flat[0] if len({json.dumps(f[k]) for f in flat}) > 1}
    assert varying == {"model.conditioning", "model.frames", "model.cond_frames", "train.seed"}


def test_mask_ratio_and_depth_vary_their_knob():
    ratios = {s.cfg.masks.mask_ratio for s in sweeps.expand("mask_ratio")}
    assert ratios == {0.25, 0.5, 0.75}
    assert len(sweeps.expand("mask_ratio")[0].cfg.eval.tasks) >= 3
    assert {s.cfg.model.depth for s in sweeps.expand("depth")} == {2, 4, 8}
    paper = sweeps.expand("depth", "paper", {"data.root": "/data/ucf"})
    assert {s.cfg.model.depth for s in paper} == {12, 28}
    assert {s.cfg.model.hidden for s in paper} == {1152}


def test_prediction_sweep_varies_only_the_target_on_predict():
    specs = sweeps.expand("prediction")
    assert [(s.variant, s.seed) for s in specs] == [
        (p, seed) for p in ("eps", "v", "x0") for seed in sweeps.PROFILES["tiny"].seeds]
    for s in specs:
        assert s.cfg.diffusion.prediction == s.variant
        assert s.cfg.model.conditioning == "token_concat"
        assert s.cfg.masks.probabilities() == {"predict": 1.0} and s.cfg.eval.tasks == ("predict",)
    flat = [{f"{k}.{f}": v for k, sec in s.cfg.to_dict().items() for f, v in sec.items()} for s in specs]
    varying = {k for k in flat[0] if len({json.dumps(f[k]) for f in flat}) > 1}
    assert varying == {"diffusion.prediction", "train.seed"}
    cond = sweeps.expand("conditioning", variants=["token_concat"])  # the same runs as the conditioning baseline
    assert [s.run_id for s in cond] == [s.run_id for s in specs if s.variant == "v"]
    with pytest.raises(ConfigError, match="same config"):
        sweeps.expand("prediction", sets={"diffusion.prediction": "v"})


def test_profiles_choose_the_prediction():
    """tiny learns on the CPU with v; paper keeps the paper's eps."""
    assert sweeps.expand("conditioning")[0].cfg.diffusion.prediction == "v"
    assert sweeps.expand("conditioning", "paper", {"data.root": "/d"})[0].cfg.diffusion.prediction == "eps"
    assert sweeps.expand("conditioning", sets={"diffusion.prediction": "eps"})[0].cfg.diffusion.prediction == "eps"
    with pytest.raises(ConfigError, match=r"diffusion\.prediction: unknown prediction 'noise'"):
        sweeps.expand("conditioning", sets={"diffusion.prediction": "noise"})


def test_bad_prediction_on_the_command_line_names_the_field(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "ablations/run.py", "--sweep", "conditioning", "--dry-run", "--results",
                          str(tmp_path), "--set", "diffusion.prediction=score"], capture_output=True, text=True)
    assert out.returncode != 0
    assert "diffusion.prediction: unknown prediction 'score'" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_run_ids_are_stable_distinct_and_the_config_hash():
    for name in sweeps.SWEEPS:
        a, b = sweeps.expand(name), sweeps.expand(name)
        assert [s.run_id for s in a] == [s.run_id for s in b]
        assert len({s.run_id for s in a}) == len(a)
        for s in a:
            assert s.run_id == RunConfig.from_dict(json.loads(json.dumps(s.cfg.to_dict()))).run_id()
    base = {s.run_id for s in sweeps.expand("conditioning")}
    assert not base & {s.run_id for s in sweeps.expand("conditioning", sets={"train.steps": "7"})}


def test_every_sweep_builds_under_every_profile():
    for name in sweeps.SWEEPS:
        for prof in sweeps.PROFILES:
            specs = sweeps.expand(name, prof, {"data.root": "/data/ucf"})
            assert specs and all(s.profile == prof for s in specs)
            info = specs[0].run_info()
            assert set(info) == {"sweep", "variant", "seed", "overrides", "run_id", "profile", "tuned_on"}


def test_run_info_records_the_split_the_profile_was_tuned_on(tmp_path):
    """run.json's tuned_on is the profile's, and the report's protocol shows it (not its legacy default)."""
    from metrics import report, report_runs

    assert sweeps.PROFILES["tiny"].tuned_on.startswith("val (") and sweeps.PROFILES["long"].tuned_on.startswith("val (")
    for prof in ("paper", "smoke"):
        assert sweeps.PROFILES[prof].tuned_on == "none (budget choice)"
    for prof in sweeps.PROFILES:
        spec = sweeps.expand("conditioning", prof, {"data.root": "/data/ucf"})[0]
        assert spec.run_info()["tuned_on"] == sweeps.PROFILES[prof].tuned_on
    spec = sweeps.expand("conditioning", "paper", {"data.root": "/data/ucf"})[0]
    (tmp_path / "run.json").write_text(json.dumps(spec.run_info()))
    run = report_runs.load_run(tmp_path, "conditioning")
    assert run.tuned_on == "none (budget choice)"
    assert dict(report.splits([run], []))["profile tuned on (split)"] == "none (budget choice)"


def test_run_info_records_the_overrides_that_rebuild_the_config():
    for s in sweeps.expand("mask_ratio"):
        assert RunConfig().with_overrides(s.run_info()["overrides"]).run_id() == s.run_id


def test_variants_and_seeds_select_runs():
    specs = sweeps.expand("conditioning", seeds=[3], variants=["adaln"])
    assert [(s.variant, s.seed) for s in specs] == [("adaln", 3)]
    with pytest.raises(ConfigError, match="nope"):
        sweeps.expand("conditioning", variants=["nope"])


@pytest.mark.parametrize("item, names", [
    ("train.stepz=4", "train.stepz"),
    ("train.steps=four", "train.steps"),
    ("modle.depth=2", "modle.depth"),
    ("eval.fvd=maybe", "eval.fvd"),
    ("train.steps", "train.steps"),
])
def test_bad_set_names_the_key(item, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        sweeps.parse_sets([item])


def test_set_that_clashes_or_collapses_variants_is_an_error():
    with pytest.raises(ConfigError, match="eval.tasks"):  # cross_attn can only predict
        sweeps.expand("conditioning", sets={"eval.tasks": "interpolate"})
    with pytest.raises(ConfigError, match="same config"):
        sweeps.expand("depth", sets={"model.depth": "3"})
    with pytest.raises(ConfigError, match="data.root"):
        sweeps.expand("conditioning", "paper")
    with pytest.raises(ConfigError, match="unknown sweep"):
        sweeps.expand("nonesuch")


def test_describe_lists_every_sweep_and_variant():
    text = sweeps.describe()
    for sw in sweeps.SWEEPS.values():
        assert sw.name in text
        for prof in sweeps.PROFILES:
            for v in sw.variants_for(prof):
                assert v in text


def test_cost_uses_the_model_flop_count_and_scales():
    from vdt.model import count_flops

    s = sweeps.expand("conditioning")[0]
    c = cost.estimate(s.cfg)
    assert c.train_flops == pytest.approx(count_flops(s.cfg.model, s.cfg.train.batch_size) * s.cfg.train.steps)
    assert "count_flops" in c.method
    doubled = cost.estimate(s.cfg.with_overrides(["train.steps=" + str(2 * s.cfg.train.steps)]))
    assert doubled.train_flops == pytest.approx(2 * c.train_flops)
    assert doubled.eval_flops == pytest.approx(c.eval_flops)
    more_videos = cost.estimate(s.cfg.with_overrides([f"eval.num_videos={2 * s.cfg.eval.num_videos}"]))
    assert more_videos.eval_flops == pytest.approx(2 * c.eval_flops)
    # 1 GPU-hour is peak * MFU * 3600 FLOPs.
    one_hour = cost.Cost(train_flops=989e12 * 0.4 * 3600, eval_flops=0.0, method="x")
    assert one_hour.gpu_hours("H100", 0.4) == pytest.approx(1.0)
    assert one_hour.gpu_hours("A100", 0.4) == pytest.approx(989 / 312)


def test_cost_fallback_without_count_flops(monkeypatch):
    import vdt.model

    monkeypatch.delattr(vdt.model, "count_flops")
    s = sweeps.expand("conditioning")[0]
    c = cost.estimate(s.cfg)
    assert "fallback" in c.method and c.params > 0
    assert c.train_flops == pytest.approx(6 * c.params * cost.tokens_per_video(s.cfg) * s.cfg.train.batch_size
                                          * s.cfg.train.steps)
    deeper = cost.estimate(s.cfg.with_overrides(["model.depth=4"]))
    assert deeper.params > c.params


def test_data_shortcut_reaches_every_run():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "ablations/run.py", "--sweep", "depth", "--profile", "paper", "--data",
                          "ucf101:/data/UCF", "--dry-run", "--executor", "slurm"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "data.name=ucf101" in out.stdout and "data.root=/data/UCF" in out.stdout


def test_run_id_hashes_the_training_sections_only():
    base = sweeps.expand("conditioning", variants=["token_concat"], seeds=[0])[0]
    other_eval = sweeps.expand("conditioning", sets={"eval.num_videos": "7", "eval.sampler": "ddpm",
                                                    "eval.guidance": "2.0"}, variants=["token_concat"], seeds=[0])[0]
    assert other_eval.cfg.eval != base.cfg.eval and other_eval.run_id == base.run_id
    for key, value in (("train.steps", "7"), ("data.frames", "12"), ("model.depth", "3"), ("masks.predict_k", "2"),
                       ("diffusion.schedule", "cosine"), ("data.seed", "5")):
        changed = sweeps.expand("conditioning", sets={key: value}, variants=["token_concat"], seeds=[0])[0]
        assert changed.run_id != base.run_id, key
    assert "eval" not in base.cfg.training_dict() and set(base.cfg.training_dict()) == {
        "model", "diffusion", "masks", "data", "train"}


def test_smoke_profile_takes_the_paper_branches_with_labels_and_guidance():
    with pytest.raises(ConfigError, match="data.root"):
        sweeps.expand("conditioning", "smoke")
    paths = {"data.root": "/data/ucf", "data.vae_path": "/vae"}
    smoke = sweeps.expand("conditioning", "smoke", paths)[0].cfg
    paper = sweeps.expand("conditioning", "paper", paths)[0].cfg
    for key in ("name", "autoencoder", "frames", "split"):
        assert getattr(smoke.data, key) == getattr(paper.data, key), key
    assert smoke.data.num_workers > 0 and smoke.eval.fvd and smoke.eval.lpips  # as paper: workers, FVD, LPIPS
    assert smoke.data.class_labels and smoke.model.num_classes > 0 and smoke.eval.guidance > 1.0
    assert smoke.eval.batch_size < smoke.eval.num_videos  # several evaluation batches, as paper
    assert smoke.train.steps > smoke.train.ckpt_every  # a periodic checkpoint before the last
    assert smoke.model.preset == "cpu-tiny"


def test_paper_dry_run_lists_the_fvd_protocol_latent_clips_and_loss_norm(tmp_path, capsys):
    """The done criterion of the paper profile: --dry-run says how FVD is computed, which clips the latent cache
    holds and how the loss is normalised, with the keys that docs/metrics.md and docs/model.md name."""
    from pathlib import Path

    from ablations import run

    argv = ["--sweep", "conditioning", "--profile", "paper", "--dry-run", "--set", "data.root=/data/ucf",
            "--results", str(tmp_path), "--executor", "slurm"]
    assert run.main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("protocol of every run: "))
    for text in ("FVD 2048 generated vs 2048 real clips of 16 frames", "reals from the train split",
                 "eval.fvd_reals=train", "real-vs-real reference from the train split",
                 "every clip of every video (data.latent_clips=0)", "loss normalisation: all", "ddpm, 500 steps"):
        assert text in line, text
    paper = sweeps.expand("conditioning", "paper", {"data.root": "/data/ucf"})[0].cfg
    assert (paper.eval.num_videos, paper.data.frames, paper.eval.fvd_reals) == (2048, 16, "train")
    assert (paper.data.latent_clips, paper.diffusion.loss_norm, paper.model.num_classes) == (0, "all", 1)
    docs = Path(__file__).resolve().parents[1] / "docs"
    model_md, metrics_md = (docs / "model.md").read_text(), (docs / "metrics.md").read_text()
    for key in ("diffusion.loss_norm=all", "data.latent_clips=0", "model.num_classes=1", "eval.sample_steps=500"):
        assert key in model_md, key
    assert "fvd2048_16f" in metrics_md and "eval.fvd_reals=train" in metrics_md
    tiny = sweeps.expand("conditioning", "tiny")[0].cfg
    assert "no latent cache (pixels)" in run.protocol(tiny) and "loss normalisation: masked" in run.protocol(tiny)


def test_smoke_profile_takes_the_paper_protocol():
    paths = {"data.root": "/data/ucf", "data.vae_path": "/vae"}
    smoke = sweeps.expand("conditioning", "smoke", paths)[0].cfg
    paper = sweeps.expand("conditioning", "paper", paths)[0].cfg
    for key in ("data.latent_clips", "diffusion.loss_norm", "eval.sampler", "eval.fvd_reals"):
        section, name = key.split(".")
        assert getattr(getattr(smoke, section), name) == getattr(getattr(paper, section), name), key
