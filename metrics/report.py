"""Turn the runs of a sweep into tables, plots, sample videos and a page: ``python metrics/report.py``.

Reads result files only (the run directory schema of ``vdt/layout.py``: config.json, run.json,
state.json, train_log.jsonl, eval.json, samples/<task>.npz);
it imports no model or training code. For each sweep under <results>/runs/ it writes to <out>/<sweep>/:

    runs.csv, runs.parquet     one row per run and evaluated task (missing metrics stay NaN)
    table.md/.csv/.tex         mean over seeds with its named 95% interval and the training cost, beside the baselines
    paired.md/.csv/.tex        paired differences between variants (matched by seed), Holm-adjusted paired t-tests
    baselines.csv              each variant against each baseline: one-sample t-tests, Holm-adjusted
    plots/*.png, *.pdf         loss and eval-during-training curves, the clean-frame diagnostic, training cost
    videos/*.gif               condition | ground truth | generated, per variant and task
    index.html, README.md      the page that ties them together (opens offline)

A partly done sweep is reported with warnings; no runs at all is an error.
"""

import argparse
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from metrics import (
    report_dynamics,
    report_masks,
    report_page,
    report_plots,
    report_runs,
    report_scaling,
    report_stats,
    report_tables,
    report_videos,
)
from metrics.report_runs import MAKE_RUNS, NoRunsError, find_runs, flatten, load_frame
from vdt import cli as vdt_cli
from vdt.errors import ConfigError
from vdt.layout import RunLayout

__all__ = ["NoRunsError", "build_report", "find_runs", "get_args_parser", "load_frame", "main"]
log = logging.getLogger("report")
STATES = ("done", "running", "failed", "pending")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- protocol, notes


LEGACY_TUNING = "test (legacy: the committed tiny profile's settings were chosen on test-split scores)"


def splits(runs: list, task_results: list) -> list:
    """[(key, value)]: the split the profile's settings were tuned on (run.json "tuned_on", else the legacy test
    split) and the split scored (the protocol's real clips)."""
    tuned = sorted({r.tuned_on for r in runs if r.tuned_on}) or [LEGACY_TUNING]
    scored = sorted({str((res.get("protocol") or {}).get("real_clips", {}).get("split", "not recorded"))
                     for res in task_results})
    return [("profile tuned on (split)", "; ".join(tuned)), ("split scored", "; ".join(scored) or "not recorded")]


def protocol_summary(runs: list) -> dict:
    """task -> [(key, value)]: the splits tuned on and scored, then the protocol with the weights and step; values
    that differ between runs are all listed."""
    records, results = {}, {}
    for r in runs:
        for task, res in ((r.eval or {}).get("tasks") or {}).items():
            flat = flatten(res.get("protocol") or {})
            flat.update({"weights": r.eval.get("weights"), "checkpoint step": r.eval.get("step")})
            records.setdefault(task, []).append(flat)
            results.setdefault(task, []).append(res)
    out = {}
    for task, recs in sorted(records.items()):
        items = splits(runs, results[task])
        for key in sorted({k for rec in recs for k in rec}):
            counts = Counter(str(rec.get(key)) for rec in recs)
            if len(counts) == 1:
                items.append((key, next(iter(counts))))
            elif len(counts) <= 4:
                items.append((key, "varies: " + "; ".join(f"{v} ({n} runs)" for v, n in counts.most_common())))
            else:
                items.append((key, f"varies: {len(counts)} values over {len(recs)} runs (see runs.csv)"))
        out[task] = items
    return out


