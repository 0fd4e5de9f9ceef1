"""Submit a sweep's runs and watch them to the end: SLURM, local processes, or in this process.

Executors:
- ``slurm``: one submitit job array (``executor.batch()``) on the cluster, ``--array=...%P``.
- ``local``: submitit's local executor, throttled here to the runs the machine can hold at once
  (cores / (cpus per task x tasks), and memory when ``mem_gb`` is given): submitit alone would
  start every job at once. Torch in each job uses ``cpus_per_task`` threads.
- ``inline``: sequentially in this process. ``debug``: submitit's DebugExecutor (in-process, for tests).

Re-launching is safe: finished runs are skipped, a run a live job holds is watched rather than
resubmitted, and the rest are (re)submitted and resume from their last checkpoint. Waiting never
blocks on ``result()``: the loop polls ``done()`` and state.json, and a SLURM job that leaves the
queue without a result is marked failed.
"""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import submitit
from tqdm import tqdm

from ablations import cost, rundir, status
from ablations.job import SweepJob, job_log
from vdt.errors import ConfigError
from vdt.layout import RunLayout

EXECUTORS = ("auto", "slurm", "local", "inline", "debug")
VANISH_CHECK_S = 30.0
PROGRESS_LINE_S = 60.0  # without a terminal: one progress line a minute


@dataclass(frozen=True)
class Options:
    """How and where jobs run. Nothing cluster-specific has a default."""

    executor: str = "auto"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    array_parallelism: int | None = None
    slurm_extra: tuple = ()  # ((key, value), ...): extra sbatch arguments; value True means a bare flag
    max_timeouts: int = 20  # requeues after hitting the time limit (preemptions don't count)
    signal_delay_s: int = 120  # USR2 this long before the limit: time to finish a step and requeue
    poll_s: float = 5.0
    progress: bool = True
    wait: bool = True

    def __post_init__(self):
        for k in ("nodes", "tasks_per_node", "cpus_per_task", "time_min"):
            if getattr(self, k) < 1:
                raise ConfigError(f"--{k.replace('_', '-')}: must be >= 1")
        if self.max_timeouts < 0 or self.gpus_per_node < 0:
            raise ConfigError("--max-timeouts and --gpus-per-node: must be >= 0")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor: {self.executor!r} is not one of {EXECUTORS}")


def resolve_executor(kind: str) -> str:
    """``auto`` -> ``slurm`` where ``sbatch`` is on PATH and the controller answers, else ``local``.

    A machine with the SLURM client installed but no controller running (a login image, a laptop, a
    cluster in maintenance) would otherwise fail at submission; ``auto`` says why it chose local instead.
    """
    if kind != "auto":
        return kind
    if not shutil.which("sbatch"):
        return "local"
    down = slurm_controller_down()
    if down:
        print(f"executor auto: sbatch is on PATH but {down}; running locally (--executor slurm submits anyway)",
              file=sys.stderr)
        return "local"
    return "slurm"


def slurm_controller_down(timeout_s: float = 15.0) -> str | None:
    """None when ``scontrol ping`` reports any controller UP, else why not (one line)."""
    if not shutil.which("scontrol"):
        return "scontrol is not on PATH to ask the controller"
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"scontrol ping did not answer in {timeout_s:g} s"
    first = next((line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip()), "no output")
    if " is UP" in r.stdout:  # any controller up will do (a down backup can make the exit status nonzero)
        return None
    return f"the controller is not up (scontrol ping: {first})"


def local_slots(opts: Options) -> int:
    """How many jobs this machine runs at once: cores, then memory, then --array-parallelism."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slots = cores // (opts.cpus_per_task * opts.tasks_per_node)
    if opts.mem_gb:
        slots = min(slots, int(psutil.virtual_memory().available / 2**30 // opts.mem_gb))
    if opts.array_parallelism:
        slots = min(slots, opts.array_parallelism)
    return max(1, slots)


def slurm_parameters(opts: Options, name: str) -> dict:
    """submitit SlurmExecutor parameters; only what the user set (plus time and tasks) goes out."""
    p = {"job_name": name, "time": opts.time_min, "nodes": opts.nodes, "ntasks_per_node": opts.tasks_per_node,
         "cpus_per_task": opts.cpus_per_task, "signal_delay_s": opts.signal_delay_s, "stderr_to_stdout": True}
    for k in ("partition", "account", "qos", "array_parallelism"):
        if getattr(opts, k) is not None:
            p[k] = getattr(opts, k)
    if opts.gpus_per_node:
        p["gpus_per_node"] = opts.gpus_per_node
    if opts.mem_gb:
        p["mem"] = f"{int(opts.mem_gb * 1024)}M"
    if opts.slurm_extra:
        p["additional_parameters"] = dict(opts.slurm_extra)
    if opts.tasks_per_node * opts.nodes > 1:  # one task failing ends the job instead of hanging its peers
        p["srun_args"] = ["--kill-on-bad-exit=1"]
    return p


def sbatch_lines(params: dict, n_runs: int) -> list:
    """The #SBATCH arguments a job array of ``n_runs`` gets (submitit adds --output, --open-mode, --wckey)."""
    flags = {k: v for k, v in params.items() if k not in ("signal_delay_s", "stderr_to_stdout", "srun_args",
                                                          "additional_parameters", "array_parallelism")}
    flags.update(params.get("additional_parameters", {}))
    lines = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in sorted(flags.items())]
    par = params.get("array_parallelism")
    lines.append(f"--array=0-{n_runs - 1}" + (f"%{par}" if par else ""))
    lines.append(f"--signal=USR2@{params['signal_delay_s']}")
    if params.get("srun_args"):
        lines.append(f"(srun {' '.join(params['srun_args'])})")
    return lines


