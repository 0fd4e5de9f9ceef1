"""The scaling report: quality against training compute per model size, the compute-efficient frontier, a power law.

For the sweeps ``scaling`` (model sizes at equal steps) and ``scaling_lr`` (the learning-rate search
that checks the scaling sweep's lr rule; ablations/sweeps.py). Reads the runs' result files only
(``metrics.report_runs.Run``: config.json and the eval records of train_log.jsonl that
``eval.every`` writes, ``metrics/live_eval.py``). A size is a (depth, hidden, heads) of the runs'
configs, named by its variant (ordered by FLOPs per step).

- Curves: every metric of the evaluation during training (val split), and the validation loss, against
  training FLOPs (the records' cumulative ``train_flops``: vdt.model.count_flops per step times steps),
  one line per size (mean over seeds, min-max band), log FLOPs axis, and the compute-efficient frontier:
  at each FLOP budget the best size's value (upper envelope of a metric where higher is better, lower
  envelope of a loss), over the budgets each size's curve covers; between evaluations a curve is
  interpolated linearly in log FLOPs.
- The validation loss: a loss the eval records carry (``val_loss`` or ``loss`` under the task); else the
  mean squared error of the generated region derived from the records' PSNR, 10^(-PSNR/10) (pixels in
  [0, 1]; the geometric mean of the clips' MSE), and the report says which.
- The power law L(C) = a * C^(-b) of each run's final validation loss against its training FLOPs C, fitted in
  log space (scipy.optimize.curve_fit on log L; optionally L = a * C^(-b) + e with an irreducible e >= 0).
  The 95% interval of b is from the fit's covariance (Student t with n - p degrees of freedom, n runs, p
  parameters); with 2 or more seeds per size, also a bootstrap over seeds (seeds resampled within each size,
  percentile interval).
- The table: per size its depth, width, heads, parameters of the transformer blocks, FLOPs per step, total
  training FLOPs, training wall time and final validation loss and PSNR (mean over seeds).
- ``scaling_lr``: per size and learning rate, the final validation loss and PSNR (mean over seeds), the best lr
  per size, and whether best lr x width is the same at every size, as the rule lr ~ 1/width says.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402
from scipy import optimize, stats  # noqa: E402

from metrics import report_plots, report_runs  # noqa: E402

SWEEPS = ("scaling", "scaling_lr")
LOSS_KEYS = ("val_loss", "loss")  # a validation loss under rec["eval"][task], if the evaluation writes one
DERIVED_MSE = "mse_from_psnr"
LOWER_IS_BETTER = ("loss", "mse", "fvd", "lpips")
LEVEL = 0.95
FRONTIER_POINTS = 200


def applies(sweep: str) -> bool:
    """Whether ``sweep`` gets the scaling section (its runs vary the model size and are evaluated during training)."""
    return sweep in SWEEPS


def higher_is_better(metric: str) -> bool:
    return not any(k in metric for k in LOWER_IS_BETTER)


def block_params(depth: int, hidden: int, mlp_ratio: float = 4.0) -> int:
    """Weights of the transformer blocks (token concatenation): per block temporal qkv + proj + temporal_fc, spatial
    qkv + proj, the MLP, the adaLN modulation (D -> 6D) and the temporal LayerNorm: (15 + 2r) D^2 + (18 + r) D.
    Embeddings and the output layer are left out (Kaplan et al.'s non-embedding count); tests check it against
    vdt.model.VDT."""
    d, r = hidden, mlp_ratio
    return int(depth * ((15 + 2 * r) * d * d + (18 + r) * d))


# ---------------------------------------------------------------- sizes and records


@dataclass(frozen=True)
class Size:
    """One model size of the sweep and its runs."""

    name: str
    depth: int
    hidden: int
    heads: int
    runs: tuple

    @property
    def params(self) -> int:
        return block_params(self.depth, self.hidden, float(self.runs[0].config.get("model.mlp_ratio", 4.0)))

    @property
    def flops_per_step(self) -> float:
        """Training FLOPs per step, from the runs' logs (the last record with train_flops and step)."""
        for r in self.runs:
            for rec in reversed(r.log):
                if rec.get("train_flops") and rec.get("step"):
                    return float(rec["train_flops"]) / float(rec["step"])
        return math.nan


def geometry(run) -> tuple:
    c = run.config
    return tuple(int(c[k]) if c.get(k) is not None else -1 for k in ("model.depth", "model.hidden", "model.heads"))


def sizes(runs: list) -> list:
    """The runs grouped by model geometry, smallest FLOPs per step first; a size is named by its runs' variant (less
    scaling_lr's "_lr<m>x"), or by its geometry (depth x width) when its runs have several names."""
    groups = {}
    for r in runs:
        groups.setdefault(geometry(r), []).append(r)
    out = []
    for (depth, hidden, heads), rs in groups.items():
        names = sorted({r.variant.partition("_lr")[0] for r in rs})  # scaling_lr's variants: <size>_lr<m>x
        name = names[0] if len(names) == 1 else f"{depth}x{hidden}"
        out.append(Size(name, depth, hidden, heads, tuple(sorted(rs, key=lambda r: (r.seed is None, r.seed)))))
    return sorted(out, key=lambda s: (np.nan_to_num(s.flops_per_step, nan=np.inf), s.depth, s.hidden))


def eval_records(run) -> list:
    return [rec for rec in run.log if isinstance(rec.get("eval"), dict)]


def tasks_and_metrics(runs: list) -> dict:
    """task -> sorted metric names of the eval records."""
    out = {}
    for r in runs:
        for rec in eval_records(r):
            for task, res in rec["eval"].items():
                out.setdefault(task, set()).update(k for k, v in (res or {}).items() if isinstance(v, int | float))
    return {t: sorted(ms) for t, ms in sorted(out.items())}


def loss_metric(metrics: list) -> tuple:
    """(metric key, axis label) of the validation loss: a loss of the records, else the MSE derived from PSNR."""
    for key in LOSS_KEYS:
        if key in metrics:
            return key, f"validation loss ({key}, diffusion objective)"
    if "psnr" in metrics:
        return DERIVED_MSE, "validation MSE of the generated region, 10^(-PSNR/10) (no loss in the eval records)"
    return None, None


def value(rec: dict, task: str, metric: str) -> float | None:
    res = (rec.get("eval") or {}).get(task) or {}
    if metric == DERIVED_MSE:
        psnr = res.get("psnr")
        return None if psnr is None else 10.0 ** (-float(psnr) / 10.0)
    v = res.get(metric)
    return None if v is None else float(v)


def flops_curves(size: Size, task: str, metric: str) -> list:
    """[(training FLOPs, value) per seed] of one size, from its eval records."""
    out = []
    for r in size.runs:
        x, y = report_plots.curve(eval_records(r), "train_flops", lambda rec: value(rec, task, metric))
        if len(x):
            out.append((x, y))
    return out


def final_value(run, task: str, metric: str) -> float:
    """The metric at the run's last evaluation, if that is its final step (train.steps); NaN otherwise."""
    recs = [rec for rec in eval_records(run) if value(rec, task, metric) is not None]
    steps = run.config.get("train.steps")
    if not recs or (steps is not None and recs[-1].get("step") != int(steps)):
        return math.nan
    return float(value(recs[-1], task, metric))


def total_flops(run) -> float:
    return report_runs.train_cost(run)[0]


# ---------------------------------------------------------------- the frontier


def mean_curve(curves: list) -> tuple:
    """(x, mean over seeds) where every seed covers x (report_plots.band's grid)."""
    grid, mean, _, _ = report_plots.band(curves)
    keep = np.isfinite(mean) & (grid > 0)
    return grid[keep], mean[keep]


def frontier(lines: dict, higher: bool, points: int = FRONTIER_POINTS) -> tuple:
    """The compute-efficient frontier of ``lines`` (name -> (x, y), x > 0 increasing): at each x of a grid over the
    union of their ranges (log-spaced, plus every line's own points), the best y over the lines that cover x (linear
    in log x between points). Returns (x, best y, name of the line that gives it)."""
    lines = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in lines.items() if len(x)}
    if not lines:
        return np.array([]), np.array([]), []
    lo, hi = min(x[0] for x, _ in lines.values()), max(x[-1] for x, _ in lines.values())
    grid = np.unique(np.concatenate([np.geomspace(lo, hi, points), *[x for x, _ in lines.values()]]))
    best, who = np.full(grid.size, np.nan), [None] * grid.size
    for name, (x, y) in lines.items():
        inside = (grid >= x[0]) & (grid <= x[-1])
        v = np.full(grid.size, np.nan)
        v[inside] = np.interp(np.log(grid[inside]), np.log(x), y)
        better = np.isfinite(v) & (~np.isfinite(best) | ((v > best) if higher else (v < best)))
        best[better] = v[better]
        for i in np.flatnonzero(better):
            who[i] = name
    return grid, best, who


