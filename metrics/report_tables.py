"""Report tables: each metric's mean over seeds with its interval, beside the baselines; paired differences.

The results table has one row per (task, variant), with its training cost (FLOPs and wall time per
run), then the task's baselines (fills of the generated region, scored on the same clips: black,
copy the nearest given frame, continue the motion) and references (the FVD between disjoint real
sets: a band over its draws). Cells read "mean [low, high]" for a confidence interval (Student t for
3-9 seeds, bootstrap from 10), "mean (zero variance)" when every seed agrees, "mean (min–max low–high)"
for 2 seeds and "mean (one seed)" for one; the caption names the interval. The paired table gives
variant − reference per metric, matched by seed, with Holm-adjusted significance. Seeds scored under
other evaluation settings than the rest of their variant are never averaged in (``keep_one_setting``).
Each table is written as Markdown, CSV and LaTeX (booktabs).
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metrics import report_stats
from metrics.report_runs import is_copy_baseline

log = logging.getLogger("report")
METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "fvd": "FVD", "loss": "loss"}
MISSING = "—"  # a metric no run of this row produced
NOMINAL, MEASURED = "mask ratio (nominal)", "generated share (measured)"
COST_LABELS = ("train FLOPs / run", "train time / run")
REFERENCE_LABELS = {"fvd_real_vs_real": "real vs real (disjoint test sets)"}  # eval.json references, by name
BASELINE_ORDER = ("black", "nearest", "motion")  # the table's order; others follow by name


def reference_row(name: str, band: dict) -> tuple:
    """(label, metric, band) of a reference such as fvd_real_vs_real: its metric is the name's first word."""
    draws = band["draws"]
    label = f"reference: {REFERENCE_LABELS.get(name, name.replace('_', ' '))}, {draws} draw{'s' if draws > 1 else ''}"
    return label, name.split("_")[0], band


def baseline_label(name: str) -> str:
    if is_copy_baseline(name):
        return "copy nearest given frame"
    if name == "motion":
        return "motion (optical flow / blend)"
    return "black fill" if name.startswith("black") else name.replace("_", " ")


def baseline_order(names) -> list:
    return sorted(names, key=lambda n: (BASELINE_ORDER.index(n) if n in BASELINE_ORDER else len(BASELINE_ORDER), n))


# ---------------------------------------------------------------- numbers


def keep_one_setting(frame: pd.DataFrame) -> tuple:
    """(frame, notes): per (task, variant), only the runs scored under the most common evaluation settings (column
    ``settings``; ties: the setting of the lowest seed); each run left out is named in a note with the settings
    that differ. A frame without the column is returned whole."""
    if "settings" not in frame or frame["settings"].notna().sum() == 0:
        return frame, []
    drop, notes = [], []
    evaluated = frame[frame["task"].notna() & frame["settings"].notna()]
    for (task, variant), group in evaluated.groupby(["task", "variant"], sort=True):
        if group["settings"].nunique() < 2:
            continue
        counts = group.groupby("settings")["seed"].agg(["size", "min"]).sort_values(["size", "min"],
                                                                                    ascending=[False, True])
        kept = counts.index[0]
        for other in counts.index[1:]:
            gone = group[group["settings"] == other]
            a, b = json.loads(kept), json.loads(other)
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            notes.append(f"{task} · {variant}: seed(s) {sorted(int(x) for x in gone['seed'].dropna())} were scored "
                         f"under other evaluation settings ({', '.join(keys)}) than seed(s) "
                         f"{sorted(int(x) for x in group.loc[group['settings'] == kept, 'seed'].dropna())}; left out, "
                         "never averaged with them")
            drop += list(gone.index)
    return frame.drop(index=drop), notes


