"""A stop signal at every phase (vdt/signals.py): data scan, latent encoding, checkpoint load, training, evaluation.

In a sweep job (ablations/job.py) USR2 or SIGTERM ends in a saved state and submitit's requeue; ``python -m vdt.train``
alone exits cleanly with 128 + the signal number. Either way the next start resumes, to the weights of a run never
stopped. The signal is raised at a named phase by the test hook ``VDT_SIGNAL_AT`` (or by a monkeypatched step).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations import rundir, sweeps
from ablations.job import SweepJob
from vdt import signals
from vdt.config import load_config
from vdt.data.latents import LatentDataset
from vdt.layout import checkpoint_sha256

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.batch_size=4",
        "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2"]
CLI_SETS = ["model.preset=cpu-tiny", "data.size=16", "data.frames=8", "train.batch_size=4", "train.log_every=1",
            "train.warmup=2"]


def weights(run_dir) -> dict:
    ckpt = torch.load(Path(run_dir) / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return {"step": ckpt["step"], **{f"model.{k}": v for k, v in ckpt["model"].items()},
            **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]) if k == "step" else torch.equal(a[k], b[k]), f"{k} differs"


def logged_steps(run_dir) -> list:
    rows = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


class FakeRequeue:
    """Stands in for submitit's USR2 handler: records the step last.pt holds, then exits as submitit does."""

    def __init__(self, run_dir):
        self.run_dir, self.saved = Path(run_dir), []

    def __call__(self, signum, frame):
        last = self.run_dir / "checkpoints" / "last.pt"
        self.saved.append(torch.load(last, weights_only=False)["step"] if last.exists() else None)
        raise SystemExit(-1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny run trained in one go, in this process."""
    from vdt import train

    spec = sweeps.expand("conditioning", sets=sweeps.parse_sets(TINY), seeds=[0], variants=["token_concat"])[0]
    d = tmp_path_factory.mktemp("uninterrupted")
    train.main(spec.cfg, d, progress=False)
    return spec, weights(d)


@pytest.mark.parametrize("phase,sig", [("data scan", "USR2"), ("checkpoint load", "TERM"), ("training", "TERM"),
                                       ("evaluation", "USR2"), ("evaluation", "TERM")])
def test_a_job_signalled_in_any_phase_saves_requeues_and_resumes_exactly(phase, sig, uninterrupted, tmp_path,
                                                                         monkeypatch):
    """A job whose run has 2 of 4 steps saved gets the signal in ``phase``: nothing finished is lost; USR2 runs
    submitit's requeue (here a stand-in), SIGTERM exits 143 without one (SLURM requeues a preempted job itself, and
    a cancelled one must stay cancelled); the next attempt ends with an uninterrupted run's weights."""
    import metrics.evaluate
    import vdt.train

    spec, reference = uninterrupted
    d = tmp_path / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    vdt.train.main(spec.cfg.with_overrides(["train.steps=2"]), d, progress=False)  # an earlier attempt's work
    rundir.write_json(d / "config.json", spec.cfg.to_dict())
    signum = getattr(signal, f"SIG{sig}")
    evaluations = []

    def evaluate_run(run_dir, cfg, **kw):
        evaluations.append(torch.load(d / "checkpoints" / "last.pt", weights_only=False)["step"])
        if phase == "evaluation" and len(evaluations) == 1:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs first: the requeue ends this evaluation
            raise AssertionError("the signal did not stop the evaluation")
        rundir.write_json(d / "eval.json", {"step": 4, "tasks": {"predict": {"metrics": {"ssim": 0.5}}},
                                            "checkpoint": {"sha256": checkpoint_sha256(d / "checkpoints" / "last.pt")},
                                            "eval": json.loads(json.dumps(spec.cfg.to_dict()["eval"]))})

    monkeypatch.setattr(metrics.evaluate, "evaluate_run", evaluate_run)
    real_step = vdt.train.Trainer.train_step
    if phase == "training":
        def signalled_step(self, step):
            if step == 2:
                os.kill(os.getpid(), signum)
            return real_step(self, step)
        monkeypatch.setattr(vdt.train.Trainer, "train_step", signalled_step)
    elif phase != "evaluation":
        monkeypatch.setenv(signals.PHASE_ENV, f"{phase}:{sig}")

    requeue, term_before = FakeRequeue(d), signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGUSR2, requeue)  # submitit installs its handler before the job runs
    try:
        with pytest.raises(SystemExit) as stopped:
            SweepJob(d)()
        expected = {"data scan": 2, "checkpoint load": 2, "training": 3, "evaluation": 4}[phase]
        if sig == "USR2":
            assert requeue.saved == [expected]
        else:
            assert requeue.saved == [] and stopped.value.code == 128 + signal.SIGTERM
        assert weights(d)["step"] == expected and logged_steps(d) == list(range(1, expected + 1))
        assert rundir.read_state(d)["state"] == "running" and not signals.FLAG.is_set()
        monkeypatch.delenv(signals.PHASE_ENV, raising=False)
        monkeypatch.setattr(vdt.train.Trainer, "train_step", real_step)
        SweepJob(d)()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert signal.getsignal(signal.SIGTERM) == term_before  # the job leaves no handler behind
    state = rundir.read_state(d)
    assert state["state"] == "done" and state["step"] == 4 and state["attempts"] == 2, state
    assert logged_steps(d) == [1, 2, 3, 4]  # each step once: none redone, none lost
    assert evaluations == ([4, 4] if phase == "evaluation" else [4])
    assert_same(weights(d), reference)


