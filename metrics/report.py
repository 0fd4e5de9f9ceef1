"""Turn the runs of a sweep into tables, plots, sample videos and a page: ``python metrics/report.py``.

Reads result files only (the run directory schema: config.json, run.json, state.json,
train_log.jsonl, eval.json, samples/<task>.npz, and results/bench/<machine>/*.json); it imports
no model or training code. For each sweep under <results>/runs/ it writes to <out>/<sweep>/:

    runs.csv, runs.parquet     one row per run and evaluated task (missing metrics stay NaN)
    table.md/.csv/.tex         mean ± 95% bootstrap CI over seeds, best value marked
    plots/*.png, *.pdf         convergence curves, eval curves, step cost
    videos/*.gif               condition | ground truth | generated, per variant and task
    index.html, README.md      the page that ties them together (opens offline)

A partly done sweep is reported with warnings; no runs at all is an error.
"""

import argparse
import json
import logging
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metrics import report_page, report_plots, report_tables, report_videos
from vdt import cli as vdt_cli
from vdt.errors import ConfigError, InputError

log = logging.getLogger("report")
STATES = ("done", "running", "failed", "pending")
DEFAULT_DIRECTIONS = {"psnr": True, "ssim": True, "lpips": False, "fvd": False}  # higher is better?
MAKE_RUNS = "python ablations/run.py --sweep conditioning"
REPO = Path(__file__).resolve().parents[1]


class NoRunsError(InputError):
    """There is nothing to report under the --results folder given (or no sweep of the name given)."""


@dataclass(frozen=True)
class Run:
    """One run directory, as its files describe it."""

    path: Path
    sweep: str
    run_id: str
    variant: str
    seed: int | None
    state: str
    step: int | None
    error: str | None
    attempts: int | None
    job_log: str | None
    overrides: dict
    config: dict  # flattened to dotted keys
    log: list  # train_log.jsonl records
    eval: dict | None
    env: list  # "env" dicts recorded in run.json / eval.json


# ---------------------------------------------------------------- reading runs


def read_json(path: Path) -> dict | None:
    """The file's JSON object, None when absent; a corrupt file is logged and read as absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("unreadable %s: %s", path, e)
        return None


def read_jsonl(path: Path) -> list:
    """JSON lines; a torn last line (a run still writing) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def flatten(d: dict, prefix: str = "") -> dict:
    """{'model': {'depth': 2}} -> {'model.depth': 2}; lists become JSON text so values stay hashable."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else v
    return out


def load_run(path: Path, sweep: str) -> Run:
    """Read one run directory; what a run has not written yet is absent, never invented."""
    info = read_json(path / "run.json") or {}
    state = read_json(path / "state.json") or {}
    config = flatten(read_json(path / "config.json") or {})
    train_log = read_jsonl(path / "train_log.jsonl")
    ev = read_json(path / "eval.json")
    status = state.get("state") or ("done" if ev else "running" if train_log else "pending")
    steps = [r["step"] for r in train_log if "step" in r]
    seed = info.get("seed", config.get("train.seed"))
    env = [d["env"] for d in (info, ev or {}) if isinstance(d.get("env"), dict)]
    return Run(path=path, sweep=info.get("sweep", sweep), run_id=info.get("run_id", path.name),
               variant=str(info.get("variant", path.name)), seed=None if seed is None else int(seed),
               state=status, step=state.get("step", steps[-1] if steps else None), error=state.get("error"),
               attempts=state.get("attempts"), job_log=state.get("log"), overrides=info.get("overrides") or {},
               config=config, log=train_log, eval=ev, env=env)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("run.json", "config.json", "state.json"))


def find_runs(results: Path, sweeps=None) -> dict:
    """{sweep: [Run]} for every run directory under <results>/runs/ (or only the named sweeps).

    ``results`` may also be the runs directory itself, as the launcher's ``--results`` names it."""
    root = Path(results) / "runs"
    if not root.is_dir() and Path(results).is_dir() and any(
            is_run_dir(r) for s in Path(results).iterdir() if s.is_dir() for r in s.iterdir()):
        root = Path(results)
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if sweeps:
        unknown = sorted(set(sweeps) - set(found))
        if unknown:
            raise NoRunsError(f"no sweep {unknown} under {root}/ (found: {found or 'none'}); "
                              f"make runs with: {MAKE_RUNS}")
        found = [s for s in found if s in sweeps]
    runs = {s: [load_run(p, s) for p in sorted((root / s).iterdir()) if is_run_dir(p)] for s in found}
    runs = {s: sorted(r, key=lambda r: (r.variant, r.seed if r.seed is not None else -1, r.run_id))
            for s, r in runs.items() if r}
    if not runs:
        raise NoRunsError(f"no runs under {root}/; make some with: {MAKE_RUNS}")
    return runs


# ---------------------------------------------------------------- the DataFrame


