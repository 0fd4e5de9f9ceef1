"""The mask studies' reports (issue 28): specialists against the unified model, and the mask grid.

``metrics/report.py`` calls ``write(sweep, runs, root)`` for every sweep; it writes something for the sweeps whose
runs it recognises (from their configs, not their names) and returns ``{}`` for the others:

- **tasks** (variants that differ in ``masks.mixture``, one of them a mixture of several kinds): ``tasks.md/.csv/
  .tex``, one row per task and metric. A cell is a training mask's mean over seeds with its interval; † marks a task
  the mask never trained on. Then the unified model's cost on the task against its specialist (the variant trained on
  that task's kind alone): unified − specialist, paired by seed (``report_stats.paired_difference``), at equal steps
  (the final eval.json) and at equal training FLOPs (the runs' logged ``train_flops``). When the two models' FLOPs
  agree to ``SAME_FLOPS``, equal FLOPs is equal steps and the table says so; else both are read at the FLOPs the
  cheaper run reached, on the curves of the evaluation during training (val split, eval.tasks[0] only). The tests
  of each comparison family are Holm-adjusted together (``report_stats.label``).
- **mask_grid** (variants that differ in ``masks.mask_ratio``, scored on ``predict:k=N``): ``grid.csv/.md`` and one
  heatmap per metric (``plots/grid_<metric>.png/.pdf``): rows the generated share in training (nominal, and realized:
  the mean ``gen_frac`` of the training log), columns the given frames at test. A cell's colour is the model's mean
  minus the motion baseline's score on the same clips (eval.json ``baselines.motion``), signed so that blue is
  better and white is the motion baseline; its text is the model's mean. A framed cell is the given count that row
  trained on (predict-only training); * marks a cell significantly better than the motion baseline (one-sample t over
  seeds, Holm over the heatmap's cells).

Reads result files only, through ``metrics.report_runs``.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from metrics import report_plots, report_runs, report_stats, report_tables
from metrics.report_tables import MISSING, Table

SAME_FLOPS = 0.01  # relative: two runs' training FLOPs this close are "equal FLOPs"
MOTION = "motion"  # eval.json's name of the motion baseline (metrics/evaluate.py BASELINE_NAMES)
MARK_UNSEEN = " †"


# ---------------------------------------------------------------- which study a sweep is


def mixture_kinds(mixture) -> tuple | None:
    """'predict:1' -> ('predict',); 'official' -> None (the official mixture of all kinds); a list -> its kinds."""
    if not isinstance(mixture, str) or mixture == "official":
        return None
    return tuple(part.split(":")[0].strip() for part in mixture.split(",") if part.strip())


def task_kind(task: str) -> str:
    """'predict:k=3' -> 'predict'."""
    return str(task).partition(":")[0]


def given_at_test(task: str) -> int | None:
    """'predict:k=3' -> 3; None when the task does not set k."""
    params = dict(p.split("=", 1) for p in str(task).partition(":")[2].split(",") if "=" in p)
    return int(params["k"]) if "k" in params else None


def roles(runs: list) -> dict | None:
    """{variant: trained kinds, None for a mixture of all} when the variants differ in masks.mixture and one of them
    trains on several kinds (the unified model); else None."""
    mixes = {}
    for r in runs:
        mixes.setdefault(r.variant, set()).add(r.config.get("masks.mixture", "official"))
    if len(mixes) < 2 or any(len(m) != 1 for m in mixes.values()):
        return None
    kinds = {v: mixture_kinds(next(iter(m))) for v, m in mixes.items()}
    if len({repr(k) for k in kinds.values()}) < len(kinds) or not any(k is None or len(k) > 1 for k in kinds.values()):
        return None
    return kinds


def is_grid(runs: list) -> bool:
    """Variants that differ in masks.mask_ratio, scored on tasks with a given-frame count (predict:k=N)."""
    ratios = {r.config.get("masks.mask_ratio") for r in runs}
    tasks = {t for r in runs for t in r.tasks()}
    return len(ratios) > 1 and None not in ratios and any(given_at_test(t) is not None for t in tasks)


def write(sweep: str, runs: list, root: Path) -> dict:
    """The mask studies' tables and plots for the runs of one sweep, into ``root``: {"files": {label: path},
    "plots": [(title, png, pdf)], "notes": [text]}, all empty when the sweep is neither study or nothing is scored."""
    nothing = {"files": {}, "plots": [], "notes": []}
    frame = report_runs.runs_frame(runs)
    if "task" not in frame or frame["task"].isna().all():
        return nothing
    frame, _ = report_tables.keep_one_setting(frame)  # its notes are the main table's (report.sweep_tables)
    frame = frame[frame["task"].notna()]
    metrics, dirs = report_runs.metric_names(runs), report_runs.directions(runs)
    if roles(runs) is not None:
        out = tasks_report(runs, frame, metrics, dirs, root)
    elif is_grid(runs):
        out = grid_report(runs, frame, metrics, dirs, root)
    else:
        return nothing
    return out


# ---------------------------------------------------------------- tasks: specialists against the unified model


def unified_variant(kinds: dict) -> str:
    """The variant trained on the most kinds (the official mixture counts as all)."""
    return max(sorted(kinds), key=lambda v: math.inf if kinds[v] is None else len(kinds[v]))


def specialist_of(task: str, kinds: dict) -> str | None:
    """The variant trained on this task's kind alone."""
    return next((v for v in sorted(kinds) if kinds[v] == (task_kind(task),)), None)


