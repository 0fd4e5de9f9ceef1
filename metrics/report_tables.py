"""Report tables: each metric's mean over seeds with its interval, beside the trivial baselines; paired differences.

The results table has one row per (task, variant), then the task's baselines (trivial fills of the
generated region, scored on the same clips) and references (the FVD between two disjoint real sets).
Cells read "mean [low, high]" for a bootstrap interval (>= 3 seeds), "mean (min–max low–high)" for
fewer seeds and "mean (one seed)" for one; the caption names the method. The paired table gives
variant − reference per metric, matched by seed. Each is written as Markdown, CSV and LaTeX (booktabs).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metrics import report_stats
from metrics.report_runs import is_copy_baseline

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "fvd": "FVD", "loss": "loss"}
MISSING = "—"  # a metric no run of this row produced
NOMINAL, MEASURED = "mask ratio (nominal)", "generated share (measured)"
REFERENCE_LABELS = {"fvd_real_vs_real": "real vs real (disjoint test sets)"}  # eval.json references, by name


def reference_row(name: str, value: float) -> tuple:
    """(label, {metric: value}) of a reference such as fvd_real_vs_real: its metric is the name's first word."""
    return f"reference: {REFERENCE_LABELS.get(name, name.replace('_', ' '))}", {name.split("_")[0]: value}


def baseline_label(name: str) -> str:
    if is_copy_baseline(name):
        return "copy nearest given frame"
    return "black fill" if name.startswith("black") else name.replace("_", " ")


# ---------------------------------------------------------------- numbers


def aggregate(frame: pd.DataFrame, metrics: list, method: str = "BCa", n_boot: int = 2000, seed: int = 0,
              mask_columns: bool = False) -> pd.DataFrame:
    """One row per evaluated (task, variant): n_seeds and, per metric, mean, ci_low, ci_high, n and interval kind.

    With ``mask_columns``: the nominal masks.mask_ratio and the measured generated share (mean of gen_frac)."""
    columns = ["task", "variant", "n_seeds"] + (["mask_ratio", "gen_frac"] if mask_columns else [])
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", f"{m}_n", f"{m}_interval"]
    evaluated = frame[frame["task"].notna()] if "task" in frame else frame.iloc[:0]
    rows = []
    for (task, variant), group in evaluated.groupby(["task", "variant"], sort=True):
        row = {"task": task, "variant": variant, "n_seeds": len(group)}
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
    """'25.31 [24.90, 25.71]', '25.31 (min–max 25.00–25.60)', '25.31 (one seed)', or '—' when missing."""
    if ci.n == 0:
        return MISSING
    f = f"{{:.{digits}f}}"
    if ci.is_bootstrap:
        text = f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]" + (" †" if ci.fell_back else "")
    elif ci.kind == "min-max":
        text = f"{f.format(ci.mean)} (min–max {f.format(ci.low)}–{f.format(ci.high)})"
    else:
        text = f"{f.format(ci.mean)} ({ci.kind})"
    return text if ci.n == n_row else f"{text} (n={ci.n})"


def format_table(agg: pd.DataFrame, metrics: list, directions: dict, caption: str, baselines: dict | None = None,
                 references: dict | None = None) -> Table:
    """Task, Variant, n, [nominal and measured mask share], then one column per metric; the task's baselines
    (``{task: {name: {metric: value}}}``) and references (``{task: {name: value}}``) under its variants."""
    baselines, references = baselines or {}, references or {}
    mask = "gen_frac" in agg
    header = [("Task", None), ("Variant", None), ("n", None)] + ([(NOMINAL, None), (MEASURED, None)] if mask else [])
    header += [(METRIC_LABELS.get(m, m), directions.get(m)) for m in metrics]
    digits = {m: decimals(list(agg[f"{m}_mean"]) + [b.get(m, math.nan) for t in baselines.values()
                                                    for b in t.values()]) for m in metrics}
    rows = []
    for task, group in agg.groupby("task", sort=True):
        for _, r in group.iterrows():
            cells = [(str(task), False), (str(r["variant"]), False), (str(int(r["n_seeds"])), False)]
            if mask:
                measured = "not logged" if math.isnan(r["gen_frac"]) else f"{r['gen_frac']:.3f}"
                cells += [(str(r["mask_ratio"]), False), (measured, False)]
            cells += [(format_interval(interval_of(r, m), int(r["n_seeds"]), digits[m]), bool(r.get(f"{m}_best")))
                      for m in metrics]
            rows.append(cells)
        extra = [(f"baseline: {baseline_label(name)}", scores)
                 for name, scores in sorted(baselines.get(task, {}).items())]
        extra += [reference_row(name, value) for name, value in sorted(references.get(task, {}).items())]
        for label, scores in extra:
            cells = [(str(task), False), (label, False), ("", False)] + [("", False)] * (2 if mask else 0)
            cells += [(f"{scores[m]:.{digits[m]}f}" if math.isfinite(scores.get(m, math.nan)) else MISSING, False)
                      for m in metrics]
            rows.append(cells)
    return Table(header, rows, caption)


def signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def format_difference(row: dict, higher_is_better: bool | None, digits: int) -> str:
    """'+0.52 [+0.31, +0.70] significant, better', '−0.10 [−0.40, +0.20] not significant', ..."""
    if row["n_pairs"] == 0:
        return MISSING
    head = signed(row["diff_mean"], digits)
    if row["interval"] == "none":
        return f"{head} ({row['n_pairs']} pair{'s' if row['n_pairs'] > 1 else ''}: no interval) not significant"
    head += f" [{signed(row['diff_low'], digits)}, {signed(row['diff_high'], digits)}]"
    if not row["significant"]:
        return f"{head} not significant"
    if higher_is_better is None:
        return f"{head} significant"
    good = report_stats.better(row["diff_mean"], 0.0, higher_is_better)
    return f"{head} significant, {'better' if good else 'worse'}"


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


def baseline_verdicts(agg: pd.DataFrame, metrics: list, directions: dict, baselines: dict, references: dict) -> list:
    """One sentence per (task, variant): which baselines it does not beat, is unclear against, and beats, in which
    metric, and its FVD beside both FVD references. 'Beats' needs the whole interval (>= 3 seeds) past the
    baseline; a better mean alone is 'unclear'."""
    lines = []
    for _, r in agg.iterrows():
        task, found = r["task"], {}  # verdict -> baseline -> ["PSNR 17.00 vs 18.50", ...]
        for name, scores in sorted(baselines.get(task, {}).items()):
            for m in metrics:
                if m not in directions or not math.isfinite(scores.get(m, math.nan)):
                    continue
                verdict = report_stats.against_baseline(interval_of(r, m), scores[m], directions[m])
                if verdict != "n/a":
                    d = decimals([r[f"{m}_mean"], scores[m]])
                    found.setdefault(verdict, {}).setdefault(baseline_label(name), []).append(
                        f"{short(m)} {r[f'{m}_mean']:.{d}f} vs {scores[m]:.{d}f}")
        said = []
        caveat = " (a better mean, but fewer than 3 seeds or an interval that reaches the baseline)"
        for verdict, words in (("does not beat", "does NOT beat"), ("unclear", "is unclear against"),
                               ("beats", "beats")):
            if verdict in found:
                said.append(f"{words} " + " and ".join(f"{b} ({', '.join(v)})" for b, v in found[verdict].items())
                            + (caveat if verdict == "unclear" else ""))
        fvd = fvd_beside_references(r, baselines.get(task, {}), references.get(task, {}))
        if said or fvd:
            lines.append(f"{task} · {r['variant']}: " + "; ".join(said) + (". " if said and fvd else "")
                         + "".join(fvd) + ".")
    return lines


def fvd_beside_references(row, baselines: dict, references: dict) -> list:
    """['FVD 120 [110, 130]; real vs real 31; copy nearest given frame 150'] or [] without an FVD."""
    if "fvd_mean" not in row or not math.isfinite(row["fvd_mean"]):
        return []
    ci = interval_of(row, "fvd")
    text = f"FVD {format_interval(ci, ci.n, 1)}"
    floor = references.get("fvd_real_vs_real", math.nan)
    text += f"; real vs real {floor:.1f}" if math.isfinite(floor) else "; no real-vs-real reference recorded"
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
            .replace("†", r"\dag{}").replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$"))


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