def aggregate(frame: pd.DataFrame, metrics: list, method: str = "BCa", n_boot: int = 2000, seed: int = 0,
              mask_columns: bool = False) -> pd.DataFrame:
    """One row per evaluated (task, variant): n_seeds, the training cost per run (train_flops, wall_time_s mean,
    min and max) and, per metric, mean, ci_low, ci_high, n and interval kind.

    Runs scored under other evaluation settings than the rest of their (task, variant) are left out
    (``keep_one_setting``, with a warning). With ``mask_columns``: the nominal masks.mask_ratio and the measured
    generated share (mean of gen_frac)."""
    columns = ["task", "variant", "n_seeds", "train_flops", "wall_time_s", "wall_time_min", "wall_time_max"]
    columns += ["mask_ratio", "gen_frac"] if mask_columns else []
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", f"{m}_n", f"{m}_interval"]
    frame, notes = keep_one_setting(frame)
    for note in notes:
        log.warning("%s", note)
    evaluated = frame[frame["task"].notna()] if "task" in frame else frame.iloc[:0]
    rows = []
    for (task, variant), group in evaluated.groupby(["task", "variant"], sort=True):
        row = {"task": task, "variant": variant, "n_seeds": len(group)}
        flops = report_stats.finite(group["train_flops"]) if "train_flops" in group else np.array([])
        wall = report_stats.finite(group["wall_time_s"]) if "wall_time_s" in group else np.array([])
        row["train_flops"] = float(flops.mean()) if flops.size else math.nan
        row.update({"wall_time_s": float(wall.mean()), "wall_time_min": float(wall.min()),
                    "wall_time_max": float(wall.max())} if wall.size else
                   {"wall_time_s": math.nan, "wall_time_min": math.nan, "wall_time_max": math.nan})
        if mask_columns:
            ratios = group["masks.mask_ratio"].dropna().unique() if "masks.mask_ratio" in group else []
            row["mask_ratio"] = ", ".join(str(r) for r in ratios) or "kinds' own"
            row["gen_frac"] = report_stats.seed_interval(group["gen_frac"].to_numpy(float)).mean
        for m in metrics:
            ci = report_stats.seed_interval(group[m].to_numpy(dtype=float), method, n_boot, seed)
            row.update({f"{m}_mean": ci.mean, f"{m}_ci_low": ci.low, f"{m}_ci_high": ci.high, f"{m}_n": ci.n,
                        f"{m}_interval": ci.kind})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def interval_of(row, m: str) -> report_stats.Interval:
    return report_stats.Interval(row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"], int(row[f"{m}_n"]),
                                 row[f"{m}_interval"])


def mark_best(agg: pd.DataFrame, metrics: list, directions: dict) -> pd.DataFrame:
    """Add <metric>_best: the best mean per task, by the metric's direction (ties all marked)."""
    agg = agg.copy()
    for m in metrics:
        best = np.zeros(len(agg), dtype=bool)
        if m in directions:
            for _, idx in agg.groupby("task").groups.items():
                means = agg.loc[idx, f"{m}_mean"].to_numpy(dtype=float)
                if np.isfinite(means).any():
                    target = np.nanmax(means) if directions[m] else np.nanmin(means)
                    best[agg.index.get_indexer(idx)] = np.isclose(means, target, rtol=1e-12, atol=0.0)
        agg[f"{m}_best"] = best
    return agg