def sweep_notes(runs: list, frame: pd.DataFrame, metrics: list) -> list:
    """Warnings for a partly done sweep: unfinished and failed runs, missing evaluations and metrics."""
    notes = []
    states = Counter(r.state for r in runs)
    for s in ("running", "pending", "failed"):
        if states[s]:
            notes.append(f"{states[s]} of {len(runs)} runs {s}")
    notes += [f"run {r.run_id} ({r.variant}, seed {r.seed}): eval.json not used, it is not current: {r.refused}; "
              f"re-evaluate with: python metrics/evaluate.py --run-dir {r.path}" for r in runs if r.refused]
    notes += [f"run {r.run_id} ({r.variant}, seed {r.seed}) is done but has no eval.json"
              for r in runs if r.state == "done" and not r.eval and not r.refused]
    evaluated = frame[frame["task"].notna()]
    for m in metrics:
        gone = int(evaluated[m].isna().sum())
        if gone:
            reasons = sorted({json.loads(x).get(m, "no reason given") for x in evaluated.loc[evaluated[m].isna(),
                                                                                                  "missing"]})
            notes.append(f"{m} missing in {gone} of {len(evaluated)} evaluations: {'; '.join(reasons)}")
    if any(v for p in evaluated["protocol"] for k, v in flatten(json.loads(p)).items() if k.endswith("uncalibrated")):
        notes.append("some metrics are marked uncalibrated in their protocol: not comparable with published numbers")
    return notes


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "x"


# ---------------------------------------------------------------- one sweep


def sweep_videos(runs: list, out_dir: Path) -> list:
    """One GIF per (variant, task), from the lowest seed that wrote samples/<task>.npz."""
    videos, done = [], set()
    for r in sorted(runs, key=lambda r: (r.state != "done", r.seed if r.seed is not None else -1)):
        for npz in sorted(RunLayout(r.path).samples.glob("*.npz")):
            if (r.variant, npz.stem) in done:
                continue
            done.add((r.variant, npz.stem))
            path = out_dir / f"{slug(r.variant)}__{slug(npz.stem)}.gif"
            try:
                info = report_videos.sample_gif(npz, path, title=f"{r.variant} · {npz.stem} · seed {r.seed}")
            except (ValueError, KeyError, OSError) as e:
                log.warning("no video from %s: %s", npz, e)
                continue
            videos.append(dict(info, variant=r.variant, task=npz.stem, seed=r.seed, run_id=r.run_id))
    return sorted(videos, key=lambda v: (v["variant"], v["task"]))


def sweep_plots(runs: list, variants: list, plot_dir: Path, baselines: dict) -> list:
    """(title, png, pdf) for every plot the runs have data for."""
    plots = []

    def add(title, paths):
        if paths:
            plots.append((title, *paths))

    for task, series in sorted(report_runs.x0_curves(runs).items()):
        lines = {f"baseline: {report_tables.baseline_label(name)}": scores.get("psnr", float("nan"))
                 for name, scores in baselines.get(task, {}).items()}
        add(f"Clean-frame estimate by noise level on {task}: PSNR of the model's one-step x0 estimate on the "
            "generated region, against t; where a line falls below a baseline, the model at that noise level is "
            "worse than that trivial fill",
            report_plots.plot_x0(series, lines, plot_dir / f"x0_psnr_{slug(task)}", task=task, variants=variants))
    plots += report_plots.training_plots(runs, variants, plot_dir)  # loss, eval during training, cost
    return plots


