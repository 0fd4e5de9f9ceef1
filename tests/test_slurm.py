"""The launcher against a real SLURM cluster: the one-node cluster of scripts/slurm_up.sh (``nox -s slurm``).

Every test runs ``python ablations/run.py --executor slurm`` as a user would, with real training and
evaluation (a few steps of the tiny model), and a time limit on every wait: a hang is a failure.
Without a cluster these tests skip, except under CI=true, where a missing cluster is a failure.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ablations import rundir, sweeps

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.batch_size=4",
        "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2",
        "eval.fvd=false"]  # FVD through the launcher is tested in test_launcher.py and test_slurm_smoke.py


def cluster_problem() -> str | None:
    """None if ``sinfo`` answers with a usable node, else what is wrong."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "sinfo/sbatch not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    states = out.stdout.split()
    if out.returncode or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"sinfo shows no idle or mixed node ({out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem:
        msg = (f"SLURM cluster not available: {problem}. Run `nox -s slurm` (as root: it brings up a one-node "
               "cluster with scripts/slurm_up.sh, runs these tests, and takes it down with scripts/slurm_down.sh)")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}


def cmd(results, variants, *extra, sets=TINY) -> list:
    return [sys.executable, str(ROOT / "ablations" / "run.py"), "--sweep", "conditioning", "--seeds", "0",
            "--variants", *variants, "--results", str(results), "--executor", "slurm", "--no-progress",
            "--poll-s", "1", "--set", *sets, *extra]


