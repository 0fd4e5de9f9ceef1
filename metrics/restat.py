"""Recompute a committed report's statistics from its runs.csv: ``python metrics/restat.py --sweep mask_ratio``.

For a sweep whose run directories are gone (results/runs/ is not committed) but whose report is:
results/<sweep>/runs.csv holds every run's per-seed scores, so the statistics can be redone under the
report's current rules (``metrics/report_stats.py``: Student t intervals over seeds, paired t-tests,
one-sample t-tests against the baselines, Holm over each table) without the runs. It rewrites

    table.md/.csv/.tex     mean over seeds with its interval, beside the baselines and references
    paired.md/.csv/.tex    paired differences variant − reference, Holm-adjusted
    baselines.csv          each variant against each baseline, Holm-adjusted
    README.md, index.html  their Results section only (tables, verdicts, paired comparisons, the rule)

and leaves runs.csv, the plots, the videos and the rest of the page as they are. What runs.csv lacks is
taken from the report being rewritten, and the tables' caption says so: the baselines' PSNR/SSIM rows of
table.md (as printed, about 4 significant digits), the FVD references from runs.csv's protocol column
(``fvd_references``: the copy baseline's and the real-vs-real FVD, at full precision), and the interval over
test clips (paired.csv's clip_* columns, which need per-video scores). Rerunning it on its own output gives
the same files.
"""

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import pandas as pd

from metrics import report, report_page, report_runs, report_stats, report_tables
from vdt import cli as vdt_cli
from vdt.errors import InputError, PathError

log = logging.getLogger("report")
CLIP_COLUMNS = ("clip_n", "clip_low", "clip_high", "clip_interval")
REFERENCE_NAMES = {"real_vs_real": "fvd_real_vs_real"}  # protocol fvd_references -> eval.json references
LABELS = {report_tables.baseline_label(n): n for n in report_tables.BASELINE_ORDER}  # table.md row -> baseline


def command(sweep: str, results: Path) -> str:
    extra = "" if Path(results) == Path("results") else f" --results {results}"
    return f"python metrics/restat.py --sweep {sweep}{extra}"


def note(sweep: str, results: Path) -> str:
    """The sentence that opens each rewritten caption: how and from what these numbers were made."""
    return (f"Recomputed by `{command(sweep, results)}` from the committed runs.csv (the run directories are not "
            "kept) under the Holm-corrected t rules below; baseline PSNR/SSIM as printed in the earlier table.md, FVD "
            f"references from runs.csv's protocol. These runs' profile was tuned on: {report.LEGACY_TUNING}.")


# ---------------------------------------------------------------- reading the committed report


def read_frame(root: Path) -> pd.DataFrame:
    """runs.csv: one row per run and task, as metrics/report.py wrote it."""
    path = root / "runs.csv"
    if not path.is_file():
        raise PathError(f"{path}: no runs.csv; restat recomputes a committed report's statistics from it")
    frame = pd.read_csv(path)
    missing = sorted({"task", "variant", "seed", "clips"} - set(frame.columns))
    if missing:
        raise InputError(f"{path}: lacks the columns {missing} the statistics need")
    return frame


def table_rows(path: Path) -> list:
    """Each Markdown table row of path as a list of cells (the header row included)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def first_number(cell: str) -> float:
    """'14.85' -> 14.85; '104.7 (one draw)' -> 104.7; '—' or '' -> NaN."""
    word = cell.split(" ")[0].replace("−", "-") if cell else ""
    try:
        return float(word)
    except ValueError:
        return math.nan


def baseline_rows(root: Path, metrics: list) -> dict:
    """{task: {baseline: {metric: value}}} from table.md's "baseline: ..." rows (every metric they print)."""
    rows = table_rows(root / "table.md")
    if not rows:
        return {}
    header = [c.split(" ")[0].lower() for c in rows[0]]
    out = {}
    for cells in rows[1:]:
        if len(cells) != len(header) or not cells[1].startswith("baseline: "):
            continue
        label = cells[1][len("baseline: "):]
        name = LABELS.get(label, label.replace(" ", "_"))
        values = {m: first_number(cells[header.index(m)]) for m in metrics if m in header}
        out.setdefault(cells[0], {})[name] = {m: v for m, v in values.items() if math.isfinite(v)}
    return out


