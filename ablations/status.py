"""What a sweep's runs are doing, read from their files: ``--status`` and the end-of-sweep summary.

Everything here reads run directories (state.json, run.json, heartbeat.json, train_log.jsonl,
eval.json) and asks the scheduler only whether a job is still queued; it never changes a run and
never takes a lock (a job starting meanwhile must be able to take its run lock).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ablations import rundir
from vdt.layout import RunLayout, scored_split

SQUEUE_TRIES = 4  # squeue calls before concluding that no controller answers
SQUEUE_BACKOFF_S = 1.0  # the wait before the second call, doubled before each next one
UNANSWERED_S = 30.0  # after a call found no controller: answer "can't tell" without asking, for this long
_unanswered_until = [0.0]


def squeue_once(job_id) -> bool | None:
    """One ``squeue`` call: True (listed), False (not listed, or an invalid id), None (no controller answered)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return False if "Invalid job id" in out.stderr else None
    return bool(out.stdout.strip())


def slurm_job_queued(job_id, tries: int = SQUEUE_TRIES, backoff_s: float = SQUEUE_BACKOFF_S) -> bool | None:
    """Whether SLURM lists the job (pending, running, requeued): True, False, or None when no controller
    answers ``tries`` calls with back-off (1, 2, 4 s). Not a SLURM job id, or no squeue: False.

    A controller that answered no call is not asked again for ``UNANSWERED_S`` (None meanwhile): None means
    "can't tell", and callers never take it for a job gone, so a flaky controller costs waiting, not runs."""
    if not job_id or not shutil.which("squeue") or not str(job_id).replace("_", "").isdigit():
        return False
    if time.monotonic() < _unanswered_until[0]:
        return None
    for i in range(tries):
        if i:
            time.sleep(backoff_s * 2 ** (i - 1))
        answer = squeue_once(job_id)
        if answer is not None:
            return answer
    _unanswered_until[0] = time.monotonic() + UNANSWERED_S
    return None


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):  # someone else's process (alive), or no pid to check
        return True
    return True


def beating(run_dir) -> bool:
    """Whether a job is working on this run now, from its heartbeat: fresh, and its process alive when it is on
    this host. A fresh heartbeat from another host counts whatever the scheduler says: a run is never taken
    from a job that may still be writing it (a dead job's heartbeat goes stale in ``HEARTBEAT_STALE_S``)."""
    beat = rundir.read_heartbeat(run_dir)
    if beat is None:
        return False
    return beat.get("host") != socket.gethostname() or pid_alive(beat.get("pid"))


def job_alive(run_dir, state: dict | None = None) -> bool:
    """Whether a job is working on this run now (a fresh heartbeat), or SLURM still queues one for it, or may:
    when no controller answers, a SLURM job counts as alive (it is watched, not submitted twice)."""
    state = state or rundir.read_state(run_dir)
    if beating(run_dir):
        return True
    if state["state"] not in ("pending", "running") or state.get("scheduler", "slurm") != "slurm":
        return False
    return slurm_job_queued(state["job_id"]) is not False


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
    ev = rundir.read_json(layout.eval_result(scored_split(cfg)), {})
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