def seed_values(frame: pd.DataFrame, task: str, variant: str, metric: str) -> dict:
    """seed -> the run's score (runs without a seed are left out)."""
    rows = frame[(frame["task"] == task) & (frame["variant"] == variant) & frame["seed"].notna()]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[metric], strict=True)}


def run_flops(runs: list) -> dict:
    """(variant, seed) -> the run's training FLOPs (train_log.jsonl), NaN when not logged."""
    return {(r.variant, r.seed): report_runs.train_cost(r)[0] for r in runs if r.seed is not None}


def value_at(run, task: str, metric: str, flops: float) -> float:
    """The run's eval-during-training score of ``task`` at ``flops`` training FLOPs (linear between records); NaN
    outside its records or when it has none."""
    pts = sorted((rec["train_flops"], rec["eval"][task][metric]) for rec in run.log
                 if rec.get("train_flops") is not None and isinstance(rec.get("eval"), dict)
                 and isinstance(rec["eval"].get(task), dict) and rec["eval"][task].get(metric) is not None)
    if not pts or not pts[0][0] <= flops <= pts[-1][0]:
        return math.nan
    x, y = np.asarray(pts, dtype=float).T
    return float(np.interp(flops, x, y))


def paired_row(task: str, metric: str, a: dict, b: dict, **extra) -> dict:
    """unified − specialist over the seeds both have; the row format of ``report_tables.format_difference``."""
    seeds = sorted(set(a) & set(b))
    d = report_stats.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {"task": task, "metric": metric, "n_pairs": d.n, "diff_mean": d.mean, "diff_low": d.low,
            "diff_high": d.high, "interval": d.kind, "p": d.p, **extra}


def equal_flops_row(runs: list, task: str, metric: str, unified: str, specialist: str, flops: dict) -> dict:
    """unified − specialist at equal training FLOPs: the final scores when both runs of a seed logged the same FLOPs
    (within SAME_FLOPS), else both curves read at the smaller of the two runs' FLOPs."""
    by = {(r.variant, r.seed): r for r in runs if r.seed is not None}
    seeds = sorted({s for v, s in by if v == unified} & {s for v, s in by if v == specialist})
    # seeds whose two runs both logged their FLOPs (a run still pending has no log yet)
    seeds = [s for s in seeds if all(math.isfinite(flops.get((v, s), math.nan)) for v in (unified, specialist))]
    fu, fs = [flops[(unified, s)] for s in seeds], [flops[(specialist, s)] for s in seeds]
    logged = bool(seeds)
    same = logged and all(abs(a - b) <= SAME_FLOPS * max(a, b) for a, b in zip(fu, fs, strict=True))
    extra = {"unified_flops": float(np.mean(fu)) if logged else math.nan,
             "specialist_flops": float(np.mean(fs)) if logged else math.nan}
    if not logged:
        return {**paired_row(task, metric, {}, {}), **extra, "basis": "training FLOPs not logged"}
    if same:
        return {**extra, "basis": "same FLOPs as equal steps"}
    at = {s: min(a, b) for s, a, b in zip(seeds, fu, fs, strict=True)}
    a = {s: value_at(by[(unified, s)], task, metric, at[s]) for s in seeds}
    b = {s: value_at(by[(specialist, s)], task, metric, at[s]) for s in seeds}
    a, b = {s: v for s, v in a.items() if math.isfinite(v)}, {s: v for s, v in b.items() if math.isfinite(v)}
    return {**paired_row(task, metric, a, b), **extra, "basis": "val curves (eval during training) at the smaller "
                                                                "run's FLOPs"}


