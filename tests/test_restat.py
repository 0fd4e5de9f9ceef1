"""metrics/restat.py: a committed report's statistics recomputed from its runs.csv, on a fabricated report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from metrics import restat

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
# b has the best PSNR, so it is the reference; a - b per seed:
PSNR_A, PSNR_GAP = np.array([15.0, 15.5, 16.0]), np.array([2.0, 2.1, 1.9])  # clearly worse: significant
SSIM_A, SSIM_GAP = np.array([0.50, 0.55, 0.60]), np.array([-0.078, -0.006, 0.00003])  # issue 27's mislabelled case
FVD_A, FVD_GAP = np.array([100.0, 120.0, 140.0]), np.array([-5.0, -30.0, -1.0])
COPY_FVD, REAL_FVD = 87.28415, 104.67378  # runs.csv's protocol holds them at full precision
CLIPS = json.dumps({"clips": {"split": "test", "stop": 64}, "num_videos": 64})
PROTOCOL = json.dumps({"fvd_references": {"nearest": {"fvd": COPY_FVD}, "real_vs_real": {"fvd": REAL_FVD}}})
OLD_RULE = "A difference is called significant only when the 95% interval of the paired difference excludes zero"
TABLE_MD = f"""Old caption. {OLD_RULE}.

| Task | Variant | n | PSNR (dB) ↑ | SSIM ↑ | FVD ↓ |
|---|---|---|---:|---:|---:|
| predict | a | 3 | 15.50 [15.10, 15.90] | 0.5500 [0.5100, 0.5900] | 120.0 [101.0, 139.0] |
| predict | b | 3 | 17.50 [17.10, 17.90] | 0.5780 [0.5100, 0.6400] | 108.0 [90.0, 130.0] |
| predict | baseline: black fill |  | 14.85 | 0.4739 | — |
| predict | baseline: copy nearest given frame |  | 14.53 | 0.5136 | 87.3 |
| predict | reference: real vs real (disjoint test sets) |  | — | — | 104.7 |
"""
TAIL_MD = ("## Plots\n\n![loss](plots/loss.png)\n\n## Protocol\n\n**predict**\n\n- sampler: ddim\n\n"
           "## Environment\n\n- x: y\n")
README = ("# Sweep `toy`\n\nRuns: 6 done. Open `index.html` for the full page.\n\n## Results\n\n" + TABLE_MD
          + f"\n### Paired comparisons\n\n| a − b | significant, worse |\n\n**Rule.** {OLD_RULE}.\n\n" + TAIL_MD)
TAIL_HTML = ('<h2>Plots</h2>\n<figure><img src="plots/loss.png"></figure>\n<h2>Protocol</h2>\n<p>p</p>\n'
             "</body></html>\n")
INDEX = (f"<!DOCTYPE html>\n<html><body>\n<h1>Sweep</h1>\n<h2>Results</h2>\n<p>{OLD_RULE}</p>\n"
         "<h3>Paired comparisons</h3>\n<p>significant, worse</p>\n" + TAIL_HTML)


def make_report(root: Path) -> Path:
    """results/toy/ as an earlier metrics/report.py left it: runs.csv, table.md, paired.csv, README.md, index.html."""
    d = root / "toy"
    d.mkdir(parents=True)
    rows = []
    for variant, gap in (("a", 0.0), ("b", 1.0)):
        for s in SEEDS:
            rows.append({"sweep": "toy", "variant": variant, "seed": s, "run_id": f"{variant}{s}", "state": "done",
                         "masks.mask_ratio": 0.5, "wall_time_s": 600.0 + 10 * s, "gen_frac": 0.45, "task": "predict",
                         "psnr": PSNR_A[s] + gap * PSNR_GAP[s], "ssim": SSIM_A[s] - gap * SSIM_GAP[s],
                         "lpips": np.nan, "fvd": FVD_A[s] - gap * FVD_GAP[s], "clips": CLIPS, "protocol": PROTOCOL})
    pd.DataFrame(rows).to_csv(d / "runs.csv", index=False)
    (d / "table.md").write_text(TABLE_MD)
    old = [{"task": "predict", "variant": "a", "reference": "b", "metric": m, "n_pairs": 3, "diff_mean": 0.0,
            "diff_low": -1.0, "diff_high": -0.5, "interval": "BCa bootstrap", "significant": True, "clip_n": 64,
            "clip_low": -0.03 * (i + 1), "clip_high": -0.02, "clip_interval": "BCa bootstrap"}
           for i, m in enumerate(("psnr", "ssim", "fvd"))]
    pd.DataFrame(old).to_csv(d / "paired.csv", index=False)
    (d / "README.md").write_text(README)
    (d / "index.html").write_text(INDEX)
    return d


@pytest.fixture
def report_dir(tmp_path):
    d = make_report(tmp_path)
    restat.restat("toy", tmp_path, n_boot=100)
    return d


def test_paired_labels_follow_the_holm_corrected_t_test(report_dir):
    paired = pd.read_csv(report_dir / "paired.csv").set_index("metric")
    a, b = {}, {}
    for m, base, gap, sign in (("psnr", PSNR_A, PSNR_GAP, 1), ("ssim", SSIM_A, SSIM_GAP, -1),
                               ("fvd", FVD_A, FVD_GAP, -1)):
        a[m], b[m] = base, base + sign * gap
    p = [stats.ttest_rel(a[m], b[m]).pvalue for m in ("psnr", "ssim", "fvd")]
    holm = multipletests(p, method="holm")[1]
    for m, q in zip(("psnr", "ssim", "fvd"), holm, strict=True):
        assert paired.loc[m, "reference"] == "b" and paired.loc[m, "p_holm"] == pytest.approx(q)
        assert paired.loc[m, "diff_mean"] == pytest.approx(np.mean(a[m] - b[m]))
    assert paired.loc["psnr", "significant"] and not paired.loc["ssim", "significant"]  # old paired.csv: True
    assert paired.loc["ssim", "clip_low"] == -0.06  # the interval over clips, which needs per-video scores, kept
    md = (report_dir / "paired.md").read_text()
    assert "Recomputed by `python metrics/restat.py --sweep toy" in md and "Holm" in md
    ssim_cell = md.splitlines()[-1].split(" | ")[4]
    assert ssim_cell.endswith("not significant") and "worse" not in ssim_cell


def test_table_intervals_are_student_t_and_baselines_kept(report_dir):
    table = pd.read_csv(report_dir / "table.csv").set_index("variant")
    ci = stats.ttest_1samp(PSNR_A, 0.0).confidence_interval(0.95)
    assert (table.loc["a", "psnr_ci_low"], table.loc["a", "psnr_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert table.loc["a", "psnr_interval"] == "Student t"
    md = (report_dir / "table.md").read_text()
    assert "| predict | baseline: copy nearest given frame |" in md and "| 14.53 | 0.5136 |" in md
    assert "104.7 (one draw)" in md and OLD_RULE not in md
    tests = pd.read_csv(report_dir / "baselines.csv")
    copy_fvd = tests[(tests.baseline == "nearest") & (tests.metric == "fvd")]
    assert (copy_fvd["baseline_value"] == COPY_FVD).all()  # from the protocol, not the rounded 87.3
    black = tests[(tests.baseline == "black") & (tests.metric == "psnr")].set_index("variant")
    assert black.loc["b", "baseline_value"] == 14.85 and black.loc["b", "verdict"] in ("beats", "unclear")
    assert black.loc["b", "p"] == pytest.approx(stats.ttest_1samp(PSNR_A + PSNR_GAP, 14.85).pvalue)


def test_only_the_results_section_of_the_page_is_rewritten(report_dir):
    readme, index = (report_dir / "README.md").read_text(), (report_dir / "index.html").read_text()
    assert readme.startswith("# Sweep `toy`\n\nRuns: 6 done.") and readme.endswith(TAIL_MD)
    assert index.startswith("<!DOCTYPE html>\n<html><body>\n<h1>Sweep</h1>\n") and index.endswith(TAIL_HTML)
    for text in (readme, index):
        assert OLD_RULE not in text and "significant, worse" in text  # PSNR, which the t-test still finds
        assert "Holm-adjusted p &lt; 0.05" in text or "Holm-adjusted p < 0.05" in text
        assert "baselines.csv" in text and "Recomputed by" in text
    assert readme.count("## Results") == 1 and readme.count("### Paired comparisons") == 1


def test_rerunning_on_its_own_output_changes_nothing(report_dir):
    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    restat.restat("toy", report_dir.parent, n_boot=100)
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == before


def test_missing_runs_csv_exits_2_naming_it(tmp_path):
    (tmp_path / "toy").mkdir()
    res = subprocess.run([sys.executable, str(REPO / "metrics" / "restat.py"), "--results", str(tmp_path),
                          "--sweep", "toy"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and "runs.csv" in res.stderr and str(tmp_path / "toy") in res.stderr
