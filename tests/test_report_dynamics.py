"""metrics/report_dynamics.py: the dynamics readout's table in the report, from fabricated runs with known values."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metrics import report, report_dynamics, report_runs
from tests.test_report import make_run

SEEDS = (0, 1, 2)
BY_FRAME = [None] * 5 + [0.5, 1.0, 1.5, 2.0]  # 9 frames, the last 4 generated
# variant -> per-seed (position error px, lost share, objects accuracy, wall accuracy)
MODEL = {"good": [(0.50, 0.02, 0.90, 0.80), (0.52, 0.04, 0.85, 0.85), (0.51, 0.03, 0.95, 0.75)],
         "weak": [(1.90, 0.20, 0.70, 0.60), (2.30, 0.30, 0.65, 0.70), (2.10, 0.10, 0.75, 0.65)]}
BALANCE = {"objects": (0.25, 40), "wall": (0.6, 64), "any": (0.7, 40)}  # share yes, clips asked
FILLS = {"black": (None, 1.0, 0.75, 0.4), "nearest": (2.5, 0.05, 0.75, 0.55), "motion": (1.2, 0.08, 0.80, 0.70)}


def readout(pos, lost, objects, wall, by_frame=BY_FRAME) -> dict:
    """One set's readout as metrics/dynamics.score writes it."""
    acc = {"objects": objects, "wall": wall, "any": (objects + wall) / 2}
    contact = {q: {"accuracy": acc[q], "positive_share": share, "chance": max(share, 1 - share), "num_videos": n}
               for q, (share, n) in BALANCE.items()}
    return {"position_error_px": pos, "position_error_px_by_frame": by_frame, "lost_share": lost,
            "contact_accuracy": objects, "contact": contact, "scored_objects": 300, "num_videos": 64}


def dynamics_record(model_scores) -> dict:
    return {"model": readout(*model_scores), "baselines": {n: readout(*v) for n, v in FILLS.items()},
            "real": {**readout(0.0, 0.0, 1.0, 0.98, [None] * 5 + [0.0] * 4), "tracker_floor_px": 0.12,
                     "tracker_floor_px_max": 0.47},
            "protocol": {"tracker": "fixture"}}


def add_dynamics(run_dir, record) -> None:
    path = run_dir / "eval.json"
    ev = json.loads(path.read_text())
    ev["tasks"]["predict"]["dynamics"] = record
    path.write_text(json.dumps(ev))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for variant, per_seed in MODEL.items():
        for seed, s in zip(SEEDS, per_seed, strict=True):
            d = make_run(root / "runs", "dyn", variant, seed, "done", {"predict": {"psnr": 15.0 + seed, "ssim": 0.5}})
            add_dynamics(d, dynamics_record(s))
    report.build_report(root, ["dyn"], out=root / "out", n_boot=200)
    return root / "out" / "dyn"


