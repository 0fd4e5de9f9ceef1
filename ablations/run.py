"""Run an ablation sweep: ``python ablations/run.py --sweep conditioning``.

Locally (the default without SLURM) it trains and evaluates every run of the sweep on this
machine; with ``sbatch`` on PATH and the SLURM controller up it submits them to SLURM as one job
array. See ``--help``.
Exit status: 0 all runs done, 1 some failed, 2 a bad option or override, 3 the sweep is being
launched by another process.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from ablations import cost, launcher, rundir, status, sweeps, timing
from vdt import cli as vdt_cli
from vdt.config import ConfigError
from vdt.errors import DataError

EXAMPLES = [
    "python ablations/run.py --list",
    "python ablations/run.py --sweep conditioning                      # tiny, on this machine",
    "python ablations/run.py --sweep depth --set train.steps=100 --seeds 0",
    "python ablations/run.py --sweep conditioning --profile paper --data ucf101:/data/UCF-101 \\\n"
    "      --executor slurm --partition gpu --gpus-per-node 8 --tasks-per-node 8 --cpus-per-task 10 \\\n"
    "      --time-min 1440 --dry-run --gpu H100 --mfu 0.4",
    "python ablations/run.py --sweep conditioning --status",
    "python ablations/run.py --sweep conditioning --retry-failed",
]
NOTES = (vdt_cli.CONFIG_KEYS + ".\nexit status: 0 all runs done, 1 some runs failed, 2 an input error (bad option, "
         "--set or --data), 3 sweep locked by another launch.")


def get_args_parser() -> argparse.ArgumentParser:
    p = vdt_cli.parser(
        "python ablations/run.py",
        "Train and evaluate every run of an ablation sweep, locally or on SLURM; re-running skips finished runs and "
        "resumes interrupted ones.", examples=EXAMPLES, notes=NOTES)
    p.add_argument("--sweep", help=f"the sweep: {', '.join(sweeps.SWEEPS)}")
    p.add_argument("--profile", default="tiny", choices=list(sweeps.PROFILES),
                   help="tiny: CPU, built-in data (default); paper: the paper's model and data, for GPUs; "
                        "smoke: the paper path in miniature on a CPU (needs data.root)")
    vdt_cli.add_config_args(p, "config overrides applied to every run")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds per variant (default: the profile's)")
    p.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (default: all; see --list)")
    p.add_argument("--results", default="results/runs", type=Path,
                   help="where run dirs go: RESULTS/<sweep>/<run id>/ (default results/runs)")
    what = p.add_argument_group("what to do (default: launch and wait)")
    what.add_argument("--list", action="store_true", help="show the profiles, sweeps and their variants")
    what.add_argument("--dry-run", action="store_true",
                      help="print every run, the sbatch parameters and the estimated cost; submit nothing")
    what.add_argument("--status", action="store_true", help="state, step, last loss, job id and log of every run")
    what.add_argument("--retry-failed", action="store_true", help="also rerun runs that failed before")
    what.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; follow with --status")
    what.add_argument("--no-progress", action="store_true", help="no progress bars")
    ex = p.add_argument_group("executor and resources (SLURM flags are ignored by local and inline)")
    ex.add_argument("--executor", default="auto", choices=launcher.EXECUTORS,
                    help="auto: slurm where sbatch is on PATH and `scontrol ping` finds the controller up, "
                         "else local; local: submitit subprocesses, as many "
                         "at once as the cores hold; inline: one after another in this process; debug: submitit's "
                         "in-process DebugExecutor (tests)")
    ex.add_argument("--partition", help="SLURM partition")
    ex.add_argument("--account", help="SLURM account")
    ex.add_argument("--qos", help="SLURM quality of service")
    ex.add_argument("--nodes", type=int, default=1, help="nodes per run (DDP across them; default 1)")
    ex.add_argument("--tasks-per-node", type=int, default=1, help="processes per node, one per GPU (default 1)")
    ex.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0: CPU)")
    ex.add_argument("--cpus-per-task", type=int, default=1,
                    help="CPU cores per process; also torch threads per job (default 1)")
    ex.add_argument("--mem-gb", type=float, help="memory per node in GB (SLURM --mem; local: limits jobs at once)")
    ex.add_argument("--time-min", type=int, help="time limit per job in minutes; a job that reaches it requeues "
                                                 "and resumes (default: the profile's, tiny 60, paper 1440)")
    ex.add_argument("--array-parallelism", type=int, help="at most this many runs at once (SLURM %%N; local cap)")
    ex.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                    help="extra sbatch argument, e.g. --slurm-extra constraint=h100 --slurm-extra exclusive "
                         "(repeatable)")
    ex.add_argument("--max-timeouts", type=int, default=20, help="requeues after time limits (default 20)")
    ex.add_argument("--signal-delay-s", type=int, default=120,
                    help="USR2 this many seconds before the time limit, to checkpoint and requeue (default 120)")
    ex.add_argument("--poll-s", type=float, default=5.0, help="seconds between checks on running jobs (default 5)")
    c = p.add_argument_group("cost estimate (--dry-run)")
    c.add_argument("--gpu", default="H100", choices=list(cost.GPU_PEAK_FLOPS),
                   help="GPU for the GPU-hours estimate (dense bf16 peak; default H100)")
    c.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (default 0.4)")
    return p


# Numeric options and their least value (an int, or a float that must be exceeded when strict).
OPTION_BOUNDS = {"nodes": (1, False), "tasks_per_node": (1, False), "gpus_per_node": (0, False),
                 "cpus_per_task": (1, False), "mem_gb": (0, True), "time_min": (1, False),
                 "array_parallelism": (1, False), "max_timeouts": (0, False), "signal_delay_s": (0, False),
                 "poll_s": (0, True), "mfu": (0, True)}


def check_options(args) -> None:
    """A ConfigError naming the first numeric option out of range (e.g. --time-min 0), before anything runs."""
    for name, (least, strict) in OPTION_BOUNDS.items():
        value = getattr(args, name)
        if value is not None and (value <= least if strict else value < least):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value}: must be {'>' if strict else '>='} {least}")
    if args.mfu > 1:
        raise ConfigError(f"--mfu {args.mfu}: a utilisation is at most 1 (0.4 = 40%)")
    if args.results.exists() and not args.results.is_dir():
        raise ConfigError(f"--results {args.results}: is a file; give a folder for the run directories")


def options_from_args(args, profile: sweeps.Profile) -> launcher.Options:
    extra = []
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not key.strip().lstrip("-"):
            raise ConfigError(f"--slurm-extra {item!r}: expected KEY=VALUE or KEY, for example constraint=h100")
        extra.append((key.strip().lstrip("-"), value.strip() if sep and value.strip() else True))
    return launcher.Options(
        executor=args.executor, partition=args.partition, account=args.account, qos=args.qos, nodes=args.nodes,
        tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb, time_min=profile.time_min if args.time_min is None else args.time_min,
        array_parallelism=args.array_parallelism,
        slurm_extra=tuple(extra), max_timeouts=args.max_timeouts, signal_delay_s=args.signal_delay_s,
        poll_s=args.poll_s, progress=not args.no_progress, wait=not args.no_wait)


def dry_run(specs: list, opts: launcher.Options, args) -> str:
    """Every run with its overrides and cost, the sbatch parameters, and the totals."""
    shared = {k: v for k, v in specs[0].overrides.items() if all(s.overrides.get(k) == v for s in specs)}
    kind = launcher.resolve_executor(opts.executor)
    costs = [cost.estimate(s.cfg) for s in specs]
    gpu_label = f"GPU-h {args.gpu}@{args.mfu:.0%}"
    rows = [{"s": s, "c": c} for s, c in zip(specs, costs, strict=True)]
    columns = [
        ("run", lambda r: r["s"].run_id), ("variant", lambda r: r["s"].variant), ("seed", lambda r: r["s"].seed),
        ("overrides", lambda r: " ".join(f"{k}={v}" for k, v in r["s"].overrides.items() if k not in shared) or "-"),
        ("train FLOPs", lambda r: cost.human(r["c"].train_flops)),
        ("eval FLOPs", lambda r: cost.human(r["c"].eval_flops)),
        (gpu_label, lambda r: f"{r['c'].gpu_hours(args.gpu, args.mfu):.3g}"),
    ]
    if costs[0].params is not None:  # the fallback estimate: show its parameter count
        columns.insert(4, ("params (est.)", lambda r: f"{r['c'].params / 1e6:.1f}M"))
    lines = [f"sweep {specs[0].sweep}, profile {specs[0].profile}: {len(specs)} runs -> executor {kind}, "
             f"results {args.results / specs[0].sweep}",
             "overrides shared by every run: " + " ".join(f"{k}={v}" for k, v in shared.items())]
    protocols = {s.run_id: protocol(s.cfg) for s in specs}
    if len(set(protocols.values())) == 1:
        lines.append(f"protocol of every run: {protocols[specs[0].run_id]}")
    else:
        lines += [f"protocol of {run_id}: {text}" for run_id, text in protocols.items()]
    lines += ["", status.table(rows, columns), ""]
    total = sum(c.flops for c in costs)
    lines.append(f"total: {cost.human(total)}, {sum(c.gpu_hours(args.gpu, args.mfu) for c in costs):.3g} GPU-hours "
                 f"on {args.gpu} (dense bf16 peak {cost.GPU_PEAK_FLOPS[args.gpu] / 1e12:.0f} TFLOP/s) at MFU "
                 f"{args.mfu}; FLOPs by {costs[0].method}")
    params = launcher.slurm_parameters(opts, f"vdt-{specs[0].sweep}")
    lines.append(f"sbatch parameters (one array of {len(specs)} jobs):  " + " ".join(
        launcher.sbatch_lines(params, len(specs))))
    if kind == "local":
        lines.append(f"local: {launcher.local_slots(opts)} job(s) at a time, {opts.cpus_per_task} torch thread(s) "
                     "each")
    why_not = timing.applies(specs, opts.gpus_per_node)
    if why_not:
        lines.append(f"time on this machine: not estimated ({why_not})")
    else:  # times a few training steps of each distinct config here (seconds); slurm: as local would run them
        slots = 1 if kind in ("inline", "debug") else launcher.local_slots(opts)
        lines.append(timing.estimate(specs, slots, opts.cpus_per_task).text())
    lines.append("nothing submitted (--dry-run)")
    return "\n".join(lines)


LOSS_NORMS = {"all": "mean over every element, as the official code", "masked": "mean over the generated elements"}


def protocol(cfg) -> str:
    """What a run's numbers mean: FVD's protocol, the clips the latent cache holds, the loss normalisation and the
    sampler (docs/metrics.md, docs/model.md)."""
    e, d = cfg.eval, cfg.data
    fvd = (f"FVD {e.num_videos} generated vs {e.num_videos} real clips of {d.frames} frames, reals from the "
           f"{e.fvd_reals} split (eval.fvd_reals={e.fvd_reals}), real-vs-real reference from the {e.fvd_reals} split"
           if e.fvd else "FVD off")
    if d.autoencoder == "none":
        cache = "no latent cache (pixels)"
    elif d.latent_clips == 0:
        cache = "latent cache: every clip of every video (data.latent_clips=0)"
    else:
        cache = f"latent cache: {d.latent_clips} clip(s) per video (data.latent_clips={d.latent_clips})"
    loss = f"loss normalisation: {cfg.diffusion.loss_norm}, {LOSS_NORMS[cfg.diffusion.loss_norm]}"
    sampler = f"sampler: {e.sampler}, {e.sample_steps} steps" + (f", eta {e.eta:g}" if e.sampler == "ddim" else "")
    return "; ".join((fvd, cache, loss, sampler))


def check_data_roots(specs: list) -> None:
    """A data.root that is not a directory here fails every job: say so before submitting (--dry-run skips this)."""
    for root in sorted({s.cfg.data.root for s in specs if s.cfg.data.root}):
        if not Path(root).expanduser().is_dir():
            raise DataError(f"data.root={root}: no such directory (give the dataset folder; see docs/data.md)")


def main(argv=None) -> int:
    """``python ablations/run.py``; an input error prints its message and exits 2 (``vdt.cli.run``)."""
    return vdt_cli.run(run_sweep, argv)


def run_sweep(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(sweeps.describe())
        return 0
    if not args.sweep:
        parser.error("--sweep is required (see --list)")
    check_options(args)
    sweep_dir = args.results / args.sweep
    if args.status:
        rows = [status.row(d) for d in status.run_dirs(sweep_dir)]
        print(status.status_table(rows) if rows else f"no runs under {sweep_dir}")
        return 0
    sets = sweeps.parse_sets(vdt_cli.overrides(args))  # an input error exits 2 through vdt.cli.run
    specs = sweeps.expand(args.sweep, args.profile, sets, seeds=args.seeds, variants=args.variants)
    opts = options_from_args(args, sweeps.PROFILES[args.profile])
    opts = dataclasses.replace(opts, executor=launcher.resolve_executor(opts.executor))  # asks SLURM once
    if args.dry_run:
        print(dry_run(specs, opts, args))
        return 0
    if args.no_wait and launcher.resolve_executor(opts.executor) != "slurm":
        raise ConfigError("--no-wait: only SLURM jobs outlive the launcher; use --executor slurm")
    check_data_roots(specs)
    try:
        rows = launcher.launch(specs, args.results, opts, retry_failed=args.retry_failed)
    except rundir.LockHeld as e:
        print(f"error: sweep {args.sweep} is being launched by another process ({e}); wait for it, or follow it "
              "with --status", file=sys.stderr)
        return 3
    except launcher.SubmitError as e:
        print(f"error: {e}\n(runs not submitted stay pending; the next launch submits them. Without a working "
              "SLURM controller, use --executor local)", file=sys.stderr)
        return 1
    if not opts.wait:
        return 0
    print("\n" + status.summary_table(rows))
    failed = status.failures_text(rows)
    if failed:
        print("\n" + failed)
    where = "" if args.results == Path("results/runs") else f" --results {args.results} --out DIR"
    print(f"\nruns: {sweep_dir}\nreport: python metrics/report.py --sweep {args.sweep}{where}")
    return 1 if any(r["state"] != "done" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
