"""The mask studies (issue 28): the `tasks` and `mask_grid` sweeps, their time estimate, their reports from runs with
known scores, and one miniature chain sweep -> train -> evaluate -> report."""

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from ablations import run, sweeps, timing
from metrics import report, report_masks
from vdt.config import ConfigError, MaskConfig
from vdt.masks import mask_params

HIGHER = {"psnr": True, "ssim": True, "lpips": False, "fvd": False}


# ---------------------------------------------------------------- the sweeps


def test_tasks_sweep_is_one_model_per_training_mask_scored_on_every_task():
    specs = sweeps.expand("tasks")
    mixtures = {s.variant: s.cfg.masks.mixture for s in specs}
    assert mixtures == {"predict_only": "predict:1", "interpolate_only": "interpolate:1", "unified": "official"}
    assert len(specs) == 3 * len(sweeps.PROFILES["tiny"].seeds)
    for s in specs:
        assert s.cfg.model.conditioning == "token_concat"  # takes any mask: every model can be asked every task
        assert s.cfg.eval.tasks == ("predict", "backward", "interpolate", "spatial_temporal", "unconditional")
        assert s.cfg.eval.every > 0 and s.cfg.eval.tasks[0] != "unconditional"  # curves of a scorable task
    assert len({s.run_id for s in specs}) == len(specs)


def test_mask_grid_crosses_training_share_with_given_frames_including_unseen_counts():
    specs = sweeps.expand("mask_grid")
    ratios = sorted({s.cfg.masks.mask_ratio for s in specs})
    assert len(ratios) >= 4 and {0.25, 0.5, 0.75, 0.9} <= set(ratios)
    frames = specs[0].cfg.data.frames
    trained = {mask_params("predict", MaskConfig(mixture="predict:1"), frames, r)["k"] for r in ratios}
    tested = {int(t.split("k=")[1]) for t in specs[0].cfg.eval.tasks}
    assert all(t.startswith("predict:k=") for t in specs[0].cfg.eval.tasks)
    assert tested - trained, "no given count at test that training never saw"
    assert trained & tested, "no given count at test that training saw"
    assert all(1 <= k < frames for k in tested)
    assert {s.cfg.masks.mixture for s in specs} == {"predict:1"}


def test_mask_ratio_is_retired_into_mask_grid_but_still_expands():
    assert "mask_grid" in sweeps.SWEEPS["mask_ratio"].about and "retired" in sweeps.SWEEPS["mask_ratio"].about
    assert {s.cfg.masks.mask_ratio for s in sweeps.expand("mask_ratio")} == {0.25, 0.5, 0.75}


@pytest.mark.parametrize("tasks, named", [("predict:k=9", "predict:k=9"), ("predict:q=2", "q")])
def test_a_task_spec_evaluation_would_refuse_fails_before_training(tasks, named):
    with pytest.raises(ConfigError, match=named):
        sweeps.expand("mask_grid", sets={"eval.tasks": tasks}, seeds=[0])


# ---------------------------------------------------------------- the time estimate


def test_time_estimate_adds_measured_costs_and_flags_a_long_sweep():
    specs = sweeps.expand("tasks", seeds=[0], sets={"eval.fvd": "false"})
    cfg = specs[0].cfg
    calls = []

    def fake(cfg, threads):
        calls.append(threads)
        return timing.Measured(step_s=2.0, forward_per_clip_s=0.01)

    est = timing.estimate(specs, slots=2, threads=1, measure_fn=fake)
    assert len(calls) == 1  # the variants differ only in their masks: one measurement
    e = cfg.eval
    live = math.ceil(cfg.train.steps / e.every) * e.every_videos * e.sample_steps * 0.01
    per_task = e.num_videos * 0.01 * (e.sample_steps + timing.X0_PASSES)
    assert est.train_s == pytest.approx(3 * (cfg.train.steps * 2.0 + live))
    assert est.eval_s == pytest.approx(3 * 5 * per_task) and est.references_s == 0
    job = cfg.train.steps * 2.0 + live + 5 * per_task
    assert est.wall_s == pytest.approx(2 * job)  # 3 equal jobs on 2 slots
    assert "LONGER THAN 90 MINUTES" in est.text()  # 2 x 4,000+ s
    short = timing.estimate(specs[:1], slots=1, measure_fn=lambda c, t: timing.Measured(1e-3, 1e-5))
    assert "LONGER THAN" not in short.text() and "in all" in short.text()