def varied_fields(runs: list) -> list:
    """Config fields that differ between the runs of a sweep, and every overridden field."""
    keys = sorted({k for r in runs for k in r.config})
    varied = [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]
    return sorted(set(varied) | {k for r in runs for k in r.overrides})


def metric_names(runs: list) -> list:
    """Metrics any evaluation reported, the known ones first."""
    names = {m for r in runs if r.eval for t in r.eval.get("tasks", {}).values() for m in t.get("metrics", {})}
    return [m for m in DEFAULT_DIRECTIONS if m in names] + sorted(names - set(DEFAULT_DIRECTIONS))


def directions(runs: list) -> dict:
    """metric -> higher is better, as eval.json declares it (known metrics have a default)."""
    out = dict(DEFAULT_DIRECTIONS)
    for r in runs:
        out.update((r.eval or {}).get("higher_is_better") or {})
    return out


def number(value) -> float:
    """A metric value as float; null (missing) stays NaN, never 0."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        log.warning("not a number: %r (read as missing)", value)
        return math.nan


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per run and evaluated task (a run without eval.json has one row, task NaN)."""
    fields, metrics = varied_fields(runs), metric_names(runs)
    rows = []
    for r in runs:
        losses = [x for x in r.log if "loss" in x]
        base = {"sweep": r.sweep, "variant": r.variant, "seed": r.seed, "run_id": r.run_id, "state": r.state,
                "step": r.step, "error": r.error}
        base.update({k: r.config.get(k, r.overrides.get(k)) for k in fields})
        base.update({"overrides": json.dumps(r.overrides, sort_keys=True),
                     "final_loss": number(losses[-1]["loss"]) if losses else math.nan,
                     "wall_time_s": number(losses[-1].get("wall_time")) if losses else math.nan})
        tasks = (r.eval or {}).get("tasks") or {None: {}}
        for task, result in tasks.items():
            row = dict(base, task=task, eval_step=(r.eval or {}).get("step"), weights=(r.eval or {}).get("weights"))
            row.update({m: number(result.get("metrics", {}).get(m)) for m in metrics})
            row["missing"] = json.dumps(result.get("missing") or {}, sort_keys=True) if task else None
            row["protocol"] = json.dumps(result.get("protocol") or {}, sort_keys=True) if task else None
            rows.append(row)
    return pd.DataFrame(rows)


def load_frame(results="results", sweeps=None) -> pd.DataFrame:
    """Every run of every sweep (or the named ones) as one DataFrame, for a notebook."""
    return pd.concat([runs_frame(runs) for runs in find_runs(Path(results), sweeps).values()], ignore_index=True)


