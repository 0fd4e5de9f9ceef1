"""metrics/report.py on a synthetic sweep: the DataFrame, tables, plots, GIFs and the offline page.

The run directories are fixtures written per the run directory schema, with made-up numbers.
"""

import ast
import hashlib
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from metrics import report, report_plots, report_stats, report_tables, report_videos

REPO = Path(__file__).resolve().parents[1]
T, SIDE, N_VIDEOS, GIVEN = 8, 16, 5, 4  # sample videos: frames, side, count, given frames


# ---------------------------------------------------------------- fixtures


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_samples(path: Path, seed: int) -> None:
    """samples/<task>.npz: a bright square moving over a dark background; given frames equal real."""
    rng = np.random.default_rng(seed)
    real = np.full((N_VIDEOS, T, 3, SIDE, SIDE), 20, dtype=np.uint8)
    for n in range(N_VIDEOS):
        for t in range(T):
            y, x = (n + t) % (SIDE - 4), (2 * t + n) % (SIDE - 4)
            real[n, t, :, y:y + 4, x:x + 4] = 230
    mask = np.zeros((N_VIDEOS, T, SIDE, SIDE), dtype=np.uint8)
    mask[:, GIVEN:] = 1
    noise = rng.integers(0, 40, real.shape, dtype=np.uint8)
    fake = np.where(mask[:, :, None].astype(bool), np.clip(real.astype(int) + noise - 20, 0, 255), real)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, real=real, fake=fake.astype(np.uint8), mask=mask)


X0_T = [50, 300, 500, 750, 999]
BASELINES = {"black": {"psnr": 14.0, "ssim": 0.25, "fvd": 900.0}, "nearest": {"psnr": 18.5, "ssim": 0.5, "fvd": 350.0}}
REAL_VS_REAL = 40.0


def fake_task(values: dict, n_videos: int = N_VIDEOS, legacy: bool = False) -> dict:
    """One task's eval.json result with every field the report reads: metrics (None = not computed), per-video
    scores whose mean is the metric, the baselines (with the copy baseline's FVD), the real-vs-real FVD reference
    and the clean-frame diagnostic. ``legacy``: only what older evaluations wrote (no references, no diagnostic)."""
    offsets = np.linspace(-1.0, 1.0, n_videos)  # the same clips in every run: a fixed per-clip pattern
    per_video = {m: None if v is None or m == "fvd" else list(v + 0.01 * offsets * abs(v)) for m, v in values.items()}
    result = {"metrics": values, "missing": {k: "fixture: not computed" for k, v in values.items() if v is None},
              "per_video": {m: v for m, v in per_video.items() if m != "fvd"},
              "protocol": {"sampler": "ddim", "steps": 50, "num_videos": n_videos, "frames": T, "uncalibrated": True,
                           "task": "predict", "real_clips": {"dataset": "bouncing", "seed": 0, "first_n": n_videos}},
              "baselines": {"black_fill": {"psnr": 14.0, "ssim": 0.25}, "nearest_given_frame": {"psnr": 18.5,
                                                                                                "ssim": 0.5}}}
    if legacy:
        return result
    psnr = values.get("psnr") or 20.0
    result["baselines"] = json.loads(json.dumps(BASELINES))
    result["references"] = {"fvd_real_vs_real": REAL_VS_REAL}
    result["x0_psnr_by_t"] = {"t": X0_T, "psnr": [psnr + 8, psnr + 4, psnr, psnr - 4, psnr - 8]}
    return result


