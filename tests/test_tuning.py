"""Tuning reads the validation split only: the `recipe` sweep scores val (eval-val.json), never test, and its
report says so; evaluation's scored split follows eval.split, and an old config without it stays current."""

import contextlib
import io
import json

import pandas as pd

from ablations import run, sweeps
from metrics import report
from vdt.layout import RunLayout, why_not_evaluated

MINI = ["train.steps=4", "train.batch_size=4", "train.log_every=2", "train.ckpt_every=4",
        "eval.num_videos=4", "eval.batch_size=4", "eval.sample_steps=2", "eval.lpips=false"]


def test_recipe_sweep_scores_val_only_and_its_report_says_so(tmp_path):
    specs = sweeps.expand("recipe", seeds=[0])
    assert {s.cfg.eval.split for s in specs} == {"val"} and {s.cfg.data.split for s in specs} == {"train"}
    argv = ["--sweep", "recipe", "--seeds", "0", "--results", str(tmp_path / "runs"), "--executor", "inline",
            "--no-progress", "--variants", "learned_lr3e-3", "fixed_small_lr3e-3", "--set", *MINI]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run.main(argv) == 0, out.getvalue() + err.getvalue()
    runs = sorted((tmp_path / "runs" / "recipe").glob("*/config.json"))
    assert len(runs) == 2
    for cfg_path in runs:
        layout = RunLayout(cfg_path.parent)
        assert not layout.eval_json.exists(), "a tuning sweep must not score the test split"
        ev = json.loads(layout.eval_result("val").read_text())
        assert ev["split"] == "val" and ev["eval"]["split"] == "val"
        assert ev["tasks"]["predict"]["protocol"]["real_clips"]["split"] == "val"
    # relaunching finds every run done: eval-val.json is what "evaluated" means for these runs
    again = io.StringIO()
    with contextlib.redirect_stdout(again), contextlib.redirect_stderr(err):
        assert run.main(argv) == 0
    assert "2 runs (2 done" in again.getvalue()
    root = report.build_report(tmp_path, ["recipe"], tmp_path / "out", n_boot=50)["recipe"].parent
    table = pd.read_csv(root / "table.csv")
    assert set(table["variant"]) >= {"learned_lr3e-3", "fixed_small_lr3e-3"}
    readme = (root / "README.md").read_text()
    assert "- split scored: val" in readme


def test_eval_settings_added_later_keep_an_old_record_current():
    """A config.json written before eval.split existed lacks it; its eval.json is still current, and a record whose
    settings differ in a field the config has is not."""
    old_eval = {"tasks": ["predict"], "eta": 1.0}
    config = {"train": {"steps": 4}, "eval": old_eval}
    record = {"checkpoint": {"sha256": "abc"}, "step": 4, "tasks": {"predict": {}},
              "eval": {**old_eval, "split": "test"}}
    assert why_not_evaluated(record, config, "abc") is None
    assert why_not_evaluated({**record, "eval": {**old_eval, "eta": 0.0, "split": "test"}}, config, "abc")
    assert why_not_evaluated({**record, "eval": {"tasks": ["predict"]}}, config, "abc")  # eta missing: not the same


def test_long_profile_is_tiny_trained_longer_with_its_own_pinned_recipe():
    tiny, long = (sweeps.expand("conditioning", p, variants=["token_concat"], seeds=[0])[0].cfg
                  for p in ("tiny", "long"))
    assert (long.train.steps, long.train.lr_schedule, long.train.ema_decay) == (16_000, "cosine", 0.999)
    assert (long.diffusion.variance, long.train.lr, long.eval.eta) == ("fixed_small", 3e-3, 1.0)
    assert long.eval.every == 1000 and long.eval.split == "test"
    assert (long.data, long.model, long.masks) == (tiny.data, tiny.model, tiny.masks)  # the same task and model
    assert "val" in sweeps.PROFILES["long"].tuned_on and "val" in sweeps.PROFILES["tiny"].tuned_on


def test_long_profile_chain_in_miniature_records_its_tuning_split(tmp_path):
    sets = ["train.steps=4", "train.batch_size=4", "train.log_every=2", "train.ckpt_every=2", "eval.every=2",
            "eval.every_videos=2", "eval.num_videos=4", "eval.batch_size=4", "eval.sample_steps=2", "eval.fvd=false",
            "eval.lpips=false"]
    argv = ["--sweep", "conditioning", "--profile", "long", "--variants", "token_concat", "--seeds", "0",
            "--results", str(tmp_path / "runs"), "--executor", "inline", "--no-progress", "--set", *sets]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run.main(argv) == 0, out.getvalue() + err.getvalue()
    run_dir = next((tmp_path / "runs" / "conditioning").glob("*/eval.json")).parent
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "eval"] == [2, 4]  # quality on val during training
    root = report.build_report(tmp_path, ["conditioning"], tmp_path / "out", n_boot=50)["conditioning"].parent
    readme = (root / "README.md").read_text()
    assert "- profile tuned on (split): val (step count" in readme and "- split scored: test" in readme
