"""A run directory's bookkeeping files: config.json, run.json, state.json, heartbeat.json, and the locks.

Layout and fields: ``vdt.layout`` (``RunLayout``, ``FILES``). Every JSON file is written to a
temporary name and renamed (``os.replace``), so a reader never sees half a file. state.json is
changed read-modify-write under an ``fcntl.flock`` on ``.state.lock``, because the launcher (job
id, log path) and the job (running, done, failed) both write it.

Two locks keep two launches of one sweep from corrupting a run:
- ``SweepLock``: held by a launcher for as long as it submits and watches a sweep;
- ``RunLock``: held by the job (rank 0) for as long as it trains and evaluates a run; a second job
  on the same run fails to take it.
Nobody probes a lock by taking it (that would make a job starting at that moment fail): whether a
job is alive is read from its ``Heartbeat`` and the scheduler (``ablations.status.job_alive``).
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

from vdt.errors import InputError
from vdt.layout import RunLayout, eval_status, read_json, write_json

HEARTBEAT_S = 10.0  # how often a live job rewrites heartbeat.json
HEARTBEAT_STALE_S = 120.0  # a heartbeat older than this is from a job that died (clocks must agree this well)

STATES = ("pending", "running", "done", "failed")
ERROR_LINES = 15  # lines of a traceback kept in state.json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def tail(text: str, lines: int = ERROR_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _flock(path, blocking: bool = True):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_state(run_dir) -> dict:
    """state.json, or a fresh pending state when there is none."""
    default = {"state": "pending", "step": 0, "job_id": None, "log": None, "error": None,
               "updated": None, "attempts": 0}
    return {**default, **read_json(RunLayout(run_dir).state, {})}


def update_state(run_dir, **fields) -> dict:
    """Merge ``fields`` into state.json under the state lock; returns the new state."""
    layout = RunLayout(run_dir)
    if "state" in fields and fields["state"] not in STATES:
        raise ValueError(f"state: {fields['state']!r} is not one of {STATES}")
    with _flock(layout.state_lock):
        state = {**read_state(run_dir), **fields, "updated": now()}
        write_json(layout.state, state)
    return state


def last_logged(run_dir) -> dict:
    """The last training line of train_log.jsonl ({} if none): step, loss, ..."""
    path = RunLayout(run_dir).train_log
    if not path.exists():
        return {}
    with open(path, "rb") as f:  # read only the end: logs of long runs grow large
        f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
        lines = f.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            if isinstance(row, dict) and "loss" in row:
                return row
    return {}


def prepare(run_dir, config: dict, run_info: dict) -> None:
    """Create the run dir with config.json and run.json; an existing one must hold the same training config
    (config.json's writer is ``vdt.train.write_config``: it updates what may change, e.g. ``eval.*``)."""
    from vdt.config import RunConfig
    from vdt.train import write_config  # here: importing training is slow, and --list/--status don't need it

    layout = RunLayout(run_dir)
    old = migrate_legacy(run_dir, config)
    if old is not None:
        print(f"renamed {old} -> {layout.root}: the same training under the old run id (it hashed cadence, "
              "workers and paths; see docs/model.md#the-run-id)", flush=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, RunConfig.from_dict(config))
    info = read_json(layout.run_info, {})  # keeps what training added (skipped_videos)
    if {**info, **run_info} != info:
        write_json(layout.run_info, {**info, **run_info})
    if not layout.state.exists():
        update_state(run_dir)


def trained_twin(run_dir) -> Path | None:
    """A finished run of the same training config in another sweep of the same results folder, or None.

    Sweeps share runs: the ``prediction`` sweep's ``v`` runs are the ``conditioning`` sweep's ``token_concat``
    runs, and such a run has the same id (the hash of its training config) in both sweep folders."""
    run_dir = Path(run_dir)
    ours = _training_sections(run_dir)
    for other in sorted(run_dir.parent.parent.glob(f"*/{run_dir.name}")):
        if other.resolve() == run_dir.resolve() or not RunLayout(other).last_ckpt.exists():
            continue
        if read_state(other)["state"] == "done" and _training_sections(other) == ours:
            return other
    return None


def _training_sections(run_dir) -> dict | None:
    """What the run id hashes (``RunConfig.training_dict``) of the run's config.json; None if it has none that
    loads."""
    from vdt.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(read_json(RunLayout(run_dir).config, {})).training_dict()
    except (ConfigError, TypeError, ValueError, AttributeError):
        return None


def migrate_legacy(run_dir, config: dict) -> Path | None:
    """Rename the folder of this run made under the old run id (``RunConfig.legacy_run_id``: it hashed cadence,
    workers and paths too) to ``run_dir``, so that its training and evaluation are kept; returns the old path, or
    None when there is none. A folder whose job is alive (fresh heartbeat) is a ``LegacyRunBusy`` error."""
    from vdt.config import RunConfig

    run_dir = Path(run_dir)
    if run_dir.exists():
        return None
    ours = RunConfig.from_dict(config).training_dict()
    for old in sorted(p for p in run_dir.parent.glob("*") if p.is_dir() and p.name != run_dir.name):
        theirs = read_json(RunLayout(old).config)
        if not isinstance(theirs, dict) or _training_sections(old) != ours:
            continue
        if RunConfig.from_dict(theirs).legacy_run_id() != old.name:
            continue  # not named by the old id: some other folder
        if read_heartbeat(old) is not None:
            raise LegacyRunBusy(f"{old}: a job is running this run under its old id; the run id no longer hashes "
                                f"cadence, workers or paths, and its folder is now {run_dir.name}. Wait for the "
                                f"job to end, then launch again (the folder is renamed), or rename it yourself: "
                                f"mv {old} {run_dir}")
        os.rename(old, run_dir)
        return old
    return None


def adopt(run_dir, twin) -> None:
    """Give run_dir its twin's training and evaluation (``trained_twin``), instead of training it again.

    Checkpoints and cached samples are hard links (their writers replace files by rename, never in place), where
    the file system allows; the log, eval.json, eval_parts and samples are copies. config.json and run.json stay
    this sweep's, run.json naming the twin (``reused_from``). If this sweep's eval settings differ, the run is
    not 'evaluated' yet, and its job re-evaluates it without training."""
    src, dst = RunLayout(twin), RunLayout(run_dir)
    for name, link in (("checkpoints", True), ("eval_cache", True), ("eval_parts", False), ("samples", False)):
        if getattr(src, name).is_dir():
            shutil.copytree(getattr(src, name), getattr(dst, name), dirs_exist_ok=True,
                            copy_function=_link_or_copy if link else shutil.copy2)
    for name in ("train_log", "eval_json"):
        if getattr(src, name).exists():
            shutil.copy2(getattr(src, name), getattr(dst, name))
    write_json(dst.run_info, {**read_json(dst.run_info, {}), "reused_from": str(twin)})
    update_state(run_dir, state="done", step=read_state(twin)["step"], error=None)


def _link_or_copy(src, dst) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links: copy
        shutil.copy2(src, dst)


def why_not_evaluated(run_dir) -> str | None:
    """None when eval.json is complete for the run's checkpoint, final step and current eval settings, else why
    not (``vdt.layout.eval_status``)."""
    return eval_status(run_dir)


def evaluated(run_dir) -> bool:
    """Whether the run's evaluation is done: a complete eval.json for its final step (``why_not_evaluated``)."""
    return why_not_evaluated(run_dir) is None


class Heartbeat:
    """heartbeat.json, rewritten every ``every`` seconds by a thread while the job (rank 0) lives:
    job id, scheduler, host, pid and time. Removed when the job leaves; a stale one means a dead job."""

    def __init__(self, run_dir, job_id=None, every: float = HEARTBEAT_S):
        self.path, self.every = RunLayout(run_dir).heartbeat, every
        self.beat = {"job_id": job_id, "scheduler": "slurm" if os.environ.get("SLURM_JOB_ID") else None,
                     "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def write(self) -> None:
        write_json(self.path, {**self.beat, "time": time.time(), "updated": now()})

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(OSError):  # a full or flaky disk must not kill the job
                self.write()

    def __enter__(self):
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


def read_heartbeat(run_dir, stale_s: float = HEARTBEAT_STALE_S) -> dict | None:
    """The run's heartbeat if it is fresh (younger than ``stale_s``), else None."""
    beat = read_json(RunLayout(run_dir).heartbeat)
    if not isinstance(beat, dict) or not isinstance(beat.get("time"), (int, float)):
        return None
    return beat if time.time() - beat["time"] < stale_s else None


class LockHeld(RuntimeError):
    """Another process holds the lock."""


class LegacyRunBusy(InputError):
    """A run's folder under its old run id is in use by a live job, so it can't be renamed now (exit 2)."""


class _Lock:
    """An exclusive, non-blocking ``flock`` on a file; the holder's pid is written into it."""

    def __init__(self, path):
        self.path, self._f = Path(path), None

    def acquire(self) -> "_Lock":
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise LockHeld(f"{self.path} is held by {holder}") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename} since {now()}\n")
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class SweepLock(_Lock):
    """One launcher per sweep directory at a time."""

    def __init__(self, sweep_dir):
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(Path(sweep_dir) / ".launcher.lock")


class RunLock(_Lock):
    """One job per run at a time."""

    def __init__(self, run_dir):
        super().__init__(RunLayout(run_dir).run_lock)