def tasks_report(runs: list, frame: pd.DataFrame, metrics: list, dirs: dict, root: Path) -> dict:
    kinds = roles(runs)
    unified = unified_variant(kinds)
    variants = [unified] + sorted(v for v in kinds if v != unified)
    tasks = sorted(frame["task"].unique(), key=lambda t: (t == "unconditional", t))
    baselines, flops = report_runs.baseline_values(runs), run_flops(runs)
    steps, equal = [], []
    data = []
    for task in tasks:
        spec = specialist_of(task, kinds)
        for m in metrics:
            means = {v: report_stats.seed_interval(list(seed_values(frame, task, v, m).values())) for v in variants}
            if all(ci.n == 0 for ci in means.values()):
                continue  # a metric the task has none of (unconditional: frame metrics)
            record = {"task": task, "metric": m, "specialist": spec or "",
                      "motion": report_stats.number((baselines.get(task, {}).get(MOTION) or {}).get(m))}
            record["cis"] = means
            for v, ci in means.items():
                record.update({f"{v}_mean": ci.mean, f"{v}_low": ci.low, f"{v}_high": ci.high, f"{v}_n": ci.n,
                               f"{v}_interval": ci.kind,
                               f"{v}_trained_on_task": kinds[v] is None or task_kind(task) in kinds[v]})
            if spec:
                s_row = paired_row(task, m, seed_values(frame, task, unified, m), seed_values(frame, task, spec, m))
                f_row = equal_flops_row(runs, task, m, unified, spec, flops)
                steps.append(s_row)
                if "n_pairs" in f_row:
                    equal.append(f_row)
                record.update({"steps": s_row, "flops": f_row})
            data.append(record)
    count = report_stats.label(steps) + report_stats.label(equal)
    header = [("Task", None), ("Metric", None)] + [(f"{v}" + (" (unified)" if v == unified else ""), None)
                                                   for v in variants]
    header += [("motion baseline", None), ("unified − specialist, equal steps", None),
               ("unified − specialist, equal FLOPs", None)]
    rows, flat = [], []
    for rec in data:
        m, digits = rec["metric"], report_tables.decimals([rec[f"{v}_mean"] for v in variants])
        cells = [(rec["task"], False), (report_tables.METRIC_LABELS.get(m, m) + report_tables.arrow(dirs.get(m), "↑",
                                                                                                      "↓"), False)]
        for v in variants:
            ci = rec["cis"][v]
            text = report_tables.format_interval(ci, ci.n, digits)
            cells.append((text + ("" if rec[f"{v}_trained_on_task"] else MARK_UNSEEN), False))
        cells.append((f"{rec['motion']:.{digits}f}" if math.isfinite(rec["motion"]) else MISSING, False))
        if "steps" in rec:
            cells.append((report_tables.format_difference(rec["steps"], dirs.get(m), digits), False))
            f_row = rec["flops"]
            text = ("as equal steps (same training FLOPs)" if f_row["basis"] == "same FLOPs as equal steps" else
                    f"{report_tables.format_difference(f_row, dirs.get(m), digits)} ({f_row['basis']})")
            cells.append((text, False))
        else:
            cells += [("no specialist", False)] * 2
        rows.append(cells)
        flat.append({k: v for k, v in rec.items() if k not in ("steps", "flops", "cis")}
                    | {f"steps_{k}": v for k, v in rec.get("steps", {}).items() if k not in ("task", "metric")}
                    | {f"flops_{k}": v for k, v in rec.get("flops", {}).items() if k not in ("task", "metric")})
    caption = tasks_caption(unified, kinds, count)
    files = report_tables.write_table(Table(header, rows, caption), pd.DataFrame(flat), root, "tasks",
                                      "tab:tasks")
    return {"files": {"tasks: unified vs specialists (Markdown)": files["md"],
                      "tasks: unified vs specialists (CSV)": files["csv"],
                      "tasks: unified vs specialists (LaTeX)": files["tex"]}, "plots": [], "notes": []}