def make_run(runs: Path, sweep: str, variant: str, seed: int, state: str, metrics=None, steps: int = 40,
             error=None, config=None, gen_frac=None, legacy: bool = False) -> Path:
    """One run dir. metrics: {task: {metric: value or None}} -> eval.json and samples/<task>.npz.
    config: extra config sections; gen_frac: logged on every train_log line (the measured generated share)."""
    run_id = hashlib.sha256(f"{sweep}/{variant}/{seed}".encode()).hexdigest()[:12]
    d = runs / sweep / run_id
    config = {"model": {"preset": "cpu-tiny", "depth": 2, "conditioning": variant},
              "train": {"seed": seed, "steps": 40, "lr": 3e-4}, "eval": {"tasks": sorted(metrics or ["predict"])},
              **(config or {})}
    write_json(d / "config.json", config)
    write_json(d / "run.json", {"sweep": sweep, "variant": variant, "seed": seed, "run_id": run_id,
                                "overrides": {"model.conditioning": variant}, "profile": "cpu",
                                "env": {"torch": "9.9.9-fixture", "device": "cpu", "git_commit": "abc123"}})
    write_json(d / "state.json", {"state": state, "step": steps, "job_id": None, "log": f"{d}/logs/x.out",
                                  "error": error, "updated": "2024-01-01T00:00:00", "attempts": 1})
    lines = []
    for step in range(0, steps + 1, 10):
        lines.append({"step": step, "loss": 1.0 * math.exp(-step / (10 + seed)) + 0.01, "lr": 3e-4,
                      "grad_norm": 1.0, "tokens_per_s": 100.0, "wall_time": 0.5 * step + seed, "time": "t",
                      "train_flops": 1e9 * step})
        if gen_frac is not None:
            lines[-1]["gen_frac"] = gen_frac + (step - steps / 2) / 10000  # mean: gen_frac
        if step and step % 20 == 0:
            lines.append({"step": step, "eval": {"predict": {"psnr": 10.0 + step / 4 + seed, "ssim": 0.5}}})
    (d / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if metrics:
        tasks = {task: fake_task(m, legacy=legacy) for task, m in metrics.items()}
        write_json(d / "eval.json", {"step": steps, "checkpoint": "checkpoints/last.pt", "weights": "ema",
                                     "tasks": tasks, "higher_is_better": {"psnr": True, "ssim": True,
                                                                          "lpips": False, "fvd": False}})
        for task in metrics:
            write_samples(d / "samples" / f"{task}.npz", seed)
    return d


def scores(psnr, lpips, fvd, seed):
    return {"psnr": psnr + 0.5 * seed, "ssim": 0.8 + 0.01 * seed, "lpips": lpips + 0.01 * seed, "fvd": fvd}


def make_results(root: Path) -> Path:
    """Sweep 'conditioning': 3 variants x seeds, one failed, one running, one missing FVD, one legacy eval.json;
    sweep 'mask_ratio': 2 variants x 3 seeds with measured gen_frac; sweep 'partial': nothing evaluated."""
    runs = root / "runs"
    for seed in range(3):  # token_concat: best PSNR, worst LPIPS
        make_run(runs, "conditioning", "token_concat", seed, "done",
                 {"predict": scores(30.0, 0.30, 300.0, seed), "interpolate": scores(33.0, 0.25, 250.0, seed)})
    for seed in range(2):  # cross_attn: best (lowest) LPIPS; seed 1 has no FVD and an old eval.json
        make_run(runs, "conditioning", "cross_attn", seed, "done",
                 {"predict": scores(25.0, 0.10, None if seed else 200.0, seed)}, legacy=seed == 1)
    make_run(runs, "conditioning", "adaln", 0, "done", {"predict": scores(17.0, 0.20, 400.0, 0)})
    make_run(runs, "conditioning", "adaln", 1, "failed", steps=10,
             error="Traceback (most recent call last):\nRuntimeError: fixture out of memory")
    make_run(runs, "conditioning", "adaln", 2, "running", steps=20)
    for seed, (dpsnr, dssim) in enumerate([(2.0, 0.01), (2.3, -0.012), (1.8, 0.004)]):
        for ratio, name, shift in ((0.25, "ratio_0.25", (0.0, 0.0)), (0.5, "ratio_0.5", (dpsnr, dssim))):
            values = {"psnr": 20.0 + seed + shift[0], "ssim": 0.6 + 0.02 * seed + shift[1], "lpips": None,
                      "fvd": 500.0 - 10 * seed}
            make_run(runs, "mask_ratio", name, seed, "done", {"predict": values},
                     config={"masks": {"mask_ratio": ratio}}, gen_frac=ratio * 0.9)
    make_run(runs, "partial", "a", 0, "running", steps=20)
    make_run(runs, "partial", "b", 0, "pending", steps=0)
    bench = {"benchmarks": [{"name": f"test_step[tokens={n}]", "group": "train_step", "stats": {"mean": n * 1e-5,
             "median": n * 1e-5}, "extra_info": {"tokens": n, "device": "cpu"}} for n in (64, 256, 1024)]}
    write_json(root / "bench" / "machine-a" / "0001_step.json", bench)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_results(tmp_path_factory.mktemp("results"))
    pages = report.build_report(root, out=root / "out", n_boot=500, seed=0)
    return root, pages


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


# ---------------------------------------------------------------- intervals and paired differences


def test_interval_is_student_t_for_three_to_nine_seeds_and_names_it():
    x = [20.1, 20.5, 19.8, 20.9]
    ci = report_stats.seed_interval(x, "BCa", n_boot=999, seed=1)
    ref = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    assert ci.kind == "Student t" and ci.n == 4 and ci.mean == pytest.approx(np.mean(x))
    assert ci.low <= ci.mean <= ci.high
    assert report_stats.seed_interval(x, "percentile", 999, 1) == ci  # the method applies from 10 seeds
    ten = np.linspace(19.0, 21.0, 10) ** 1.2
    assert report_stats.seed_interval(ten, "percentile", 999, 1).kind == "percentile bootstrap"
    assert report_stats.seed_interval(ten, "BCa", 999, 1) == report_stats.seed_interval(ten, "BCa", 999, 1)  # seeded
    constant = report_stats.seed_interval([3.0, 3.0, 3.0])  # no spread: said so, no interval
    assert (constant.low, constant.high) == (3.0, 3.0) and constant.kind == "zero variance"


def test_fewer_than_three_seeds_give_min_max_and_call_it_that():
    ci = report_stats.seed_interval([2.0, 6.0, float("nan")])
    assert (ci.mean, ci.low, ci.high, ci.n, ci.kind) == (4.0, 2.0, 6.0, 2, "min-max")
    assert report_tables.format_interval(ci, 2, 2) == "4.00 (min–max 2.00–6.00)"
    one = report_stats.seed_interval([3.0])
    assert one.kind == "one seed" and report_tables.format_interval(one, 1, 1) == "3.0 (one seed)"
    assert report_stats.seed_interval([]).n == 0
    assert report_tables.format_interval(report_stats.seed_interval([]), 0, 2) == report_tables.MISSING
    with pytest.raises(ValueError, match="interval method"):
        report_stats.seed_interval([1.0, 2.0, 3.0], "normal")


def test_paired_t_test_finds_a_gain_the_seed_spread_would_hide():
    ref = np.array([20.0, 21.0, 19.0, 20.5])  # large seed-to-seed spread, shared by both variants
    better = ref + np.array([0.9, 1.1, 1.0, 0.95])  # every seed gains about 1 dB
    d = report_stats.paired_difference(better, ref, n_boot=999)
    assert d.kind == "Student t" and d.n == 4 and d.low > 0 and d.p < 0.001
    assert d.p == pytest.approx(stats.ttest_rel(better, ref).pvalue)
    # Unpaired, the spread between seeds would swamp the gain: the pairing is what makes it significant.
    assert report_stats.seed_interval(better).low < report_stats.seed_interval(ref).high
    mixed = ref + np.array([0.5, -0.6, 0.3, -0.2])
    d = report_stats.paired_difference(mixed, ref, n_boot=999)
    assert d.low < 0 < d.high and d.p > 0.5
    worse = report_stats.paired_difference(ref - 1.0 + np.array([0, 0.1, -0.1, 0.05]), ref, n_boot=999)
    assert worse.high < 0 and worse.p < 0.001
    two = report_stats.paired_difference(better[:2], ref[:2])  # 2 pairs: no test
    assert two.kind == "none" and two.n == 2 and math.isnan(two.p)
    nan = report_stats.paired_difference([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, np.nan, 2.0])
    assert nan.n == 2  # a pair with a missing side is dropped
    with pytest.raises(ValueError, match="one length"):
        report_stats.paired_difference([1.0, 2.0], [1.0])


def test_clip_difference_averages_the_paired_seeds_per_clip():
    a = [[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]]  # 2 seeds x 4 clips: per-clip seed means 2, 3, 4, 5
    b = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    d = report_stats.clip_difference(a, b, "percentile", 999, 0)
    assert d.n == 4 and d.mean == pytest.approx(3.5) and d.kind == "Student t"  # 4 clips: t, like 4 seeds
    assert d.low < 3.5 < d.high
    assert report_stats.clip_difference([[1.0, 2.0, 3.0]], [[1.0, 2.0]], "BCa", 99, 0).n == 0  # other clips
    assert report_stats.clip_difference([None], [[1.0]], "BCa", 99, 0).n == 0  # not saved
    assert report_stats.clip_difference([], [], "BCa", 99, 0).n == 0


def test_paired_cells_say_significant_only_when_the_adjusted_p_is_below_005():
    row = {"n_pairs": 3, "diff_mean": 1.0, "diff_low": 0.5, "diff_high": 1.5, "interval": "Student t",
           "p": 0.01, "p_holm": 0.03, "significant": True}
    assert report_tables.format_difference(row, True, 2) == "+1.00 [+0.50, +1.50] Holm p = 0.030, significant, better"
    assert report_tables.format_difference(row, False, 2).endswith("significant, worse")  # lower is better
    row.update(p_holm=0.0001)
    assert "Holm p < 0.001" in report_tables.format_difference(row, True, 2)
    row.update(diff_low=-0.5, p_holm=0.4, significant=False)
    assert report_tables.format_difference(row, True, 2) == "+1.00 [−0.50, +1.50] Holm p = 0.400, not significant"
    row.update(n_pairs=2, interval="none")
    assert report_tables.format_difference(row, True, 2) == "+1.00 (2 pairs: no test) not significant"


def test_verdict_needs_a_better_mean_and_significance():
    assert report_stats.verdict(2.0, True, True) == "beats"
    assert report_stats.verdict(2.0, False, True) == "unclear"  # better mean, not significant or no test
    assert report_stats.verdict(-2.0, True, True) == "does not beat"
    assert report_stats.verdict(-2.0, True, False) == "beats"  # lower is better (FVD, LPIPS)
    assert report_stats.verdict(math.nan, False, True) == "n/a"


def test_reference_is_requested_or_best():
    means = {"a": 1.0, "b": 3.0, "c": float("nan")}
    assert report_stats.pick_reference(means, True, None) == ("b", "best mean")
    assert report_stats.pick_reference(means, False, None) == ("a", "best mean")
    assert report_stats.pick_reference(means, True, "a") == ("a", "chosen with --reference")
    assert report_stats.pick_reference(means, True, "zzz")[0] == "b"  # not run on this task


# ---------------------------------------------------------------- data


def test_frame_rows_columns_and_missing_stays_nan(built):
    root, pages = built
    assert set(pages) == {"conditioning", "mask_ratio", "partial"}
    frame = pd.read_csv(root / "out" / "conditioning" / "runs.csv")
    assert len(frame) == 3 * 2 + 2 + 3  # token_concat 2 tasks, cross_attn, adaln (done, failed, running)
    for col in ("sweep", "variant", "seed", "state", "task", "model.conditioning", "train.seed", "psnr", "ssim",
                "lpips", "fvd", "protocol", "final_loss", "clips", "gen_frac"):
        assert col in frame.columns, col
    assert "model.depth" not in frame.columns  # the same in every run: not a varied field
    fvd = frame.loc[(frame.variant == "cross_attn") & (frame.seed == 1), "fvd"]
    assert fvd.isna().all()
    assert frame["fvd"].notna().sum() == 8 and (frame["fvd"].dropna() > 0).all()
    assert frame["gen_frac"].isna().all()  # not logged by these runs: missing, never 0
    failed = frame[frame.state == "failed"]
    assert len(failed) == 1 and failed["psnr"].isna().all() and "out of memory" in failed["error"].iloc[0]
    assert sorted(frame.state.unique()) == ["done", "failed", "running"]
    assert json.loads(frame["protocol"].dropna().iloc[0])["sampler"] == "ddim"
    parquet = pd.read_parquet(root / "out" / "conditioning" / "runs.parquet")
    assert len(parquet) == len(frame) and parquet["fvd"].isna().sum() == frame["fvd"].isna().sum()


# ---------------------------------------------------------------- tables


def test_table_intervals_named_and_best_by_direction(built):
    root, _ = built
    out = root / "out" / "conditioning"
    table = pd.read_csv(out / "table.csv")
    predict = table[table.task == "predict"].set_index("variant")
    assert list(predict.index[predict["psnr_best"]]) == ["token_concat"]  # higher is better
    assert list(predict.index[predict["lpips_best"]]) == ["cross_attn"]  # lower is better
    assert list(predict.index[predict["fvd_best"]]) == ["cross_attn"]
    for m in ("psnr", "ssim", "lpips"):
        many = table[table[f"{m}_n"] >= 2]
        assert len(many) and (many[f"{m}_ci_low"] <= many[f"{m}_mean"]).all()
        assert (many[f"{m}_mean"] <= many[f"{m}_ci_high"]).all()
    assert predict.loc["token_concat", "n_seeds"] == 3 and predict.loc["cross_attn", "fvd_n"] == 1
    assert predict.loc["token_concat", "psnr_interval"] == "Student t"
    assert predict.loc["token_concat", "fvd_interval"] == "zero variance"  # every seed: FVD 300
    assert predict.loc["cross_attn", "psnr_interval"] == "min-max"
    assert predict.loc["cross_attn", "psnr_ci_low"] == pytest.approx(25.0)  # the min of the two seeds
    assert predict.loc["adaln", "n_seeds"] == 1 and predict.loc["adaln", "psnr_interval"] == "one seed"
    assert predict.loc["token_concat", "psnr_mean"] == pytest.approx(30.5)
    # training cost per run, from train_log.jsonl: train_flops 1e9 per step x 40 steps; wall time 20 s + seed
    assert predict.loc["token_concat", "train_flops"] == pytest.approx(4e10)
    assert predict.loc["token_concat", ["wall_time_s", "wall_time_min", "wall_time_max"]].tolist() == [21, 20, 22]

    md = (out / "table.md").read_text()
    caption = md.split("\n\n")[0]
    for words in ("Student t (scipy.stats.ttest_1samp) for 3–9 seeds", "BCa bootstrap (scipy.stats.bootstrap, 500 "
                  "resamples", "min–max range", "not a confidence interval", "Zero variance", "count_flops",
                  "one real-vs-real draw (40.0), no band"):
        assert words in caption, words
    lines = md.splitlines()
    row = next(line for line in lines if line.startswith("| predict | token_concat"))
    assert "**30.50 [" in row and row.endswith("| 300.0 (zero variance) | 4.0e10 | 21 s (20–22) |")
    assert md.splitlines()[2].endswith("| FVD ↓ | train FLOPs / run | train time / run |")
    assert "30.50 (min–max" not in row
    assert "25.25 (min–max 25.00–25.50)" in next(line for line in lines if line.startswith("| predict | cross_attn"))
    assert "(one seed)" in next(line for line in lines if line.startswith("| predict | adaln"))
    assert "(n=1)" in next(line for line in lines if line.startswith("| predict | cross_attn"))
    tex = (out / "table.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{30.50 [", r"token\_concat", "min--max"):
        assert cmd in tex, cmd
    assert "300.0 (zero variance) & 4.0e10 & 21 s (20--22)" in tex
    paired_tex = (out / "paired.tex").read_text()
    assert "$-$13.00" in paired_tex and tex.isascii() and paired_tex.isascii()  # pdflatex needs no unicode
    md = report.build_report(root, ["mask_ratio"], root / "pct", n_boot=200, method="percentile")
    assert "percentile bootstrap (scipy.stats.bootstrap" in (root / "pct" / "mask_ratio" / "table.md").read_text()


def test_baselines_and_fvd_references_beside_the_model(built):
    root, pages = built
    readme = (root / "out" / "conditioning" / "README.md").read_text()
    results = section(readme, "## Results", "## Plots")
    # Old (black_fill, nearest_given_frame) and new (black, nearest) names are one baseline each.
    assert results.count("| predict | baseline: black fill |") == 1
    assert "| predict | baseline: copy nearest given frame |  | 18.50 | 0.5000 | — | 350.0 |" in results
    assert ("| predict | reference: real vs real (disjoint test sets), 1 draw |  | — | — | — | 40.0 (one draw) |  |  |"
            in results)  # an old eval.json's single real-vs-real number: a band of one draw
    assert "| interpolate | baseline: black fill |  | 14.00 | 0.2500 | — | 900.0 |" in results
    verdicts = section(readme, "### Against the baselines", "### Paired")
    assert "one-sample Student t-test" in verdicts and "Holm" in verdicts and "over the 8 comparisons" in verdicts
    adaln = next(line for line in verdicts.splitlines() if "predict · adaln" in line)
    assert "does NOT beat copy nearest given frame (PSNR 17.00 vs 18.50; FVD 400.0 vs 350.0)" in adaln
    token = next(line for line in verdicts.splitlines() if "predict · token_concat" in line)
    assert "does NOT beat" not in token
    assert "beats black fill (PSNR 30.50 vs 14.00, Holm p = 0.002; SSIM 0.8100 vs 0.2500, Holm p = 0.001)" in token
    # every seed's FVD is 300: zero variance, so a better mean is not 'beats'
    assert "unclear against black fill (FVD 300.0 vs 900.0, zero variance: no test)" in token
    assert "not compared: black fill has no LPIPS" in token  # a metric a baseline lacks is never counted
    assert "FVD 300.0 (zero variance)" in token and "real vs real 40.0 (one draw)" in token
    assert "copy nearest given frame 350.0" in token
    cross = next(line for line in verdicts.splitlines() if "predict · cross_attn" in line)
    assert "is unclear against black fill" in cross and "fewer than 3 seeds" in cross  # better means, 2 seeds
    assert "Against the baselines" in pages["conditioning"].read_text()
    assert "Against the baselines" not in pages["partial"].read_text()  # nothing evaluated
    tests = pd.read_csv(root / "out" / "conditioning" / "baselines.csv")
    assert set(tests.columns) >= {"task", "variant", "baseline", "metric", "p", "p_holm", "significant", "verdict"}
    assert not ((tests.baseline == "black") & (tests.metric == "fvd") & tests.significant).any()
    band = {"mean": 0.1, "min": 0.1, "max": 0.1, "draws": 1}
    assert report_tables.reference_row("lpips_real_vs_real", band) == ("reference: lpips real vs real, 1 draw",
                                                                      "lpips", band)  # a future reference


def test_motion_baseline_and_fvd_band_from_several_draws(tmp_path):
    """The motion baseline sits beside black fill and copying; a real-vs-real band over 5 draws is shown as mean
    and range, and the caption says whose FVD lies outside it."""
    runs = tmp_path / "runs"
    for seed in range(3):
        for variant, fvd in (("good", 20.0), ("mid", 45.0)):
            d = make_run(runs, "s", variant, seed, "done", {"predict": {"psnr": 20.0 + seed, "fvd": fvd + seed}})
            ev = json.loads((d / "eval.json").read_text())
            task = ev["tasks"]["predict"]
            task["baselines"]["motion"] = {"psnr": 19.0, "ssim": 0.6, "fvd": 120.0}
            task["references"] = {"fvd_real_vs_real": {"mean": 44.0, "min": 38.0, "max": 51.0,
                                                       "draws": [38.0, 41.0, 44.0, 46.0, 51.0]}}
            (d / "eval.json").write_text(json.dumps(ev))
    index = report.build_report(tmp_path, out=tmp_path / "out", n_boot=100)["s"]
    md = (index.parent / "table.md").read_text()
    labels = [line.split("|")[2].strip() for line in md.splitlines() if line.startswith("| predict | ")]
    assert labels == ["good", "mid", "baseline: black fill", "baseline: copy nearest given frame",
                      "baseline: motion (optical flow / blend)",
                      "reference: real vs real (disjoint test sets), 5 draws"]
    assert "44.0 (range 38.0–51.0)" in md
    caption = md.split("\n\n")[0]
    assert "predict: band 38.0–51.0 over 5 draws; good 21.0 below (outside); mid 46.0 inside" in caption


def test_paired_comparisons_flag_only_holm_adjusted_p_below_005(built):
    root, pages = built
    out = root / "out" / "mask_ratio"
    paired = pd.read_csv(out / "paired.csv").set_index("metric")
    assert set(paired["variant"]) == {"ratio_0.25"} and set(paired["reference"]) == {"ratio_0.5"}  # best PSNR
    assert (paired["n_pairs"].drop("lpips") == 3).all() and paired.loc["lpips", "n_pairs"] == 0  # never computed
    assert paired.loc["psnr", "diff_mean"] == pytest.approx(-(2.0 + 2.3 + 1.8) / 3)
    assert paired.loc["psnr", "diff_high"] < 0 and paired.loc["psnr", "significant"]
    assert paired.loc["ssim", "diff_low"] < 0 < paired.loc["ssim", "diff_high"]
    assert not paired.loc["ssim", "significant"]
    assert paired.loc["fvd", "interval"] == "zero variance" and not paired.loc["fvd", "significant"]  # equal FVDs
    # Holm over the 2 tested comparisons (PSNR, SSIM; FVD has no test): PSNR's p is the smaller, doubled
    raw = stats.ttest_rel([20.0, 21.0, 22.0], [22.0, 23.3, 23.8]).pvalue
    assert paired.loc["psnr", "p"] == pytest.approx(raw) and paired.loc["psnr", "p_holm"] == pytest.approx(2 * raw)
    md = (out / "paired.md").read_text()
    assert "Unit: one training seed" in md and "over the 2 comparisons" in md and report_stats.SIGNIFICANCE_RULE in md
    row = next(line for line in md.splitlines() if line.startswith("| predict | ratio_0.25 − ratio_0.5"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].endswith("significant, worse") and cells[4].endswith("not significant")
    # per_video lists (5 clips) give the interval over test clips too; it never decides significance
    assert paired.loc["psnr", "clip_n"] == N_VIDEOS and paired.loc["lpips", "clip_n"] == 0
    assert paired.loc["psnr", "clip_low"] <= paired.loc["psnr", "diff_mean"] <= paired.loc["psnr", "clip_high"]
    assert "interval over test clips" in md and "decides nothing" in md
    readme = (out / "README.md").read_text()
    assert readme.count(report_stats.SIGNIFICANCE_RULE) >= 3  # results table, paired table, the page's rule
    # conditioning: token_concat (best PSNR) is the reference; cross_attn shares 2 seeds: no interval
    cond = pd.read_csv(root / "out" / "conditioning" / "paired.csv")
    cross = cond[(cond.variant == "cross_attn") & (cond.metric == "psnr")].iloc[0]
    assert cross["reference"] == "token_concat" and cross["n_pairs"] == 2 and not cross["significant"]
    chosen = report.build_report(root, ["mask_ratio"], root / "ref", n_boot=200, reference="ratio_0.25")
    again = pd.read_csv(chosen["mask_ratio"].parent / "paired.csv")
    assert set(again["variant"]) == {"ratio_0.5"} and "chosen with --reference" in (
        chosen["mask_ratio"].parent / "paired.md").read_text()


def test_baselines_and_references_read_numbers_or_fvd_records(tmp_path):
    runs = tmp_path / "runs"
    d = make_run(runs, "s", "v", 0, "done", {"predict": {"psnr": 20.0}})
    ev = json.loads((d / "eval.json").read_text())
    ev["tasks"]["predict"]["references"] = {"fvd_real_vs_real": {"fvd": 41.5, "num_videos": N_VIDEOS}}
    ev["tasks"]["predict"]["baselines"]["nearest"]["fvd"] = {"fvd": 300.0}
    (d / "eval.json").write_text(json.dumps(ev))
    loaded = report.find_runs(tmp_path)["s"]
    assert report.report_runs.reference_values(loaded) == {"predict": {"fvd_real_vs_real": {
        "mean": 41.5, "min": 41.5, "max": 41.5, "draws": 1}}}
    assert report.report_runs.baseline_values(loaded)["predict"]["nearest"]["fvd"] == 300.0


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def test_an_eval_json_that_is_not_current_is_refused_with_a_message(tmp_path):
    """Each run's eval.json is stale in one way (and one is merely old): the report leaves the stale ones out and
    names each run and why; the old one, which records less, is checked on what it records and used."""
    runs = tmp_path / "runs"
    dirs = {name: make_run(runs, "s", name, seed, "done", {"predict": {"psnr": 20.0 + seed}})
            for seed, name in enumerate(["old", "longer", "settings", "newer_ckpt", "other_ckpt"])}
    edit_json(dirs["longer"] / "config.json", lambda c: c["train"].update(steps=80))  # trained on since
    edit_json(dirs["settings"] / "config.json", lambda c: c["eval"].update(sample_steps=50))
    edit_json(dirs["settings"] / "eval.json", lambda e: e.update(eval={"tasks": ["predict"], "sample_steps": 25}))
    (dirs["newer_ckpt"] / "checkpoints").mkdir()
    (dirs["newer_ckpt"] / "checkpoints" / "step_0000060.pt").write_bytes(b"later")
    (dirs["other_ckpt"] / "checkpoints").mkdir()
    (dirs["other_ckpt"] / "checkpoints" / "last.pt").write_bytes(b"retrained")
    edit_json(dirs["other_ckpt"] / "eval.json", lambda e: e.update(checkpoint={"step": 40, "sha256": "ab" * 32}))
    loaded = {r.variant: r for r in report.find_runs(tmp_path)["s"]}
    assert loaded["old"].eval is not None and loaded["old"].refused is None
    assert "final step is 80" in loaded["longer"].refused
    assert "other eval settings" in loaded["settings"].refused
    assert "checkpoints/ holds step 60" in loaded["newer_ckpt"].refused
    assert "another checkpoint" in loaded["other_ckpt"].refused
    index = report.build_report(tmp_path, out=tmp_path / "out", n_boot=10)["s"]
    readme = (index.parent / "README.md").read_text()
    for name in ("longer", "settings", "newer_ckpt", "other_ckpt"):
        r = loaded[name]
        assert f"run {r.run_id} ({name}, seed {r.seed}): eval.json not used, it is not current" in readme, name
    table = pd.read_csv(index.parent / "table.csv")
    assert list(table["variant"]) == ["old"]  # the refused ones are scored nowhere


def test_seeds_scored_under_other_settings_are_never_averaged(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(4):
        d = make_run(runs, "s", "v", seed, "done", {"predict": {"psnr": 20.0 + 10 * (seed == 3)}})
        steps = 50 if seed == 3 else 25
        edit_json(d / "config.json", lambda c, s=steps: c["eval"].update(sample_steps=s))
        edit_json(d / "eval.json", lambda e, s=steps: e.update(eval={"tasks": ["predict"], "sample_steps": s}))
    index = report.build_report(tmp_path, out=tmp_path / "out", n_boot=10)["s"]
    table = pd.read_csv(index.parent / "table.csv").set_index("variant")
    assert table.loc["v", "n_seeds"] == 3 and table.loc["v", "psnr_mean"] == pytest.approx(20.0)
    readme = (index.parent / "README.md").read_text()
    assert "predict · v: seed(s) [3] were scored under other evaluation settings (sample_steps) than seed(s) " \
           "[0, 1, 2]; left out, never averaged with them" in readme
    frame = report.report_runs.runs_frame(report.find_runs(tmp_path)["s"])
    agg = report_tables.aggregate(frame, ["psnr"])  # aggregate on its own refuses to mix them too
    assert agg.loc[0, "n_seeds"] == 3


def test_pairs_that_scored_different_clips_are_left_out(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        make_run(runs, "s", "a", seed, "done", {"predict": {"psnr": 20.0 + seed}})
        make_run(runs, "s", "b", seed, "done", {"predict": {"psnr": 19.0 + seed}})
    ev = json.loads((next(p for p in (runs / "s").iterdir() if json.loads((p / "run.json").read_text())[
        "variant"] == "b" and json.loads((p / "run.json").read_text())["seed"] == 2) / "eval.json").read_text())
    assert ev["tasks"]["predict"]["protocol"]["num_videos"] == N_VIDEOS
    frame = report.report_runs.runs_frame(report.find_runs(tmp_path)["s"])
    frame.loc[(frame.variant == "b") & (frame.seed == 2), "clips"] = "other clips"
    rows, notes = report_stats.paired_frame(frame, ["psnr"], {"predict": "a"}, n_boot=100)
    assert rows[0]["n_pairs"] == 2 and rows[0]["interval"] == "none"
    assert notes and "seeds [2] scored different test clips" in notes[0]


def test_mask_ratio_sweep_shows_nominal_and_measured_share(built):
    root, _ = built
    md = (root / "out" / "mask_ratio" / "table.md").read_text()
    assert "mask ratio (nominal)" in md and "generated share (measured)" in md
    row = next(line for line in md.splitlines() if line.startswith("| predict | ratio_0.25"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == ["0.25", "0.225"]  # logged gen_frac: 0.9 x nominal, averaged over lines and seeds
    table = pd.read_csv(root / "out" / "mask_ratio" / "table.csv").set_index("variant")
    assert table.loc["ratio_0.5", "gen_frac"] == pytest.approx(0.45, abs=1e-3)
    assert "mask ratio (nominal)" not in (root / "out" / "conditioning" / "table.md").read_text()


# ---------------------------------------------------------------- plots and videos


def test_plots_exist_as_png_and_pdf(built):
    root, _ = built
    plots = root / "out" / "conditioning" / "plots"
    for stem in ("loss_step", "loss_time", "eval_predict_psnr", "cost", "x0_psnr_predict", "x0_psnr_interpolate"):
        for ext in (".png", ".pdf"):
            assert (plots / (stem + ext)).stat().st_size > 1000, stem + ext
    assert report_plots.training_plots([], [], plots) == []  # nothing logged: no plot


def test_x0_diagnostic_plot_draws_the_seed_mean_and_the_baselines(tmp_path, monkeypatch):
    drawn = {}
    real_save = report_plots.save

    def keep(fig, stem):
        ax = fig.axes[0]
        drawn["lines"] = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
        return real_save(fig, stem)

    monkeypatch.setattr(report_plots, "save", keep)
    t = np.array(X0_T, dtype=float)
    series = {"v": [(t, np.array([30.0, 20, 15, 10, 5])), (t, np.array([32.0, 22, 17, 12, 7]))],
              "eps": [(t, np.array([30.0, 18, 12, 9, 7.5]))]}
    paths = report_plots.plot_x0(series, {"baseline: black fill": 14.0, "baseline: copy": 18.26}, tmp_path / "x0",
                                 task="predict", variants=["eps", "v"])
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert drawn["lines"]["v (n=2)"] == (list(t), [31.0, 21.0, 16.0, 11.0, 6.0])  # mean over seeds
    assert drawn["lines"]["baseline: copy: 18.26 dB"][1] == [18.26, 18.26]  # a horizontal line
    assert "baseline: black fill: 14.00 dB" in drawn["lines"]
    assert report_plots.plot_x0({}, {}, tmp_path / "none", task="predict", variants=[]) == []


def test_band_interpolates_seeds_on_one_grid():
    grid, mean, low, high = report_plots.band([(np.array([0.0, 10.0]), np.array([1.0, 3.0])),
                                               (np.array([0.0, 5.0]), np.array([3.0, 3.0]))])
    assert list(grid) == [0.0, 5.0, 10.0]
    np.testing.assert_allclose(mean, [2.0, 2.5, 3.0])
    np.testing.assert_allclose(low[:2], [1.0, 2.0]) and np.testing.assert_allclose(high[:2], [3.0, 3.0])
    assert math.isnan(low[2])  # one seed covers step 10: no band there


def test_gifs_small_with_all_frames_and_given_frames_marked(built):
    root, _ = built
    videos = root / "out" / "conditioning" / "videos"
    names = sorted(p.name for p in videos.glob("*.gif"))
    assert names == ["adaln__predict.gif", "cross_attn__predict.gif", "token_concat__interpolate.gif",
                     "token_concat__predict.gif"]
    for name in names:
        path = videos / name
        assert path.stat().st_size < 1_000_000
        with Image.open(path) as gif:
            assert gif.n_frames == T
            gif.seek(0)
            first = np.asarray(gif.convert("RGB"))
            gif.seek(T - 1)
            last = np.asarray(gif.convert("RGB"))
        corner = (report_videos.HEAD + 1, report_videos.LEFT + 1)  # border of the first panel
        assert np.abs(first[corner].astype(int) - report_videos.BORDER_COLOURS[0]).max() < 30  # given: green
        assert np.abs(last[corner].astype(int) - report_videos.BORDER_COLOURS[2]).max() < 30  # generated: grey


def test_gif_shrinks_to_stay_under_the_limit(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 12, 3, 64, 64), dtype=np.uint8)  # noise: the worst case for GIF
    mask = np.ones((6, 12, 64, 64), dtype=np.uint8)
    mask[:, :3] = 0
    np.savez(tmp_path / "predict.npz", real=real, fake=real[::-1].copy(), mask=mask)
    info = report_videos.sample_gif(tmp_path / "predict.npz", tmp_path / "g.gif", title="noise")
    assert (tmp_path / "g.gif").stat().st_size == info["bytes"] < 1_000_000
    assert info["videos"] < 4 or info["scale"] < 2  # it had to shrink
    with Image.open(tmp_path / "g.gif") as gif:
        assert gif.n_frames == 12


# ---------------------------------------------------------------- page and command line


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_references_only_existing_local_files(built):
    root, pages = built
    for sweep, index in pages.items():
        assert index == root / "out" / sweep / "index.html"
        text = index.read_text()
        parser = Refs()
        parser.feed(text)
        assert "script" not in parser.tags
        assert not [r for r in parser.refs if r.startswith(("http:", "https:", "//"))]
        for ref in parser.refs:
            assert (index.parent / unquote(ref)).is_file(), ref
        assert (index.parent / "README.md").is_file()
    text = pages["conditioning"].read_text()
    parser = Refs()
    parser.feed(text)
    assert sum(r.endswith(".gif") for r in parser.refs) == 4
    assert sorted(Path(r).stem for r in parser.refs if r.endswith(".png")) == sorted(
        Path(r).stem for r in parser.refs if r.endswith(".pdf")) == [
        "cost", "eval_predict_psnr", "eval_predict_ssim", "loss_step", "loss_time", "x0_psnr_interpolate",
        "x0_psnr_predict"]
    for needle in ("fixture out of memory", "9.9.9-fixture", "abc123", "sampler", "uncalibrated",
                   "Clean-frame estimate by noise level on predict:", "paired.md", "Paired comparisons",
                   "profile tuned on (split)", "test (legacy", "split scored"):
        assert needle in text, needle
    assert "no evaluated runs yet" in pages["partial"].read_text()
    readme = (root / "out" / "conditioning" / "README.md").read_text()
    assert "plots/x0_psnr_predict.png" in readme and report_stats.SIGNIFICANCE_RULE in readme


class Cells(HTMLParser):
    """The text of every table cell on a page, and the headers."""

    def __init__(self):
        super().__init__()
        self.cells, self.headers, self._tag = [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag if tag in ("td", "th") else self._tag

    def handle_endtag(self, tag):
        self._tag = None if tag in ("td", "th") else self._tag

    def handle_data(self, data):
        if self._tag == "td":
            self.cells.append(data)
        elif self._tag == "th":
            self.headers.append(data)


def test_report_over_fake_runs_shows_every_metric_the_runs_computed(tmp_path):
    """Whatever metrics eval.json holds, known or not, each gets a column, and each run's mean is on the page."""
    runs = tmp_path / "runs"
    computed = {"psnr": 21.0, "ssim": 0.7, "lpips": 0.2, "fvd": 150.0, "clip_score": 0.31}
    for seed in range(3):
        make_run(runs, "s", "v", seed, "done", {"predict": {m: v + seed for m, v in computed.items()}})
    make_run(runs, "s", "w", 0, "done", {"predict": {"psnr": 19.0, "ssim": None}})  # ssim not computed
    index = report.build_report(tmp_path, out=tmp_path / "out", n_boot=100)["s"]
    page = Cells()
    page.feed(index.read_text())
    for label in ("PSNR (dB) ↑", "SSIM ↑", "LPIPS ↓", "FVD ↓", "clip_score"):
        assert label in page.headers, label
    v_means = {"psnr": "22.00 [", "ssim": "1.700 [", "lpips": "1.200 [", "fvd": "151.0 [", "clip_score": "1.310 ["}
    for m, text in v_means.items():
        assert any(c.startswith(text) for c in page.cells), (m, text)
    w_row = page.cells[page.cells.index("w") - 1:page.cells.index("w") + 8]
    assert "19.00 (one seed)" in w_row and "—" in w_row  # w's SSIM was not computed: missing, not 0


def test_cli_writes_report(tmp_path):
    root = tmp_path / "results"
    make_run(root / "runs", "conditioning", "token_concat", 0, "done", {"predict": scores(30.0, 0.3, 300.0, 0)})
    make_run(root / "runs", "conditioning", "adaln", 0, "failed", steps=10, error="boom")
    # As a user runs it, from the repo root with the package installed (pip install -e .).
    done = subprocess.run([sys.executable, "metrics/report.py", "--results", str(root), "--out", str(tmp_path / "out"),
                           "--bootstrap", "100"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "out" / "conditioning" / "index.html") in done.stdout
    assert "1 of 2 runs failed" in done.stderr  # a partly done sweep: exit 0 with warnings
    assert (tmp_path / "out" / "conditioning" / "table.tex").is_file()


def test_sweep_flag_takes_several_names_and_repeats():
    args = report.get_args_parser().parse_args(["--sweep", "conditioning", "--sweep", "mask_ratio", "depth"])
    assert args.sweep == ["conditioning", "mask_ratio", "depth"]


def test_results_may_name_the_runs_dir_itself(tmp_path):
    """The launcher's --results is the runs directory; the report accepts it as well as its parent."""
    runs = tmp_path / "my-runs"
    make_run(runs, "conditioning", "token_concat", 0, "done", {"predict": scores(30.0, 0.3, 300.0, 0)})
    assert list(report.find_runs(runs)) == ["conditioning"]
    assert report.main(["--results", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "10"]) == 0
    assert (tmp_path / "out" / "conditioning" / "index.html").is_file()


def test_no_runs_is_an_error_that_names_the_command(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path / "empty")]) != 0
    assert "python ablations/run.py --sweep conditioning" in capsys.readouterr().err
    (tmp_path / "r" / "runs" / "s").mkdir(parents=True)
    assert report.main(["--results", str(tmp_path / "r"), "--sweep", "other"]) != 0
    err = capsys.readouterr().err
    assert "no sweep ['other']" in err and "python ablations/run.py --sweep other" in err


def test_results_naming_one_sweeps_folder_is_refused_with_the_folder_to_pass(tmp_path, capsys):
    """--results results/runs/depth (one sweep's folder, not the runs folder) names the folder above it."""
    make_run(tmp_path / "runs", "depth", "depth_2", 0, "done", {"predict": scores(30.0, 0.3, 300.0, 0)})
    one_sweep = tmp_path / "runs" / "depth"
    assert report.main(["--results", str(one_sweep), "--sweep", "depth", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "holds the runs of one sweep (depth)" in err and f"--results {tmp_path / 'runs'}" in err
    assert not (tmp_path / "out").exists()
    assert report.main(["--results", str(one_sweep), "--out", str(tmp_path / "out")]) != 0
    assert f"--results {tmp_path / 'runs'}" in capsys.readouterr().err


def test_report_modules_import_no_model_training_or_torch():
    # The report reads result files only: no torch, no vdt but its run-dir layout, no ablations, no metric code.
    for path in sorted((REPO / "metrics").glob("report*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("torch", "ablations", "torchmetrics", "lpips"), (path.name, name)
                # vdt's run-dir file names, and the entry points' shared parser and input errors (no torch)
                allowed = ("vdt.layout.", "vdt.cli.", "vdt.errors.")
                assert top != "vdt" or (name + ".").startswith(allowed), (path.name, name)
                assert top != "metrics" or name.split(".")[1].startswith("report"), (path.name, name)


def test_report_runs_without_importing_torch():
    code = "import sys; import metrics.report; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
