"""The submitted callable: train one run, evaluate it, and keep its state.json true.

``SweepJob(run_dir)`` holds only paths and names (it is pickled into every job). Called, it
reads config.json, trains with ``vdt.train.main`` (which resumes by itself from
checkpoints/last.pt), evaluates with ``metrics.evaluate.evaluate_run`` and marks the run done,
once eval.json is complete for the final step (``rundir.evaluated``).

Preemption and time limits (the pattern of facebookresearch/mae's ``submitit_pretrain.py``): the
job is a ``submitit.helpers.Checkpointable``; SLURM sends USR2 before the time limit and SIGTERM
when it preempts or cancels the job. Either signal, at any moment of the job, ends in a saved state
(``Preemption``), then a requeue: USR2 through submitit, SIGTERM by SLURM itself when it preempts
(a cancelled job is not requeued). Until evaluation the job defers submitit's handler: the signal sets
``vdt.signals.FLAG``; the trainer finishes the step in progress and writes last.pt, or an earlier
phase (data scan, latent encoding, checkpoint load) stops at its next safe point (``vdt.signals``);
only then does submitit's handler run ``checkpoint()`` and requeue the job. The next attempt
resumes there, so no finished step is redone. During evaluation submitit's handler runs at once;
the next attempt finds training finished and resumes evaluation (which keeps its finished tasks
and batches).

While it works, rank 0 refreshes heartbeat.json (job id, host, pid, time) from a thread: ``--status``
and the launcher read liveness from it and from the scheduler, never by taking the run lock.

Several tasks (DDP): every task trains; rank and world size come from submitit's
``TorchDistributedEnvironment``. Only rank 0 holds the run lock, writes state.json and evaluates.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import submitit

from ablations import rundir
from vdt import signals
from vdt.layout import RunLayout

PEER_WAIT_S = 600.0  # a DDP helper task, after a stop, waits this long for the requeue to end it


def job_environment():
    """submitit's JobEnvironment inside a submitit job (slurm, local), else None (inline, debug)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return None
    return env if env.activated() else None


def job_log(paths, kind: str) -> str:
    """A submitit job's log file: stdout on SLURM (the launcher merges stderr into it), else stderr."""
    return str(paths.stdout if kind == "slurm" else paths.stderr)


def own_log(env) -> str | None:
    """This job's log file (``job_log``); None outside a submitit job or without its folder (debug executor)."""
    if env is None:
        return None
    try:
        return job_log(env.paths, env.cluster)
    except KeyError:  # no SUBMITIT_FOLDER
        return None