def save_frame(frame: pd.DataFrame, out_dir: Path) -> dict:
    """runs.csv always; runs.parquet too (object columns of mixed types are stored as text)."""
    paths = {"runs (CSV)": out_dir / "runs.csv"}
    frame.to_csv(paths["runs (CSV)"], index=False)
    clean = frame.copy()
    for col in [c for c in clean.columns if pd.api.types.is_object_dtype(clean[c])]:
        kinds = {type(v) for v in clean[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1:
            clean[col] = [None if v is None else str(v) for v in clean[col]]
    try:
        clean.to_parquet(out_dir / "runs.parquet", index=False)
        paths["runs (parquet)"] = out_dir / "runs.parquet"
    except ImportError as e:
        log.warning("runs.parquet not written (%s); runs.csv has the same rows", e)
    return paths


# ---------------------------------------------------------------- protocol, notes


def protocol_summary(runs: list) -> dict:
    """task -> [(key, value)], with the weights and step; values that differ between runs are all listed."""
    records = {}
    for r in runs:
        for task, res in ((r.eval or {}).get("tasks") or {}).items():
            flat = flatten(res.get("protocol") or {})
            flat.update({"weights": r.eval.get("weights"), "checkpoint step": r.eval.get("step")})
            records.setdefault(task, []).append(flat)
    out = {}
    for task, recs in sorted(records.items()):
        items = []
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
    notes += [f"run {r.run_id} ({r.variant}, seed {r.seed}) is done but has no eval.json"
              for r in runs if r.state == "done" and not r.eval]
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
        for npz in sorted((r.path / "samples").glob("*.npz")):
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


def sweep_plots(runs: list, variants: list, plot_dir: Path, bench_dir: Path) -> list:
    """(title, png, pdf) for every plot the runs have data for."""
    plots = []

    def add(title, paths):
        if paths:
            plots.append((title, *paths))

    add("Training loss against step", report_plots.plot_bands(
        report_plots.loss_series(runs, "step"), plot_dir / "loss_step", xlabel="training step (optimizer updates)",
        ylabel="training loss (diffusion objective)", title="Training loss (line: mean, band: min-max over seeds)",
        variants=variants))
    wall = [rec["wall_time"] for r in runs for rec in r.log if rec.get("wall_time") is not None]
    div, unit = report_plots.time_unit(max(wall, default=0.0))
    add("Training loss against wall-clock time", report_plots.plot_bands(
        report_plots.loss_series(runs, "wall_time", div), plot_dir / "loss_time",
        xlabel=f"wall-clock training time ({unit})",
        ylabel="training loss (diffusion objective)", title="Training loss against time (band: min-max over seeds)",
        variants=variants))
    for (task, m), series in report_plots.eval_series(runs).items():
        label = report_tables.METRIC_LABELS.get(m, m)
        add(f"{label} on {task} during training", report_plots.plot_bands(
            series, plot_dir / f"eval_{slug(task)}_{slug(m)}", xlabel="training step (optimizer updates)",
            ylabel=f"{label}, {task}", title=f"{label} ({task}) during training", variants=variants))
    points = report_plots.read_bench(bench_dir)
    if not points:
        log.info("no benchmark results with a token count under %s: no cost plot", bench_dir)
    add("Step time against token count", report_plots.plot_cost(points, plot_dir / "cost"))
    return plots


def sweep_report(sweep: str, runs: list, results: Path, out: Path, n_boot: int, seed: int) -> Path:
    """Write the whole report of one sweep into <out>/<sweep>/; return index.html."""
    root = Path(out) / sweep
    (root / "plots").mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    for stale in [*(root / "plots").glob("*.png"), *(root / "plots").glob("*.pdf"), *(root / "videos").glob("*.gif")]:
        stale.unlink()  # a plot or video of an earlier report that this one may not remake
    frame, metrics, dirs = runs_frame(runs), metric_names(runs), directions(runs)
    files = save_frame(frame, root)
    agg = report_tables.mark_best(report_tables.aggregate(frame, metrics, n_boot, seed), metrics, dirs)
    caption = (f"Sweep {sweep}: mean ± half-width of the 95% percentile bootstrap CI over seeds "
               f"({n_boot} resamples, seed {seed}); n = seeds; best per task in bold; n/a = one seed.")
    table, table_files = report_tables.write_tables(agg, metrics, dirs, root, caption, f"tab:{slug(sweep)}")
    files = {"table (Markdown)": table_files["md"], "table (CSV)": table_files["csv"],
             "table (LaTeX)": table_files["tex"], **files}
    variants = sorted({r.variant for r in runs})
    notes = sweep_notes(runs, frame, metrics)
    for n in notes:
        log.warning("%s: %s", sweep, n)
    page = report_page.Page(
        sweep=sweep, states={s: sum(r.state == s for r in runs) for s in STATES if any(r.state == s for r in runs)},
        table=table, files=files, plots=sweep_plots(runs, variants, root / "plots", Path(results) / "bench"),
        videos=sweep_videos(runs, root / "videos"), protocol=protocol_summary(runs),
        failed=[dict(variant=r.variant, seed=r.seed, run_id=r.run_id, attempts=r.attempts, log=r.job_log,
                     error=r.error or "(no error recorded)") for r in runs if r.state == "failed"],
        unfinished=[dict(variant=r.variant, seed=r.seed, run_id=r.run_id, state=r.state, step=r.step)
                    for r in runs if r.state in ("running", "pending")],
        notes=notes, env=report_page.environment([e for r in runs for e in r.env], REPO),
        baselines=report_tables.baseline_table([r.eval for r in runs]))
    index, _ = report_page.write_page(page, root)
    return index


def build_report(results="results", sweeps=None, out=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Report every sweep under <results>/runs/ (or the named ones) into <out>; return {sweep: index.html}."""
    results = Path(results)
    out = Path(out) if out is not None else results
    return {s: sweep_report(s, runs, results, out, n_boot, seed) for s, runs in find_runs(results, sweeps).items()}


def get_args_parser() -> argparse.ArgumentParser:
    parser = vdt_cli.parser(
        "python metrics/report.py",
        "Turn the runs of a sweep into tables (mean ± 95% bootstrap CI over seeds), convergence plots, sample videos "
        "and an offline HTML page, written to <out>/<sweep>/ (index.html, README.md, table.md/.csv/.tex, "
        "runs.csv/.parquet, plots/, videos/).",
        examples=["python metrics/report.py --sweep conditioning",
                  "python metrics/report.py --results /shared/vdt-runs --sweep depth --out /tmp/report"],
        notes=f"No runs yet? Make some with: {MAKE_RUNS}\nexit status: 0 done, 2 an input error (no runs under "
              "--results, an unknown --sweep, a bad option).")
    parser.add_argument("--results", default="results",
                        help="folder holding runs/<sweep>/<run_id>/ and bench/<machine>/*.json (default: results)")
    parser.add_argument("--sweep", nargs="+", action="extend", default=None, metavar="NAME",
                        help="sweeps to report (default: every sweep under <results>/runs/)")
    parser.add_argument("--out", default=None, help="where the <sweep>/ report folders go (default: --results)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CI (default: 2000)")
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
    pages = build_report(args.results, args.sweep, args.out, args.bootstrap, args.seed)
    for sweep, index in pages.items():
        print(f"report for sweep {sweep!r}: {index} (and README.md, tables, plots, videos beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