def tasks_caption(unified: str, kinds: dict, count: int) -> str:
    trained = "; ".join(f"{v}: {'every kind (official mixture)' if k is None else ', '.join(k)}"
                        for v, k in sorted(kinds.items()))
    test = ("two-sided paired Student t-test over seeds (scipy.stats.ttest_rel), unified − specialist, a seed's two "
            "runs scoring the same test clips; [low, high] its 95% interval (BCa bootstrap from 10 pairs)")
    return (f"Specialists against the unified model ({unified}). Training masks: {trained}. A cell: the mean over "
            "seeds with its 95% interval (Student t for 3–9 seeds); † a task that model never trained on (it is "
            "still asked: token concatenation takes any mask). Motion baseline: the given frames' motion continued, "
            "scored on the same clips (no value where a video has no given pixel). Equal steps: the final "
            "evaluation (test split). Equal FLOPs: training FLOPs from train_log.jsonl (vdt.model.count_flops, "
            f"forward + backward); runs within {SAME_FLOPS:.0%} of each other's FLOPs are at equal FLOPs already, "
            "else both are read on their val curves at the smaller run's FLOPs. Unconditional generation has no "
            "ground truth: FVD only. " + report_stats.test_caption(count, test) + " " + report_stats.SMALL_N_NOTE)


# ---------------------------------------------------------------- mask_grid: generated share x given frames


def grid_frame(runs: list, frame: pd.DataFrame, metrics: list, dirs: dict) -> pd.DataFrame:
    """One row per (training ratio, given frames at test, metric): the mean over seeds with its interval, the
    realized training share, the motion baseline and the one-sample test against it (Holm over each metric's cells)."""
    baselines = report_runs.baseline_values(runs)
    realized = {}
    for r in runs:
        realized.setdefault(r.config.get("masks.mask_ratio"), []).append(r.gen_frac())
    trained_k = {}
    for r in runs:
        kinds, frames = mixture_kinds(r.config.get("masks.mixture")), r.config.get("data.frames")
        share = report_stats.finite([r.gen_frac()])
        if kinds == ("predict",) and frames and share.size:  # predict-only: gen_frac = (T - k) / T exactly
            trained_k[r.config.get("masks.mask_ratio")] = int(round(frames * (1 - share[0])))
    rows = []
    for (ratio, task), group in frame.groupby([frame["variant"].map(_ratio_of(runs)), "task"], sort=True):
        k = given_at_test(task)
        if k is None:
            continue
        for m in metrics:
            ci = report_stats.seed_interval(group[m].to_numpy(float))
            if ci.n == 0:
                continue
            motion = report_stats.number((baselines.get(task, {}).get(MOTION) or {}).get(m))
            test = report_stats.against_value(group[m].to_numpy(float), motion)
            share = report_stats.finite(realized.get(ratio, []))
            rows.append({"ratio": ratio, "realized_share": float(share.mean()) if share.size else math.nan,
                         "trained_given": trained_k.get(ratio), "given": k, "task": task, "metric": m,
                         "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n, "interval": ci.kind,
                         "motion": motion, "diff_motion": test.mean, "p": test.p})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    parts = []
    for m, group in out.groupby("metric", sort=False):
        recs = group.to_dict("records")
        report_stats.label(recs)
        for rec in recs:
            rec["verdict"] = report_stats.verdict(rec["diff_motion"], rec["significant"], dirs.get(m, True))
        parts += recs
    return pd.DataFrame(parts)


def _ratio_of(runs: list) -> dict:
    """variant -> its masks.mask_ratio."""
    return {r.variant: r.config.get("masks.mask_ratio") for r in runs}