class Preemption:
    """USR2 and SIGTERM during a job's work: save, then hand over (``hand_over``).

    Within ``handling()`` either signal sets ``stop`` (``vdt.signals.FLAG``) and the work stops at its next safe
    point; after ``evaluating()`` a signal hands over at once. USR2 is handed to submitit's handler (checkpoint(),
    requeue, exit; where none is installed, inline or debug, nothing is requeued). SIGTERM exits with status 143
    and no requeue of its own: SLURM sends it to a job it cancels (no requeue wanted; a relaunch resumes the run)
    and to one it preempts (SLURM requeues that one itself), and a requeue from the job would undo a cancel."""

    def __init__(self):
        self.stop, self.requeue_handler, self.immediate = signals.FLAG, None, False

    @contextlib.contextmanager
    def handling(self):
        usr = submitit.JobEnvironment._usr_sig()
        self.requeue_handler = signal.getsignal(usr)
        with signals.catching((usr, signal.SIGTERM), on_signal=self._on_signal):
            yield self

    def _on_signal(self, signum: int) -> None:
        if self.immediate:
            self.hand_over()

    def evaluating(self) -> None:
        """From here on a signal hands over at once (evaluation saves as it goes)."""
        self.immediate = True

    def hand_over(self) -> None:
        """SIGTERM: exit (143). USR2: run submitit's handler for it (it requeues and exits)."""
        if self.stop.signum == signal.SIGTERM:
            raise SystemExit(signals.exit_status(signal.SIGTERM))
        if callable(self.requeue_handler):
            self.requeue_handler(submitit.JobEnvironment._usr_sig(), None)


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
            preemption = Preemption()
            with preemption.handling():
                result = self._train(run_dir, preemption)
            if result["preempted"]:  # rank 0 requeues the job, which ends this task
                time.sleep(PEER_WAIT_S)
            return result
        with rundir.RunLock(run_dir), rundir.Heartbeat(run_dir, env.job_id if env is not None else None):
            return self._run(run_dir, env)

    def _run(self, run_dir: Path, env) -> dict:
        layout = RunLayout(run_dir)
        state = rundir.read_state(run_dir)
        log = own_log(env)
        rundir.update_state(run_dir, state="running", error=None, attempts=state["attempts"] + 1,
                            job_id=env.job_id if env is not None else state["job_id"], log=log or state["log"],
                            scheduler=env.cluster if env is not None else state.get("scheduler"),
                            step=rundir.last_logged(run_dir).get("step", state["step"]))
        preemption = Preemption()
        try:
            with preemption.handling():
                try:
                    result = self._train(run_dir, preemption)
                except signals.Stopped as stopped:  # before the training loop: nothing new to save
                    return self._requeue(stopped.phase, state["step"], preemption)
                rundir.update_state(run_dir, step=result["step"])
                if result["preempted"]:
                    return self._requeue("training", result["step"], preemption)
                preemption.evaluating()
                metrics = self._evaluate(run_dir)
        except Exception:  # a SystemExit from submitit's requeue handler is not a failure: not caught
            text = traceback.format_exc()
            layout.error.write_text(text)
            rundir.update_state(run_dir, state="failed", error=rundir.tail(text), log=log or str(layout.error),
                                step=rundir.last_logged(run_dir).get("step", 0))
            raise
        rundir.update_state(run_dir, state="done", step=result["step"])
        return {"run_dir": str(run_dir), "step": result["step"], "loss": result.get("loss"), "eval": metrics}

    def _train(self, run_dir: Path, preemption: Preemption) -> dict:
        import vdt.train
        from vdt.config import load_config

        cfg = load_config(RunLayout(run_dir).config)
        result = vdt.train.main(cfg, run_dir, progress=self.progress, stop=preemption.stop)
        # A signal that came after the last step was checked: training is complete, but the job must go.
        return {**result, "preempted": result.get("preempted") or preemption.stop.is_set()}

    def _requeue(self, phase: str, step: int, preemption: Preemption) -> dict:
        """Stopped at a saved point: requeue through submitit's handler (USR2), or exit (SIGTERM)."""
        if preemption.stop.signum == signal.SIGTERM:
            print(f"stopped by SIGTERM during {phase}: saved step {step}; not requeued by the job (SLURM requeues a "
                  "preempted job itself; a relaunch resumes a cancelled one)", file=sys.stderr, flush=True)
        else:
            print(f"preempted during {phase}: saved step {step}; the requeued job resumes there", file=sys.stderr,
                  flush=True)
        try:
            preemption.hand_over()
        except subprocess.CalledProcessError as e:  # scontrol requeue refused: the job is being cancelled
            why = f"stopped during {phase} at saved step {step}; the requeue was refused ({e}): relaunch resumes it"
            rundir.update_state(self.run_dir, state="failed", error=why, step=step)
            raise SystemExit(1) from e
        return {"run_dir": self.run_dir, "step": step, "preempted": True}

    def _evaluate(self, run_dir: Path) -> dict:
        """eval.json for the final step; a re-run after a stop in evaluation doesn't retrain."""
        from metrics import evaluate
        from vdt.config import load_config

        layout = RunLayout(run_dir)
        cfg = load_config(layout.config)
        result = layout.eval_result(cfg.eval.split)  # eval.json (test); eval-val.json for a tuning sweep
        if not rundir.evaluated(run_dir):
            evaluate.evaluate_run(run_dir, cfg, progress=self.progress, split=cfg.eval.split)
        if not rundir.evaluated(run_dir):
            raise RuntimeError(f"{result}: evaluation ended without a complete {result.name} for the final "
                               f"step ({rundir.why_not_evaluated(run_dir)})")
        out = rundir.read_json(result)
        return {t: r.get("metrics") for t, r in out.get("tasks", {}).items()}

    def __repr__(self) -> str:
        return f"SweepJob({self.run_dir})"