def make_executor(kind: str, folder: Path, opts: Options, name: str):
    """The submitit executor for ``kind`` (slurm, local or debug), with its parameters set."""
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=opts.max_timeouts)
        ex.update_parameters(**slurm_parameters(opts, name))
    elif kind == "local":
        ex = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=opts.max_timeouts)
        ex.update_parameters(timeout_min=opts.time_min, tasks_per_node=opts.tasks_per_node,
                             signal_delay_s=opts.signal_delay_s)
    elif kind == "debug":
        ex = submitit.DebugExecutor(folder=folder / "%j")
    else:
        raise ValueError(f"no submitit executor for {kind!r}")
    return ex


def read_tail(path, lines: int = rundir.ERROR_LINES) -> str:
    try:
        return rundir.tail(Path(path).read_text(errors="replace"), lines)
    except OSError:
        return ""


class FinishedDebugJob:
    """A debug job already run in this process, shaped like a submitit job for the watcher."""

    def __init__(self, job):
        self.job_id, self.paths = job.job_id, job.paths
        self._exc = job.exception()  # runs it; DebugJob.done() would rerun a failed job under pdb

    def done(self) -> bool:
        return True

    def exception(self):
        return self._exc


class Watcher:
    """The runs of one launch: which are queued, running, finished; progress bars; failure bookkeeping."""

    def __init__(self, specs: list, sweep_dir: Path, opts: Options, finished: int, kind: str):
        self.sweep_dir, self.opts, self.kind, self.finished = sweep_dir, opts, kind, finished
        self.specs = {s.run_id: s for s in specs}
        self.jobs = {}  # run_id -> submitit job, or None for a run watched through its files only
        self.bars = opts.progress and sys.stderr.isatty()  # elsewhere (CI logs) the event lines say enough
        self.bar = tqdm(total=len(specs), initial=finished, desc="runs done", unit="run",
                        disable=not self.bars, dynamic_ncols=True)
        self.run_bars = {}
        self.checked, self.misses = {}, {}  # run_id -> last squeue check time, consecutive misses
        self.steps, self.last_line = {}, time.time()  # run_id -> last logged step; last plain progress line

    def say(self, msg: str) -> None:
        tqdm.write(msg, file=sys.stdout)

    def label(self, run_id: str) -> str:
        s = self.specs[run_id]
        return f"{run_id} {s.variant} seed={s.seed}"

    def track(self, run_id: str, job) -> None:
        self.jobs[run_id] = job

    def poll(self) -> None:
        """Check every tracked run once; finished ones leave ``jobs``."""
        for run_id, job in list(self.jobs.items()):
            d = self.sweep_dir / run_id
            state = rundir.read_state(d)
            if state["state"] in ("done", "failed") and (job is None or job.done()):
                self.finish(run_id, state)
            elif job is not None and (job.done() or self.vanished(run_id, job)):
                self.finish(run_id, self.settle(d, job))
            elif job is None and not self.attached_alive(d, state):
                why = "the job that held this run (from another launch) ended without finishing it"
                self.finish(run_id, rundir.update_state(d, state="failed", error=why))
            else:
                self.show_progress(run_id, d, state)
        if not self.bars and self.opts.progress and time.time() - self.last_line >= PROGRESS_LINE_S:
            self.last_line = time.time()
            running = [f"{self.label(r)} {self.steps.get(r, '?')}/{self.specs[r].cfg.train.steps}" for r in self.jobs
                       if r in self.steps]
            self.say(f"progress: {self.finished}/{len(self.specs)} runs done; running: {', '.join(running) or 'none'}")

    @staticmethod
    def attached_alive(run_dir: Path, state: dict) -> bool:
        """A run another launch's job holds: alive while its heartbeat is fresh or SLURM lists it (or can't tell)."""
        return status.job_alive(run_dir, state)

    def vanished(self, run_id: str, job) -> bool:
        """A SLURM job that left the queue without a result (killed, node lost; sacct may be off or lagging).

        Checked at most every ``VANISH_CHECK_S``; two misses in a row count, so a job between
        requeue and restart, or one writing its result right now, is not taken for dead. A run
        with a fresh heartbeat, or a queue no controller answers for (after retries), is no miss.
        """
        if self.kind != "slurm" or time.time() - self.checked.get(run_id, 0.0) < VANISH_CHECK_S:
            return False
        self.checked[run_id] = time.time()
        if (status.beating(self.sweep_dir / run_id) or status.slurm_job_queued(job.job_id) is not False
                or job.paths.result_pickle.exists()):
            self.misses.pop(run_id, None)
            return False
        self.misses[run_id] = self.misses.get(run_id, 0) + 1
        return self.misses[run_id] >= 2

    def settle(self, run_dir: Path, job) -> dict:
        """A job that ended while state.json still says pending/running: record why."""
        exc = RuntimeError("the job left the SLURM queue without a result")
        if job.done():  # exception() waits for done(): never call it on a vanished job
            try:
                exc = job.exception()
            except Exception as e:  # noqa: BLE001 - a job with no result (cancelled, killed) raises here
                exc = e
        state = rundir.read_state(run_dir)
        if state["state"] in ("done", "failed"):
            return state
        log = job_log(job.paths, self.kind)
        why = f"{type(exc).__name__}: {exc}" if exc else "the job ended without finishing the run"
        return rundir.update_state(run_dir, state="failed", error=rundir.tail(read_tail(log) + "\n" + why), log=log,
                                   step=rundir.last_logged(run_dir).get("step", state["step"]))

    def finish(self, run_id: str, state: dict) -> None:
        self.jobs.pop(run_id, None)
        self.steps.pop(run_id, None)
        bar = self.run_bars.pop(run_id, None)
        if bar is not None:
            bar.close()
        self.bar.update(1)
        self.finished += 1
        if state["state"] == "done":
            self.say(f"done    {self.label(run_id)} step {state['step']}")
        else:
            self.say(f"FAILED  {self.label(run_id)}: log {state['log']}")

    def show_progress(self, run_id: str, run_dir: Path, state: dict) -> None:
        """Per-run progress from train_log.jsonl: a bar per running run on a terminal, else periodic lines."""
        if not self.opts.progress or state["state"] != "running":
            return
        logged = rundir.last_logged(run_dir)
        self.steps[run_id] = logged.get("step", 0)
        if not self.bars:
            return
        bar = self.run_bars.get(run_id)
        if bar is None:
            bar = tqdm(total=self.specs[run_id].cfg.train.steps, desc=self.label(run_id), unit="step",
                       position=len(self.run_bars) + 1, leave=False, dynamic_ncols=True)
            self.run_bars[run_id] = bar
        step = logged.get("step", 0)
        bar.update(step - bar.n)
        if "loss" in logged:
            bar.set_postfix(loss=f"{logged['loss']:.4f}")

    def close(self) -> None:
        for bar in self.run_bars.values():
            bar.close()
        self.bar.close()