def test_dry_run_prints_the_time_on_this_machine_before_anything_starts(tmp_path):
    argv = ["--sweep", "mask_grid", "--dry-run", "--executor", "local", "--seeds", "0", "--variants", "ratio_0.5",
            "--results", str(tmp_path), "--set", "train.steps=4", "train.batch_size=2", "eval.num_videos=2",
            "eval.batch_size=2"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run.main(argv) == 0
    text = out.getvalue()
    assert "time on this machine" in text and "in all" in text and "nothing submitted" in text
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- reports from runs with known scores


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def fake_run(runs, sweep, variant, seed, tasks: dict, masks: dict, gen_frac=0.5, flops_per_step=1e9, steps=40,
             curve=None):
    """A finished run: tasks = {task: ({metric: value}, {baseline: {metric: value}})}; curve = {task: {metric:
    slope}} writes eval-during-training records of value = slope * step."""
    d = runs / sweep / f"{variant}-{seed}"
    config = {"masks": masks, "data": {"frames": 9}, "model": {"conditioning": "token_concat"},
              "train": {"seed": seed, "steps": steps}, "eval": {"tasks": list(tasks)}}
    write_json(d / "config.json", config)
    write_json(d / "run.json", {"sweep": sweep, "variant": variant, "seed": seed, "run_id": d.name, "overrides": {}})
    write_json(d / "state.json", {"state": "done", "step": steps})
    lines = []
    for step in range(10, steps + 1, 10):
        lines.append({"step": step, "loss": 0.1, "gen_frac": gen_frac, "wall_time": step * 0.1,
                      "train_flops": flops_per_step * step})
        if curve:
            lines.append({"event": "eval", "step": step, "train_flops": flops_per_step * step, "split": "val",
                          "eval": {t: {m: k * step for m, k in ms.items()} for t, ms in curve.items()}})
    (d / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    results = {t: {"metrics": m, "missing": {}, "baselines": b,
                   "protocol": {"task": t.split(":")[0], "num_videos": 4, "real_clips": {"split": "test"}}}
               for t, (m, b) in tasks.items()}
    write_json(d / "eval.json", {"step": steps, "weights": "ema", "tasks": results, "higher_is_better": HIGHER})
    return d


# unified, predict_only, interpolate_only: PSNR per seed on predict and interpolate (known inputs)
PSNR = {"unified": {"predict": [20.0, 21.0, 22.5], "interpolate": [24.0, 24.5, 26.0]},
        "predict_only": {"predict": [21.0, 22.5, 23.0], "interpolate": [15.0, 16.0, 15.5]},
        "interpolate_only": {"predict": [12.0, 13.0, 12.5], "interpolate": [25.0, 26.0, 27.5]}}
MIXTURES = {"unified": "official", "predict_only": "predict:1", "interpolate_only": "interpolate:1"}
MOTION = {"predict": 18.0, "interpolate": 23.0}


def tasks_sweep(runs, flops=None):
    for variant, by_task in PSNR.items():
        for seed in range(3):
            tasks = {t: ({"psnr": v[seed], "ssim": 0.5}, {"motion": {"psnr": MOTION[t]}}) for t, v in by_task.items()}
            tasks["unconditional"] = ({"psnr": None, "ssim": None, "fvd": 100.0 + seed}, {})
            fake_run(runs, "tasks", variant, seed, tasks, {"mixture": MIXTURES[variant]},
                     flops_per_step=(flops or {}).get(variant, 1e9),
                     curve={"predict": {"psnr": {"unified": 0.5, "predict_only": 0.4}.get(variant, 0.1) + seed
                                        / 100}})


def test_tasks_report_table_holds_the_inputs_and_the_paired_cost(tmp_path):
    tasks_sweep(tmp_path / "runs")
    pages = report.build_report(tmp_path, ["tasks"], tmp_path / "out", n_boot=100)
    root = pages["tasks"].parent
    table = pd.read_csv(root / "tasks.csv")
    psnr = table[table["metric"] == "psnr"].set_index("task")
    for variant, by_task in PSNR.items():
        for task, values in by_task.items():
            assert psnr.at[task, f"{variant}_mean"] == pytest.approx(np.mean(values))
    assert psnr.at["predict", "specialist"] == "predict_only"
    assert psnr.at["interpolate", "specialist"] == "interpolate_only"
    diff = np.subtract(PSNR["unified"]["predict"], PSNR["predict_only"]["predict"])
    assert psnr.at["predict", "steps_diff_mean"] == pytest.approx(diff.mean())
    assert psnr.at["predict", "motion"] == MOTION["predict"]
    assert not psnr.at["predict", "interpolate_only_trained_on_task"]
    assert psnr.at["predict", "flops_basis"] == "same FLOPs as equal steps"  # equal per-step FLOPs
    fvd = table[table["metric"] == "fvd"].set_index("task")
    assert list(fvd.index) == ["unconditional"] and fvd.at["unconditional", "unified_mean"] == pytest.approx(101.0)
    assert "unconditional" not in set(psnr.index)  # FVD only
    md = (root / "tasks.md").read_text()
    assert "no specialist" in md and "Holm" in md and "†" in md
    assert "tasks.md" in (root / "index.html").read_text()


def test_tasks_report_at_unequal_flops_reads_the_curves_at_the_cheaper_runs_flops(tmp_path):
    tasks_sweep(tmp_path / "runs", flops={"unified": 2e9})  # the unified model costs twice as much per step
    root = report.build_report(tmp_path, ["tasks"], tmp_path / "out", n_boot=100)["tasks"].parent
    row = pd.read_csv(root / "tasks.csv").query("task == 'predict' and metric == 'psnr'").iloc[0]
    assert "val curves" in row["flops_basis"]
    # at the specialist's final FLOPs (40 steps x 1e9) the unified run is at step 20: curves slope x step
    expected = np.mean([(0.5 + s / 100) * 20 - (0.4 + s / 100) * 40 for s in range(3)])
    assert row["flops_diff_mean"] == pytest.approx(expected)
    assert row["flops_unified_flops"] == pytest.approx(2 * row["flops_specialist_flops"])


def test_tasks_report_with_a_run_still_pending_compares_the_seeds_that_logged_their_flops(tmp_path):
    tasks_sweep(tmp_path / "runs", flops={"unified": 2e9})
    pending = tmp_path / "runs" / "tasks" / "unified-2"  # seed 2 of the unified model not trained yet: no log
    (pending / "train_log.jsonl").unlink()
    (pending / "eval.json").unlink()
    write_json(pending / "state.json", {"state": "pending", "step": 0})
    root = report.build_report(tmp_path, ["tasks"], tmp_path / "out", n_boot=100)["tasks"].parent
    row = pd.read_csv(root / "tasks.csv").query("task == 'predict' and metric == 'psnr'").iloc[0]
    assert "val curves" in row["flops_basis"] and row["flops_n_pairs"] == 2
    expected = np.mean([(0.5 + s / 100) * 20 - (0.4 + s / 100) * 40 for s in range(2)])
    assert row["flops_diff_mean"] == pytest.approx(expected)


GRID = {0.25: 7, 0.5: 4, 0.75: 2}  # ratio -> given frames it trains on (9 frames, predict only)


def grid_sweep(runs):
    for ratio, k_train in GRID.items():
        for seed in range(3):
            tasks = {f"predict:k={k}": ({"psnr": 10 + k - abs(k - k_train) + seed * 0.1, "ssim": 0.1 * k},
                                        {"motion": {"psnr": 12.0, "ssim": 0.3}}) for k in (1, 3, 4, 7)}
            fake_run(runs, "mask_grid", f"ratio_{ratio}", seed, tasks, {"mixture": "predict:1", "mask_ratio": ratio},
                     gen_frac=(9 - k_train) / 9)


def test_grid_report_heatmaps_and_table_hold_the_inputs(tmp_path):
    grid_sweep(tmp_path / "runs")
    root = report.build_report(tmp_path, ["mask_grid"], tmp_path / "out", n_boot=100)["mask_grid"].parent
    grid = pd.read_csv(root / "grid.csv")
    for ratio, k_train in GRID.items():
        for k in (1, 3, 4, 7):
            row = grid.query(f"ratio == {ratio} and given == {k} and metric == 'psnr'").iloc[0]
            assert row["mean"] == pytest.approx(10 + k - abs(k - k_train) + 0.1)
            assert row["diff_motion"] == pytest.approx(row["mean"] - 12.0)
            assert row["realized_share"] == pytest.approx((9 - k_train) / 9)
            assert row["trained_given"] == k_train
    cell = grid.query("ratio == 0.25 and metric == 'psnr'").set_index("given")
    assert cell.at[7, "verdict"] == "beats" and cell.at[7, "significant"]  # 17.1 against motion's 12, every seed
    assert cell.at[1, "verdict"] == "does not beat"  # 5.1: below motion
    assert grid.query("metric == 'psnr'")["p_holm"].notna().all()  # every PSNR cell tested, Holm over the heatmap
    # zero variance over seeds (SSIM equal on every seed): never significant
    assert not grid[grid["metric"] == "ssim"]["significant"].any()
    for m in ("psnr", "ssim"):
        assert (root / "plots" / f"grid_{m}.png").stat().st_size > 0 and (root / "plots" / f"grid_{m}.pdf").exists()
    md = (root / "grid.md").read_text()
    assert "(trained)" in md and "motion baseline" in md


def test_other_sweeps_get_no_mask_study(tmp_path):
    for seed in range(3):
        for ratio in (0.25, 0.5):
            fake_run(tmp_path / "runs", "mask_ratio", f"ratio_{ratio}", seed,
                     {"predict": ({"psnr": 10.0 + seed}, {})}, {"mixture": "official", "mask_ratio": ratio})
    runs = report.find_runs(tmp_path, ["mask_ratio"])["mask_ratio"]
    assert report_masks.write("mask_ratio", runs, tmp_path) == {"files": {}, "plots": [], "notes": []}


# ---------------------------------------------------------------- the chain in miniature


MINI = ["train.steps=4", "train.batch_size=4", "train.log_every=2", "train.ckpt_every=4", "eval.every=2",
        "eval.every_videos=2", "eval.num_videos=4", "eval.batch_size=4", "eval.sample_steps=2", "eval.fvd=false",
        "eval.lpips=false"]


def test_tasks_chain_sweep_train_evaluate_report_in_miniature(tmp_path):
    argv = ["--sweep", "tasks", "--seeds", "0", "--results", str(tmp_path / "runs"), "--executor", "inline",
            "--no-progress", "--variants", "unified", "predict_only", "--set", *MINI]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert run.main(argv) == 0, out.getvalue() + err.getvalue()
    root = report.build_report(tmp_path, ["tasks"], tmp_path / "out", n_boot=50)["tasks"].parent
    table = pd.read_csv(root / "tasks.csv")
    assert set(table["task"]) == {"predict", "backward", "interpolate", "spatial_temporal"}  # unconditional: no FVD
    ev = json.loads(next((tmp_path / "runs" / "tasks").glob("*/eval.json")).read_text())
    assert ev["tasks"]["unconditional"]["metrics"]["psnr"] is None
    frame = report.load_frame(tmp_path, ["tasks"])
    mine = frame[(frame["task"] == "predict") & (frame["variant"] == "unified")]
    assert table.query("task == 'predict' and metric == 'psnr'")["unified_mean"].iloc[0] == pytest.approx(
        mine["psnr"].iloc[0])