def results_caption(sweep: str, method: str, n_boot: int, seed: int, mask_columns: bool, fallback: bool,
                    fvd_band: str = "") -> str:
    """The results table's caption: what a cell is, which interval, what the extra rows are, the FVD band."""
    text = (f"Sweep {sweep}: mean over seeds (n = seeds). [low, high] = 95% confidence interval of the mean over "
            f"seeds: Student t (scipy.stats.ttest_1samp) for {report_stats.MIN_SEEDS}–"
            f"{report_stats.BOOTSTRAP_FROM - 1} seeds, {method} bootstrap (scipy.stats.bootstrap, {n_boot} resamples, "
            f"seed {seed}) from {report_stats.BOOTSTRAP_FROM}. 'Zero variance': every seed gave the same value (no "
            "interval). With fewer than 3 seeds the cell shows the min–max range over the seeds, which is not a "
            "confidence interval. Best mean per task in bold. Training cost per run: FLOPs (vdt.model.count_flops, "
            "forward + backward, summed over the steps) and wall time (mean, with min–max over seeds), from "
            "train_log.jsonl. Baseline rows: fills of the generated region (black; the nearest given frame; the "
            "given frames' motion continued), scored on the same clips (those of the split scored, as the protocol "
            "says); reference row: the FVD between disjoint real sets of the same N under the same protocol (mean "
            "and range over its draws): the floor of "
            "an unconditional model; a conditioned one shares its given frames with the reference clips and can "
            "score below it, as the copy baseline does.")
    if fallback:
        text += " Cells marked † use the percentile method: BCa is undefined for these seeds."
    if mask_columns:
        text += (" Mask ratio (nominal) is masks.mask_ratio; generated share (measured) is the mean share of "
                 "generated positions in the training batches (train_log.jsonl gen_frac), averaged over seeds.")
    return f"{text} {fvd_band}".strip()


def paired_caption(references: dict, method: str, count: int) -> str:
    refs = "; ".join(f"{task}: {ref} ({why})" for task, (ref, why) in sorted(references.items()))
    test = (f"two-sided paired Student t-test over seeds (scipy.stats.ttest_rel); [low, high] is its unadjusted 95% "
            f"interval of the mean difference ({method} bootstrap, paired, from {report_stats.BOOTSTRAP_FROM} pairs)")
    return (f"Paired differences, variant − reference (reference per task: {refs}). Unit: one training seed. Two "
            "variants' runs with the same seed score the same clips, so each shared seed gives one difference "
            "of their mean scores over those clips. For ↑ metrics a positive difference is better, for ↓ metrics a "
            f"negative one. {report_stats.test_caption(count, test)} {report_stats.SMALL_N_NOTE} paired.csv also "
            "gives, where the runs saved per-video scores, the interval over test clips (clip_*: unit one test clip, "
            "its scores averaged over the paired seeds): it covers the choice of test clips, not seed-to-seed "
            "variation, and decides nothing.")


def choose_references(agg: pd.DataFrame, metrics: list, dirs: dict, requested: str | None) -> dict:
    """task -> (reference variant, why): --reference when it ran on the task, else the best mean of the first metric."""
    key = next((m for m in metrics if m in dirs), None)
    out = {}
    for task, group in agg.groupby("task", sort=True):
        means = dict(zip(group["variant"], group[f"{key}_mean"] if key else [float("nan")] * len(group), strict=True))
        ref, why = report_stats.pick_reference(means, dirs.get(key), requested)
        out[task] = (ref, f"{why} {report_tables.METRIC_LABELS.get(key, key)}" if why == "best mean" else why)
    return out


