"""A run directory's layout, written down once: every file, who writes it, when it counts as complete.

``results/runs/<sweep>/<run_id>/`` (or any ``--run-dir``) holds one run. Every module that reads
or writes a run's files (the launcher, the job, training, evaluation, the report) names them
through ``RunLayout``, so a renamed file changes here and nowhere else. JSON files are written
whole to a temporary name and renamed (``vdt.layout.write_json``): a reader sees the old file or
the new one, never half of one.

``FILES`` below is the schema: ``RunLayout.<attr>`` -> (path in the run dir, writer, complete when).
"""

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

# attr: (relative path, who writes it, when it counts as complete)
FILES = {
    "config": ("config.json", "vdt.train.write_config, called by ablations.rundir.prepare (launcher) and by "
               "vdt.train (standalone: when there is none, or a continued run changed train.steps or eval.*)",
               "once written: the run's full config; its training part names the run (run id)"),
    "run_info": ("run.json", "launcher (sweep, variant, seed); training adds env and data counts",
                 "always whole (atomic)"),
    "state": ("state.json", "launcher (job id, log) and job (running, done, failed), under state_lock",
              "always whole (atomic); 'done' only with a complete eval.json for the final step"),
    "state_lock": (".state.lock", "anyone changing state.json", "a flock, never read"),
    "run_lock": (".run.lock", "the job (rank 0), for as long as it trains and evaluates", "a flock"),
    "heartbeat": ("heartbeat.json", "the job (rank 0), every few seconds while alive: job id, host, pid, time",
                  "always whole (atomic); stale when older than the liveness timeout"),
    "train_log": ("train_log.jsonl", "vdt.train (rank 0), one line per logging interval (step, loss, lr, "
                  "grad_norm, gen_frac, train_flops, ...), event lines {event: resumed|preempted, step}, and with "
                  "eval.every > 0 evaluation lines {event: eval, step, eval: {task: {metric: value}}, ...} "
                  "(metrics/live_eval.py)", "append-only"),
    "checkpoints": ("checkpoints", "vdt.checkpoint", "a folder"),
    "last_ckpt": ("checkpoints/last.pt", "vdt.checkpoint (a hard link to the newest step file)",
                  "atomic rename; the newest training state"),
    "eval_json": ("eval.json", "metrics.evaluate, once every task of cfg.eval.tasks is done on the test split",
                  "complete by construction: it exists only when every task is scored; current while its "
                  "checkpoint.sha256 is checkpoints/last.pt's (why_not_evaluated)"),
    "eval_parts": ("eval_parts", "metrics.evaluate, one <task>.json per finished task", "per file, atomic"),
    "eval_cache": ("eval_cache", "metrics.sampling: samples per batch under <task>-<key>, the key hashing all that "
                   "made them (data, checkpoint content, sampling settings)", "per file, atomic"),
    "samples": ("samples", "metrics.evaluate: <task>.npz sample grids for the report", "per file"),
    "eval_live": ("eval_live", "vdt.train (rank 0) with eval.every > 0: step_<step>.npz, the samples of each "
                  "evaluation during training (metrics/live_eval.py)", "per file, atomic"),
    "tensorboard": ("tensorboard", "vdt.train (rank 0): TensorBoard event files (vdt/tblog.py), if tensorboard is "
                    "installed", "append-only"),
    "logs": ("logs", "launcher (link to the scheduler's log folder) and job (error.txt)", "a folder"),
    "error": ("logs/error.txt", "the job, when a run fails", "whole"),
    "bad_videos": ("bad_videos.txt", "vdt.data, when real videos are skipped", "whole"),
}


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory; see ``FILES`` for what each holds."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / FILES["config"][0]

    @property
    def run_info(self) -> Path:
        return self.root / FILES["run_info"][0]

    @property
    def state(self) -> Path:
        return self.root / FILES["state"][0]

    @property
    def state_lock(self) -> Path:
        return self.root / FILES["state_lock"][0]

    @property
    def run_lock(self) -> Path:
        return self.root / FILES["run_lock"][0]

    @property
    def heartbeat(self) -> Path:
        return self.root / FILES["heartbeat"][0]

    @property
    def train_log(self) -> Path:
        return self.root / FILES["train_log"][0]

    @property
    def checkpoints(self) -> Path:
        return self.root / FILES["checkpoints"][0]

    @property
    def last_ckpt(self) -> Path:
        return self.root / FILES["last_ckpt"][0]

    @property
    def eval_json(self) -> Path:
        return self.root / FILES["eval_json"][0]

    @property
    def eval_parts(self) -> Path:
        return self.root / FILES["eval_parts"][0]

    @property
    def eval_cache(self) -> Path:
        return self.root / FILES["eval_cache"][0]

    @property
    def samples(self) -> Path:
        return self.root / FILES["samples"][0]

    @property
    def eval_live(self) -> Path:
        return self.root / FILES["eval_live"][0]

    @property
    def tensorboard(self) -> Path:
        return self.root / FILES["tensorboard"][0]

    @property
    def logs(self) -> Path:
        return self.root / FILES["logs"][0]

    @property
    def error(self) -> Path:
        return self.root / FILES["error"][0]

    @property
    def bad_videos(self) -> Path:
        return self.root / FILES["bad_videos"][0]

    def eval_result(self, split: str = "test") -> Path:
        """eval.json for the test split (what reports read); eval-<split>.json for another scored split."""
        return self.eval_json if split == "test" else self.root / f"eval-{split}.json"

    def eval_part(self, task: str, split: str = "test") -> Path:
        """The finished result of one evaluation task (eval_parts/<task>.json; eval_parts/<split>/ for another
        split than test)."""
        folder = self.eval_parts if split == "test" else self.eval_parts / split
        return folder / f"{task.replace('/', '_')}.json"

    def sample_file(self, task: str, split: str = "test") -> Path:
        folder = self.samples if split == "test" else self.samples / split
        return folder / f"{task.replace('/', '_')}.npz"


