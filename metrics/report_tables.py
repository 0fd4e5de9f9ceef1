"""Report tables: each metric as mean ± 95% bootstrap CI over seeds, the best value marked.

One row per (task, variant). The same formatted table is written as Markdown, CSV and LaTeX
(booktabs). The interval is a percentile bootstrap of the mean over seeds, seeded, so the
same runs give the same table. One seed gives the mean and "n/a", never a made-up interval.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "fvd": "FVD", "loss": "loss"}
MISSING = "—"  # a metric no run of this row produced


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple:
    """Percentile bootstrap of the mean: (mean, low, high, n). NaNs are dropped; n < 2 has no interval."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)  # (n_boot,)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high), n


def aggregate(frame: pd.DataFrame, metrics: list, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per evaluated (task, variant): n_seeds and, per metric, mean, ci_low, ci_high and n."""
    columns = ["task", "variant", "n_seeds"]
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", f"{m}_n"]
    evaluated = frame[frame["task"].notna()] if "task" in frame else frame.iloc[:0]
    rows = []
    for (task, variant), group in evaluated.groupby(["task", "variant"], sort=True):
        row = {"task": task, "variant": variant, "n_seeds": len(group)}
        for m in metrics:
            mean, low, high, n = bootstrap_ci(group[m].to_numpy(dtype=float), n_boot, seed)
            row.update({f"{m}_mean": mean, f"{m}_ci_low": low, f"{m}_ci_high": high, f"{m}_n": n})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


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


@dataclass(frozen=True)
class Table:
    """A formatted table: header as (label, direction or None) and rows of (text, is_best) cells."""

    header: list
    rows: list
    caption: str


def format_cell(mean: float, low: float, high: float, n: int, n_row: int, digits: int) -> str:
    """'25.31 ± 0.40' (half-width of the CI), '25.31 ± n/a' for one seed, '—' when missing."""
    if n == 0:
        return MISSING
    half = "n/a" if n < 2 else f"{(high - low) / 2:.{digits}f}"
    text = f"{mean:.{digits}f} ± {half}"
    return text if n == n_row else f"{text} (n={n})"


def format_table(agg: pd.DataFrame, metrics: list, directions: dict, caption: str) -> Table:
    """The table every format renders: Task, Variant, n, then one column per metric."""
    header = [("Task", None), ("Variant", None), ("n", None)]
    header += [(METRIC_LABELS.get(m, m), directions.get(m)) for m in metrics]
    digits = {m: decimals(agg[f"{m}_mean"]) for m in metrics}
    rows = []
    for _, r in agg.iterrows():
        cells = [(str(r["task"]), False), (str(r["variant"]), False), (str(int(r["n_seeds"])), False)]
        for m in metrics:
            text = format_cell(r[f"{m}_mean"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], int(r[f"{m}_n"]),
                               int(r["n_seeds"]), digits[m])
            cells.append((text, bool(r.get(f"{m}_best", False))))
        rows.append(cells)
    return Table(header, rows, caption)


def baseline_table(evals: list) -> Table | None:
    """Trivial fills (metrics/baselines.py) per task, from eval.json contents: mean over the runs that scored them
    (runs that share data.seed score the same test clips, so they agree); None when no run has any."""
    values = {}  # (task, baseline) -> {metric: [values]}
    for ev in evals:
        for task, res in ((ev or {}).get("tasks") or {}).items():
            for name, scores in (res.get("baselines") or {}).items():
                for m, v in scores.items():
                    values.setdefault((task, name), {}).setdefault(m, []).append(v)
    if not values:
        return None
    metrics = [m for m in METRIC_LABELS if any(m in d for d in values.values())]
    digits = {m: decimals([np.mean(d[m]) for d in values.values() if m in d]) for m in metrics}
    rows = []
    for (task, name), d in sorted(values.items()):
        cells = [(task, False), (name.replace("_", " "), False), (str(max(map(len, d.values()))), False)]
        rows.append(cells + [(f"{np.mean(d[m]):.{digits[m]}f}" if m in d else MISSING, False) for m in metrics])
    caption = ("Trivial baselines on the same test clips and frame protocol: the generated region filled black, "
               "or copied from the nearest fully given frame; runs = evaluations averaged.")
    return Table([("Task", None), ("Baseline", None), ("runs", None)] + [(METRIC_LABELS[m], None) for m in metrics],
                 rows, caption)


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
    return out.replace("±", r"$\pm$").replace(MISSING, "--")


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


def write_tables(agg: pd.DataFrame, metrics: list, directions: dict, out_dir: Path, caption: str,
                 label: str) -> tuple:
    """Write table.md, table.csv and table.tex in out_dir; return (Table, {format: path})."""
    table = format_table(agg, metrics, directions, caption)
    paths = {"md": out_dir / "table.md", "csv": out_dir / "table.csv", "tex": out_dir / "table.tex"}
    paths["md"].write_text(to_markdown(table))
    agg.to_csv(paths["csv"], index=False)  # exact bounds, n per metric, and <metric>_best
    paths["tex"].write_text(to_latex(table, label))
    return table, paths
