"""The sweep launcher in-process: submitit's DebugExecutor and the inline executor, real train and evaluate
(a few steps of the tiny model), the CLI's exit codes and its --dry-run / --status / --list output."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from ablations import cost, launcher, run, rundir, status, sweeps
from ablations.job import SweepJob
from vdt.layout import checkpoint_sha256

TINY = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.batch_size=4",
        "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2"]
VARIANTS = ["token_concat", "adaln"]


def cli(results, *extra, variants=VARIANTS) -> tuple:
    """Run ``ablations/run.py`` in-process on the two-variant tiny sweep; (exit code, stdout, stderr)."""
    argv = ["--sweep", "conditioning", "--variants", *variants, "--seeds", "0", "--results", str(results),
            "--no-progress", "--poll-s", "0.05", "--set", *TINY, *extra]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.main(argv)
    return code, out.getvalue(), err.getvalue()


def specs(variants=VARIANTS) -> list:
    return sweeps.expand("conditioning", sets=sweeps.parse_sets(TINY), seeds=[0], variants=variants)


def weights(run_dir) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return {"model": ckpt["model"], "ema": ckpt["ema"], "step": ckpt["step"]}


def made_from(run_dir) -> dict:
    """The checkpoint record a current eval.json holds: the SHA-256 of checkpoints/last.pt."""
    return {"sha256": checkpoint_sha256(run_dir / "checkpoints" / "last.pt")}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One finished sweep (2 runs) through submitit's DebugExecutor."""
    results = tmp_path_factory.mktemp("results")
    code, out, err = cli(results, "--executor", "debug")
    return results, code, out, err


def test_debug_sweep_trains_evaluates_and_writes_the_schema(swept):
    results, code, out, err = swept
    assert code == 0, out + err
    for spec in specs():
        d = results / "conditioning" / spec.run_id
        state = json.loads((d / "state.json").read_text())
        assert state["state"] == "done" and state["step"] == 4 and state["attempts"] == 1
        assert state["job_id"].startswith("DEBUG_") and state["error"] is None
        assert set(state) == {"state", "step", "job_id", "scheduler", "log", "error", "updated", "attempts"}
        assert state["scheduler"] == "debug"
        assert json.loads((d / "run.json").read_text()) == json.loads(json.dumps(spec.run_info()))
        assert rundir.read_json(d / "config.json") == json.loads(json.dumps(spec.cfg.to_dict()))
        ev = json.loads((d / "eval.json").read_text())
        assert ev["step"] == 4 and isinstance(ev["tasks"]["predict"]["metrics"]["ssim"], float)
        assert weights(d)["step"] == 4
        assert spec.run_id in out
    assert "report: python metrics/report.py --sweep conditioning" in out
    assert "predict:ssim" in out  # the summary table
    assert not list((results / "conditioning").glob("*/.*.tmp*"))  # atomic writes leave no temp files


def test_debug_sweep_reports_fvd_beside_its_references(swept, tmp_path):
    """The tiny profile's chain to the end: its evaluation's real-I3D FVD, with the real-vs-real and copy-baseline
    references, reaches the report's table."""
    from metrics import report
    results, code, out, err = swept
    assert code == 0, out + err
    (tmp_path / "runs").symlink_to(results, target_is_directory=True)  # the report reads <results>/runs/<sweep>/
    assert report.main(["--results", str(tmp_path), "--sweep", "conditioning", "--bootstrap", "200"]) == 0
    ev = json.loads((results / "conditioning" / specs()[0].run_id / "eval.json").read_text())["tasks"]["predict"]
    fvd, band = ev["metrics"]["fvd"], ev["references"]["fvd_real_vs_real"]
    floor = band["mean"]  # the real-vs-real band: mean, min, max over eval.fvd_ref_draws draws
    assert fvd > 0 and floor > 0 and ev["baselines"]["nearest"]["fvd"] > 0 and len(band["draws"]) == 5
    assert ev["metrics"]["lpips"] > 0 and ev["protocol"]["lpips_weights"]["net"] == "alex"  # LPIPS on in tiny
    table = (tmp_path / "conditioning" / "table.md").read_text()
    assert "reference: real vs real (disjoint test sets)" in table and f"{floor:.1f}" in table
    assert "baseline: copy nearest given frame" in table


