"""Report: the dynamics readout (``metrics/dynamics.py``) per task, beside the baselines and the real future.

eval.json's ``tasks.<task>.dynamics`` (procedural data only; null elsewhere) scores the model's sample 0,
each baseline fill and the real future with one tracker against the simulator. For each task that has it,
one table:

- a row per variant: each score's mean over seeds with its interval, under the results table's rules
  (``report_stats.seed_interval``: Student t for 3-9 seeds, bootstrap from 10, min-max below 3);
- a row per baseline (black, copy the nearest given frame, continue the motion): one number per test set;
- the real future scored as a generated one: 0 px by construction; its contact accuracy below 1 and its
  tracker floor (tracked centroid against the simulator's position) say how far the tracker can be trusted.

Contact accuracy sits beside its class balance (the share of clips the simulator answers yes) and its
chance level (the majority class's share): an accuracy at chance says nothing. Each variant is tested
against each baseline in the headline scores (position error, lost share, the objects' contact accuracy):
one-sample t-test over seeds, Holm-adjusted over all the readout's comparisons, as the results table's
verdicts. Written as dynamics.md/.csv/.tex and dynamics_baselines.csv; no table (and no file) when no run
has a readout.
"""

import math
from pathlib import Path

import pandas as pd

from metrics import report_stats, report_tables
from metrics.report_runs import baseline_name, eval_settings

# score -> (column label, higher is better): the readout's scores as the table and the tests name them
SCORES = {
    "position_error_px": ("position error (px)", False),
    "lost_share": ("lost share", False),
    "contact_accuracy": ("contact accuracy: objects touch", True),  # eval.json's headline: the objects question
    "wall_contact_accuracy": ("contact accuracy: wall hit", True),
    "any_contact_accuracy": ("contact accuracy: either", True),
}
DIRECTIONS = {k: up for k, (_, up) in SCORES.items()}
# tested against the baselines: the readout's headline scores (metrics/dynamics.py HIGHER_IS_BETTER; the report
# imports no metric code). Wall and either are shown, not tested: fewer comparisons for Holm to pay for.
TESTED = ("position_error_px", "lost_share", "contact_accuracy")
QUESTIONS = {"objects": "contact_accuracy", "wall": "wall_contact_accuracy", "any": "any_contact_accuracy"}
SHOWN = ("objects", "wall")  # the Markdown table's questions; "any" is in dynamics.csv
DIGITS = {"position_error_px": 2}  # the rest are shares: 3 decimals


def flat(readout: dict | None) -> dict:
    """One set's readout ({position_error_px, lost_share, contact: {q: {accuracy, positive_share, chance,
    num_videos}}, ...}) -> {column: number}, NaN where absent; "by_frame" is the per-frame position error list."""
    d = readout or {}
    out = {"position_error_px": report_stats.number(d.get("position_error_px")),
           "lost_share": report_stats.number(d.get("lost_share")),
           "tracker_floor_px": report_stats.number(d.get("tracker_floor_px")),
           "tracker_floor_px_max": report_stats.number(d.get("tracker_floor_px_max")),
           "by_frame": [report_stats.number(v) for v in d.get("position_error_px_by_frame") or []]}
    for q, key in QUESTIONS.items():
        c = (d.get("contact") or {}).get(q) or {}
        acc = c.get("accuracy", d.get("contact_accuracy") if q == "objects" else None)
        out[key] = report_stats.number(acc)
        for field in ("positive_share", "chance", "num_videos"):
            out[f"{q}_{field}"] = report_stats.number(c.get(field))
    return out


def mean_flat(records: list) -> dict:
    """Mean of each column over records (NaN where none is finite); by_frame averaged per frame index."""
    keys = [k for k in records[0] if k != "by_frame"]
    out = {}
    for k in keys:
        x = report_stats.finite([r[k] for r in records])
        out[k] = float(x.mean()) if x.size else math.nan
    out["by_frame"] = by_frame_mean([r["by_frame"] for r in records])
    return out


def by_frame_mean(lists: list) -> list:
    """Per frame index, the mean of the finite values over the lists (NaN where none is)."""
    length = max((len(v) for v in lists), default=0)
    cols = [report_stats.finite([v[t] if t < len(v) else math.nan for v in lists]) for t in range(length)]
    return [float(c.mean()) if c.size else math.nan for c in cols]


# ---------------------------------------------------------------- reading the runs


def collect(runs: list) -> tuple:
    """(frame, baselines, real): one row per (run, task) with a model readout (columns task, variant, seed,
    settings and the flat scores); {task: {baseline: flat mean over runs}}; {task: flat mean over runs}."""
    rows, fills, real = [], {}, {}
    for r in runs:
        for task, res in r.tasks().items():
            dyn = res.get("dynamics")
            if not isinstance(dyn, dict):
                continue
            for name, readout in (dyn.get("baselines") or {}).items():
                fills.setdefault(task, {}).setdefault(baseline_name(name), []).append(flat(readout))
            if dyn.get("real"):
                real.setdefault(task, []).append(flat(dyn["real"]))
            if dyn.get("model") is not None:
                rows.append({"task": task, "variant": r.variant, "seed": r.seed, "settings": eval_settings(r.eval, res),
                             **flat(dyn["model"])})
    frame = pd.DataFrame(rows, columns=["task", "variant", "seed", "settings", *flat(None)])
    baselines = {t: {n: mean_flat(recs) for n, recs in d.items()} for t, d in fills.items()}
    return frame, baselines, {t: mean_flat(recs) for t, recs in real.items()}