def decimals(values) -> int:
    """Decimals that give about four significant digits for the column's largest magnitude."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size == 0:
        return 2
    return int(min(4, max(0, 3 - math.floor(math.log10(finite.max())))))


# ---------------------------------------------------------------- formatting


@dataclass(frozen=True)
class Table:
    """A formatted table: header as (label, direction or None) and rows of (text, is_best) cells."""

    header: list
    rows: list
    caption: str


def format_interval(ci: report_stats.Interval, n_row: int, digits: int) -> str:
    """'25.31 [24.90, 25.71]', '25.31 (zero variance)', '25.31 (min–max 25.00–25.60)', '25.31 (one seed)', or '—'
    when missing."""
    if ci.n == 0:
        return MISSING
    f = f"{{:.{digits}f}}"
    if ci.is_interval:
        text = f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]" + (" †" if ci.fell_back else "")
    elif ci.kind == report_stats.MIN_MAX:
        text = f"{f.format(ci.mean)} (min–max {f.format(ci.low)}–{f.format(ci.high)})"
    else:
        text = f"{f.format(ci.mean)} ({ci.kind})"
    return text if ci.n == n_row else f"{text} (n={ci.n})"


def format_flops(flops: float) -> str:
    """'3.1e15' (FLOPs, two significant digits) or 'not logged'."""
    return f"{flops:.1e}".replace("e+", "e") if math.isfinite(flops) else "not logged"


def format_duration(seconds: float, low: float = math.nan, high: float = math.nan) -> str:
    """'12.3 min (11.8–12.9)', '45 s', or 'not logged'."""
    if not math.isfinite(seconds):
        return "not logged"
    div, unit, digits = (60.0, "min", 1) if seconds >= 120 else (1.0, "s", 0)
    text = f"{seconds / div:.{digits}f} {unit}"
    if math.isfinite(low) and math.isfinite(high) and high > low:
        text += f" ({low / div:.{digits}f}–{high / div:.{digits}f})"
    return text


def format_band(band: dict, digits: int) -> str:
    """'104.7 (range 98.1–110.2)' over several draws, '104.7 (one draw)' for one."""
    f = f"{{:.{digits}f}}"
    if band["draws"] > 1:
        return f"{f.format(band['mean'])} (range {f.format(band['min'])}–{f.format(band['max'])})"
    return f"{f.format(band['mean'])} (one draw)"


def band_position(value: float, band: dict) -> str:
    """'below', 'inside' or 'above' the band [min, max]."""
    return "below" if value < band["min"] else "above" if value > band["max"] else "inside"


def fvd_band_sentence(agg: pd.DataFrame, references: dict) -> str:
    """Per task: the real-vs-real FVD band and, for each variant's mean FVD, whether it lies outside it."""
    if "fvd_mean" not in agg:
        return ""
    parts = []
    for task, group in agg.groupby("task", sort=True):
        b = references.get(task, {}).get("fvd_real_vs_real")
        scored = [(r["variant"], r["fvd_mean"]) for _, r in group.iterrows() if math.isfinite(r["fvd_mean"])]
        if not scored:
            continue
        if b is None:
            parts.append(f"{task}: no real-vs-real FVD recorded")
            continue
        if b["draws"] < 2:
            parts.append(f"{task}: one real-vs-real draw ({b['mean']:.1f}), no band to place the models in")
            continue
        where = "; ".join(f"{v} {fvd:.1f} " + (band_position(fvd, b) if band_position(fvd, b) == "inside"
                                                else f"{band_position(fvd, b)} (outside)") for v, fvd in scored)
        parts.append(f"{task}: band {b['min']:.1f}–{b['max']:.1f} over {b['draws']} draws; {where}")
    if not parts:
        return ""
    return ("FVD against the real-vs-real band (the range of the FVD between disjoint real sets of the same N, over "
            "its draws; a model's mean FVD inside the band can't be told from sampling noise in the reference): "
            + "; ".join(parts) + ".")


def format_table(agg: pd.DataFrame, metrics: list, directions: dict, caption: str, baselines: dict | None = None,
                 references: dict | None = None) -> Table:
    """Task, Variant, n, [nominal and measured mask share], one column per metric, then the training cost per run;
    the task's baselines (``{task: {name: {metric: value}}}``) and references (``{task: {name: band}}``) under its
    variants."""
    baselines, references = baselines or {}, references or {}
    mask = "gen_frac" in agg
    header = [("Task", None), ("Variant", None), ("n", None)] + ([(NOMINAL, None), (MEASURED, None)] if mask else [])
    header += [(METRIC_LABELS.get(m, m), directions.get(m)) for m in metrics]
    header += [(label, None) for label in COST_LABELS]
    digits = {m: decimals(list(agg[f"{m}_mean"]) + [b.get(m, math.nan) for t in baselines.values()
                                                    for b in t.values()]) for m in metrics}
    blank = [("", False)] * (2 if mask else 0)
    rows = []
    for task, group in agg.groupby("task", sort=True):
        for _, r in group.iterrows():
            cells = [(str(task), False), (str(r["variant"]), False), (str(int(r["n_seeds"])), False)]
            if mask:
                measured = "not logged" if math.isnan(r["gen_frac"]) else f"{r['gen_frac']:.3f}"
                cells += [(str(r["mask_ratio"]), False), (measured, False)]
            cells += [(format_interval(interval_of(r, m), int(r["n_seeds"]), digits[m]), bool(r.get(f"{m}_best")))
                      for m in metrics]
            cells += [(format_flops(r["train_flops"]), False),
                      (format_duration(r["wall_time_s"], r["wall_time_min"], r["wall_time_max"]), False)]
            rows.append(cells)
        task_baselines = baselines.get(task, {})
        for name in baseline_order(task_baselines):
            scores = task_baselines[name]
            cells = [(str(task), False), (f"baseline: {baseline_label(name)}", False), ("", False)] + blank
            cells += [(f"{scores[m]:.{digits[m]}f}" if math.isfinite(scores.get(m, math.nan)) else MISSING, False)
                      for m in metrics]
            rows.append(cells + [("", False)] * len(COST_LABELS))
        for name, b in sorted(references.get(task, {}).items()):
            label, metric, b = reference_row(name, b)
            cells = [(str(task), False), (label, False), ("", False)] + blank
            cells += [(format_band(b, digits[m]) if m == metric else MISSING, False) for m in metrics]
            rows.append(cells + [("", False)] * len(COST_LABELS))
    return Table(header, rows, caption)


def signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_difference(row: dict, higher_is_better: bool | None, digits: int) -> str:
    """'+0.52 [+0.31, +0.70] Holm p = 0.012, significant, better', '−0.10 [−0.40, +0.20] Holm p = 0.800, not
    significant', '+0.00 (zero variance: no test) not significant', ..."""
    if row["n_pairs"] == 0:
        return MISSING
    head = signed(row["diff_mean"], digits)
    if row["interval"] == report_stats.NONE:
        return f"{head} ({row['n_pairs']} pair{'s' if row['n_pairs'] > 1 else ''}: no test) not significant"
    if row["interval"] == report_stats.ZERO_VARIANCE:
        return f"{head} (zero variance: no test) not significant"
    head += f" [{signed(row['diff_low'], digits)}, {signed(row['diff_high'], digits)}] Holm {format_p(row['p_holm'])}"
    if not row["significant"]:
        return f"{head}, not significant"
    if higher_is_better is None:
        return f"{head}, significant"
    good = report_stats.better(row["diff_mean"], 0.0, higher_is_better)
    return f"{head}, significant, {'better' if good else 'worse'}"


def paired_table(rows: list, metrics: list, directions: dict, caption: str) -> Table | None:
    """One row per (task, variant vs its reference), one column per metric; None when nothing is paired."""
    if not rows:
        return None
    digits = {m: decimals([abs(r["diff_mean"]) for r in rows if r["metric"] == m]) for m in metrics}
    cells = {}
    for r in rows:
        key = (r["task"], f"{r['variant']} − {r['reference']}")
        cells.setdefault(key, {})[r["metric"]] = r
    out = []
    for (task, label), by_metric in sorted(cells.items()):
        pairs = max(r["n_pairs"] for r in by_metric.values())
        out.append([(task, False), (label, False), (str(pairs), False)] + [
            (format_difference(by_metric[m], directions.get(m), digits[m]) if m in by_metric else MISSING, False)
            for m in metrics])
    header = [("Task", None), ("Variant − reference", None), ("seeds paired", None)]
    return Table(header + [(METRIC_LABELS.get(m, m), directions.get(m)) for m in metrics], out, caption)


# ---------------------------------------------------------------- plain words against the baselines


def short(m: str) -> str:
    """A metric's name without its unit: 'PSNR', 'SSIM', 'FVD'."""
    return METRIC_LABELS.get(m, m).split(" (")[0]