def heatmap(grid: pd.DataFrame, metric: str, higher: bool, stem: Path) -> list:
    """One metric's heatmap (rows: training share, columns: given frames at test), coloured by the model's margin
    over the motion baseline (blue: better, white: the motion baseline); saved as PNG and PDF."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    g = grid[grid["metric"] == metric]
    ratios, given = sorted(g["ratio"].unique()), sorted(g["given"].unique())
    cell = {(r["ratio"], r["given"]): r for r in g.to_dict("records")}
    sign = 1.0 if higher else -1.0
    better = np.full((len(ratios), len(given)), np.nan)
    for (ratio, k), r in cell.items():
        better[ratios.index(ratio), given.index(k)] = sign * r["diff_motion"]
    span = float(np.nanmax(np.abs(better))) if np.isfinite(better).any() else 1.0
    span = span if span > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.1 * len(given) + 2.6, 0.75 * len(ratios) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(better), cmap="RdBu", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    digits = report_tables.decimals(g["mean"])
    for (ratio, k), r in cell.items():
        i, j = ratios.index(ratio), given.index(k)
        ax.text(j, i, f"{r['mean']:.{digits}f}" + ("*" if r.get("significant") and sign * r["diff_motion"] > 0
                                                   else ""), ha="center", va="center", fontsize=8)
        if r.get("trained_given") == k:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    motion = {k: cell[(ratios[0], k)]["motion"] if (ratios[0], k) in cell else math.nan for k in given}
    ax.set_xticks(range(len(given)), [f"{k}\nmotion\n{motion[k]:.{digits}f}" if math.isfinite(motion[k]) else str(k)
                                      for k in given], fontsize=8)
    shares = {ratio: g.loc[g["ratio"] == ratio, "realized_share"].iloc[0] for ratio in ratios}
    ax.set_yticks(range(len(ratios)), [f"{ratio:g} (realized {shares[ratio]:.3f})" if math.isfinite(shares[ratio])
                                       else f"{ratio:g}" for ratio in ratios], fontsize=8)
    ax.set_xlabel("given frames at test (predict:k)")
    ax.set_ylabel("generated share in training")
    label = report_tables.METRIC_LABELS.get(metric, metric)
    ax.set_title(f"{label}: mean over seeds; colour: margin over the motion baseline", fontsize=9)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(f"{label}, model − motion baseline" + ("" if higher else " (sign flipped: ↓ is better)")
                  + "\nblue: better than motion", fontsize=8)
    return report_plots.save(fig, stem, left=0.22, right=0.88, bottom=0.2, top=0.9)


def grid_report(runs: list, frame: pd.DataFrame, metrics: list, dirs: dict, root: Path) -> dict:
    grid = grid_frame(runs, frame, metrics, dirs)
    if grid.empty:
        return {"files": {}, "plots": [], "notes": ["mask_grid: no task with a given-frame count (predict:k=N)"]}
    (root / "plots").mkdir(parents=True, exist_ok=True)
    plots = []
    for m in [m for m in metrics if m in set(grid["metric"])]:
        paths = heatmap(grid, m, dirs.get(m, True), root / "plots" / f"grid_{report_plots.slug(m)}")
        plots.append((f"{report_tables.METRIC_LABELS.get(m, m)} over the mask grid: rows the generated share in "
                      "training (nominal, realized), columns the given frames at test; colour the margin over the "
                      "motion baseline (blue better, white equal); framed: the given count the row trained on; *: "
                      "significantly better than motion (one-sample t over seeds, Holm over the heatmap's cells)",
                      *paths))
    grid.to_csv(root / "grid.csv", index=False)
    (root / "grid.md").write_text(grid_markdown(grid, dirs))
    return {"files": {"mask grid (CSV)": root / "grid.csv", "mask grid (Markdown)": root / "grid.md"},
            "plots": plots, "notes": []}


def grid_markdown(grid: pd.DataFrame, dirs: dict) -> str:
    """One table per metric: rows the training share, columns the given frames, cells mean [interval]."""
    out = ["Mask grid: mean over seeds [95% Student t interval]; * significantly better than the motion baseline "
           "(one-sample t-test over seeds against its score on the same clips, Holm over each metric's cells); "
           "(trained) the given count that row trained on. Realized share: the mean generated share of the training "
           "batches (train_log.jsonl gen_frac).", ""]
    for m, g in grid.groupby("metric", sort=False):
        given = sorted(g["given"].unique())
        digits = report_tables.decimals(g["mean"])
        out.append(f"**{report_tables.METRIC_LABELS.get(m, m)}**{report_tables.arrow(dirs.get(m), '↑', '↓')}")
        out.append("")
        out.append("| training share (realized) | " + " | ".join(f"k = {k}" for k in given) + " |")
        out.append("|---|" + "---:|" * len(given))
        for ratio, rows in g.groupby("ratio", sort=True):
            by_k = {r["given"]: r for r in rows.to_dict("records")}
            share = rows["realized_share"].iloc[0]
            cells = []
            for k in given:
                r = by_k.get(k)
                if r is None:
                    cells.append(MISSING)
                    continue
                ci = report_stats.Interval(r["mean"], r["low"], r["high"], r["n"], r["interval"])
                text = report_tables.format_interval(ci, ci.n, digits)
                text += "*" if r["significant"] and r["verdict"] == "beats" else ""
                cells.append(text + (" (trained)" if r["trained_given"] == k else ""))
            label = f"{ratio:g} ({share:.3f})" if math.isfinite(share) else f"{ratio:g}"
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        motion = {r["given"]: r["motion"] for r in g.to_dict("records")}
        out.append("| *motion baseline* | " + " | ".join(
            f"*{motion[k]:.{digits}f}*" if math.isfinite(motion.get(k, math.nan)) else MISSING for k in given) + " |")
        out.append("")
    return "\n".join(out)