def fvd_references(frame: pd.DataFrame) -> tuple:
    """({task: {baseline: fvd}}, {task: {reference: band}}) from the protocol column's fvd_references."""
    fills, refs = {}, {}
    for task, text in zip(frame["task"], frame.get("protocol", pd.Series(dtype=object)), strict=False):
        if not isinstance(task, str) or not isinstance(text, str):
            continue
        for name, rec in (json.loads(text).get("fvd_references") or {}).items():
            value = report_stats.number((rec or {}).get("fvd"))
            if not math.isfinite(value):
                continue
            if name in REFERENCE_NAMES:
                refs.setdefault(task, {}).setdefault(REFERENCE_NAMES[name], []).append(value)
            else:
                fills.setdefault(task, {}).setdefault(report_runs.baseline_name(name), []).append(value)
    bands = {t: {k: {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "draws": 1} for k, v in d.items()}
             for t, d in refs.items()}
    return {t: {k: sum(v) / len(v) for k, v in d.items()} for t, d in fills.items()}, bands


def clip_intervals(root: Path) -> dict:
    """(task, variant, metric) -> the clip_* columns of the earlier paired.csv (they need per-video scores)."""
    path = root / "paired.csv"
    if not path.is_file():
        return {}
    old = pd.read_csv(path)
    if not set(CLIP_COLUMNS) <= set(old.columns):
        return {}
    return {(r.task, r.variant, r.metric): {c: getattr(r, c) for c in CLIP_COLUMNS} for r in old.itertuples()}


# ---------------------------------------------------------------- rewriting it


def splice(old: str, new: str, start: str, new_end: str) -> str:
    """old with its section from ``start`` to the next heading of that level replaced by new's section from
    ``start`` up to ``new_end``."""
    level = start[:start.index(">") + 1] if start.startswith("<") else start.split(" ")[0] + " "
    if start not in old or start not in new:
        raise InputError(f"no {start!r} section to rewrite")
    a = old.index(start)
    b = old.find("\n" + level, a + len(start))
    section = new[new.index(start):new.index(new_end)].rstrip("\n") + ("\n\n" if level.startswith("#") else "\n")
    return old[:a] + section + (old[b + 1:] if b >= 0 else "")