# ---------------------------------------------------------------- the power law


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = a * C^(-b) + e, with the 95% interval of b."""

    a: float
    b: float
    e: float  # irreducible loss (0 when not fitted)
    b_low: float
    b_high: float
    n: int
    params: int  # fitted parameters
    method: str

    def __call__(self, c):
        return self.a * np.asarray(c, float) ** (-self.b) + self.e


def fit_power_law(compute, loss, irreducible: bool = False, level: float = LEVEL) -> PowerLaw:
    """Fit L = a * C^(-b) (+ e) in log space: least squares on log L (scipy.optimize.curve_fit), log C centred.
    The interval of b: b +- t(level, n - p) * its standard error from the fit's covariance."""
    c, y = np.asarray(compute, float), np.asarray(loss, float)
    keep = np.isfinite(c) & np.isfinite(y) & (c > 0) & (y > 0)
    c, y = c[keep], y[keep]
    p = 3 if irreducible else 2
    if c.size < p + 1 or np.unique(c).size < 2:
        raise ValueError(f"power law: {c.size} usable (compute, loss) points at {np.unique(c).size} compute values; "
                         f"a fit of {p} parameters with an interval needs at least {p + 1} at 2 or more")
    x, logy = np.log(c), np.log(y)
    x0 = float(x.mean())
    slope, icpt = np.polyfit(x - x0, logy, 1)
    if irreducible:
        def f(xc, log_a, b, e):
            return np.log(np.exp(log_a - b * xc) + e)
        start = (icpt, max(-slope, 1e-3), 0.1 * float(y.min()))
        popt, pcov = optimize.curve_fit(f, x - x0, logy, p0=start,
                                        bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, float(y.min())]))
        log_a, b, e = popt
    else:
        def f(xc, log_a, b):
            return log_a - b * xc
        popt, pcov = optimize.curve_fit(f, x - x0, logy, p0=(icpt, -slope))
        (log_a, b), e = popt, 0.0
    dof = c.size - p
    se = float(np.sqrt(pcov[1, 1])) if np.isfinite(pcov[1, 1]) else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return PowerLaw(a=float(np.exp(log_a + b * x0)), b=float(b), e=float(e), b_low=float(b) - half,
                    b_high=float(b) + half, n=int(c.size), params=p,
                    method=f"{level:.0%} interval from the fit's covariance (Student t, {dof} degrees of freedom)")


