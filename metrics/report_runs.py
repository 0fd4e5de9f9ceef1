"""Report input: run directories read into ``Run`` records and one DataFrame row per run and task.

Reads result files only, named by ``vdt.layout.RunLayout`` (config.json, run.json, state.json,
train_log.jsonl, eval.json, samples/). What a run has not written yet is absent, never invented;
fields that newer evaluations add (per-video scores, baselines' FVD, the real-vs-real FVD
reference, the clean-frame diagnostic, the measured generated share) are read when present.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vdt.errors import InputError
from vdt.layout import RunLayout

log = logging.getLogger("report")
DEFAULT_DIRECTIONS = {"psnr": True, "ssim": True, "lpips": False, "fvd": False}  # higher is better?
MAKE_RUNS = "python ablations/run.py --sweep conditioning"


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

    def tasks(self) -> dict:
        """task -> its eval.json result ({} before evaluation)."""
        return (self.eval or {}).get("tasks") or {}

    def gen_frac(self) -> float:
        """Measured share of generated positions in training: mean of the train log's "gen_frac" (NaN if unlogged)."""
        values = finite([rec["gen_frac"] for rec in self.log if rec.get("gen_frac") is not None])
        return float(values.mean()) if values.size else math.nan


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


def finite(values) -> np.ndarray:
    x = np.asarray([number(v) for v in values], dtype=float)
    return x[np.isfinite(x)]


def load_run(path: Path, sweep: str) -> Run:
    """Read one run directory; what a run has not written yet is absent, never invented."""
    files = RunLayout(path)
    info = read_json(files.run_info) or {}
    state = read_json(files.state) or {}
    config = flatten(read_json(files.config) or {})
    train_log = read_jsonl(files.train_log)
    ev = read_json(files.eval_json)
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
    files = RunLayout(path)
    return path.is_dir() and any(p.is_file() for p in (files.run_info, files.config, files.state))


def _hint(results: Path, sweep: str | None = None) -> str:
    """What to do when a sweep has no runs: pass the folder above one sweep's folder, or make the runs."""
    if results.is_dir() and any(is_run_dir(p) for p in results.iterdir()):
        return (f"{results} holds the runs of one sweep ({results.name}); "
                f"pass the folder above it: --results {results.parent}")
    return f"make runs with: {f'python ablations/run.py --sweep {sweep}' if sweep else MAKE_RUNS}"


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
                              f"{_hint(Path(results), unknown[0])}")
        found = [s for s in found if s in sweeps]
    runs = {s: [load_run(p, s) for p in sorted((root / s).iterdir()) if is_run_dir(p)] for s in found}
    runs = {s: sorted(r, key=lambda r: (r.variant, r.seed if r.seed is not None else -1, r.run_id))
            for s, r in runs.items() if r}
    if not runs:
        raise NoRunsError(f"no runs under {root}/; {_hint(Path(results))}")
    return runs


# ---------------------------------------------------------------- the DataFrame


def varied_fields(runs: list) -> list:
    """Config fields that differ between the runs of a sweep, and every overridden field."""
    keys = sorted({k for r in runs for k in r.config})
    varied = [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]
    return sorted(set(varied) | {k for r in runs for k in r.overrides})


def metric_names(runs: list) -> list:
    """Metrics any evaluation reported, the known ones first."""
    names = {m for r in runs for t in r.tasks().values() for m in t.get("metrics", {})}
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


def clip_set(result: dict) -> str:
    """What makes two evaluations score the same test clips: the real-clip record, the count and the frames."""
    p = result.get("protocol") or {}
    n_videos = sorted({len(v) for v in (result.get("per_video") or {}).values() if isinstance(v, list)})
    return json.dumps({"clips": p.get("real_clips"), "num_videos": p.get("num_videos"), "task": p.get("task"),
                       "task_params": p.get("task_params"), "frames": p.get("frames"), "per_video": n_videos},
                      sort_keys=True)


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
                     "wall_time_s": number(losses[-1].get("wall_time")) if losses else math.nan,
                     "gen_frac": r.gen_frac()})
        for task, result in (r.tasks() or {None: {}}).items():
            row = dict(base, task=task, eval_step=(r.eval or {}).get("step"), weights=(r.eval or {}).get("weights"))
            row.update({m: number(result.get("metrics", {}).get(m)) for m in metrics})
            row["missing"] = json.dumps(result.get("missing") or {}, sort_keys=True) if task else None
            row["protocol"] = json.dumps(result.get("protocol") or {}, sort_keys=True) if task else None
            row["clips"] = clip_set(result) if task else None
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


# ---------------------------------------------------------------- references beside the model


def is_copy_baseline(name: str) -> bool:
    """The copy-nearest-given-frame baseline, named "nearest" or "nearest_given_frame"."""
    return name.startswith("nearest")


def baseline_name(name: str) -> str:
    """One name per baseline across eval.json versions: black_fill -> black, nearest_given_frame -> nearest."""
    return "nearest" if is_copy_baseline(name) else "black" if name.startswith("black") else name


def mean_of(values) -> float:
    """Mean of the finite values; NaN when there are none. An FVD record ({"fvd": x, ...}) counts as x."""
    x = finite([v.get("fvd", v.get("value")) if isinstance(v, dict) else v for v in values])
    return float(x.mean()) if x.size else math.nan


def baseline_values(runs: list) -> dict:
    """task -> baseline name -> metric -> mean over the runs that scored it (runs with one data seed agree)."""
    values = {}
    for r in runs:
        for task, res in r.tasks().items():
            for name, scores in (res.get("baselines") or {}).items():
                for m, v in (scores or {}).items():
                    values.setdefault(task, {}).setdefault(baseline_name(name), {}).setdefault(m, []).append(v)
    return {t: {b: {m: mean_of(v) for m, v in d.items()} for b, d in names.items()} for t, names in values.items()}


def reference_values(runs: list) -> dict:
    """task -> reference name (e.g. fvd_real_vs_real) -> mean over the runs that computed it."""
    values = {}
    for r in runs:
        for task, res in r.tasks().items():
            for name, v in (res.get("references") or {}).items():
                values.setdefault(task, {}).setdefault(name, []).append(v)
    return {t: {k: mean_of(v) for k, v in d.items()} for t, d in values.items()}


def per_video_scores(runs: list) -> dict:
    """(task, variant, seed) -> {metric: [score per test clip]}, from eval.json's per_video lists."""
    out = {}
    for r in runs:
        for task, res in r.tasks().items():
            lists = {m: v for m, v in (res.get("per_video") or {}).items() if isinstance(v, list)}
            if lists and r.seed is not None:
                out[(task, r.variant, r.seed)] = lists
    return out


def x0_curves(runs: list) -> dict:
    """task -> {variant: [(t, psnr) per seed]} from eval.json's x0_psnr_by_t (PSNR of the one-step x0 estimate)."""
    out = {}
    for r in runs:
        for task, res in r.tasks().items():
            rec = res.get("x0_psnr_by_t") or {}
            t, psnr = rec.get("t") or [], rec.get("psnr") or []
            if not t or len(t) != len(psnr):
                if t or psnr:
                    log.warning("%s: x0_psnr_by_t of %s has %d t and %d psnr values; skipped", r.run_id, task,
                                len(t), len(psnr))
                continue
            order = np.argsort(np.asarray(t, dtype=float))
            curve = (np.asarray(t, dtype=float)[order], np.asarray([number(p) for p in psnr])[order])
            out.setdefault(task, {}).setdefault(r.variant, []).append(curve)
    return out