def test_relaunch_skips_finished_runs(swept):
    results = swept[0]
    before = {p: p.stat().st_mtime_ns for p in (results / "conditioning").glob("*/checkpoints/last.pt")}
    code, out, _ = cli(results, "--executor", "debug")
    assert code == 0
    assert "2 runs (2 done" in out and "0 to run" in out
    assert before == {p: p.stat().st_mtime_ns for p in (results / "conditioning").glob("*/checkpoints/last.pt")}
    for spec in specs():
        assert rundir.read_state(results / "conditioning" / spec.run_id)["attempts"] == 1


def test_a_run_another_sweep_finished_is_reused_not_retrained(swept):
    """prediction's v runs are conditioning's token_concat runs (same training config, same id): the prediction
    sweep takes the finished run, weights and scores, instead of training it again; asked for other eval settings,
    it re-evaluates the reused run without training."""
    results = swept[0]
    twin = results / "conditioning" / specs(["token_concat"])[0].run_id

    def predict_sweep(*sets):
        argv = ["--sweep", "prediction", "--variants", "v", "--seeds", "0", "--results", str(results),
                "--executor", "debug", "--no-progress", "--poll-s", "0.05", "--set", *TINY, *sets]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert run.main(argv) == 0
        return out.getvalue()

    out = predict_sweep()
    d = results / "prediction" / twin.name
    assert f"reuse   {twin.name} v seed=0: trained in {twin}" in out and "1 runs (1 done" in out
    assert_same_weights(weights(d), weights(twin))
    assert (d / "checkpoints" / "last.pt").stat().st_ino == (twin / "checkpoints" / "last.pt").stat().st_ino
    assert (d / "eval.json").read_text() == (twin / "eval.json").read_text()
    info = json.loads((d / "run.json").read_text())
    assert info["sweep"] == "prediction" and info["variant"] == "v" and info["reused_from"] == str(twin)
    log = (d / "train_log.jsonl").read_text()
    assert log == (twin / "train_log.jsonl").read_text()

    out = predict_sweep("eval.sample_steps=3")  # other eval settings: evaluate again, don't train
    assert "reuse" not in out and "1 to run" in out
    assert (d / "train_log.jsonl").read_text() == log
    assert json.loads((d / "eval.json").read_text())["eval"]["sample_steps"] == 3
    assert json.loads((twin / "eval.json").read_text())["eval"]["sample_steps"] == 2  # the twin is untouched
    assert_same_weights(weights(d), weights(twin))