def baseline_verdicts(agg: pd.DataFrame, tests: list, metrics: list, baselines: dict, references: dict) -> list:
    """One sentence per (task, variant): which baselines it does not beat, is unclear against, and beats, in which
    metric (``tests``: report_stats.baseline_tests rows), the metrics a baseline has no value for, and its FVD beside
    the FVD references. 'Beats' needs a better mean and a Holm-adjusted p < 0.05 (one-sample t-test over >= 3 seeds);
    a better mean alone is 'unclear'."""
    by_row = {}
    for t in tests:
        by_row.setdefault((t["task"], t["variant"]), []).append(t)
    lines = []
    for _, r in agg.iterrows():
        task, found = r["task"], {}  # verdict -> baseline -> ["PSNR 17.00 vs 18.50", ...]
        for t in by_row.get((task, r["variant"]), []):
            if t["verdict"] == "n/a":
                continue
            d = decimals([t["mean"], t["baseline_value"]])
            found.setdefault(t["verdict"], {}).setdefault(baseline_label(t["baseline"]), []).append(
                f"{short(t['metric'])} {t['mean']:.{d}f} vs {t['baseline_value']:.{d}f}"
                + (f", Holm p = {t['p_holm']:.3f}" if math.isfinite(t["p_holm"]) and t["verdict"] != "does not beat"
                   else ", zero variance: no test" if t["interval"] == report_stats.ZERO_VARIANCE else ""))
        said = []
        caveat = " (a better mean, but not significant after Holm, fewer than 3 seeds or zero variance)"
        for verdict, words in (("does not beat", "does NOT beat"), ("unclear", "is unclear against"),
                               ("beats", "beats")):
            if verdict in found:
                said.append(f"{words} " + " and ".join(f"{b} ({'; '.join(v)})" for b, v in found[verdict].items())
                            + (caveat if verdict == "unclear" else ""))
        scored = [m for m in metrics if math.isfinite(r.get(f"{m}_mean", math.nan))]
        lacking = [f"{baseline_label(name)} has no {short(m)}" for name, scores in
                   sorted(baselines.get(task, {}).items()) for m in scored
                   if not math.isfinite(report_stats.number(scores.get(m)))]
        if said and lacking:
            said.append("not compared: " + ", ".join(lacking))
        fvd = fvd_beside_references(r, baselines.get(task, {}), references.get(task, {}))
        if said or fvd:
            lines.append(f"{task} · {r['variant']}: " + "; ".join(said) + (". " if said and fvd else "")
                         + "".join(fvd) + ".")
    return lines


def verdict_caption(count: int) -> str:
    return report_stats.test_caption(count, "two-sided one-sample Student t-test of the seeds' scores against the "
                                            "baseline's score on the same clips (scipy.stats.ttest_1samp)")


def fvd_beside_references(row, baselines: dict, references: dict) -> list:
    """['FVD 120 [110, 130]; real vs real 31 (range 28–35, 5 draws); copy nearest given frame 150'] or []."""
    if "fvd_mean" not in row or not math.isfinite(row["fvd_mean"]):
        return []
    ci = interval_of(row, "fvd")
    text = f"FVD {format_interval(ci, ci.n, 1)}"
    b = references.get("fvd_real_vs_real")
    text += f"; real vs real {format_band(b, 1)}" if b else "; no real-vs-real reference recorded"
    copy = [s["fvd"] for n, s in baselines.items() if is_copy_baseline(n) and math.isfinite(s.get("fvd", math.nan))]
    text += f"; copy nearest given frame {copy[0]:.1f}" if copy else "; no copy-baseline FVD recorded"
    return [text]


# ---------------------------------------------------------------- files


def arrow(direction, up: str, down: str) -> str:
    return "" if direction is None else f" {up if direction else down}"


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table; the best value per column in bold."""
    head = [label + arrow(d, "↑", "↓") for label, d in table.header]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for row in table.rows:
        cells = [f"**{t}**" if best else t for t, best in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["(no evaluated runs yet)"] + [""] * (len(head) - 1)) + " |")
    return f"{table.caption}\n\n" + "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)
    return (out.replace("±", r"$\pm$").replace(MISSING, "--").replace("−", "$-$").replace("–", "--")
            .replace("†", r"\dag{}").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")
            .replace("·", r"$\cdot$"))


def to_latex(table: Table, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the best value per column in bold."""
    head = [latex_escape(lab) + arrow(d, r"$\uparrow$", r"$\downarrow$") for lab, d in table.header]
    lines = [
        r"% Needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        lines.append(" & ".join(rf"\textbf{{{latex_escape(t)}}}" if best else latex_escape(t) for t, best in row)
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, data: pd.DataFrame, out_dir: Path, stem: str, label: str) -> dict:
    """Write <stem>.md, <stem>.csv (the exact numbers in ``data``) and <stem>.tex in out_dir; return the paths."""
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "tex": out_dir / f"{stem}.tex"}
    paths["md"].write_text(to_markdown(table))
    data.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(to_latex(table, label))
    return paths