def aggregate(frame: pd.DataFrame, method: str, n_boot: int, seed: int) -> dict:
    """(task, variant) -> {n, score: Interval, <question>_<field>: mean, by_frame: [mean per frame]}."""
    out = {}
    for (task, variant), group in frame.groupby(["task", "variant"], sort=True):
        row = {"n": len(group), "by_frame": by_frame_mean(list(group["by_frame"]))}
        row.update({k: report_stats.seed_interval(group[k].to_numpy(float), method, n_boot, seed) for k in SCORES})
        for q in QUESTIONS:
            for field in ("positive_share", "chance", "num_videos"):
                x = report_stats.finite(group[f"{q}_{field}"])
                row[f"{q}_{field}"] = float(x.mean()) if x.size else math.nan
        out[(task, variant)] = row
    return out


# ---------------------------------------------------------------- formatting


def number_cell(value: float, key: str) -> str:
    return f"{value:.{DIGITS.get(key, 3)}f}" if math.isfinite(value) else report_tables.MISSING


def balance_cell(rec: dict, q: str) -> str:
    """'0.31 · 0.69 (58)': the share of clips the simulator answers yes, the chance level, the clips asked."""
    share, chance, n = rec[f"{q}_positive_share"], rec[f"{q}_chance"], rec[f"{q}_num_videos"]
    if not math.isfinite(share):
        return report_tables.MISSING
    return f"{share:.3f} · {chance:.3f} ({n:.0f})"


def frames_cell(values: list) -> str:
    """'f5 0.41 · f6 0.80': the position error per generated frame (frame index from 0), px."""
    parts = [f"f{t} {v:.2f}" for t, v in enumerate(values) if math.isfinite(v)]
    return " · ".join(parts) or report_tables.MISSING


def header() -> list:
    cols = [("Variant / fill", None), ("n", None), (SCORES["position_error_px"][0], False),
            ("position error by generated frame (px)", None), (SCORES["lost_share"][0], False)]
    for q in SHOWN:
        cols += [(SCORES[QUESTIONS[q]][0], True), (f"{q}: share yes · chance (clips asked)", None)]
    return cols


def caption(task: str, method: str, n_boot: int) -> str:
    return (
        f"Dynamics readout on {task} (metrics/dynamics.py): the objects in the generated frames, found by colour "
        "segmentation and weighted centroids, against the bouncing-shapes simulator. Position error: px between the "
        "tracked centroid in the generated and in the real frame, over generated frames and objects not lost, and per "
        "generated frame (fN: frame N of the clip, counted from 0); lost share: objects whose mass in a generated "
        "frame falls below a quarter of the real frame's. Contact accuracy: "
        "the tracker's answer on the generated video against the simulator's, per clip: do two objects touch "
        "(objects, the headline) or does an object hit a wall (wall), within the generated frames; 'either' is in "
        "dynamics.csv. Beside each accuracy: the share of asked clips the simulator answers yes (the class balance), "
        "the chance level (the majority class's share; an accuracy at or below it says nothing) and the clips asked. "
        f"Variant rows: mean over seeds with its 95% interval (Student t for {report_stats.MIN_SEEDS}–"
        f"{report_stats.BOOTSTRAP_FROM - 1} seeds, {method} bootstrap with {n_boot} resamples from "
        f"{report_stats.BOOTSTRAP_FROM}; min–max range below {report_stats.MIN_SEEDS}), scored on the model's "
        "sample 0. Baseline rows: the fills of the generated region, scored the same way on the same clips. Real "
        "future: the real clips scored as generated ones (0 px by construction; an accuracy below 1 is the "
        "tracker's own error), with the tracker's distance from the simulator on the real frames (its floor).")


def format_task(task: str, agg: dict, baselines: dict, real: dict | None, method: str, n_boot: int):
    """The report_tables.Table of one task's readout."""
    rows = []
    for (t, variant), rec in sorted(agg.items()):
        if t != task:
            continue
        cells = [str(variant), str(rec["n"]),
                 report_tables.format_interval(rec["position_error_px"], rec["n"], 2), frames_cell(rec["by_frame"]),
                 report_tables.format_interval(rec["lost_share"], rec["n"], 3)]
        for q in SHOWN:
            cells += [report_tables.format_interval(rec[QUESTIONS[q]], rec["n"], 3), balance_cell(rec, q)]
        rows.append([(c, False) for c in cells])

    def plain(label: str, rec: dict, position: str) -> list:
        cells = [label, "", position, frames_cell(rec["by_frame"]), number_cell(rec["lost_share"], "lost_share")]
        for q in SHOWN:
            cells += [number_cell(rec[QUESTIONS[q]], QUESTIONS[q]), balance_cell(rec, q)]
        return [(c, False) for c in cells]

    for name in report_tables.baseline_order(baselines):
        rec = baselines[name]
        rows.append(plain(f"baseline: {report_tables.baseline_label(name)}", rec,
                          number_cell(rec["position_error_px"], "position_error_px")))
    if real:
        floor = real["tracker_floor_px"]
        where = (f" (tracker floor {floor:.2f} px, max {real['tracker_floor_px_max']:.2f})"
                 if math.isfinite(floor) else " (tracker floor not recorded)")
        rows.append(plain("real future, scored as generated", real,
                          number_cell(real["position_error_px"], "position_error_px") + where))
    return report_tables.Table(header(), rows, caption(task, method, n_boot))