def bootstrap_exponent(points: list, irreducible: bool = False, n_boot: int = 1000, seed: int = 0,
                       level: float = LEVEL) -> tuple:
    """(low, high) percentile interval of b over bootstrap resamples of the seeds within each size; points are
    (size, compute, loss) per run. None when a size has fewer than 2 runs."""
    by_size = {}
    for size, c, y in points:
        by_size.setdefault(size, []).append((c, y))
    if len(by_size) < 2 or any(len(v) < 2 for v in by_size.values()):
        return None
    rng, bs = np.random.default_rng(seed), []
    for _ in range(n_boot):
        sample = [v[i] for v in by_size.values() for i in rng.integers(0, len(v), len(v))]
        try:
            bs.append(fit_power_law([c for c, _ in sample], [y for _, y in sample], irreducible).b)
        except (ValueError, RuntimeError):
            continue
    if len(bs) < n_boot // 2:
        return None
    q = (1 - level) / 2
    return float(np.quantile(bs, q)), float(np.quantile(bs, 1 - q))


# ---------------------------------------------------------------- plots


def size_label(s: Size) -> str:
    return f"{s.name} ({s.depth}x{s.hidden}, n={len(s.runs)})"


def quiet_minor_ticks(ax) -> None:
    """A log axis over a decade or more labels its decades only (minor labels overlap); one within a decade, which
    has no decade tick, labels its minor ticks."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log":
            wide = lo > 0 and hi / lo >= 10
            axis.set_minor_formatter(NullFormatter() if wide else FormatStrFormatter("%.3g"))


def plot_against_flops(szs: list, task: str, metric: str, label: str, stem: Path, baselines: dict) -> list:
    """One line per size (mean over seeds, min-max band) against training FLOPs, and the frontier; [png, pdf]."""
    colour = report_plots.colours([s.name for s in szs])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines = {}
    for s in szs:
        curves = flops_curves(s, task, metric)
        if not curves:
            continue
        grid, mean, low, high = report_plots.band(curves)
        ax.plot(grid, mean, color=colour[s.name], lw=1.5, marker="o", ms=3, label=size_label(s))
        if np.isfinite(low).any():
            ax.fill_between(grid, low, high, color=colour[s.name], alpha=0.2, lw=0)
        lines[s.name] = mean_curve(curves)
    if not lines:
        plt.close(fig)
        return []
    fx, fy, _ = frontier(lines, higher_is_better(metric))
    ax.plot(fx, fy, color="black", lw=2.4, ls="--", alpha=0.6, label="compute-efficient frontier", zorder=0)
    for (name, y), style in zip(sorted(baselines.items()), (":", "-.", (0, (1, 3))), strict=False):
        ax.axhline(y, color="grey", ls=style, lw=1.0, label=f"baseline {name}: {y:.3g}")
    ax.set_xscale("log")
    if not higher_is_better(metric) and report_plots.fits_log(fy):
        ax.set_yscale("log")
    quiet_minor_ticks(ax)
    ax.set_xlabel("training FLOPs (model forward + backward, vdt.model.count_flops)")
    ax.set_ylabel(label)
    ax.set_title(f"{label}\n{task}, during training on val clips, per model size (band: min-max over seeds)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, title="size (depth x width, seeds)", title_fontsize=7)
    return report_plots.save(fig, stem, top=0.88)


def plot_power_law(points: list, fit: PowerLaw, boot, szs: list, label: str, stem: Path) -> list:
    colour = report_plots.colours([s.name for s in szs])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in szs:
        pts = [(c, y) for name, c, y in points if name == s.name]
        if pts:
            ax.scatter([c for c, _ in pts], [y for _, y in pts], color=colour[s.name], s=22, label=size_label(s),
                       zorder=3)
    cs = np.geomspace(min(c for _, c, _ in points) / 1.5, max(c for _, c, _ in points) * 1.5, 100)
    form = "a C^-b + e" if fit.params == 3 else "a C^-b"
    ax.plot(cs, fit(cs), color="black", lw=1.4,
            label=f"L = {form}: b = {fit.b:.3f} [{fit.b_low:.3f}, {fit.b_high:.3f}]"
                  + (f", e = {fit.e:.3g}" if fit.params == 3 else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    quiet_minor_ticks(ax)
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel(label)
    boot_text = f"\nbootstrap over seeds (percentile): [{boot[0]:.3f}, {boot[1]:.3f}]" if boot else ""
    ax.set_title(f"Final validation loss against compute, {fit.n} runs\nb: {fit.method}{boot_text}", fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return report_plots.save(fig, stem, top=0.84)


# ---------------------------------------------------------------- tables


def fmt(v, spec: str) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else format(float(v), spec)


def markdown(frame: pd.DataFrame, caption: str) -> str:
    cols = list(frame.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    rows += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(rows) + f"\n\n{caption}\n"


def size_table(szs: list, task: str, loss_key: str) -> pd.DataFrame:
    rows = []
    for s in szs:
        finals = [final_value(r, task, loss_key) for r in s.runs]
        psnr = [final_value(r, task, "psnr") for r in s.runs]
        costs = [report_runs.train_cost(r) for r in s.runs]
        rows.append({"size": s.name, "depth": s.depth, "width": s.hidden, "heads": s.heads,
                     "block params (M)": s.params / 1e6, "GFLOP/step": s.flops_per_step / 1e9,
                     "train FLOPs": np.nanmean([c for c, _ in costs]) if costs else math.nan,
                     "wall time (min)": np.nanmean([w for _, w in costs]) / 60 if costs else math.nan,
                     "final val loss": mean_or_nan(finals), "final val PSNR (dB)": mean_or_nan(psnr),
                     "seeds": int(np.isfinite(finals).sum())})
    return pd.DataFrame(rows)


def mean_or_nan(values) -> float:
    v = np.asarray(values, float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else math.nan


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    specs = {"block params (M)": ".3f", "GFLOP/step": ".3g", "train FLOPs": ".3g", "wall time (min)": ".1f",
             "final val loss": ".4g", "final val PSNR (dB)": ".2f", "lr": ".3g", "best lr x width": ".3g"}
    out = table.copy()
    for col, spec in specs.items():
        if col in out:
            out[col] = [fmt(v, spec) for v in out[col]]
    return out


def lr_table(szs: list, runs: list, task: str, loss_key: str) -> tuple:
    """(per size and lr: final val loss and PSNR, mean over seeds; the rule check sentence)."""
    rows = []
    for s in szs:
        by_lr = {}
        for r in s.runs:
            by_lr.setdefault(float(r.config.get("train.lr", math.nan)), []).append(r)
        losses = {lr: mean_or_nan([final_value(r, task, loss_key) for r in rs]) for lr, rs in by_lr.items()}
        finite = {lr: v for lr, v in losses.items() if math.isfinite(v)}
        best = min(finite, key=finite.get) if finite else math.nan
        for lr, rs in sorted(by_lr.items()):
            rows.append({"size": s.name, "depth": s.depth, "width": s.hidden, "lr": lr,
                         "final val loss": losses[lr],
                         "final val PSNR (dB)": mean_or_nan([final_value(r, task, "psnr") for r in rs]),
                         "seeds": len(rs), "best": "**best**" if lr == best else "",
                         "edge of the grid": "yes" if lr == best and lr in (min(by_lr), max(by_lr)) else ""})
    frame = pd.DataFrame(rows)
    bests = frame[frame["best"] != ""] if len(frame) else frame
    if len(bests) < 2:
        return frame, "lr rule: not checked (fewer than 2 sizes have a finished run with a final val loss)"
    products = {row["size"]: row["lr"] * row["width"] for _, row in bests.iterrows()}
    ratio = max(products.values()) / min(products.values())
    verdict = ("consistent with lr ~ 1/width (the best lr x width is the same at every size)" if ratio < 1.01 else
               f"not consistent with lr ~ 1/width on this grid: best lr x width differs by {ratio:.3g}x between sizes")
    edge = "; a best lr at the edge of its grid may lie beyond it" if (bests["edge of the grid"] == "yes").any() else ""
    text = ("lr rule check (scaling_lr, final val loss on the validation split): best lr x width: "
            + ", ".join(f"{k} {v:.3g}" for k, v in products.items()) + f": {verdict}{edge}")
    return frame, text


# ---------------------------------------------------------------- the section


def scaling_section(sweep: str, runs: list, root: Path, irreducible: bool = False) -> dict:
    """Write the scaling plots, tables and fit of ``runs`` into ``root`` (plots under root/plots); return
    {"plots": [(title, png, pdf)], "files": {label: path}, "notes": [text]}."""
    root, plots, files, notes = Path(root), [], {}, []
    (root / "plots").mkdir(parents=True, exist_ok=True)
    szs = [s for s in sizes(runs) if s.depth > 0]
    found = tasks_and_metrics(runs)
    if not found:
        return {"plots": [], "files": {}, "notes": [f"{sweep}: no evaluation records in the train logs (eval.every "
                                                     "off?): no scaling curves, frontier or power law"]}
    baselines = report_plots.eval_baselines(runs)
    summary = {"sweep": sweep, "sizes": [dict(name=s.name, depth=s.depth, hidden=s.hidden, heads=s.heads,
                                              block_params=s.params, flops_per_step=s.flops_per_step,
                                              seeds=[r.seed for r in s.runs]) for s in szs]}
    for task, metrics in found.items():
        loss_key, loss_label = loss_metric(metrics)
        if loss_key is None:
            notes.append(f"{sweep}: no loss and no PSNR in the eval records of {task}: no power law")
        elif loss_key == DERIVED_MSE:
            notes.append(f"{sweep}: the eval records carry no validation loss; the scaling fit uses the validation MSE "
                         "of the generated region derived from PSNR, 10^(-PSNR/10)")
        # scaling_lr: the curves per variant (size and lr) are the report's eval plots; a size's lines would mix lrs
        for m in [*metrics, *([loss_key] if loss_key == DERIVED_MSE else [])] if sweep != "scaling_lr" else []:
            label = loss_label if m == loss_key else report_plots.metric_axis(m)
            base = {} if "_margin_" in m else {n: sc[m] for n, sc in baselines.get(task, {}).items() if m in sc}
            paths = plot_against_flops(szs, task, m, label, root / "plots" / f"scaling_{report_plots.slug(task)}_"
                                       f"{report_plots.slug(m)}", base)
            if paths:
                plots.append((f"{label} on {task} against training FLOPs, one line per model size, with the "
                              "compute-efficient frontier (dashed: the best size at each budget)", *paths))
        if loss_key is None:
            continue
        stem = f"scaling_{report_plots.slug(task)}"
        if sweep == "scaling_lr":
            frame, text = lr_table(szs, runs, task, loss_key)
            (root / f"{stem}_lr.md").write_text(markdown(formatted(frame), text))
            frame.to_csv(root / f"{stem}_lr.csv", index=False)
            files.update({f"lr search on {task} (Markdown)": root / f"{stem}_lr.md",
                          f"lr search on {task} (CSV)": root / f"{stem}_lr.csv"})
            notes.append(text)
            summary.setdefault("lr_check", {})[task] = text
            continue
        table = size_table(szs, task, loss_key)
        points = [(s.name, total_flops(r), final_value(r, task, loss_key)) for s in szs for r in s.runs]
        points = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
        caption = (f"Scaling on {task}: per model size, mean over seeds. Block params: weights of the transformer "
                   "blocks, (15 + 2r) D^2 + (18 + r) D per block (embeddings left out). GFLOP/step and train FLOPs: "
                   "vdt.model.count_flops, forward + backward. Final val loss: "
                   f"{loss_label}, at the last evaluation (the final step) on the val clips.")
        try:
            fit = fit_power_law([c for _, c, _ in points], [y for _, _, y in points], irreducible)
        except (ValueError, RuntimeError) as e:
            notes.append(f"{sweep}: no power law on {task}: {e}")
            fit = None
        if fit is not None:
            boot = bootstrap_exponent(points, irreducible)
            caption += (f" Power law of the final val loss against training FLOPs over {fit.n} runs: L = "
                        f"{fit.a:.3g} C^-{fit.b:.4f}" + (f" + {fit.e:.3g}" if fit.params == 3 else "")
                        + f"; b = {fit.b:.4f} [{fit.b_low:.4f}, {fit.b_high:.4f}], {fit.method}"
                        + (f"; bootstrap over seeds (percentile): [{boot[0]:.4f}, {boot[1]:.4f}]" if boot else "")
                        + ".")
            paths = plot_power_law(points, fit, boot, szs, loss_label, root / "plots" / f"{stem}_power_law")
            plots.append((f"Final validation loss against training FLOPs on {task}, with the fitted power law "
                          f"(b = {fit.b:.3f} [{fit.b_low:.3f}, {fit.b_high:.3f}])", *paths))
            summary.setdefault("fits", {})[task] = dict(
                loss=loss_key, a=fit.a, b=fit.b, e=fit.e, b_low=fit.b_low, b_high=fit.b_high, n=fit.n,
                interval=fit.method, bootstrap=boot, points=[dict(size=s, flops=c, loss=y) for s, c, y in points])
        (root / f"{stem}.md").write_text(markdown(formatted(table), caption))
        table.to_csv(root / f"{stem}.csv", index=False)
        files.update({f"scaling table on {task} (Markdown)": root / f"{stem}.md",
                      f"scaling table on {task} (CSV)": root / f"{stem}.csv"})
    (root / "scaling.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    files["scaling summary (JSON)"] = root / "scaling.json"
    return {"plots": plots, "files": files, "notes": notes}
