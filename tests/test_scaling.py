"""The scaling study: the `scaling` and `scaling_lr` sweeps, the paper grid's dry-run cost, the power-law fit, the
compute-efficient frontier, the report from synthetic runs, and one miniature chain sweep -> train -> report."""

import contextlib
import io
import json
import math
import re

import numpy as np
import pytest
from test_report import make_run

from ablations import run, sweeps
from metrics import report, report_scaling
from vdt.config import PRESETS, RunConfig
from vdt.model import VDT, count_flops

# ---------------------------------------------------------------- the sweeps


def step_flops(spec) -> float:
    return count_flops(spec.cfg.model, spec.cfg.train.batch_size)


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_scaling_sweep_spans_ten_times_the_flops_with_width_and_depth(profile):
    specs = sweeps.expand("scaling", profile, sets={"data.root": "/nowhere"} if profile == "paper" else None,
                          seeds=[0])
    assert len({s.variant for s in specs}) >= 4 and [s.variant for s in specs] == ["S", "B", "L", "XL"]
    assert len({s.cfg.train.steps for s in specs}) == 1  # equal steps
    total = [step_flops(s) * s.cfg.train.steps for s in specs]
    assert total == sorted(total) and total[-1] / total[0] >= 10
    models = [s.cfg.model for s in specs]
    assert len({m.depth for m in models}) >= 2 and len({m.hidden for m in models}) >= 3
    assert all(a.depth <= b.depth and a.hidden < b.hidden for a, b in zip(models, models[1:], strict=False))
    for s in specs:
        assert s.cfg.eval.every > 0 and s.cfg.eval.tasks[0] == "predict"
        assert s.cfg.eval.every <= s.cfg.train.steps // 4  # at least 4 points per curve
        # the width rule: lr x width is the profile's own lr x its model's width
        anchor = sweeps.PROFILES[profile].overrides
        expected = anchor["train.lr"] * PRESETS[anchor["model.preset"]]["hidden"]
        assert s.cfg.train.lr * s.cfg.model.hidden == pytest.approx(expected, rel=0.01)