def md_rows(text: str) -> dict:
    """First cell -> the row's cells, of every Markdown table row."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Variant"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_variant_cells_are_the_seed_mean_and_its_t_interval(built):
    rows = md_rows((built / "dynamics.md").read_text())
    for variant, per_seed in MODEL.items():
        cells = rows[variant]
        assert cells[1] == "3"
        for col, j, digits in ((2, 0, 2), (4, 1, 3), (5, 2, 3), (7, 3, 3)):
            x = [s[j] for s in per_seed]
            ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
            f = f"{{:.{digits}f}}"
            assert cells[col] == f"{f.format(np.mean(x))} [{f.format(ci.low)}, {f.format(ci.high)}]", (variant, col)
        assert cells[3] == "f5 0.50 · f6 1.00 · f7 1.50 · f8 2.00"  # per generated frame, mean over seeds


def test_contact_accuracy_sits_beside_its_balance_and_chance(built):
    text = (built / "dynamics.md").read_text()
    rows = md_rows(text)
    assert "objects: share yes · chance (clips asked)" in text and "chance level" in text
    for name in ("good", "weak", "baseline: black fill", "baseline: motion (optical flow / blend)"):
        assert rows[name][6] == "0.250 · 0.750 (40)", name  # objects: 25% yes, chance 75%, 40 clips
        assert rows[name][8] == "0.600 · 0.600 (64)", name
    csv = pd.read_csv(built / "dynamics.csv").set_index(["row", "name"])
    assert csv.loc[("variant", "good"), "objects_chance"] == 0.75
    assert csv.loc[("variant", "good"), "any_positive_share"] == pytest.approx(0.7)
    assert csv.loc[("variant", "weak"), "contact_accuracy_mean"] == pytest.approx(0.70)
    assert csv.loc[("variant", "weak"), "contact_accuracy_interval"] == "Student t"


def test_baselines_and_real_future_beside_the_model(built):
    rows = md_rows((built / "dynamics.md").read_text())
    motion = rows["baseline: motion (optical flow / blend)"]
    assert motion[2] == "1.20" and motion[4] == "0.080" and motion[5] == "0.800" and motion[7] == "0.700"
    assert rows["baseline: copy nearest given frame"][2] == "2.50"
    assert rows["baseline: black fill"][2] == "—" and rows["baseline: black fill"][4] == "1.000"  # all lost
    real = rows["real future, scored as generated"]
    assert real[2] == "0.00 (tracker floor 0.12 px, max 0.47)" and real[5] == "1.000"
    csv = pd.read_csv(built / "dynamics.csv").set_index(["row", "name"])
    assert csv.loc[("real future", "real"), "tracker_floor_px"] == 0.12
    assert csv.loc[("baseline", "nearest"), "position_error_px_mean"] == 2.5


def test_variants_tested_against_the_baselines_with_holm(built):
    tests = pd.read_csv(built / "dynamics_baselines.csv")
    row = tests[(tests.variant == "good") & (tests.baseline == "motion") & (tests.metric == "position_error_px")]
    assert row["verdict"].item() == "beats" and row["p_holm"].item() < 0.05  # 0.51 px against 1.20, small spread
    row = tests[(tests.variant == "weak") & (tests.baseline == "motion") & (tests.metric == "position_error_px")]
    assert row["verdict"].item() == "does not beat"
    assert not tests[tests.baseline == "black"].metric.eq("position_error_px").any()  # black has none: no test
    assert (tests["p_holm"].dropna() >= tests["p"].dropna()).all()


def test_page_and_readme_show_the_readout(built):
    readme, page = (built / "README.md").read_text(), (built / "index.html").read_text()
    for text in (readme, page):
        assert "Dynamics readout" in text and "tracker floor 0.12 px" in text and "Holm" in text
    assert "[dynamics (Markdown)](dynamics.md)" in readme and 'href="dynamics.csv"' in page


def test_no_readout_gives_no_table_and_no_error(tmp_path):
    """Data without a simulator: eval.json's dynamics null (or absent); an earlier report's dynamics files go."""
    out = tmp_path / "out" / "real"
    out.mkdir(parents=True)
    (out / "dynamics.md").write_text("stale")
    for seed in SEEDS:
        d = make_run(tmp_path / "runs", "real", "a", seed, "done", {"predict": {"psnr": 15.0, "ssim": 0.5}})
        if seed:
            add_dynamics(d, None)
    report.build_report(tmp_path, ["real"], out=tmp_path / "out", n_boot=200)
    assert not list(out.glob("dynamics*"))
    assert "Dynamics readout" not in (out / "README.md").read_text()
    runs = report_runs.find_runs(tmp_path, ["real"])["real"]
    assert report_dynamics.sweep_dynamics(runs, out, {"method": "BCa", "n_boot": 10, "seed": 0})["tables"] == []


def test_flat_reads_missing_values_as_nan():
    rec = report_dynamics.flat({"position_error_px": None, "contact_accuracy": 0.5})
    assert math.isnan(rec["position_error_px"]) and rec["contact_accuracy"] == 0.5  # headline without "contact"
    assert math.isnan(rec["wall_contact_accuracy"]) and rec["by_frame"] == []