def why_not_evaluated(record: dict | None, config: dict, checkpoint_sha256: str | None) -> str | None:
    """None when the eval.json content ``record`` completes the run whose config.json content is ``config`` and
    whose checkpoints/last.pt has SHA-256 ``checkpoint_sha256`` (``checkpoint_sha256()``; None: no checkpoint),
    else why not.

    Complete: it was made from that very checkpoint file (its ``checkpoint.sha256``), its step is the final step
    (train.steps), its tasks cover eval.tasks, and it records that it was made with ``config``'s eval settings (a
    record without them, or without the checkpoint's SHA-256, predates that and is evaluated again).
    """
    if record is None:
        return "no eval.json"
    if checkpoint_sha256 is None:
        return "no checkpoint (checkpoints/last.pt) to match eval.json against"
    made_from = (record.get("checkpoint") or {}).get("sha256")
    if made_from is None:
        return "eval.json does not record its checkpoint's SHA-256 (made by an older vdt-bench)"
    if made_from != checkpoint_sha256:
        return (f"eval.json was made from another checkpoint (sha256 {made_from[:12]}...; checkpoints/last.pt is "
                f"{checkpoint_sha256[:12]}...)")
    final = config.get("train", {}).get("steps")
    if record.get("step") != final:
        return f"eval.json is for step {record.get('step')}, the final step is {final}"
    missing = [t for t in config.get("eval", {}).get("tasks", ()) if t not in record.get("tasks", {})]
    if missing:
        return f"eval.json lacks task(s) {', '.join(missing)}"
    if "eval" not in record:
        return "eval.json does not record its eval settings (made by an older vdt-bench)"
    made_with, wanted = json.loads(json.dumps(record["eval"])), json.loads(json.dumps(config.get("eval") or {}))
    # a field config.json lacks was added to EvalConfig after the run was launched: it holds its default there
    if any(made_with.get(k) != v for k, v in wanted.items()) or not wanted:
        return "eval.json was made with other eval settings than config.json's"
    return None


def eval_status(run_dir) -> str | None:
    """None when the run's eval.json is current (``why_not_evaluated`` on its eval.json, config.json and
    checkpoints/last.pt), else why not."""
    layout = RunLayout(run_dir)
    config = read_json(layout.config, {})
    return why_not_evaluated(read_json(layout.eval_result(scored_split(config))), config,
                             checkpoint_sha256(layout.last_ckpt))


def scored_split(config: dict) -> str:
    """The split a run's evaluation scores, from its config.json content (eval.split; test before it existed)."""
    return (config.get("eval") or {}).get("split", "test")


def checkpoint_sha256(path) -> str | None:
    """SHA-256 of a checkpoint file's bytes (None if there is none), computed once per file version (a new save
    is a new inode: last.pt is swapped in by a rename)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _sha256_of(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, obj) -> None:
    """Write ``obj`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path, default=None):
    """The JSON in ``path``, or ``default`` when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return default
