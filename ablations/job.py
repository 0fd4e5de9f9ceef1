"""The submitted callable: train one run, evaluate it, and keep its state.json true.

``SweepJob(run_dir)`` holds only paths and names (it is pickled into every job). Called, it
reads config.json, trains with ``vdt.train.main`` (which resumes by itself from
checkpoints/last.pt), evaluates with ``metrics.evaluate.evaluate_run`` and marks the run done,
once eval.json is complete for the final step (``rundir.evaluated``).

Preemption and time limits (the pattern of facebookresearch/mae's ``submitit_pretrain.py``): the
job is a ``submitit.helpers.Checkpointable``, and SLURM sends USR2 before it stops the job. During
training the job defers submitit's handler: it asks the trainer to stop, the trainer finishes the
step in progress and writes last.pt, and only then does submitit's handler run ``checkpoint()``
and requeue the job. The next attempt resumes at that step, so no finished step is redone. During
evaluation submitit's handler runs at once; the next attempt finds training finished and resumes
evaluation (which keeps its finished tasks and batches).

While it works, rank 0 refreshes heartbeat.json (job id, host, pid, time) from a thread: ``--status``
and the launcher read liveness from it and from the scheduler, never by taking the run lock.

Several tasks (DDP): every task trains; rank and world size come from submitit's
``TorchDistributedEnvironment``. Only rank 0 holds the run lock, writes state.json and evaluates.
"""

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import submitit

from ablations import rundir
from vdt.layout import RunLayout

PEER_WAIT_S = 600.0  # a DDP helper task, after a stop, waits this long for the requeue to end it


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


class DeferredPreemption:
    """While active, the preemption signal (USR2) only sets ``stop``; ``handle_now()`` then runs the handler
    that was installed before (submitit's: checkpoint and requeue). Outside training it is not installed."""

    def __init__(self):
        self.stop, self.signum, self.previous = threading.Event(), None, None

    @contextlib.contextmanager
    def deferring(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals go to the main thread only: nothing to defer here
            return
        self.signum = submitit.JobEnvironment._usr_sig()
        self.previous = signal.signal(self.signum, lambda signum, frame: self.stop.set())
        try:
            yield self
        finally:
            signal.signal(self.signum, self.previous)

    def handle_now(self) -> None:
        """Run the previous handler for the deferred signal (submitit's requeues and exits)."""
        if callable(self.previous):
            self.previous(self.signum, None)


class SweepJob(submitit.helpers.Checkpointable):
    """Train and evaluate the run in ``run_dir``; requeues itself on timeout or preemption."""

    def __init__(self, run_dir, threads: int | None = None, progress: bool = False):
        self.run_dir, self.threads, self.progress = str(run_dir), threads, progress

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
            result = self._train(run_dir, DeferredPreemption())
            if result["preempted"]:  # rank 0 requeues the job, which ends this task
                time.sleep(PEER_WAIT_S)
            return result
        with rundir.RunLock(run_dir), rundir.Heartbeat(run_dir, env.job_id if env is not None else None):
            return self._run(run_dir, env)

    def _run(self, run_dir: Path, env) -> dict:
        layout = RunLayout(run_dir)
        state = rundir.read_state(run_dir)
        log = job_log(env)
        rundir.update_state(run_dir, state="running", error=None, attempts=state["attempts"] + 1,
                            job_id=env.job_id if env is not None else state["job_id"], log=log or state["log"],
                            step=rundir.last_logged(run_dir).get("step", state["step"]))
        preemption = DeferredPreemption()
        try:
            result = self._train(run_dir, preemption)
            rundir.update_state(run_dir, step=result["step"])
            if result["preempted"]:
                return self._requeue(result, preemption)
            metrics = self._evaluate(run_dir)
        except Exception:  # a SystemExit from submitit's requeue handler is not a failure: not caught
            text = traceback.format_exc()
            layout.error.write_text(text)
            rundir.update_state(run_dir, state="failed", error=rundir.tail(text), log=log or str(layout.error),
                                step=rundir.last_logged(run_dir).get("step", 0))
            raise
        rundir.update_state(run_dir, state="done", step=result["step"])
        return {"run_dir": str(run_dir), "step": result["step"], "loss": result.get("loss"), "eval": metrics}

    def _train(self, run_dir: Path, preemption: DeferredPreemption) -> dict:
        import vdt.train
        from vdt.config import load_config

        cfg = load_config(RunLayout(run_dir).config)
        with preemption.deferring() as p:
            result = vdt.train.main(cfg, run_dir, progress=self.progress, stop=p.stop)
        # A signal that came after the last step was checked: training is complete, but the job must go.
        return {**result, "preempted": result.get("preempted") or p.stop.is_set()}

    def _requeue(self, result: dict, preemption: DeferredPreemption) -> dict:
        """Training stopped at a saved step: hand over to submitit's handler (checkpoint(), requeue, exit)."""
        print(f"preempted: saved step {result['step']}; the requeued job resumes there", file=sys.stderr, flush=True)
        preemption.handle_now()
        return {"run_dir": self.run_dir, "step": result["step"], "loss": result.get("loss"), "preempted": True}

    def _evaluate(self, run_dir: Path) -> dict:
        """eval.json for the final step; a re-run after a stop in evaluation doesn't retrain."""
        from metrics import evaluate
        from vdt.config import load_config

        layout = RunLayout(run_dir)
        if not rundir.evaluated(run_dir):
            evaluate.evaluate_run(run_dir, load_config(layout.config), progress=self.progress)
        if not rundir.evaluated(run_dir):
            raise RuntimeError(f"{layout.eval_json}: evaluation ended without a complete eval.json for the final "
                               f"step ({rundir.why_not_evaluated(run_dir)})")
        out = rundir.read_json(layout.eval_json)
        return {t: r.get("metrics") for t, r in out.get("tasks", {}).items()}

    def __repr__(self) -> str:
        return f"SweepJob({self.run_dir})"
