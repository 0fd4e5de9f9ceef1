"""Report plots: training curves (one line per variant, the mean over seeds, and a min-max band over seeds).

Every figure is saved as PNG (for the page) and PDF (for the paper). A curve is a pair of
arrays (x, y); a series maps each variant to the curves of its seeds. ``training_plots`` makes
every plot read from train_log.jsonl:

- the training loss against step and wall time, one panel per diffusion objective (ε, v and x0
  losses are on different scales, so never on one axis);
- each metric of the evaluation during training (``eval.every``: records ``{"event": "eval", "step",
  "train_flops", "wall_time", "eval": {task: {metric: value}}, "baselines": ...}``, written by
  ``metrics/live_eval.py``) against training step, training FLOPs and training wall time, with the
  baselines scored on the same clips as horizontal lines;
- the sweep's own cost: each run's training FLOPs against its wall time (``train_flops`` of the
  log lines).
"""

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GRID_POINTS = 400  # points of the common x grid the seeds of a variant are interpolated onto


# ---------------------------------------------------------------- curves from train logs


def curve(records: list, x_key: str, y_get) -> tuple:
    """Sorted (x, y) arrays from log records; a step logged twice (a resume) keeps its last value."""
    points = {}
    for rec in records:
        x, y = rec.get(x_key), y_get(rec)
        if x is not None and y is not None and math.isfinite(float(y)):
            points[float(x)] = float(y)
    xs = np.array(sorted(points))
    return xs, np.array([points[x] for x in xs])


def loss_series(runs: list, x_key: str, scale: float = 1.0) -> dict:
    """{variant: [(x, loss) per seed]} from the train logs of runs (objects with .variant and .log)."""
    out = {}
    for r in runs:
        x, y = curve(r.log, x_key, lambda rec: rec.get("loss"))
        out.setdefault(r.variant, []).append((x / scale, y))
    return out


def eval_series(runs: list, x_key: str = "step", scale: float = 1.0) -> dict:
    """(task, metric) -> {variant: [(x / scale, value) per seed]} from the eval records of the train logs; x_key:
    step, train_flops or wall_time (a record without it is left out)."""
    keys = sorted({(t, m) for r in runs for rec in r.log for t, res in (rec.get("eval") or {}).items()
                   for m in res})
    out = {}
    for task, m in keys:
        for r in runs:
            x, y = curve(r.log, x_key, lambda rec, t=task, k=m: ((rec.get("eval") or {}).get(t) or {}).get(k))
            out.setdefault((task, m), {}).setdefault(r.variant, []).append((x / scale, y))
    return out


def eval_baselines(runs: list) -> dict:
    """task -> {baseline: {metric: value}}: the baselines of the eval records (scored on the evaluation's clips), mean
    over the runs' last records."""
    values = {}
    for r in runs:
        last = [rec for rec in r.log if rec.get("baselines")]
        for task, fills in (last[-1]["baselines"] if last else {}).items():
            for name, scores in fills.items():
                for m, v in scores.items():
                    if v is not None and math.isfinite(float(v)):
                        values.setdefault(task, {}).setdefault(name, {}).setdefault(m, []).append(float(v))
    return {t: {n: {m: float(np.mean(v)) for m, v in ms.items()} for n, ms in fs.items()} for t, fs in values.items()}


def objective(run) -> str:
    """The diffusion objective a run trained on (its config's diffusion.prediction)."""
    return str(run.config.get("diffusion.prediction", "eps (default)"))


# ---------------------------------------------------------------- convergence


def colours(variants: list) -> dict:
    """One fixed colour per variant, so a variant keeps its colour in every plot of the sweep."""
    cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


def band(curves: list) -> tuple:
    """Seeds on one x grid: (grid, mean, low, high); low/high (min/max over seeds) are NaN where one seed covers x."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    grid = xs if xs.size <= GRID_POINTS else np.linspace(xs[0], xs[-1], GRID_POINTS)
    ys = np.full((len(curves), grid.size), np.nan)  # (seeds, points)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[i, inside] = np.interp(grid[inside], x, y)  # no extrapolation past a seed's own range
    count = np.isfinite(ys).sum(axis=0)
    filled = np.where(np.isfinite(ys), ys, 0.0)
    mean = np.where(count > 0, filled.sum(axis=0) / np.maximum(count, 1), np.nan)
    low = np.where(count > 1, np.where(np.isfinite(ys), ys, np.inf).min(axis=0), np.nan)
    high = np.where(count > 1, np.where(np.isfinite(ys), ys, -np.inf).max(axis=0), np.nan)
    return grid, mean, low, high


def fits_log(values) -> bool:
    """A log axis fits positive values that span at least a decade."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and v.min() > 0 and v.max() / v.min() >= 10