def test_paper_grid_is_dits_s_b_l_xl():
    specs = sweeps.expand("scaling", "paper", sets={"data.root": "/nowhere"}, seeds=[0])
    shapes = {s.variant: (s.cfg.model.depth, s.cfg.model.hidden, s.cfg.model.heads) for s in specs}
    # DiT (Peebles & Xie 2023, table 1); the official VDT-L/2 is DiT's XL size
    assert shapes == {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    assert PRESETS["VDT-XL/2"] == PRESETS["VDT-L/2"]
    assert {s.cfg.data.name for s in specs} == {"ucf101"} and {s.cfg.eval.every for s in specs} == {20_000}


def test_lr_search_brackets_the_rule_at_two_sizes():
    specs = sweeps.expand("scaling_lr", seeds=[0])
    rule = {s.cfg.model.hidden: s.cfg.train.lr for s in sweeps.expand("scaling", seeds=[0])}
    by_size = {}
    for s in specs:
        by_size.setdefault(s.cfg.model.hidden, []).append(s.cfg.train.lr)
    assert len(by_size) == 2 and all(len(v) == 3 for v in by_size.values())
    for hidden, lrs in by_size.items():
        assert sorted(lrs)[1] == pytest.approx(rule[hidden])  # the middle one is the rule's
        assert sorted(lrs)[0] == pytest.approx(rule[hidden] / 2) and sorted(lrs)[2] == pytest.approx(rule[hidden] * 2)
    assert all(s.cfg.eval.every > 0 for s in specs)


def test_paper_dry_run_prints_the_gpu_hours_of_the_grid():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.main(["--sweep", "scaling", "--profile", "paper", "--set", "data.root=/nowhere", "--dry-run",
                         "--executor", "local", "--gpu", "H100", "--mfu", "0.4"])
    text = out.getvalue()
    assert code == 0, err.getvalue()
    total = re.search(r"total: .*?, ([0-9.e+]+) GPU-hours on H100", text)
    assert total and float(total.group(1)) > 100  # four paper-size models for 400k steps
    rows = {line.split()[1]: float(line.split()[-1]) for line in text.splitlines()
            if re.match(r"^[0-9a-f]{12}\s+(S|B|L|XL)\s", line)}
    assert list(rows) == ["S", "B", "L", "XL"] and list(rows.values()) == sorted(rows.values())
    assert sum(rows.values()) == pytest.approx(float(total.group(1)), rel=0.02)


def test_block_params_counts_the_models_blocks():
    for depth, hidden, heads in [(2, 32, 2), (3, 80, 5), (12, 384, 6)]:
        cfg = RunConfig().with_overrides({"model.depth": depth, "model.hidden": hidden, "model.heads": heads,
                                          "data.size": 16, "data.frames": 4})
        model = VDT(cfg.model)
        blocks = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks."))
        assert report_scaling.block_params(depth, hidden) == blocks


# ---------------------------------------------------------------- the fit and the frontier


def synthetic(b=0.12, a=5.0, noise=0.03, seed=0, sizes=4, seeds=3):
    rng = np.random.default_rng(seed)
    c = np.repeat(np.geomspace(1e12, 2e13, sizes), seeds)
    return c, a * c ** -b * np.exp(rng.normal(0, noise, c.size))


def test_power_law_recovers_a_known_exponent_and_its_interval_covers_it():
    c, y = synthetic()
    fit = report_scaling.fit_power_law(c, y)
    assert fit.b_low < 0.12 < fit.b_high and abs(fit.b - 0.12) < 0.02 and fit.b_high - fit.b_low < 0.05
    assert fit.a == pytest.approx(5.0, rel=0.5) and fit.n == 12 and "covariance" in fit.method
    # the interval is a 95% one: over many noisy draws it covers the true exponent about 95% of the time
    covered = [report_scaling.fit_power_law(*synthetic(seed=s)) for s in range(300)]
    share = np.mean([f.b_low < 0.12 < f.b_high for f in covered])
    assert 0.90 <= share <= 0.99
    boot = report_scaling.bootstrap_exponent([(i // 3, ci, yi) for i, (ci, yi) in enumerate(zip(c, y, strict=True))])
    assert boot[0] < 0.12 < boot[1]


def test_power_law_with_an_irreducible_loss():
    rng = np.random.default_rng(1)
    c = np.repeat(np.geomspace(1e10, 1e15, 10), 2)
    y = 40.0 * c ** -0.15 + 0.2
    y = y * np.exp(rng.normal(0, 0.01, c.size))
    fit = report_scaling.fit_power_law(c, y, irreducible=True)
    assert fit.b_low < 0.15 < fit.b_high and fit.e == pytest.approx(0.2, rel=0.3) and fit.params == 3
    plain = report_scaling.fit_power_law(c, y)
    assert plain.b < fit.b  # without the floor, the flattening reads as a smaller exponent


def test_power_law_refuses_too_few_points():
    with pytest.raises(ValueError, match="needs at least 3"):
        report_scaling.fit_power_law([1e12, 1e13], [1.0, 0.8])
    with pytest.raises(ValueError, match="2 or more"):
        report_scaling.fit_power_law([1e12] * 5, [1.0, 0.9, 0.8, 0.9, 1.0])


def test_frontier_is_the_best_size_at_each_budget():
    xa, xb = np.geomspace(1, 20, 60), np.geomspace(2, 200, 80)
    lines = {"A": (xa, xa ** -0.3), "B": (xb, 2 * xb ** -0.6)}  # they cross at x = 2^(1/0.3) = 10.08
    x, best, who = report_scaling.frontier(lines, higher=False)
    cross = 2 ** (1 / 0.3)
    assert x[0] == 1 and x[-1] == 200
    for xi, bi, wi in zip(x, best, who, strict=True):
        covering = [f(xi) for lo, hi, f in ((1, 20, lambda v: v ** -0.3), (2, 200, lambda v: 2 * v ** -0.6))
                    if lo <= xi <= hi]
        assert bi == pytest.approx(min(covering), rel=2e-3)
        if xi < cross * 0.98:
            assert wi == "A"  # below 2, only A covers it; from 2 to the crossing A is lower
        elif xi > cross * 1.02:
            assert wi == "B"
    # an upper envelope for metrics where higher is better
    x2, best2, who2 = report_scaling.frontier({k: (v[0], -v[1]) for k, v in lines.items()}, higher=True)
    assert np.allclose(best2, -best) and who2 == who


# ---------------------------------------------------------------- the report from synthetic runs


SIZES = {"S": (2, 32, 2, 2.5e9), "B": (2, 64, 4, 8.9e9), "L": (3, 80, 5, 2.0e10), "XL": (4, 96, 6, 3.8e10)}
STEPS, EVERY = 200, 50


def write_scaling_runs(results, sweep="scaling", sizes=SIZES, lrs=(None,), best_mult=None, seeds=(0, 1),
                       val_loss=True):
    """Runs with eval records whose val loss follows L = 3 C^-0.1 at the end (and decays toward it), + seed noise;
    scaling_lr: runs per lr, the loss smallest at lr = best_mult[size] (an lr multiplier)."""
    rng = np.random.default_rng(0)
    for name, (depth, hidden, heads, f) in sizes.items():
        for lr_mult in lrs:
            for seed in seeds:
                lr = 0.192 / hidden * (lr_mult or 1.0)
                variant = name if lr_mult is None else f"{name}_lr{lr_mult:g}x"
                d = make_run(results / "runs", sweep, variant, seed, "done", metrics={"predict": {"psnr": 20.0}},
                             steps=STEPS, config={"model": {"preset": "cpu-tiny", "depth": depth, "hidden": hidden,
                                                            "heads": heads, "mlp_ratio": 4.0},
                                                  "train": {"seed": seed, "steps": STEPS, "lr": lr}})
                penalty = 0.0 if lr_mult is None else 0.3 * abs(math.log2(lr_mult / best_mult[name]))
                lines = []
                for step in range(0, STEPS + 1, 10):
                    lines.append({"step": step, "loss": 0.5, "wall_time": step * f / 1e10, "train_flops": f * step})
                    if step and step % EVERY == 0:
                        c = f * step
                        end = 3.0 * (f * STEPS) ** -0.1 * math.exp(rng.normal(0, 0.01)) * (1 + penalty)
                        loss = end * (1 + 0.5 * (STEPS - step) / STEPS)
                        rec = {"psnr": -10 * math.log10(loss * 0.1), "ssim": 1 - loss, "psnr_margin_motion": 1 - loss}
                        if val_loss:
                            rec["val_loss"] = loss
                        lines.append({"event": "eval", "step": step, "train_flops": c, "wall_time": step * f / 1e10,
                                      "split": "val", "num_videos": 4, "eval": {"predict": rec},
                                      "baselines": {"predict": {"motion": {"psnr": 12.0, "ssim": 0.3}}}})
                (d / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_scaling_report_renders_curves_frontier_fit_and_table(tmp_path):
    write_scaling_runs(tmp_path)
    pages = report.build_report(tmp_path, ["scaling"], tmp_path / "out", n_boot=50)
    root = tmp_path / "out" / "scaling"
    assert pages["scaling"].is_file()
    for stem in ("scaling_predict_val_loss", "scaling_predict_psnr", "scaling_predict_ssim",
                 "scaling_predict_psnr_margin_motion", "scaling_predict_power_law"):
        for ext in ("png", "pdf"):
            assert (root / "plots" / f"{stem}.{ext}").stat().st_size > 1000, stem
    summary = json.loads((root / "scaling.json").read_text())
    fit = summary["fits"]["predict"]
    assert fit["loss"] == "val_loss" and fit["n"] == 8 and fit["b_low"] < 0.1 < fit["b_high"]
    assert fit["bootstrap"][0] < fit["b"] < fit["bootstrap"][1]
    table = (root / "scaling_predict.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:6]] == ["S", "B", "L", "XL"]
    assert "power law" in table.lower() and "covariance" in table
    html = pages["scaling"].read_text()
    assert "scaling_predict_power_law.png" in html and "scaling_predict.md" in html


def test_scaling_report_without_a_val_loss_fits_the_mse_from_psnr(tmp_path):
    write_scaling_runs(tmp_path, val_loss=False, seeds=(0,))
    section = report_scaling.scaling_section("scaling", report.find_runs(tmp_path / "runs", ["scaling"])["scaling"],
                                             tmp_path / "out")
    assert any("derived from PSNR" in n for n in section["notes"])
    fit = json.loads((tmp_path / "out" / "scaling.json").read_text())["fits"]["predict"]
    assert fit["loss"] == report_scaling.DERIVED_MSE and fit["b_low"] < 0.1 < fit["b_high"]  # MSE = 0.1 * loss


@pytest.mark.parametrize("best, consistent", [({"S": 1.0, "L": 1.0}, True), ({"S": 2.0, "L": 0.5}, False)])
def test_lr_search_report_checks_the_width_rule(tmp_path, best, consistent):
    sizes = {k: SIZES[k] for k in ("S", "L")}
    write_scaling_runs(tmp_path, "scaling_lr", sizes=sizes, lrs=(0.5, 1.0, 2.0), best_mult=best, seeds=(0,))
    runs = report.find_runs(tmp_path / "runs", ["scaling_lr"])["scaling_lr"]
    section = report_scaling.scaling_section("scaling_lr", runs, tmp_path / "out")
    text = (tmp_path / "out" / "scaling_predict_lr.md").read_text()
    assert ("consistent with lr ~ 1/width" in text) and (("not consistent" in text) != consistent)
    best_rows = [line for line in text.splitlines() if "**best**" in line]
    assert len(best_rows) == 2
    if not consistent:
        assert "edge of its grid" in text
    assert any("lr rule check" in n for n in section["notes"])


# ---------------------------------------------------------------- the whole chain in miniature


MINI = ["train.steps=4", "train.batch_size=2", "train.log_every=1", "train.ckpt_every=2", "train.warmup=1",
        "eval.every=2", "eval.every_videos=2", "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2",
        "eval.fvd=false", "eval.lpips=false"]


def test_sweep_trains_with_eval_every_and_reports(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.main(["--sweep", "scaling", "--seeds", "0", "--results", str(tmp_path / "runs"), "--executor",
                         "inline", "--no-progress", "--poll-s", "0.05", "--set", *MINI])
    assert code == 0, err.getvalue()[-3000:]
    pages = report.build_report(tmp_path, ["scaling"], tmp_path / "out", n_boot=20)
    root = tmp_path / "out" / "scaling"
    assert pages["scaling"].is_file()
    summary = json.loads((root / "scaling.json").read_text())
    assert [s["name"] for s in summary["sizes"]] == ["S", "B", "L", "XL"]
    assert all(s["flops_per_step"] > 0 for s in summary["sizes"])
    fit = summary["fits"]["predict"]
    assert fit["n"] == 4 and math.isfinite(fit["b"])  # 4 runs: the fit exists, its numbers mean nothing here
    assert fit["loss"] == "val_loss"  # the diffusion objective that metrics/live_eval.py records, not the PSNR MSE
    assert (root / "plots" / "scaling_predict_psnr.png").is_file()
    assert (root / "plots" / "scaling_predict_power_law.pdf").is_file()
