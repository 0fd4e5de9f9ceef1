"""A run directory's bookkeeping files: config.json, run.json, state.json, and the locks.

Layout and fields: the run-directory schema (results/runs/<sweep>/<run_id>/). Every JSON file is
written to a temporary name and renamed (``os.replace``), so a reader never sees half a file.
state.json is changed read-modify-write under an ``fcntl.flock`` on ``.state.lock``, because the
launcher (job id, log path) and the job (running, done, failed) both write it.

Two locks keep two launches of one sweep from corrupting a run:
- ``SweepLock``: held by a launcher for as long as it submits and watches a sweep;
- ``RunLock``: held by the job (rank 0) for as long as it trains and evaluates a run. A launcher
  that finds it held knows a job is alive on that run and does not start a second one.
"""

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from vdt.config import EVAL_SECTIONS

STATES = ("pending", "running", "done", "failed")
ERROR_LINES = 15  # lines of a traceback kept in state.json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def write_json(path, obj) -> None:
    """Write ``obj`` to ``path`` atomically (tmp file in the same dir, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


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
    return {**default, **read_json(Path(run_dir) / "state.json", {})}


def update_state(run_dir, **fields) -> dict:
    """Merge ``fields`` into state.json under the state lock; returns the new state."""
    run_dir = Path(run_dir)
    if "state" in fields and fields["state"] not in STATES:
        raise ValueError(f"state: {fields['state']!r} is not one of {STATES}")
    with _flock(run_dir / ".state.lock"):
        state = {**read_state(run_dir), **fields, "updated": now()}
        write_json(run_dir / "state.json", state)
    return state


def last_logged(run_dir) -> dict:
    """The last training line of train_log.jsonl ({} if none): step, loss, ..."""
    path = Path(run_dir) / "train_log.jsonl"
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
    """Create the run dir with config.json and run.json; an existing one must hold the same training config.

    Other evaluation settings replace the old ones in config.json (the run is re-evaluated, not
    retrained); run.json keeps what training added to it (data counts).
    """
    run_dir = Path(run_dir)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(config))  # tuples -> lists, as on disk
    old = read_json(run_dir / "config.json")
    if old is not None and _training_part(old) != _training_part(config):
        raise RuntimeError(f"{run_dir}/config.json holds a different config than its id says; "
                           "move the directory away and launch again")
    if old != config:
        write_json(run_dir / "config.json", config)
    info = read_json(run_dir / "run.json", {})
    if {**info, **run_info} != info:
        write_json(run_dir / "run.json", {**info, **run_info})
    if not (run_dir / "state.json").exists():
        update_state(run_dir)


def _training_part(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in EVAL_SECTIONS}


class LockHeld(RuntimeError):
    """Another process holds the lock."""


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

    def held_elsewhere(self) -> bool:
        """True if some other process holds the lock now (we don't take it)."""
        try:
            self.acquire()
        except LockHeld:
            return True
        self.release()
        return False

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
        super().__init__(Path(run_dir) / ".run.lock")