def save(fig, stem: Path, **margins) -> list:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    # fixed margins: tight_layout is slow
    fig.subplots_adjust(**{"left": 0.13, "right": 0.97, "bottom": 0.13, "top": 0.91, **margins})
    for p in paths:
        fig.savefig(p, dpi=120 if p.suffix == ".png" else None)
    plt.close(fig)
    return paths


def nonempty(series: dict) -> dict:
    """variant -> its non-empty (x, y) curves; variants with none are left out."""
    series = {v: [c for c in curves if len(c[0])] for v, curves in series.items()}
    return {v: curves for v, curves in series.items() if curves}


def draw_bands(ax, series: dict, variants: list, lines: dict | None = None, log_y: bool | None = None) -> None:
    """On ``ax``: one line per variant (mean over seeds) with a min-max band over seeds, and each of ``lines`` (label
    -> y) as a horizontal line. log_y None: a log axis when the values span a decade (``fits_log``)."""
    colour, all_y = colours(variants), []
    for v in [v for v in variants if v in series]:
        grid, mean, low, high = band(series[v])
        ax.plot(grid, mean, color=colour[v], lw=1.6, marker="o" if grid.size <= 30 else None, ms=3,
                label=f"{v} (n={len(series[v])})")
        if np.isfinite(low).any():
            ax.fill_between(grid, low, high, color=colour[v], alpha=0.2, lw=0)
        all_y.append(np.concatenate([y for _, y in series[v]]))
    for (label, y), style in zip(sorted((lines or {}).items()), ("--", ":", "-.", (0, (1, 3)), (0, (5, 1))),
                                 strict=False):
        if math.isfinite(y):
            ax.axhline(y, color="black", ls=style, lw=1.0, label=label)
    if log_y or (log_y is None and fits_log(np.concatenate(all_y))):
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)