def test_interrupted_run_resumes_to_the_same_weights(swept, tmp_path):
    """A run killed at step 2 (checkpoint, state 'running', no job) is resumed by the next launch and ends
    bitwise equal to the uninterrupted run."""
    from vdt import train

    spec = specs(["token_concat"])[0]
    d = tmp_path / "conditioning" / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    train.main(spec.cfg.with_overrides(["train.steps=2"]), d, progress=False)  # the part before the kill
    rundir.write_json(d / "config.json", spec.cfg.to_dict())
    rundir.update_state(d, state="running", attempts=1, job_id="DEBUG_1", step=2)

    code, out, _ = cli(tmp_path, "--status")
    assert code == 0 and "no job: relaunch resumes it" in out and "2/4" in out

    code, out, err = cli(tmp_path, "--executor", "debug", variants=["token_concat"])
    assert code == 0, out + err
    assert "1 to run" in out
    log = [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [(r["event"], r["step"]) for r in log if r.get("event", "eval") != "eval"] == [("resumed", 2)]
    assert rundir.read_state(d)["attempts"] == 2
    assert_same_weights(weights(d), weights(swept[0] / "conditioning" / spec.run_id))


def test_failed_run_does_not_stop_the_others_and_retry_failed_reruns_it(tmp_path, monkeypatch):
    import vdt.train

    real_main = vdt.train.main

    def flaky(cfg, run_dir, **kw):
        if cfg.model.conditioning == "token_concat":  # the first run fails; the second must still run
            raise RuntimeError("injected failure in token_concat")
        return real_main(cfg, run_dir, **kw)

    monkeypatch.setattr(vdt.train, "main", flaky)  # the job calls vdt.train.main when it runs
    code, out, _ = cli(tmp_path, "--executor", "debug")
    bad, ok = (tmp_path / "conditioning" / s.run_id for s in specs())
    assert code == 1
    assert rundir.read_state(ok)["state"] == "done"
    state = rundir.read_state(bad)
    assert state["state"] == "failed" and "injected failure in token_concat" in state["error"]
    assert f"FAILED {bad.name} (token_concat, seed 0): log {state['log']}" in out
    assert "RuntimeError: injected failure in token_concat" in out
    assert "injected failure" in open(state["log"]).read()

    code, out, _ = cli(tmp_path, "--executor", "debug")  # failed runs are kept without --retry-failed
    assert code == 1 and "1 failed and kept" in out
    assert rundir.read_state(bad)["attempts"] == 1

    monkeypatch.setattr(vdt.train, "main", real_main)
    code, out, _ = cli(tmp_path, "--executor", "inline", "--retry-failed")
    assert code == 0, out
    state = rundir.read_state(bad)
    assert state["state"] == "done" and state["attempts"] == 2 and state["error"] is None
    assert (bad / "eval.json").exists()


def test_second_launch_of_a_locked_sweep_exits_3(tmp_path):
    with rundir.SweepLock(tmp_path / "conditioning"):
        code, _, err = cli(tmp_path, "--executor", "debug")
    assert code == 3 and "being launched by another process" in err
    assert not list((tmp_path / "conditioning").glob("*/state.json"))


def test_run_held_by_a_live_job_is_watched_not_started_twice(tmp_path):
    spec = specs(["token_concat"])[0]
    d = tmp_path / "conditioning" / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    rundir.update_state(d, state="running", attempts=1, job_id="777")
    held = rundir.RunLock(d).acquire()  # "another job" trains this run
    beat = rundir.Heartbeat(d, "777").__enter__()

    def other_job_finishes():
        (d / "checkpoints").mkdir()
        (d / "checkpoints" / "last.pt").write_bytes(b"the other job's checkpoint")
        rundir.write_json(d / "eval.json", {"step": 4, "tasks": {"predict": {"metrics": {}}},
                                            "checkpoint": made_from(d),
                                            "eval": json.loads(json.dumps(spec.cfg.to_dict()["eval"]))})
        rundir.update_state(d, state="done", step=4)
        beat.__exit__(None, None, None)
        held.release()

    timer = threading.Timer(1.0, other_job_finishes)
    timer.start()
    try:
        code, out, _ = cli(tmp_path, "--executor", "debug", variants=["token_concat"])
    finally:
        timer.join()
    assert code == 0 and "1 held by a live job" in out, out + _
    assert not (d / "train_log.jsonl").exists()  # the launcher never trained it


def test_job_refuses_a_run_another_job_holds(tmp_path):
    spec = specs(["token_concat"])[0]
    d = tmp_path / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    with rundir.RunLock(d), pytest.raises(rundir.LockHeld):
        SweepJob(d)()
    assert rundir.read_state(d)["attempts"] == 0


class FakeRequeue:
    """Stands in for submitit's USR2 handler: records the step last.pt holds, then exits as submitit does."""

    def __init__(self, run_dir):
        self.run_dir, self.saved = run_dir, []

    def __call__(self, signum, frame):
        self.saved.append(torch.load(self.run_dir / "checkpoints" / "last.pt", weights_only=False)["step"])
        raise SystemExit(-1)


def test_usr2_saves_the_step_in_progress_and_a_stop_in_evaluation_resumes_evaluation(tmp_path, monkeypatch):
    """USR2 during step 3 (checkpoints every 4): step 3 is finished and saved before submitit's handler
    requeues; the next attempt resumes at step 3 (redoing nothing) and ends with an uninterrupted run's
    weights. USR2 during evaluation requeues at once; the attempt after it evaluates without training."""
    import metrics.evaluate
    import vdt.train

    sets = [s for s in TINY if not s.startswith(("train.steps", "train.ckpt_every"))] + [
        "train.steps=6", "train.ckpt_every=4"]
    spec = sweeps.expand("conditioning", sets=sweeps.parse_sets(sets), seeds=[0], variants=["token_concat"])[0]
    d = tmp_path / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    real_step, evaluations = vdt.train.Trainer.train_step, []

    def signalled_step(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(self, step)

    def evaluate_run(run_dir, cfg, progress=False, split="test"):
        beat = rundir.read_json(d / "heartbeat.json")
        assert (beat["pid"], beat["host"]) == (os.getpid(), socket.gethostname())  # the job is seen alive
        evaluations.append(torch.load(d / "checkpoints" / "last.pt", weights_only=False)["step"])
        if len(evaluations) == 1:
            os.kill(os.getpid(), signal.SIGUSR2)
        rundir.write_json(d / "eval.json", {"step": 6, "tasks": {"predict": {"metrics": {"ssim": 0.5}}},
                                            "checkpoint": made_from(d),
                                            "eval": json.loads(json.dumps(spec.cfg.to_dict()["eval"]))})

    requeue = FakeRequeue(d)
    previous = signal.signal(signal.SIGUSR2, requeue)
    monkeypatch.setattr(metrics.evaluate, "evaluate_run", evaluate_run)
    try:
        monkeypatch.setattr(vdt.train.Trainer, "train_step", signalled_step)
        with pytest.raises(SystemExit):  # attempt 1: preempted in training
            SweepJob(d)()
        assert requeue.saved == [3] and rundir.read_state(d)["state"] == "running"
        monkeypatch.setattr(vdt.train.Trainer, "train_step", real_step)
        with pytest.raises(SystemExit):  # attempt 2: trains 4..6, preempted in evaluation
            SweepJob(d)()
        assert requeue.saved == [3, 6] and evaluations == [6] and not (d / "heartbeat.json").exists()
        last = (d / "checkpoints" / "last.pt").stat().st_mtime_ns
        SweepJob(d)()  # attempt 3: evaluation only
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert evaluations == [6, 6] and (d / "checkpoints" / "last.pt").stat().st_mtime_ns == last
    state = rundir.read_state(d)
    assert state["state"] == "done" and state["attempts"] == 3 and state["step"] == 6
    log = [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    # attempt 3 found training finished: it resumed nothing, so it logs no "resumed"
    events = [(r["event"], r["step"]) for r in log if r.get("event", "eval") != "eval"]
    assert events == [("preempted", 3), ("resumed", 3)]
    vdt.train.main(spec.cfg, tmp_path / "uninterrupted", progress=False)
    assert_same_weights(weights(d), weights(tmp_path / "uninterrupted"))


def test_done_needs_a_complete_eval_json_for_the_final_step(tmp_path):
    spec = specs(["token_concat"])[0]
    d = tmp_path / "conditioning" / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    rundir.update_state(d, state="done", step=4, attempts=1)
    made_by = json.loads(json.dumps(spec.cfg.to_dict()["eval"]))
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    for ev, done in [({"step": 4, "tasks": {}, "eval": made_by}, False),  # a task missing
                     ({"step": 2, "tasks": {"predict": {"metrics": {}}}}, False),  # an earlier checkpoint's
                     ({"step": 4, "tasks": {"predict": {}}, "eval": {"num_videos": 99}}, False),  # other settings
                     ({"step": 4, "tasks": {"predict": {"metrics": {}}}}, False),  # settings not recorded
                     ({"step": 4, "tasks": {"predict": {"metrics": {}}}, "eval": made_by}, True)]:
        rundir.write_json(d / "eval.json", {**ev, "checkpoint": made_from(d)})
        groups = launcher.classify([spec], tmp_path / "conditioning", retry_failed=False)
        assert (groups["done"] == [spec]) is done and (groups["todo"] == [spec]) is not done, ev
        shown = status.row(d)["state"]
        assert shown == "done" if done else shown.startswith("done (evaluation incomplete"), (ev, shown)


def test_liveness_comes_from_the_heartbeat_not_the_lock(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    rundir.update_state(d, state="running", attempts=1, job_id="local-12")
    with rundir.RunLock(d):  # a lock alone (no heartbeat) says nothing: it is never probed
        assert not status.job_alive(d)
    with rundir.Heartbeat(d, "local-12", every=0.05):
        time.sleep(0.2)
        beat = rundir.read_json(d / "heartbeat.json")
        assert beat["job_id"] == "local-12" and beat["pid"] == os.getpid() and time.time() - beat["time"] < 1
        assert status.job_alive(d)
    assert not (d / "heartbeat.json").exists() and not status.job_alive(d)
    rundir.write_json(d / "heartbeat.json", {**beat, "time": time.time() - 2 * rundir.HEARTBEAT_STALE_S})
    assert not status.job_alive(d)  # stale: the job died without cleaning up
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rundir.write_json(d / "heartbeat.json", {**beat, "pid": dead.pid, "time": time.time()})
    assert not status.job_alive(d)  # fresh, but its process on this host is gone


def test_status_never_disturbs_a_job_taking_its_lock(tmp_path):
    """--status and the launcher's checks run while jobs take the run lock (non-blocking): no take may fail."""
    spec = specs(["token_concat"])[0]
    d = tmp_path / "conditioning" / spec.run_id
    rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
    rundir.update_state(d, state="running", attempts=1, job_id="local-12")
    stop, checks = threading.Event(), [0]

    def status_loop():
        while not stop.is_set():
            status.row(d)
            launcher.Watcher.attached_alive(d, rundir.read_state(d))
            checks[0] += 1

    t = threading.Thread(target=status_loop)
    t.start()
    failures = 0
    try:
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                rundir.RunLock(d).acquire().release()
            except rundir.LockHeld:
                failures += 1
    finally:
        stop.set()
        t.join()
    assert checks[0] > 10 and failures == 0, (checks, failures)


def test_status_shows_state_step_loss_job_and_log(swept):
    results = swept[0]
    code, out, _ = cli(results, "--status")
    assert code == 0
    for spec in specs():
        d = results / "conditioning" / spec.run_id
        state, logged = rundir.read_state(d), rundir.last_logged(d)
        line = next(line for line in out.splitlines() if line.startswith(spec.run_id))
        for cell in (spec.variant, "done", "4/4", f"{logged['loss']:.4g}", state["job_id"], state["log"]):
            assert cell in line


@pytest.mark.parametrize("item, named", [("train.stepz=3", "train.stepz"), ("train.steps=three", "train.steps"),
                                         ("model.conditioning=film", "model.conditioning")])
def test_bad_set_exits_2_naming_it(tmp_path, item, named):
    code, _, err = cli(tmp_path, "--executor", "debug", "--set", item)
    assert code == 2 and named in err
    assert not (tmp_path / "conditioning").exists()


def test_dry_run_prints_runs_sbatch_and_cost_and_submits_nothing(tmp_path, capsys):
    argv = ["--sweep", "conditioning", "--dry-run", "--results", str(tmp_path), "--executor", "slurm",
            "--partition", "p1", "--account", "acc", "--qos", "high", "--gpus-per-node", "2", "--tasks-per-node", "2",
            "--time-min", "90", "--array-parallelism", "3", "--slurm-extra", "constraint=h100",
            "--slurm-extra", "exclusive", "--gpu", "A100", "--mfu", "0.5"]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    runs = sweeps.expand("conditioning")
    for s in runs:
        line = next(line for line in out.splitlines() if line.startswith(s.run_id))
        assert s.variant in line and f"train.seed={s.seed}" in line
        assert f"{cost.estimate(s.cfg).gpu_hours('A100', 0.5):.3g}" in line
    total = sum(cost.estimate(s.cfg).gpu_hours("A100", 0.5) for s in runs)
    assert f"{total:.3g} GPU-hours on A100" in out
    for flag in ("--partition=p1", "--account=acc", "--qos=high", "--gpus-per-node=2", "--ntasks-per-node=2",
                 "--time=90", f"--array=0-{len(runs) - 1}%3", "--constraint=h100", "--exclusive",
                 "--kill-on-bad-exit=1"):
        assert flag in out
    assert "nothing submitted" in out
    assert not (tmp_path / "conditioning").exists()


def test_list_shows_sweeps_and_variants(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("conditioning", "mask_ratio", "depth", "token_concat", "cross_attn", "adaln", "depth_28", "paper"):
        assert name in out


def test_local_slots_follow_cores_memory_and_cap(monkeypatch):
    monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert launcher.local_slots(launcher.Options(cpus_per_task=1)) == 8
    assert launcher.local_slots(launcher.Options(cpus_per_task=3)) == 2
    assert launcher.local_slots(launcher.Options(cpus_per_task=2, tasks_per_node=2)) == 2
    assert launcher.local_slots(launcher.Options(cpus_per_task=16)) == 1
    assert launcher.local_slots(launcher.Options(array_parallelism=3)) == 3
    monkeypatch.setattr(launcher.psutil, "virtual_memory", lambda: type("M", (), {"available": 5 * 2**30})())
    assert launcher.local_slots(launcher.Options(mem_gb=2)) == 2


def test_local_sweep_starts_the_costliest_runs_first(tmp_path, monkeypatch):
    """`depth` on 2 local slots: the depth-8 runs are submitted first, then 4, then 2; seeds keep their order."""
    todo = sweeps.expand("depth", sets=sweeps.parse_sets(TINY), seeds=[0, 1], variants=None)
    assert [s.variant for s in todo][:2] == ["depth_2", "depth_2"]  # the sweep's own order is shallow first
    batches = []
    monkeypatch.setattr(launcher, "local_slots", lambda opts: 2)
    monkeypatch.setattr(launcher, "submit_batch", lambda ex, batch, *a, **k: batches.append(
        [(s.variant, s.seed) for s in batch]))
    opts = launcher.Options(progress=False, poll_s=0.0)
    watcher = launcher.Watcher(todo, tmp_path / "depth", opts, 0, "local")
    launcher.submit_all("local", todo, tmp_path / "depth", opts, watcher)
    assert batches == [[("depth_8", 0), ("depth_8", 1)], [("depth_4", 0), ("depth_4", 1)],
                       [("depth_2", 0), ("depth_2", 1)]]
    costs = [cost.estimate(s.cfg).flops for s in launcher.longest_first(todo)]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_local_executor_runs_no_more_jobs_than_slots(tmp_path):
    """Two runs through submitit's local executor with one slot (2 cores / 2 threads): they never overlap."""
    code, out, err = cli(tmp_path, "--executor", "local", "--cpus-per-task", str(max(1, launcher.local_slots(
        launcher.Options()))), "--poll-s", "0.5")
    assert code == 0, out + err
    spans = []
    for spec in specs():
        d = tmp_path / "conditioning" / spec.run_id
        assert rundir.read_state(d)["state"] == "done"
        times = [json.loads(line)["time"] for line in (d / "train_log.jsonl").read_text().splitlines()]
        spans.append((times[0], rundir.read_state(d)["updated"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"runs overlapped: {spans}"


def test_refused_submission_exits_1_and_leaves_runs_pending(tmp_path, monkeypatch):
    class Refusing:
        def batch(self):
            return contextlib.nullcontext()

        def submit(self, fn):
            raise OSError("sbatch: error: Batch job submission failed: Invalid account")

    monkeypatch.setattr(launcher, "make_executor", lambda *a, **k: Refusing())
    code, _, err = cli(tmp_path, "--executor", "slurm")
    assert code == 1 and "Invalid account" in err and "submitting 2 job(s)" in err
    for spec in specs():
        assert rundir.read_state(tmp_path / "conditioning" / spec.run_id)["state"] == "pending"


def fake_slurm_bin(tmp_path, ping_output, ping_rc, with_scontrol=True):
    """A PATH dir with an ``sbatch`` that records being called and an ``scontrol`` that prints ping_output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path}/sbatch-called\nexit 1\n")
    if with_scontrol:
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\ncat <<'OUT'\n{ping_output}\nOUT\nexit {ping_rc}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("ping_output, ping_rc, with_scontrol, expected, reason", [
    ("Slurmctld(primary) at ctl is UP", 0, True, "slurm", None),
    ("Slurmctld(primary) at ctl is UP\nSlurmctld(backup) at ctl2 is DOWN", 1, True, "slurm", None),
    ("Slurmctld(primary) at ctl is DOWN", 1, True, "local", "DOWN"),
    ("", 0, False, "local", "scontrol is not on PATH"),
])
def test_auto_executor_asks_the_controller(tmp_path, monkeypatch, capsys, ping_output, ping_rc, with_scontrol,
                                           expected, reason):
    """auto picks SLURM only where sbatch is on PATH and `scontrol ping` says UP; otherwise local, saying why."""
    bin_dir = fake_slurm_bin(tmp_path, ping_output, ping_rc, with_scontrol)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin" if with_scontrol else str(bin_dir))
    assert launcher.resolve_executor("auto") == expected
    err = capsys.readouterr().err
    assert (reason in err) if reason else err == ""
    assert launcher.resolve_executor("local") == "local" and launcher.resolve_executor("slurm") == "slurm"


def test_auto_without_sbatch_is_local_silently(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launcher.resolve_executor("auto") == "local"
    assert capsys.readouterr().err == ""


def test_auto_with_controller_down_runs_the_sweep_locally(tmp_path, monkeypatch):
    """The CLI with the default executor on a machine whose controller is down: runs finish, sbatch never runs."""
    bin_dir = fake_slurm_bin(tmp_path, "Slurmctld(primary) at ctl is DOWN", 1)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    code, out, err = cli(tmp_path / "results", "--executor", "auto", "--cpus-per-task", "2",
                         variants=["token_concat"])
    assert code == 0, err
    assert "running locally" in err and "executor local" in out
    assert not (tmp_path / "sbatch-called").exists()
    run_dir = tmp_path / "results" / "conditioning" / specs(["token_concat"])[0].run_id
    assert rundir.read_state(run_dir)["state"] == "done"


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("kind, progress, tty, bars", [
    ("inline", True, True, True), ("inline", False, True, False), ("inline", True, False, False),
    ("local", True, True, False),  # a subprocess's bars would only clutter its log
])
def test_in_process_runs_draw_bars_only_on_a_terminal_without_no_progress(tmp_path, monkeypatch, kind, progress,
                                                                         tty, bars):
    monkeypatch.setattr("sys.stderr", Terminal() if tty else io.StringIO())
    job = launcher.new_job(specs()[0], tmp_path, launcher.Options(executor=kind, progress=progress), kind)
    assert job.progress is bars


@pytest.fixture
def flaky_squeue(tmp_path, monkeypatch):
    """A fake ``squeue`` on PATH: call n fails as an unreachable controller does when n is in ``fail`` (a set of
    call numbers, or "all"), else lists the job as RUNNING. Returns a setter and the call counter."""
    bin_dir, count = tmp_path / "bin", tmp_path / "squeue-calls"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(
        '#!/bin/sh\nn=$(cat "$SQ_COUNT" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$SQ_COUNT"\n'
        'case ",$SQ_FAIL," in *",$n,"*|*",all,"*) '
        'echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2; exit 1;; esac\n'
        'echo RUNNING\n')
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SQ_COUNT", str(count))
    monkeypatch.setattr(status, "SQUEUE_BACKOFF_S", 0.01)
    monkeypatch.setattr(status, "_unanswered_until", [0.0])

    def set_failing(fail) -> None:
        monkeypatch.setenv("SQ_FAIL", ",".join(map(str, fail)) if fail != "all" else "all")
        count.write_text("0")

    return set_failing, lambda: int(count.read_text())


def test_a_flaky_squeue_is_retried_with_back_off_not_taken_for_a_dead_controller(flaky_squeue, monkeypatch):
    set_failing, calls = flaky_squeue
    set_failing({1, 2})
    t0 = time.monotonic()
    assert status.slurm_job_queued("4242", backoff_s=0.1) is True and calls() == 3
    assert time.monotonic() - t0 >= 0.3  # waited 0.1 then 0.2 s between the calls
    set_failing("all")
    assert status.slurm_job_queued("4242") is None and calls() == status.SQUEUE_TRIES  # can't tell, after retries
    assert status.slurm_job_queued("4243") is None and calls() == status.SQUEUE_TRIES  # not asked again at once...
    monkeypatch.setattr(status, "_unanswered_until", [0.0])  # ...until the pause is over
    set_failing({1})
    assert status.slurm_job_queued("4243") is True and calls() == 2


def test_a_flaky_controller_never_gets_a_live_run_resubmitted(flaky_squeue, tmp_path):
    """Two runs held by SLURM jobs, the controller missing the first call: both are watched, none resubmitted (the
    old launcher took one failed call for a controller gone for good, and resubmitted every run). A run whose
    heartbeat is fresh stays alive whatever squeue says; so does a SLURM run no controller answers for."""
    set_failing, calls = flaky_squeue
    sweep = tmp_path / "conditioning"
    for i, spec in enumerate(specs()):
        d = sweep / spec.run_id
        rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
        rundir.update_state(d, state="running", attempts=1, job_id=f"{4242 + i}", scheduler="slurm")
    set_failing({1})
    groups = launcher.classify(specs(), sweep, retry_failed=False)
    assert groups["alive"] == specs() and groups["todo"] == [], groups
    assert calls() == 3  # one failure, one retry, one call for the second run

    d = sweep / specs()[0].run_id
    set_failing("all")
    assert status.job_alive(d)  # no answer after retries: can't tell, so not resubmitted
    rundir.write_json(d / "heartbeat.json", {"job_id": "4242", "scheduler": "slurm", "host": "another-node",
                                             "pid": 1, "time": time.time()})
    set_failing(set())
    status._unanswered_until[0] = 0.0
    calls_before = calls()
    assert status.job_alive(d) and calls() == calls_before  # a fresh heartbeat: alive, squeue not even asked
    rundir.update_state(d, scheduler="local", job_id="31337")
    (d / "heartbeat.json").unlink()
    assert not status.job_alive(d) and calls() == calls_before  # a local job's liveness is its heartbeat alone
