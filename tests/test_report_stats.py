"""The report's labelling rules on runs with known per-seed scores: paired t-tests, Holm, zero variance, n < 3.

Each case builds the per-seed scores so that the answer is known in advance (a raw p placed on purpose,
a seed of the opposite sign, equal seeds), then checks the label the report gives it.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import make_run

from metrics import report, report_stats, report_tables

SPREAD = 0.4  # the seeds' spread of the paired differences (their sample standard deviation)


def diffs_with_p(p: float, n: int = 3) -> np.ndarray:
    """n paired differences whose two-sided paired t-test has p-value ``p``: mean m, deviations ±SPREAD."""
    dev = np.linspace(-1.0, 1.0, n)
    dev *= SPREAD / dev.std(ddof=1)
    m = stats.t.isf(p / 2, n - 1) * SPREAD / math.sqrt(n)
    return m + dev


def frame(scores: dict) -> pd.DataFrame:
    """A runs frame (as report_runs.runs_frame gives) from {(variant, metric): [score per seed]}, task predict."""
    rows = {}
    for (variant, metric), values in scores.items():
        for seed, v in enumerate(values):
            rows.setdefault((variant, seed), {"task": "predict", "variant": variant, "seed": seed, "clips": "c",
                                              "settings": "s"})[metric] = v
    return pd.DataFrame(list(rows.values()))


def paired(scores: dict, metrics=("psnr", "ssim")) -> dict:
    """paired_frame against variant 'ref'; {(variant, metric): row}."""
    rows, _ = report_stats.paired_frame(frame(scores), list(metrics), {"predict": "ref"})
    return {(r["variant"], r["metric"]): r for r in rows}


def test_diffs_with_p_places_the_raw_p_value():
    d = diffs_with_p(0.0245)
    assert stats.ttest_rel(d, np.zeros(3)).pvalue == pytest.approx(0.0245, rel=1e-9)


def test_holm_adjusted_p_just_below_and_just_above_005():
    """Two comparisons in one table, both with a raw p < 0.05: Holm doubles the smaller one. At raw 0.0245 it
    adjusts to 0.049 (significant); at raw 0.0255, to 0.051 (not significant, though its raw p is below 0.05)."""
    ref = np.array([20.0, 21.0, 19.5])  # seed-to-seed spread shared by both variants
    for raw, expected in ((0.0245, True), (0.0255, False)):
        rows = paired({("ref", "psnr"): ref, ("a", "psnr"): ref + diffs_with_p(raw),
                       ("ref", "ssim"): ref / 40, ("a", "ssim"): ref / 40 + diffs_with_p(0.03) / 40})
        psnr, ssim = rows[("a", "psnr")], rows[("a", "ssim")]
        assert psnr["p"] == pytest.approx(raw, rel=1e-6) and psnr["interval"] == "Student t"
        assert psnr["p_holm"] == pytest.approx(2 * raw, rel=1e-6)  # smallest of 2: times 2
        assert ssim["p_holm"] == pytest.approx(max(2 * raw, 0.03), rel=1e-6)  # next: times 1, kept monotone
        assert psnr["significant"] is expected
        assert ssim["significant"] is expected  # its adjusted p is the max of the two
    cell = report_tables.format_difference(rows[("a", "psnr")], True, 2)
    assert cell.endswith("Holm p = 0.051, not significant")


def test_one_seed_of_the_opposite_sign_is_not_significant():
    """results/mask_ratio's spatial_temporal ratio_0.5 − ratio_0.75 SSIM: the rule that called it significant
    (three differences with a zero-excluding bootstrap interval) no longer does."""
    ref = np.array([0.40, 0.43, 0.38])
    rows = paired({("ref", "ssim"): ref, ("a", "ssim"): ref + np.array([-0.078, -0.006, 0.00003]),
                   ("ref", "psnr"): ref * 40, ("a", "psnr"): ref * 40 + np.array([1.0, 1.2, -0.1])}, ["psnr", "ssim"])
    for m in ("psnr", "ssim"):
        r = rows[("a", m)]
        assert r["n_pairs"] == 3 and r["diff_low"] < 0 < r["diff_high"] and r["p"] > 0.05
        assert not r["significant"]


def test_zero_variance_is_reported_and_never_significant():
    """Every seed gains exactly 0.5: no variance, so no t-test (scipy would give p = 0); not significant and not
    counted among the comparisons. The mean over equal seeds says so as well."""
    ref = np.array([20.0, 21.0, 19.5])
    rows, _ = report_stats.paired_frame(frame({("ref", "psnr"): ref, ("a", "psnr"): ref + 0.5,
                                               ("b", "psnr"): ref + diffs_with_p(0.01)}), ["psnr"], {"predict": "ref"})
    zero = next(r for r in rows if r["variant"] == "a")
    assert zero["interval"] == "zero variance" and math.isnan(zero["p"]) and not zero["significant"]
    assert zero["diff_mean"] == pytest.approx(0.5)
    tested = next(r for r in rows if r["variant"] == "b")
    assert tested["p_holm"] == pytest.approx(0.01)  # one comparison counted, not two
    assert report_tables.format_difference(zero, True, 2) == "+0.50 (zero variance: no test) not significant"
    ci = report_stats.seed_interval([3.0, 3.0, 3.0])
    assert (ci.mean, ci.low, ci.high, ci.kind) == (3.0, 3.0, 3.0, "zero variance") and not ci.is_interval
    assert report_tables.format_interval(ci, 3, 1) == "3.0 (zero variance)"


def test_fewer_than_three_seeds_get_no_test():
    ref = np.array([20.0, 21.0])
    r = paired({("ref", "psnr"): ref, ("a", "psnr"): ref + 5.0 + np.array([0.0, 0.1])}, ["psnr"])[("a", "psnr")]
    assert r["n_pairs"] == 2 and r["interval"] == "none" and math.isnan(r["p"]) and not r["significant"]
    assert report_tables.format_difference(r, True, 2).endswith("(2 pairs: no test) not significant")
    assert report_stats.seed_interval([1.0, 2.0]).kind == "min-max"
    assert report_stats.against_value([30.0, 31.0], 10.0).kind == "none"


def test_intervals_are_student_t_below_ten_seeds_and_bca_from_ten():
    x = np.array([20.1, 20.5, 19.8, 20.9])
    ci = report_stats.seed_interval(x)
    ref = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert ci.kind == "Student t" and (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    b = x - np.array([1.0, 0.8, 1.3, 0.9])
    d = report_stats.paired_difference(x, b)
    ref = stats.ttest_rel(x, b).confidence_interval(0.95)
    assert d.kind == "Student t" and (d.low, d.high) == pytest.approx((ref.low, ref.high))
    assert d.p == pytest.approx(stats.ttest_rel(x, b).pvalue)
    ten = np.linspace(19.0, 21.0, 10) ** 1.1
    big = report_stats.seed_interval(ten, "BCa", n_boot=999, seed=1)
    boot = stats.bootstrap((ten,), np.mean, n_resamples=999, method="BCa",
                           **report_stats._rng_kwarg(1)).confidence_interval
    assert big.kind == "BCa bootstrap" and (big.low, big.high) == pytest.approx((boot.low, boot.high))
    assert report_stats.paired_difference(ten, ten - np.linspace(0, 1, 10), n_boot=99).kind == "BCa bootstrap"


def test_holm_is_statsmodels_and_skips_comparisons_without_a_test():
    p = [0.01, math.nan, 0.04, 0.03]
    adjusted = report_stats.holm(p)
    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], [0.03, 0.06, 0.06])  # 3 tests: 3p, then 2p, 1p, monotone
    rows = [{"p": v} for v in p]
    assert report_stats.label(rows) == 3
    assert [r["significant"] for r in rows] == [True, False, False, False]


def test_verdicts_against_baselines_follow_the_same_rules():
    """Beats a baseline only with a better mean and a Holm-adjusted p < 0.05 (one-sample t over seeds); equal seeds
    or two seeds: 'unclear'; a baseline without FVD (black fill) is never counted in FVD."""
    scores = {("good", "psnr"): [20.0, 20.5, 21.0], ("good", "fvd"): [100.0, 110.0, 105.0],
              ("flat", "psnr"): [16.0, 16.0, 16.0], ("two", "psnr"): [30.0, 31.0]}
    baselines = {"predict": {"black": {"psnr": 15.0}, "nearest": {"psnr": 18.0, "fvd": 300.0}}}
    dirs = {"psnr": True, "fvd": False}
    tests = report_stats.baseline_tests(frame(scores), ["psnr", "fvd"], dirs, baselines)
    found = {(t["variant"], t["baseline"], t["metric"]): t for t in tests}
    assert ("good", "black", "fvd") not in found  # black fill has no FVD: not a comparison
    assert found[("good", "black", "psnr")]["verdict"] == "beats"
    assert found[("good", "nearest", "fvd")]["verdict"] == "beats"
    assert found[("flat", "black", "psnr")]["interval"] == "zero variance"
    assert found[("flat", "black", "psnr")]["verdict"] == "unclear"  # better mean, but no test
    assert found[("flat", "nearest", "psnr")]["verdict"] == "does not beat"
    assert found[("two", "nearest", "psnr")]["verdict"] == "unclear"  # n < 3: no test
    assert sum(math.isfinite(t["p"]) for t in tests) == 3  # good: black psnr, nearest psnr, nearest fvd
    expected = report_stats.holm([t["p"] for t in tests])
    assert [t["p_holm"] for t in tests] == pytest.approx(list(expected), nan_ok=True)


def test_min_detectable_difference_at_three_seeds():
    """Power 0.8, alpha 0.05 two-sided, 3 paired seeds: the effect must be about 3.26 standard deviations of the
    differences; the t interval's half-width is t(0.975, 2)/sqrt(3) = 2.48 of them."""
    out = report_stats.min_detectable_difference(1.0, 3)
    assert out["mdd"] == pytest.approx(3.26, abs=0.01)
    assert out["half_width"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    assert report_stats.min_detectable_difference(2.0, 3)["mdd"] == pytest.approx(2 * out["mdd"])


def test_report_captions_name_test_correction_and_count(tmp_path):
    """End to end: runs whose PSNR differences are placed at a raw p of 0.0245, whose SSIM differences are equal
    (zero variance: no test) and whose FVD differences are tested too. Two comparisons: PSNR's p adjusts to 0.049."""
    runs = tmp_path / "runs"
    d = diffs_with_p(0.0245)
    for seed in range(3):
        base = 20.0 + seed
        make_run(runs, "s", "ref", seed, "done", {"predict": {"psnr": base, "ssim": 0.5, "fvd": 200.0 + seed}})
        make_run(runs, "s", "a", seed, "done", {"predict": {"psnr": base - d[seed], "ssim": 0.45,
                                                            "fvd": 205.0 + 3 * seed ** 2}})
    index = report.build_report(tmp_path, out=tmp_path / "out", n_boot=100)["s"]
    md = (index.parent / "paired.md").read_text()
    caption = md.split("\n\n")[0]
    for words in ("paired Student t-test", "scipy.stats.ttest_rel", "Holm", "multipletests", "2 comparisons",
                  "adjusted p < 0.05"):
        assert words in caption, words
    row = next(line for line in md.splitlines() if line.startswith("| predict | a − ref"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].endswith("Holm p = 0.049, significant, worse")  # PSNR: a is lower
    assert cells[4] == "−0.0500 (zero variance: no test) not significant"  # SSIM: every seed −0.05
    readme = (index.parent / "README.md").read_text()
    assert "one-sample Student t-test" in readme and "Holm" in readme and "comparisons of this table" in readme