def launch(results, variants, *extra, sets=TINY, timeout=420) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(results, variants, *extra, sets=sets), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def run_dir(results, variant: str, sets=TINY) -> Path:
    spec = sweeps.expand("conditioning", sets=sweeps.parse_sets(sets), seeds=[0], variants=[variant])[0]
    return Path(results) / "conditioning" / spec.run_id


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"launcher exited ({proc.returncode}) while waiting for {what}:\n{proc.communicate()[0]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def sacct_states(job_id: str) -> list:
    out = subprocess.run(["sacct", "-n", "-D", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return out.stdout.split()


def reference_weights(d: Path, tmp_path: Path) -> dict:
    """The same run trained in one go, in this process, one thread (as the 1-CPU jobs)."""
    from vdt import train
    from vdt.config import load_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(load_config(d / "config.json"), tmp_path / "reference", progress=False)
    finally:
        torch.set_num_threads(threads)
    return load_weights(tmp_path / "reference")


def load_weights(d: Path) -> dict:
    ckpt = torch.load(d / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return {"model": ckpt["model"], "ema": ckpt["ema"], "step": ckpt["step"]}


def test_auto_executor_picks_slurm_while_the_controller_is_up():
    """The default executor asks the live controller (`scontrol ping`) and chooses SLURM, silently."""
    code = "from ablations import launcher; print(launcher.resolve_executor('auto'))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "slurm" and p.stderr == "", p.stdout + p.stderr


def test_tiny_sweep_runs_to_the_end_as_one_array(tmp_path):
    t0 = time.time()
    p = launch(tmp_path, ["token_concat", "cross_attn", "adaln"])
    assert p.returncode == 0, p.stdout + p.stderr
    arrays = set()
    for v in ("token_concat", "cross_attn", "adaln"):
        d = run_dir(tmp_path, v)
        state = rundir.read_state(d)
        assert state["state"] == "done" and state["step"] == 4 and state["attempts"] == 1, state
        assert re.fullmatch(r"\d+_\d", state["job_id"]) and Path(state["log"]).exists()
        assert "Job completed successfully" in Path(state["log"]).read_text()
        assert json.loads((d / "eval.json").read_text())["step"] == 4
        arrays.add(state["job_id"].split("_")[0])
    assert len(arrays) == 1  # one job array
    array = arrays.pop()  # accounting may say RUNNING for a moment after the end
    wait_for(lambda: sacct_states(array) == ["COMPLETED"] * 3, 30, f"sacct to show array {array} COMPLETED")
    assert "report: python metrics/report.py --sweep conditioning" in p.stdout
    print(f"3-run sweep on SLURM: {time.time() - t0:.0f} s")


def test_preempted_run_saves_the_step_requeues_resumes_there_and_matches_an_uninterrupted_run(tmp_path):
    """USR2 (submitit's preemption signal) between two periodic checkpoints: the job finishes the step in
    progress, saves it, requeues; the next attempt resumes at that step (no finished step is redone) and ends
    with weights bitwise equal to an uninterrupted run's."""
    every = 20
    sets = [s for s in TINY if not s.startswith(("train.steps", "train.ckpt_every"))] + [
        "train.steps=40", f"train.ckpt_every={every}"]
    d = run_dir(tmp_path, "token_concat", sets)
    # A time limit over 10 minutes, so submitit counts the USR2 as a preemption, not a timeout.
    proc = subprocess.Popen(cmd(tmp_path, ["token_concat"], "--time-min", "30", sets=sets), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: rundir.last_logged(d).get("step", 0) >= 6, 300, "step 6", proc)
        finished = rundir.last_logged(d)["step"]  # steps done before the signal (at least)
        job_id = rundir.read_state(d)["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # to the job step's tasks, as SLURM does
        out, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    state = rundir.read_state(d)
    assert state["state"] == "done" and state["attempts"] == 2 and state["step"] == 40, state
    log = Path(state["log"]).read_text()
    assert "this job is preempted" in log and f"Requeued job {job_id}" in log
    assert "REQUEUED" in sacct_states(job_id)
    rows = [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]
    events = [(r["event"], r["step"]) for r in rows if r.get("event", "eval") != "eval"]  # not the val evaluations
    assert len(events) == 2 and events[0][0] == "preempted" and events[1][0] == "resumed", events
    saved, resumed = events[0][1], events[1][1]
    assert finished <= saved == resumed < every, events  # saved by the signal, not by a periodic checkpoint
    assert f"preempted during training: saved step {saved}" in log
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))  # each step once: none redone
    ref = reference_weights(d, tmp_path)
    got = load_weights(d)
    assert got["step"] == ref["step"] == 40
    for part in ("model", "ema"):
        for k in ref[part]:
            assert torch.equal(got[part][k], ref[part][k]), f"{part}.{k} differs after requeue"
    print(f"USR2 after step {finished}: saved step {saved}, resumed at step {resumed}")


def test_failing_and_cancelled_jobs_are_reported_and_do_not_hang(tmp_path):
    # 1. The job raises (a dataset folder with no videos; a missing folder is refused before submitting):
    # failed, with its log and the error's last lines.
    t0 = time.time()
    (tmp_path / "empty_ucf").mkdir()
    bad = TINY + ["data.name=ucf101", f"data.root={tmp_path / 'empty_ucf'}"]
    p = launch(tmp_path, ["adaln"], sets=bad, timeout=240)
    d = run_dir(tmp_path, "adaln", bad)
    state = rundir.read_state(d)
    assert p.returncode == 1, p.stdout + p.stderr
    assert state["state"] == "failed" and "no class folders with videos" in state["error"]
    assert f"FAILED {d.name} (adaln, seed 0): log {state['log']}" in p.stdout
    assert "DatasetLayoutError" in p.stdout and "DatasetLayoutError" in Path(state["log"]).read_text()
    print(f"failing job reported after {time.time() - t0:.0f} s")

    # 2. The job is cancelled mid-training (no result file): failed too, and the launcher returns.
    long = [s for s in TINY if not s.startswith("train.steps")] + ["train.steps=100000"]
    d = run_dir(tmp_path, "cross_attn", long)
    proc = subprocess.Popen(cmd(tmp_path, ["cross_attn"], sets=long), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: rundir.last_logged(d).get("step", 0) >= 1, 300, "training to start", proc)
        t0 = time.time()
        subprocess.run(["scancel", rundir.read_state(d)["job_id"]], check=True)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    state = rundir.read_state(d)
    # scancel sends SIGTERM first: the job saves its step and exits, and it is not requeued
    assert state["state"] == "failed" and "CANCELLED" in (state["error"] or ""), state
    log = Path(state["log"]).read_text()
    assert "stopped by SIGTERM during training: saved step" in log and "Requeued" not in log, log[-2000:]
    assert f"FAILED {d.name} (cross_attn, seed 0)" in out
    print(f"cancelled job reported after {time.time() - t0:.0f} s")


def test_two_tasks_train_with_ddp_and_match_one_process(tmp_path):
    sets = [s for s in TINY if not s.startswith(("train.steps", "train.batch_size"))] + [
        "train.steps=6", "train.batch_size=8"]
    p = launch(tmp_path, ["token_concat"], "--tasks-per-node", "2", "--cpus-per-task", "1", sets=sets)
    assert p.returncode == 0, p.stdout + p.stderr
    d = run_dir(tmp_path, "token_concat", sets)
    state = rundir.read_state(d)
    assert state["state"] == "done" and state["step"] == 6
    logs = sorted((d / "logs" / "job").glob("*_log.out"))
    assert len(logs) == 2, logs  # one per task
    assert "global_rank=1(2)" in logs[1].read_text()
    ref, got = reference_weights(d, tmp_path), load_weights(d)
    for part in ("model", "ema"):
        for k in ref[part]:
            torch.testing.assert_close(got[part][k], ref[part][k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