def sweep_tables(sweep: str, runs: list, frame: pd.DataFrame, root: Path, opts: dict) -> dict:
    """Write table.* and paired.*; return the tables, verdicts, notes and files for the page."""
    metrics, dirs = report_runs.metric_names(runs), report_runs.directions(runs)
    method, n_boot, seed = opts["method"], opts["n_boot"], opts["seed"]
    mask_columns = any(f.startswith("masks.") for f in report_runs.varied_fields(runs))
    frame, notes = report_tables.keep_one_setting(frame)  # never average seeds scored under other settings
    agg = report_tables.aggregate(frame, metrics, method, n_boot, seed, mask_columns)
    agg = report_tables.mark_best(agg, metrics, dirs)
    fallback = any("undefined" in str(k) for m in metrics for k in agg[f"{m}_interval"])
    baselines, references = report_runs.baseline_values(runs), report_runs.reference_values(runs)
    caption = results_caption(sweep, method, n_boot, seed, mask_columns, fallback,
                              report_tables.fvd_band_sentence(agg, references))
    table = report_tables.format_table(agg, metrics, dirs, caption, baselines, references)
    files = report_tables.write_table(table, agg, root, "table", f"tab:{slug(sweep)}")
    files = {"table (Markdown)": files["md"], "table (CSV)": files["csv"], "table (LaTeX)": files["tex"]}
    refs = choose_references(agg, metrics, dirs, opts["reference"])
    rows, pair_notes = report_stats.paired_frame(frame, metrics, {t: r for t, (r, _) in refs.items()}, method,
                                                 n_boot, seed, report_runs.per_video_scores(runs))
    notes += pair_notes
    count = sum(np.isfinite(r["p"]) for r in rows)
    paired = report_tables.paired_table(rows, metrics, dirs, paired_caption(refs, method, count))
    if paired:
        pfiles = report_tables.write_table(paired, pd.DataFrame(rows), root, "paired", f"tab:{slug(sweep)}-paired")
        files.update({"paired (Markdown)": pfiles["md"], "paired (CSV)": pfiles["csv"],
                      "paired (LaTeX)": pfiles["tex"]})
    if opts["reference"] and any(r != opts["reference"] for r, _ in refs.values()):
        notes.append(f"--reference {opts['reference']} did not run on every task; there the best variant is used")
    tests = report_stats.baseline_tests(frame, metrics, dirs, baselines)
    if tests:
        pd.DataFrame(tests).to_csv(root / "baselines.csv", index=False)
        files["against baselines (CSV)"] = root / "baselines.csv"
    return {"table": table, "paired": paired, "files": files, "notes": notes, "baselines": baselines,
            "verdicts": report_tables.baseline_verdicts(agg, tests, metrics, baselines, references),
            "verdict_caption": report_tables.verdict_caption(sum(np.isfinite(t["p"]) for t in tests))}


def sweep_report(sweep: str, runs: list, results: Path, out: Path, opts: dict) -> Path:
    """Write the whole report of one sweep into <out>/<sweep>/; return index.html."""
    root = Path(out) / sweep
    (root / "plots").mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    for stale in [*(root / "plots").glob("*.png"), *(root / "plots").glob("*.pdf"), *(root / "videos").glob("*.gif"),
                  *root.glob("paired.*"), *root.glob("baselines.csv"), *root.glob("tasks.*"), *root.glob("grid.*")]:
        stale.unlink()  # a file of an earlier report that this one may not remake
    frame = report_runs.runs_frame(runs)
    tables = sweep_tables(sweep, runs, frame, root, opts)
    files = {**tables["files"], **report_runs.save_frame(frame, root)}
    variants = sorted({r.variant for r in runs})
    notes = sweep_notes(runs, frame, report_runs.metric_names(runs)) + tables["notes"]
    scaling = (report_scaling.scaling_section(sweep, runs, root) if report_scaling.applies(sweep)
               else {"plots": [], "files": {}, "notes": []})  # curves against FLOPs, frontier, power law
    files.update(scaling["files"])
    notes += scaling["notes"]
    masks = report_masks.write(sweep, runs, root)  # tasks: unified vs specialists; mask_grid: heatmaps
    files.update(masks["files"])
    notes += masks["notes"]
    dynamics = report_dynamics.sweep_dynamics(runs, root, opts)  # procedural data: the tracker vs the simulator
    files.update(dynamics["files"])
    for n in notes:
        log.warning("%s: %s", sweep, n)
    page = report_page.Page(
        sweep=sweep, states={s: sum(r.state == s for r in runs) for s in STATES if any(r.state == s for r in runs)},
        table=tables["table"], paired=tables["paired"], verdicts=tuple(tables["verdicts"]), files=files,
        verdict_caption=tables["verdict_caption"], dynamics=tuple(dynamics["tables"]),
        dynamics_verdicts=tuple(dynamics["verdicts"]), dynamics_caption=dynamics["verdict_caption"],
        plots=sweep_plots(runs, variants, root / "plots", tables["baselines"]) + scaling["plots"] + masks["plots"],
        videos=sweep_videos(runs, root / "videos"), protocol=protocol_summary(runs),
        failed=[dict(variant=r.variant, seed=r.seed, run_id=r.run_id, attempts=r.attempts, log=r.job_log,
                     error=r.error or "(no error recorded)") for r in runs if r.state == "failed"],
        unfinished=[dict(variant=r.variant, seed=r.seed, run_id=r.run_id, state=r.state, step=r.step)
                    for r in runs if r.state in ("running", "pending")],
        notes=notes, env=report_page.environment([e for r in runs for e in r.env], REPO))
    index, _ = report_page.write_page(page, root)
    return index