def classify(specs: list, sweep_dir: Path, retry_failed: bool) -> dict:
    """Prepare each run dir and sort the runs: done, failed (kept), alive (a job holds it), todo. A run not yet
    started here that another sweep has finished with the same training config is taken from there."""
    out = {"done": [], "failed": [], "alive": [], "todo": []}
    for spec in specs:
        d = sweep_dir / spec.run_id
        rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
        state = rundir.read_state(d)
        fresh = state["state"] == "pending" and not RunLayout(d).checkpoints.exists()
        twin = rundir.trained_twin(d) if fresh else None
        if twin is not None:
            rundir.adopt(d, twin)
            state = rundir.read_state(d)
            print(f"reuse   {spec.run_id} {spec.variant} seed={spec.seed}: trained in {twin}")
        if state["state"] == "done" and rundir.evaluated(d):
            out["done"].append(spec)
        elif status.job_alive(d, state):
            out["alive"].append(spec)
        elif state["state"] == "failed" and not retry_failed:
            out["failed"].append(spec)
        else:
            out["todo"].append(spec)
    return out


def launch(specs: list, results: Path, opts: Options, *, retry_failed: bool = False) -> list:
    """Run ``specs`` (one sweep) to the end; returns the status rows of all of them."""
    sweep_dir = Path(results) / specs[0].sweep
    kind = resolve_executor(opts.executor)
    with rundir.SweepLock(sweep_dir):
        groups = classify(specs, sweep_dir, retry_failed)
        print(f"sweep {specs[0].sweep}: {len(specs)} runs ({len(groups['done'])} done, "
              f"{len(groups['failed'])} failed and kept (--retry-failed reruns them), {len(groups['alive'])} "
              f"held by a live job, {len(groups['todo'])} to run) -> executor {kind}, results {sweep_dir}")
        watcher = Watcher(specs, sweep_dir, opts, len(groups["done"]) + len(groups["failed"]), kind)
        for spec in groups["alive"]:
            watcher.track(spec.run_id, None)
        for spec in groups["todo"]:
            rundir.update_state(sweep_dir / spec.run_id, state="pending", error=None, job_id=None)
        try:
            if kind == "inline":
                run_inline(groups["todo"], sweep_dir, opts, watcher)
            else:
                submit_all(kind, groups["todo"], sweep_dir, opts, watcher)
            if not opts.wait:
                print(f"submitted; follow with --status (the jobs run on). Results: {sweep_dir}")
                return [status.row(sweep_dir / s.run_id) for s in specs]
        finally:
            watcher.close()
    return [status.row(sweep_dir / s.run_id) for s in specs]


