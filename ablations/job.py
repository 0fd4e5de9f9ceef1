"""The submitted callable: train one run, evaluate it, and keep its state.json true.

``SweepJob(run_dir)`` holds only paths and names (it is pickled into every job). Called, it
reads config.json, trains with ``vdt.train.main`` (which resumes by itself from
checkpoints/last.pt), evaluates with ``metrics.evaluate.evaluate_run`` and marks the run done.

It is ``submitit.helpers.Checkpointable``: on a timeout or a preemption signal submitit calls
``checkpoint()``, which resubmits the same call, and SLURM requeues the job; the next attempt
resumes training from the last checkpoint. Nothing is pickled but the paths.

Several tasks (DDP): every task trains; rank and world size come from submitit's
``TorchDistributedEnvironment``. Only rank 0 holds the run lock, writes state.json and evaluates.
"""

import importlib
import os
import traceback
from pathlib import Path

import submitit

from ablations import rundir
from vdt.layout import eval_settings_match

TRAIN = "vdt.train:main"
EVALUATE = "metrics.evaluate:evaluate_run"


def resolve(path: str):
    """'package.module:function' -> the function."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def job_environment():
    """submitit's JobEnvironment inside a submitit job (slurm, local), else None (inline, debug)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return None
    return env if env.activated() else None


def job_log(env) -> str | None:
    """This job's log file: stderr, or stdout where SLURM merges stderr into it."""
    if env is None:
        return None
    try:
        paths = env.paths
    except KeyError:  # no SUBMITIT_FOLDER (debug executor)
        return None
    return str(paths.stderr if paths.stderr.exists() else paths.stdout)


class SweepJob(submitit.helpers.Checkpointable):
    """Train and evaluate the run in ``run_dir``; requeues itself on timeout or preemption."""

    def __init__(self, run_dir, threads: int | None = None, progress: bool = False,
                 train: str = TRAIN, evaluate: str = EVALUATE):
        self.run_dir, self.threads, self.progress = str(run_dir), threads, progress
        self.train, self.evaluate = train, evaluate

    def __call__(self) -> dict:
        run_dir = Path(self.run_dir)
        env = job_environment()
        if env is not None and env.num_tasks > 1:
            # Every task keeps the node's GPUs visible: vdt.train picks cuda:LOCAL_RANK among them.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        rank = int(os.environ.get("RANK", 0))
        if self.threads:
            import torch
            torch.set_num_threads(self.threads)
        if rank != 0:  # DDP helper task: train alongside rank 0, write nothing else
            return self._train(run_dir)
        with rundir.RunLock(run_dir):
            return self._run(run_dir, env)

    def _run(self, run_dir: Path, env) -> dict:
        state = rundir.read_state(run_dir)
        log = job_log(env)
        rundir.update_state(run_dir, state="running", error=None, attempts=state["attempts"] + 1,
                            job_id=env.job_id if env is not None else state["job_id"], log=log or state["log"],
                            step=rundir.last_logged(run_dir).get("step", state["step"]))
        try:
            result = self._train(run_dir)
            rundir.update_state(run_dir, step=result["step"])
            metrics = self._evaluate(run_dir, result["step"])
        except Exception:  # a SystemExit from submitit's requeue handler is not a failure: not caught
            text = traceback.format_exc()
            (run_dir / "logs" / "error.txt").write_text(text)
            rundir.update_state(run_dir, state="failed", error=rundir.tail(text),
                                log=log or str(run_dir / "logs" / "error.txt"),
                                step=rundir.last_logged(run_dir).get("step", 0))
            raise
        rundir.update_state(run_dir, state="done", step=result["step"])
        return {"run_dir": str(run_dir), "step": result["step"], "loss": result.get("loss"), "eval": metrics}

    def _train(self, run_dir: Path) -> dict:
        from vdt.config import load_config

        cfg = load_config(run_dir / "config.json")
        return resolve(self.train)(cfg, run_dir, progress=self.progress)

    def _evaluate(self, run_dir: Path, step: int) -> dict:
        """eval.json for the final step; a re-run after a crash in evaluation doesn't retrain."""
        old = rundir.read_json(run_dir / "eval.json")
        if (old is not None and old.get("step") == step
                and eval_settings_match(old, rundir.read_json(run_dir / "config.json"))):
            return {t: r.get("metrics") for t, r in old.get("tasks", {}).items()}
        from vdt.config import load_config

        out = resolve(self.evaluate)(run_dir, load_config(run_dir / "config.json"), progress=self.progress)
        return {t: r.get("metrics") for t, r in out.get("tasks", {}).items()}

    def __repr__(self) -> str:
        return f"SweepJob({self.run_dir})"