def restat(sweep: str, results="results", method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> dict:
    """Rewrite results/<sweep>/'s tables, verdicts and Results section from its runs.csv; return the files."""
    root = Path(results) / sweep
    frame = read_frame(root)
    dirs = dict(report_runs.DEFAULT_DIRECTIONS)
    metrics = [m for m in dirs if m in frame.columns]
    evaluated = frame[frame["task"].notna()].copy()
    evaluated["seed"] = evaluated["seed"].astype(int)
    baselines = baseline_rows(root, metrics)
    fvd_fills, references = fvd_references(evaluated)
    for task, fills in fvd_fills.items():
        for name, value in fills.items():
            baselines.setdefault(task, {}).setdefault(name, {})["fvd"] = value
    mask_columns = any(c.startswith("masks.") for c in frame.columns)
    agg = report_tables.aggregate(evaluated, metrics, method, n_boot, seed, mask_columns)
    agg = report_tables.mark_best(agg, metrics, dirs)
    fallback = any("undefined" in str(k) for m in metrics for k in agg[f"{m}_interval"])
    head = note(sweep, results)
    caption = report.results_caption(sweep, method, n_boot, seed, mask_columns, fallback,
                                     report_tables.fvd_band_sentence(agg, references))
    table = report_tables.format_table(agg, metrics, dirs, f"{head} {caption}", baselines, references)
    written = report_tables.write_table(table, agg, root, "table", f"tab:{report.slug(sweep)}")
    files = {"table (Markdown)": written["md"], "table (CSV)": written["csv"], "table (LaTeX)": written["tex"]}
    refs = report.choose_references(agg, metrics, dirs, None)
    rows, notes = report_stats.paired_frame(evaluated, metrics, {t: r for t, (r, _) in refs.items()}, method, n_boot,
                                            seed)
    clips = clip_intervals(root)
    for r in rows:
        r.update(clips.get((r["task"], r["variant"], r["metric"]), {}))
    count = sum(math.isfinite(r["p"]) for r in rows)
    paired = report_tables.paired_table(rows, metrics, dirs, f"{head} {report.paired_caption(refs, method, count)}")
    if paired:
        written = report_tables.write_table(paired, pd.DataFrame(rows), root, "paired",
                                            f"tab:{report.slug(sweep)}-paired")
        files.update({"paired (Markdown)": written["md"], "paired (CSV)": written["csv"],
                      "paired (LaTeX)": written["tex"]})
    tests = report_stats.baseline_tests(evaluated, metrics, dirs, baselines)
    if tests:
        pd.DataFrame(tests).to_csv(root / "baselines.csv", index=False)
        files["against baselines (CSV)"] = root / "baselines.csv"
    files.update({label: root / name for label, name in (("runs (CSV)", "runs.csv"), ("runs (parquet)",
                                                                                      "runs.parquet"))
                  if (root / name).is_file()})
    states = frame.drop_duplicates("run_id")["state"].value_counts().to_dict() if "run_id" in frame else {}
    page = report_page.Page(
        sweep=sweep, states={s: states[s] for s in report.STATES if s in states}, table=table, files=files,
        plots=[], videos=[], protocol={}, failed=[], unfinished=[], notes=[], env={}, paired=paired,
        verdicts=tuple(report_tables.baseline_verdicts(agg, tests, metrics, baselines, references)),
        verdict_caption=report_tables.verdict_caption(sum(math.isfinite(t["p"]) for t in tests)))
    for name, start, end, render in (("README.md", "## Results", "## Protocol", report_page.render_readme),
                                     ("index.html", "<h2>Results</h2>", "<h2>Protocol</h2>",
                                      report_page.render_html)):
        path = root / name
        if path.is_file():
            path.write_text(splice(path.read_text(), render(page, root), start, end))
            files[name] = path
    for n in notes:
        log.warning("%s: %s", sweep, n)
    return files


# ---------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    parser = vdt_cli.parser(
        "python metrics/restat.py",
        "Recompute a committed report's statistics from its runs.csv, under the report's current rules (Student t "
        "intervals over seeds, paired t-tests, one-sample t-tests against the baselines, Holm over each table): "
        "rewrites results/<sweep>/table.*, paired.*, baselines.csv and the Results section of README.md and "
        "index.html. For reports whose run directories are gone; with the runs, use metrics/report.py.",
        examples=["python metrics/restat.py --sweep mask_ratio", "python metrics/restat.py --sweep prediction depth"],
        notes="exit status: 0 done, 2 an input error (no runs.csv for a sweep, a bad option).")
    parser.add_argument("--sweep", nargs="+", action="extend", required=True, metavar="NAME",
                        help="sweeps whose report (results/<sweep>/) to recompute")
    parser.add_argument("--results", default="results", help="folder holding the <sweep>/ reports (default: results)")
    parser.add_argument("--bootstrap", type=int, default=2000,
                        help="bootstrap resamples for intervals of 10 seeds or more (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    return parser


def main(argv=None) -> int:
    """``python metrics/restat.py``; an input error prints its message and exits 2 (``vdt.cli.run``)."""
    return vdt_cli.run(rewrite, argv)


def rewrite(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for sweep in args.sweep:
        files = restat(sweep, args.results, "BCa", args.bootstrap, args.seed)
        print(f"{sweep}: rewrote {', '.join(sorted({p.name for p in files.values()} - {'runs.csv', 'runs.parquet'}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