def plot_bands(series: dict, stem: Path, *, xlabel: str, ylabel: str, title: str, variants: list,
               lines: dict | None = None, log_y: bool | None = None) -> list:
    """One line per variant (mean over seeds) with a min-max band over seeds; returns [png, pdf] or []."""
    series = nonempty(series)
    if not series:
        return []
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    draw_bands(ax, series, variants, lines, log_y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(title="variant (seeds)", fontsize=8, title_fontsize=8)
    return save(fig, stem)


def plot_panels(panels: list, stem: Path, *, ylabel: str, title: str, variants: list, lines: dict | None = None,
                sharey: bool = True, log_y: bool | None = False) -> list:
    """Side-by-side panels (subtitle, xlabel, series), each drawn as ``plot_bands`` draws; panels without data are
    left out; [png, pdf] or [] when none has data."""
    panels = [(sub, xlabel, nonempty(series)) for sub, xlabel, series in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.8, 4.0), sharey=sharey, squeeze=False)
    for i, (ax, (sub, xlabel, series)) in enumerate(zip(axes[0], panels, strict=True)):
        draw_bands(ax, series, variants, lines, log_y)
        ax.set_xlabel(xlabel)
        ax.set_title(sub, fontsize=9)
        if i == 0 or not sharey:
            ax.set_ylabel(ylabel)
    axes[0][-1].legend(title="variant (seeds)", fontsize=7, title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    wide = len(panels) > 1
    return save(fig, stem, left=0.08 if wide else 0.13, right=0.98, bottom=0.14, top=0.84,
                wspace=0.12 if sharey else 0.3)


def plot_x0(series: dict, lines: dict, stem: Path, *, task: str, variants: list) -> list:
    """PSNR of the one-step clean-frame estimate against the noise level t: one line per variant (mean over seeds,
    min-max band) and each baseline's PSNR (``lines``: label -> dB) as a horizontal line; [png, pdf] or []."""
    series = nonempty(series)
    if not series:
        return []
    colour = colours(variants)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for v in [v for v in variants if v in series]:
        grid, mean, low, high = band(series[v])
        ax.plot(grid, mean, color=colour[v], lw=1.6, marker="o", ms=3, label=f"{v} (n={len(series[v])})")
        if np.isfinite(low).any():
            ax.fill_between(grid, low, high, color=colour[v], alpha=0.2, lw=0)
    for (label, db), style in zip(sorted(lines.items()), ("--", ":", "-.", (0, (1, 3))), strict=False):
        if math.isfinite(db):
            ax.axhline(db, color="black", ls=style, lw=1.0, label=f"{label}: {db:.2f} dB")
    ax.set_xlabel("diffusion timestep t of the model's input (its noise level: 0 = clean, larger = noisier)")
    ax.set_ylabel("x0-estimate PSNR (dB), generated region")
    ax.set_title(f"Clean-frame estimate by noise level ({task}; band: min-max over seeds)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, stem)


def time_unit(max_seconds: float) -> tuple:
    """(divisor, unit) that keeps a wall-clock axis readable."""
    if max_seconds >= 2 * 3600:
        return 3600.0, "h"
    if max_seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


# ---------------------------------------------------------------- the sweep's plots


METRIC_AXIS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS"}
BAND = "line: mean over seeds; band: min-max over seeds"


def metric_axis(metric: str) -> str:
    """'psnr' -> 'PSNR (dB)'; 'psnr_margin_motion' -> 'PSNR (dB) minus the motion baseline's'."""
    base, _, rest = metric.partition("_margin_")
    label = METRIC_AXIS.get(base, base)
    return f"{label} minus the {rest} baseline's" if rest else label


def cost_series(runs: list, scale: float) -> dict:
    """{variant: [(wall time / scale, training FLOPs) per seed]} from the train_flops of the log lines."""
    out = {}
    for r in runs:
        x, y = curve([rec for rec in r.log if "loss" in rec], "wall_time", lambda rec: rec.get("train_flops"))
        out.setdefault(r.variant, []).append((x / scale, y))
    return out


def training_plots(runs: list, variants: list, plot_dir: Path) -> list:
    """(title, png, pdf) of every plot the train logs have data for: loss, evaluation during training, cost."""
    plots = []

    def add(title, paths):
        if paths:
            plots.append((title, *paths))

    wall = [rec["wall_time"] for r in runs for rec in r.log if rec.get("wall_time") is not None]
    div, unit = time_unit(max(wall, default=0.0))
    objectives = sorted({objective(r) for r in runs})
    for x_key, scale, stem, xlabel in (("step", 1.0, "loss_step", "training step (optimizer updates)"),
                                       ("wall_time", div, "loss_time", f"wall-clock training time ({unit})")):
        panels = [(f"objective: {o}", xlabel, loss_series([r for r in runs if objective(r) == o], x_key, scale))
                  for o in objectives]
        which = "one panel per objective: their losses are on different scales" if len(objectives) > 1 else \
            f"objective {objectives[0]}" if objectives else ""
        add(f"Training loss against {'step' if x_key == 'step' else 'wall-clock time'} ({which})", plot_panels(
            panels, plot_dir / stem, ylabel="training loss (diffusion objective)", sharey=False, log_y=None,
            title=f"Training loss ({which}; {BAND})", variants=variants))
    flops = eval_series(runs, "train_flops", 1e12)
    times = eval_series(runs, "wall_time", div)
    baselines = eval_baselines(runs)
    for (task, m), series in eval_series(runs).items():
        label = metric_axis(m)
        base = m.partition("_margin_")
        lines = ({f"{base[2]} baseline (margin 0)": 0.0} if base[2] else
                 {f"baseline {name}: {scores[m]:.3g}": scores[m]
                  for name, scores in baselines.get(task, {}).items() if m in scores})
        panels = [("against training step", "training step", series),
                  ("against training compute", "training FLOPs (x 1e12, model forward + backward)",
                   flops.get((task, m), {})),
                  ("against training time", f"training wall-clock time ({unit}, evaluation excluded)",
                   times.get((task, m), {}))]
        from_ = {rec.get("split") for r in runs for rec in r.log if rec.get("event") == "eval"} - {None}
        split = f"{'/'.join(sorted(from_))} clips" if from_ else "clips"
        add(f"{label} on {task} during training ({split} of the evaluation during training), against step, "
            "FLOPs and wall time", plot_panels(panels, plot_dir / f"eval_{slug(task)}_{slug(m)}", ylabel=label,
                                              title=f"{label}, {task}, during training on {split} ({BAND})",
                                              variants=variants, lines=lines))
    add("Training compute against wall-clock time, per run", plot_bands(
        cost_series(runs, div), plot_dir / "cost", xlabel=f"wall-clock training time ({unit})",
        ylabel="training FLOPs (model forward + backward)", log_y=False, variants=variants,
        title=f"The sweep's training cost: FLOPs against time ({BAND})"))
    return plots


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "x"