def csv_rows(agg: dict, baselines: dict, real: dict) -> list:
    """dynamics.csv: one row per (task, variant / baseline / real future) with every number of the readout."""
    out = []
    for (task, variant), rec in sorted(agg.items()):
        row = {"task": task, "row": "variant", "name": variant, "n_seeds": rec["n"]}
        for k in SCORES:
            ci = rec[k]
            row.update({f"{k}_mean": ci.mean, f"{k}_ci_low": ci.low, f"{k}_ci_high": ci.high,
                        f"{k}_interval": ci.kind})
        out.append(row | balance(rec) | {"position_error_px_by_frame": rec["by_frame"]})
    for task, d in sorted(baselines.items()):
        for name in report_tables.baseline_order(d):
            out.append({"task": task, "row": "baseline", "name": name} | values(d[name]))
    for task, rec in sorted(real.items()):
        out.append({"task": task, "row": "real future", "name": "real"} | values(rec)
                   | {"tracker_floor_px": rec["tracker_floor_px"], "tracker_floor_px_max": rec["tracker_floor_px_max"]})
    return out


def balance(rec: dict) -> dict:
    return {f"{q}_{f}": rec[f"{q}_{f}"] for q in QUESTIONS for f in ("positive_share", "chance", "num_videos")}


def values(rec: dict) -> dict:
    return {f"{k}_mean": rec[k] for k in SCORES} | balance(rec) | {"position_error_px_by_frame": rec["by_frame"]}


# ---------------------------------------------------------------- the report's entry point


def sweep_dynamics(runs: list, root: Path, opts: dict) -> dict:
    """Write dynamics.md/.csv/.tex and dynamics_baselines.csv into root when any run has a readout; return
    {"tables": [Table per task], "verdicts": [sentence], "verdict_caption": str, "files": {label: path}} (empty
    when no run has one: data without a simulator)."""
    for stale in [*root.glob("dynamics.*"), *root.glob("dynamics_baselines.csv")]:
        stale.unlink()  # an earlier report's: this one may not remake it
    frame, baselines, real = collect(runs)
    tasks = sorted(set(frame["task"]) | set(baselines) | set(real))
    if not tasks:
        return {"tables": [], "verdicts": [], "verdict_caption": "", "files": {}}
    method, n_boot, seed = opts["method"], opts["n_boot"], opts["seed"]
    # never average seeds scored under other settings; the results table's notes already name the seeds left out
    frame, _ = report_tables.keep_one_setting(frame)
    agg = aggregate(frame, method, n_boot, seed)
    tables = [format_task(t, agg, baselines.get(t, {}), real.get(t), method, n_boot) for t in tasks]
    values_of = {t: {n: {k: rec[k] for k in SCORES} for n, rec in d.items()} for t, d in baselines.items()}
    tests = report_stats.baseline_tests(frame, list(TESTED), DIRECTIONS, values_of)  # Holm over all of them
    means = pd.DataFrame([{"task": t, "variant": v, **{f"{k}_mean": rec[k].mean for k in TESTED}}
                          for (t, v), rec in sorted(agg.items())])
    verdicts = report_tables.baseline_verdicts(means, tests, list(TESTED), values_of, {})
    files = {"dynamics (Markdown)": root / "dynamics.md", "dynamics (CSV)": root / "dynamics.csv",
             "dynamics (LaTeX)": root / "dynamics.tex"}
    files["dynamics (Markdown)"].write_text("\n".join(report_tables.to_markdown(tb) for tb in tables))
    pd.DataFrame(csv_rows(agg, baselines, real)).to_csv(files["dynamics (CSV)"], index=False)
    files["dynamics (LaTeX)"].write_text("\n".join(report_tables.to_latex(tb, f"tab:dynamics-{t}")
                                                   for tb, t in zip(tables, tasks, strict=True)))
    if tests:
        files["dynamics against baselines (CSV)"] = root / "dynamics_baselines.csv"
        pd.DataFrame(tests).to_csv(files["dynamics against baselines (CSV)"], index=False)
    count = sum(math.isfinite(r["p"]) for r in tests)
    caption_ = report_stats.test_caption(count, "two-sided one-sample Student t-test of the seeds' readout against "
                                                "the baseline's on the same clips (scipy.stats.ttest_1samp)")
    return {"tables": tables, "verdicts": verdicts, "verdict_caption": caption_, "files": files}
