"""Report input: run directories read into ``Run`` records and one DataFrame row per run and task.

Reads result files only, named by ``vdt.layout.RunLayout`` (config.json, run.json, state.json,
train_log.jsonl, eval.json, samples/). What a run has not written yet is absent, never invented;
fields that newer evaluations add (per-video scores, baselines' FVD, the real-vs-real FVD
reference, the clean-frame diagnostic, the measured generated share) are read when present.
An eval.json that is not the evaluation of the run as it is now (``why_stale``) is refused, with a warning.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metrics.report_stats import finite, number
from vdt import layout
from vdt.errors import InputError
from vdt.layout import RunLayout, scored_split

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
    eval: dict | None  # None too when eval.json is not current (``refused`` says why)
    env: list  # "env" dicts recorded in run.json / eval.json
    refused: str | None = None  # why eval.json was not used: it is not the evaluation of this run as it is now
    tuned_on: str | None = None  # the split the profile's settings were chosen on, as run.json records it

    def tasks(self) -> dict:
        """task -> its eval.json result ({} before evaluation)."""
        return (self.eval or {}).get("tasks") or {}

    def gen_frac(self) -> float:
        """Measured share of generated positions in training: mean of the train log's "gen_frac" (NaN if unlogged)."""
        values = finite([rec["gen_frac"] for rec in self.log if rec.get("gen_frac") is not None])
        return float(values.mean()) if values.size else math.nan


# ---------------------------------------------------------------- reading runs


def json_object(path: Path) -> dict | None:
    """``vdt.layout.read_json``, and a warning when the file is there but holds no JSON object (read as absent)."""
    if not path.is_file():
        return None
    obj = layout.read_json(path)
    if not isinstance(obj, dict):
        log.warning("unreadable %s: not a JSON object; read as absent", path)
        return None
    return obj


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


def newest_checkpoint_step(files: RunLayout) -> int | None:
    """The step of the newest step_<N>.pt under checkpoints/ (None when there is none)."""
    steps = [int(p.stem.split("_")[1]) for p in files.checkpoints.glob("step_*.pt") if p.stem.split("_")[1].isdigit()]
    return max(steps, default=None)


def why_stale(files: RunLayout, ev: dict, config: dict) -> str | None:
    """Why eval.json's content ``ev`` is not the evaluation of the run as it is now; None when it is.

    ``vdt.layout.why_not_evaluated``: made from checkpoints/last.pt (its SHA-256), for the final step, every task
    of eval.tasks, with config.json's eval settings. What an eval.json too old to record it (its eval settings, its
    checkpoint's SHA-256) or a run copied without its checkpoints lacks is not held against it; what is there must
    match. Then: no step checkpoint newer than the step scored."""
    if config:
        ckpt = ev.get("checkpoint") if isinstance(ev.get("checkpoint"), dict) else {}
        recorded, on_disk = ckpt.get("sha256"), layout.checkpoint_sha256(files.last_ckpt)
        record = {**ev, "eval": ev.get("eval", config.get("eval")),
                  "checkpoint": {**ckpt, "sha256": recorded or "not recorded"}}
        why = layout.why_not_evaluated(record, config, on_disk if recorded and on_disk else recorded or "not recorded")
        if why:
            return why
    step, newest = ev.get("step"), newest_checkpoint_step(files)
    if isinstance(step, int) and newest is not None and newest > step:
        return f"it scores step {step}, but checkpoints/ holds step {newest}"
    return None


def load_run(path: Path, sweep: str) -> Run:
    """Read one run directory; what a run has not written yet is absent, never invented. An eval.json that is not
    current (``why_stale``) is left out, with a warning naming the run and why."""
    files = RunLayout(path)
    info = json_object(files.run_info) or {}
    state = json_object(files.state) or {}
    raw_config = json_object(files.config) or {}
    config = flatten(raw_config)
    train_log = read_jsonl(files.train_log)
    ev = json_object(files.eval_result(scored_split(raw_config)))  # eval.json; eval-val.json for a tuning sweep
    refused = why_stale(files, ev, raw_config) if ev else None
    if refused:
        log.warning("run %s: eval.json not used: %s; re-evaluate with: python metrics/evaluate.py --run-dir %s",
                    path, refused, path)
        ev = None
    status = state.get("state") or ("done" if ev else "running" if train_log else "pending")
    steps = [r["step"] for r in train_log if "step" in r]
    seed = info.get("seed", config.get("train.seed"))
    env = [d["env"] for d in (info, ev or {}) if isinstance(d.get("env"), dict)]
    return Run(path=path, sweep=info.get("sweep", sweep), run_id=info.get("run_id", path.name),
               variant=str(info.get("variant", path.name)), seed=None if seed is None else int(seed),
               state=status, step=state.get("step", steps[-1] if steps else None), error=state.get("error"),
               attempts=state.get("attempts"), job_log=state.get("log"), overrides=info.get("overrides") or {},
               config=config, log=train_log, eval=ev, env=env, refused=refused, tuned_on=info.get("tuned_on"))


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


