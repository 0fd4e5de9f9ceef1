"""What a sweep's runs are doing, read from their files: ``--status`` and the end-of-sweep summary.

Everything here reads run directories (state.json, run.json, heartbeat.json, train_log.jsonl,
eval.json) and asks the scheduler only whether a job is still queued; it never changes a run and
never takes a lock (a job starting meanwhile must be able to take its run lock).
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

from ablations import rundir
from vdt.layout import RunLayout


def slurm_job_queued(job_id) -> bool | None:
    """Whether SLURM lists the job (pending, running, requeued): True, False, or None when no controller
    answers (``squeue`` times out or can't connect). Not a SLURM job id, or no squeue: False."""
    if not job_id or not shutil.which("squeue") or not str(job_id).replace("_", "").isdigit():
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return False if "Invalid job id" in out.stderr else None
    return bool(out.stdout.strip())


_no_controller = []  # set once squeue found no controller: don't wait ~20 s per run on it again


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):  # someone else's process (alive), or no pid to check
        return True
    return True


def beating(run_dir) -> bool:
    """Whether a job is working on this run now, from its heartbeat: fresh, its process alive (when on this
    host), and its SLURM job not gone from the queue (when it is one and a controller answers)."""
    beat = rundir.read_heartbeat(run_dir)
    if beat is None:
        return False
    if beat.get("host") == socket.gethostname() and not pid_alive(beat.get("pid")):
        return False
    if beat.get("scheduler") == "slurm":
        return slurm_job_queued(beat.get("job_id")) is not False
    return True


def job_alive(run_dir, state: dict | None = None) -> bool:
    """Whether a job is working on this run now (a fresh heartbeat), or SLURM still queues one for it."""
    state = state or rundir.read_state(run_dir)
    if beating(run_dir):
        return True
    if state["state"] not in ("pending", "running") or _no_controller:
        return False
    queued = slurm_job_queued(state["job_id"])
    if queued is None:  # no controller: whatever was queued can't run now, and a new submission would fail too
        _no_controller.append(state["job_id"])
    return bool(queued)


def run_dirs(sweep_dir) -> list:
    """Run directories of a sweep (those with a run.json), ordered by variant then seed."""
    dirs = [p.parent for p in Path(sweep_dir).glob("*/run.json")]
    info = {d: rundir.read_json(d / "run.json", {}) for d in dirs}
    return sorted(dirs, key=lambda d: (str(info[d].get("variant")), info[d].get("seed", 0), d.name))


def row(run_dir) -> dict:
    """One run's line: id, variant, seed, state, step, loss, job id, log, error, metrics."""
    run_dir, layout = Path(run_dir), RunLayout(run_dir)
    info, state = rundir.read_json(layout.run_info, {}), rundir.read_state(run_dir)
    cfg = rundir.read_json(layout.config, {})
    logged = rundir.last_logged(run_dir)
    shown = state["state"]
    if shown in ("pending", "running") and state["attempts"] and not job_alive(run_dir, state):
        shown = f"{shown} (no job: relaunch resumes it)"
    elif shown == "done" and not rundir.evaluated(run_dir):
        shown = "done (evaluation incomplete: relaunch evaluates)"
    ev = rundir.read_json(layout.eval_json, {})
    metrics = {t: r.get("metrics", {}) for t, r in ev.get("tasks", {}).items()}
    return {
        "run_id": run_dir.name, "variant": info.get("variant"), "seed": info.get("seed"), "state": shown,
        "step": max(state["step"] or 0, logged.get("step", 0)), "steps": cfg.get("train", {}).get("steps"),
        "loss": logged.get("loss"), "job_id": state["job_id"], "log": state["log"], "error": state["error"],
        "metrics": metrics,
    }


def fmt(v, nd: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def table(rows: list, columns: list) -> str:
    """Plain aligned text table; ``columns`` are (header, function of a row) pairs."""
    cells = [[h for h, _ in columns]] + [[fmt(f(r)) for _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def status_table(rows: list) -> str:
    """``--status``: state, step, last loss, job id and log of every run."""
    return table(rows, [
        ("run", lambda r: r["run_id"]), ("variant", lambda r: r["variant"]), ("seed", lambda r: r["seed"]),
        ("state", lambda r: r["state"]), ("step", lambda r: f"{r['step']}/{fmt(r['steps'])}"),
        ("loss", lambda r: r["loss"]), ("job", lambda r: r["job_id"]), ("log", lambda r: r["log"]),
    ])


def summary_table(rows: list) -> str:
    """The end-of-sweep table: state, final loss and each task's PSNR / SSIM."""
    tasks = sorted({t for r in rows for t in r["metrics"]})
    columns = [("run", lambda r: r["run_id"]), ("variant", lambda r: r["variant"]), ("seed", lambda r: r["seed"]),
               ("state", lambda r: r["state"]), ("step", lambda r: r["step"]), ("loss", lambda r: r["loss"])]
    for t in tasks:
        for m in ("psnr", "ssim"):
            columns.append((f"{t}:{m}", lambda r, t=t, m=m: r["metrics"].get(t, {}).get(m)))
    return table(rows, columns)


def failures_text(rows: list) -> str:
    """Each failed run with its log path and the last lines of its error."""
    out = []
    for r in rows:
        if r["state"] != "failed":
            continue
        out.append(f"FAILED {r['run_id']} ({r['variant']}, seed {r['seed']}): log {r['log']}")
        out += ["    " + line for line in (r["error"] or "(no error recorded)").splitlines()[-8:]]
    return "\n".join(out)