def new_job(spec, sweep_dir: Path, opts: Options, kind: str) -> SweepJob:
    threads = opts.cpus_per_task if kind in ("local", "slurm") else None
    # In-process runs draw their own training/sampling bars, on a terminal and unless --no-progress.
    bars = opts.progress and kind in ("inline", "debug") and sys.stderr.isatty()
    return SweepJob(sweep_dir / spec.run_id, threads=threads, progress=bars)


def run_inline(todo: list, sweep_dir: Path, opts: Options, watcher: Watcher) -> None:
    """One run after another in this process; a failure is recorded by the job and we go on."""
    for spec in todo:
        watcher.say(f"start   {watcher.label(spec.run_id)}")
        try:
            new_job(spec, sweep_dir, opts, "inline")()
        except Exception:  # noqa: BLE001 - recorded in state.json by the job; the next run goes on
            pass
        watcher.finish(spec.run_id, rundir.read_state(sweep_dir / spec.run_id))
    while watcher.jobs:  # runs other launches' jobs hold
        watcher.poll()
        time.sleep(opts.poll_s)


def submit_all(kind: str, todo: list, sweep_dir: Path, opts: Options, watcher: Watcher) -> None:
    """Submit as job arrays (local: only as many as there are free slots) and poll until all end."""
    ex = make_executor(kind, sweep_dir / "logs", opts, name=f"vdt-{sweep_dir.name}")
    slots = local_slots(opts) if kind == "local" else len(todo)
    queue = longest_first(todo) if kind == "local" else list(todo)
    if kind == "local":
        watcher.say(f"local: {slots} job(s) at a time, {opts.cpus_per_task} torch thread(s) each")
    while queue or watcher.jobs:
        free = slots - sum(1 for j in watcher.jobs.values() if j is not None)
        if queue and free > 0:
            batch, queue = queue[:free], queue[free:]
            submit_batch(ex, batch, sweep_dir, opts, kind, watcher)
            if not opts.wait:
                return
        watcher.poll()
        if watcher.jobs:
            time.sleep(opts.poll_s)


def longest_first(todo: list) -> list:
    """The runs in order of estimated cost, the largest first (ties keep the sweep's order). With a few local
    slots, a long run started last holds the sweep up while the other slots stand idle; starting it first
    (longest-processing-time order) shortens the whole sweep, e.g. `depth`, whose depth-8 runs cost the most per step
    (``cost.estimate``)."""
    return sorted(todo, key=lambda spec: -cost.estimate(spec.cfg).flops)


class SubmitError(RuntimeError):
    """The scheduler refused the jobs (no controller, bad partition or account, ...)."""


def submit_batch(ex, batch: list, sweep_dir: Path, opts: Options, kind: str, watcher: Watcher) -> None:
    try:
        with ex.batch():
            jobs = [ex.submit(new_job(spec, sweep_dir, opts, kind)) for spec in batch]
    except Exception as e:  # noqa: BLE001 - submitit raises FailedJobError, OSError, ... : report them all
        raise SubmitError(f"submitting {len(batch)} job(s) with the {kind} executor failed: "
                          f"{type(e).__name__}: {str(e).strip()}") from e
    for spec, job in zip(batch, jobs, strict=True):
        d = sweep_dir / spec.run_id
        rundir.update_state(d, job_id=str(job.job_id), scheduler=kind, log=job_log(job.paths, kind))
        (d / "logs" / "job").unlink(missing_ok=True)
        (d / "logs" / "job").symlink_to(job.paths.folder, target_is_directory=True)
        watcher.say(f"submit  {watcher.label(spec.run_id)} -> job {job.job_id}")
        watcher.track(spec.run_id, FinishedDebugJob(job) if kind == "debug" else job)  # debug: runs here, now