def build_report(results="results", sweeps=None, out=None, n_boot: int = 2000, seed: int = 0, method: str = "BCa",
                 reference: str | None = None) -> dict:
    """Report every sweep under <results>/runs/ (or the named ones) into <out>; return {sweep: index.html}."""
    if method not in report_stats.METHODS:
        raise ValueError(f"interval method must be one of {report_stats.METHODS}, got {method!r}")
    results = Path(results)
    out = Path(out) if out is not None else results
    opts = {"n_boot": n_boot, "seed": seed, "method": method, "reference": reference}
    return {s: sweep_report(s, runs, results, out, opts) for s, runs in find_runs(results, sweeps).items()}


def get_args_parser() -> argparse.ArgumentParser:
    parser = vdt_cli.parser(
        "python metrics/report.py",
        "Turn the runs of a sweep into tables (mean over seeds with a named 95% interval and the training cost, "
        "beside the baselines; paired differences between variants, Holm-adjusted), plots, sample videos and an "
        "offline HTML page, written to <out>/<sweep>/ (index.html, README.md, table.*, paired.*, baselines.csv, "
        "runs.csv/.parquet, plots/, videos/).",
        examples=["python metrics/report.py --sweep conditioning",
                  "python metrics/report.py --results /shared/vdt-runs --sweep depth --out /tmp/report"],
        notes=f"No runs yet? Make some with: {MAKE_RUNS}\nexit status: 0 done, 2 an input error (no runs under "
              "--results, an unknown --sweep, a bad option).")
    parser.add_argument("--results", default="results",
                        help="folder holding runs/<sweep>/<run_id>/ (default: results)")
    parser.add_argument("--sweep", nargs="+", action="extend", default=None, metavar="NAME",
                        help="sweeps to report (default: every sweep under <results>/runs/)")
    parser.add_argument("--out", default=None, help="where the <sweep>/ report folders go (default: --results)")
    parser.add_argument("--bootstrap", type=int, default=2000,
                        help="bootstrap resamples for the intervals of 10 seeds or more (default: 2000)")
    parser.add_argument("--ci-method", default="BCa", choices=report_stats.METHODS,
                        help="scipy.stats.bootstrap method of the 95%% intervals from 10 seeds (default: BCa; fewer "
                             "seeds get the Student t interval)")
    parser.add_argument("--reference", default=None, metavar="VARIANT",
                        help="the variant every other one is compared with, paired by seed (default: per task, the "
                             "variant with the best mean of the first metric, PSNR when there is one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, so tables are deterministic "
                                                            "(default: 0)")
    return parser


def main(argv=None) -> int:
    """``python metrics/report.py``; an input error prints its message and exits 2 (``vdt.cli.run``)."""
    return vdt_cli.run(write_reports, argv)


def write_reports(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap {args.bootstrap}: must be >= 1")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a file; give a folder for the <sweep>/ reports")
    pages = build_report(args.results, args.sweep, args.out, args.bootstrap, args.seed, args.ci_method,
                         args.reference)
    for sweep, index in pages.items():
        print(f"report for sweep {sweep!r}: {index} (and README.md, tables, plots, videos beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