def clip_set(result: dict) -> str:
    """What makes two evaluations score the same test clips: the real-clip record, the count and the frames."""
    p = result.get("protocol") or {}
    n_videos = sorted({len(v) for v in (result.get("per_video") or {}).values() if isinstance(v, list)})
    return json.dumps({"clips": p.get("real_clips"), "num_videos": p.get("num_videos"), "task": p.get("task"),
                       "task_params": p.get("task_params"), "frames": p.get("frames"), "per_video": n_videos},
                      sort_keys=True)


# eval.* fields that change no score of a task: which tasks run, and the during-training evaluation
NOT_SCORING = ("tasks", "every", "every_videos")
# protocol fields that describe how a task was scored (an eval.json too old to record its eval settings)
SCORING_PROTOCOL = ("sampler", "sample_steps", "eta", "guidance", "best_of", "num_videos", "weights", "space",
                    "prediction", "resolution", "frames", "task_params")


def eval_settings(ev: dict, result: dict) -> str:
    """What two evaluations of one task must share for their scores to be averaged: eval.json's eval settings
    (less NOT_SCORING), the clips scored (``clip_set``), the protocol's scoring fields and any signature it records
    (e.g. of the data's clip list), as JSON text."""
    protocol = result.get("protocol") or {}
    settings = {k: v for k, v in (ev.get("eval") or {}).items() if k not in NOT_SCORING}
    settings.update({f"protocol.{k}": protocol[k] for k in SCORING_PROTOCOL if k in protocol})
    settings.update({k: v for k, v in {**ev, **protocol}.items() if "signature" in k})
    settings["clips"] = clip_set(result)
    return json.dumps(settings, sort_keys=True, default=str)


def train_cost(r: Run) -> tuple:
    """(training FLOPs, training wall time in s) up to the run's last logged step, from train_log.jsonl: the last
    record's "train_flops" (cumulative: vdt.model.count_flops per step times steps) and the last training line's
    "wall_time"; NaN where not logged."""
    flops = [rec["train_flops"] for rec in r.log if rec.get("train_flops") is not None]
    wall = [rec["wall_time"] for rec in r.log if rec.get("wall_time") is not None and "loss" in rec]
    return number(flops[-1]) if flops else math.nan, number(wall[-1]) if wall else math.nan


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per run and evaluated task (a run without a usable eval.json has one row, task NaN)."""
    fields, metrics = varied_fields(runs), metric_names(runs)
    rows = []
    for r in runs:
        losses = [x for x in r.log if "loss" in x]
        flops, wall = train_cost(r)
        base = {"sweep": r.sweep, "variant": r.variant, "seed": r.seed, "run_id": r.run_id, "state": r.state,
                "step": r.step, "error": r.error}
        base.update({k: r.config.get(k, r.overrides.get(k)) for k in fields})
        base.update({"overrides": json.dumps(r.overrides, sort_keys=True),
                     "final_loss": number(losses[-1]["loss"]) if losses else math.nan,
                     "wall_time_s": wall, "train_flops": flops, "gen_frac": r.gen_frac(), "eval_refused": r.refused})
        for task, result in (r.tasks() or {None: {}}).items():
            row = dict(base, task=task, eval_step=(r.eval or {}).get("step"), weights=(r.eval or {}).get("weights"))
            row.update({m: number(result.get("metrics", {}).get(m)) for m in metrics})
            row["missing"] = json.dumps(result.get("missing") or {}, sort_keys=True) if task else None
            row["protocol"] = json.dumps(result.get("protocol") or {}, sort_keys=True) if task else None
            row["clips"] = clip_set(result) if task else None
            row["settings"] = eval_settings(r.eval, result) if task else None
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


def band(value) -> dict | None:
    """A reference as a band {mean, min, max, draws}: a number or an FVD record ({"fvd": x}) is one draw; a dict
    {mean, min, max, draws} (draws: a count or the list of values) is taken as it is. None when it has no number."""
    if isinstance(value, dict) and "mean" in value:
        draws = value.get("draws")
        values = finite(draws) if isinstance(draws, list) else np.array([])
        mean = number(value["mean"])
        low = number(value.get("min", values.min() if values.size else mean))
        high = number(value.get("max", values.max() if values.size else mean))
        n = len(draws) if isinstance(draws, list) else int(number(draws)) if math.isfinite(number(draws)) else 1
        return {"mean": mean, "min": low, "max": high, "draws": n} if math.isfinite(mean) else None
    x = mean_of([value])
    return {"mean": x, "min": x, "max": x, "draws": 1} if math.isfinite(x) else None


def reference_values(runs: list) -> dict:
    """task -> reference name (e.g. fvd_real_vs_real) -> band {mean, min, max, draws} over the runs that computed
    it (a sweep's runs share their references, so these agree; if not, the band spans them all)."""
    bands = {}
    for r in runs:
        for task, res in r.tasks().items():
            for name, v in (res.get("references") or {}).items():
                b = band(v)
                if b:
                    bands.setdefault(task, {}).setdefault(name, []).append(b)
    return {t: {k: {"mean": float(np.mean([b["mean"] for b in bs])), "min": min(b["min"] for b in bs),
                    "max": max(b["max"] for b in bs), "draws": max(b["draws"] for b in bs)} for k, bs in d.items()}
            for t, d in bands.items()}


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