def cli_env(tmp_path, **extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "VDT_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **extra}


def train_cli(run_dir, steps, sets, env, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vdt.train", "--run-dir", str(run_dir), "--steps", str(steps), "--ckpt-every", "4",
           "--no-progress", "--set", *sets]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=300) -> tuple:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_train_cli_stops_cleanly_on_sigint_sigterm_usr2_and_resumes_exactly(tmp_path):
    """``python -m vdt.train`` alone: SIGINT in training saves the step in progress (between checkpoints) and exits
    130; SIGTERM at the checkpoint load and USR2 after the data scan exit 143 and 140 with nothing lost. Each
    message says how to resume, no traceback; the resumed run matches one never stopped."""
    env = cli_env(tmp_path)
    code, _, err = finish(train_cli(tmp_path / "ref", 12, CLI_SETS, env))
    assert code == 0, err
    d = tmp_path / "stopped"

    code, _, err = finish(train_cli(d, 12, CLI_SETS, {**env, signals.PHASE_ENV: "data scan:USR2"}))
    assert code == 128 + signal.SIGUSR2 and "stopped by SIGUSR2 during data scan" in err, err
    assert "Traceback" not in err and not (d / "checkpoints").exists()

    proc = train_cli(d, 12, CLI_SETS, env)
    deadline = time.time() + 120
    while not (d / "train_log.jsonl").exists() or not logged_steps(d) or logged_steps(d)[-1] < 5:
        assert time.time() < deadline and proc.poll() is None, "training did not reach step 5"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    saved = weights(d)["step"]
    assert code == 128 + signal.SIGINT and f"stop requested: finished step {saved}" in err, err
    assert 5 <= saved < 12 and saved % 4, "saved by the signal, not by a periodic checkpoint; raise the steps"
    assert "Traceback" not in err

    code, _, err = finish(train_cli(d, 12, CLI_SETS, {**env, signals.PHASE_ENV: "checkpoint load:TERM"}))
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM during checkpoint load" in err, err
    assert weights(d)["step"] == saved

    code, out, err = finish(train_cli(d, 12, CLI_SETS, env))
    assert code == 0 and json.loads(out)["step"] == 12, err
    assert logged_steps(d) == list(range(1, 13))
    assert_same(weights(d), weights(tmp_path / "ref"))


def test_train_cli_stopped_in_latent_encoding_resumes_the_cache(smoke_ucf, tiny_vae, tmp_path):
    """SIGTERM after the first chunk of latent encoding: exit 143, the chunk kept (progress.json); the next start
    encodes only the rest, and the cache equals one built without a stop."""
    sets = ["model.preset=cpu-tiny", "model.num_classes=101", "data.name=ucf101", f"data.root={smoke_ucf}",
            f"data.vae_path={tiny_vae}", "data.size=32", "data.frames=16", "data.autoencoder=sd-vae",
            "data.class_labels=true", "data.latent_clips=4", "train.batch_size=2", "train.log_every=1"]
    env = cli_env(tmp_path)
    d = tmp_path / "run"
    code, _, err = finish(train_cli(d, 1, sets, {**env, signals.PHASE_ENV: "latent encoding:TERM"}))
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM during latent encoding" in err, err
    assert "Traceback" not in err
    (folder,) = (tmp_path / "cache" / "latents").glob("ucf101-train-*/")
    total = json.loads((folder / "meta.json").read_text())["shape"][0]
    assert json.loads((folder / "progress.json").read_text())["done"] == 8 < total  # one chunk of 8 clips
    assert not (folder / "complete.json").exists()

    code, _, err = finish(train_cli(d, 1, sets, env))
    assert code == 0, err
    assert f"8/{total}" in err, err  # resumed after the first chunk
    assert weights(d)["step"] == 1
    cfg = load_config(d / "config.json")  # the same cache built without a stop, in this process
    ref = LatentDataset.build(dataclasses.replace(cfg.data, latent_cache=str(tmp_path / "clean")), "train").folder
    assert ref.name == folder.name
    for name in ("latents.npy", "labels.npy"):
        assert np.array_equal(np.load(folder / name), np.load(ref / name)), name


def test_the_hook_fires_once_with_a_marker_file(tmp_path, monkeypatch):
    """``VDT_SIGNAL_ONCE``: a requeued job, whose environment still names the phase, is not signalled again."""
    got = []
    monkeypatch.setenv(signals.PHASE_ENV, "data scan:USR2")
    monkeypatch.setenv(signals.ONCE_ENV, str(tmp_path / "fired"))
    with signals.catching() as flag:
        with pytest.raises(signals.Stopped, match="SIGUSR2 during data scan"):
            signals.check("data scan")
        got.append(flag.signum)
        flag.clear()
        signals.check("data scan")  # fired already: no signal, no stop
        signals.check("checkpoint load")
    assert got == [signal.SIGUSR2] and (tmp_path / "fired").exists()
