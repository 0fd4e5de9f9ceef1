"""The fault-injection run: a miniature sweep under random faults must end exactly as a clean run does.

    python scripts/fault_injection.py [--faults 20] [--seeds 3] [--steps 200] [--seed 0] [--work DIR]

The sweep is ``conditioning`` (token_concat, ``--seeds`` runs) on the tiny profile cut down to ``--steps``
steps and two evaluation tasks, launched with the local executor (``ablations/run.py --executor local
--retry-failed``) again and again until every run is done. While it runs, faults are injected at random
moments, from a seeded plan that holds every kind at least once when ``--faults`` allows:

- ``sigkill``: SIGKILL of a running job (its pid from heartbeat.json);
- ``usr2``: USR2 to a running job (a preemption: it saves and requeues itself);
- ``torn_write``: a job killed between writing a checkpoint and renaming it into place (``vdt/faults.py``);
- ``disk_full``: ``OSError(ENOSPC)`` for one checkpoint write (``vdt/faults.py``);
- ``corrupt_checkpoint``: checkpoints/last.pt of a stopped, unfinished run overwritten in place (so the step
  file it links to is corrupt too) with half its bytes;
- ``corrupt_eval_part``: a job killed just after writing an evaluation task's part, and that part then cut
  in half before the next launch.

Then it checks that every run finished, that its final weights (model, EMA, step) and its eval.json's numbers
equal, bitwise, those of a clean run of the same config (trained and evaluated in this process, one thread, as
each 1-CPU job), and that no eval.json seen while the faulty sweep ran (polled every 20 ms) ever held other
numbers. It prints the faults injected, the runs recovered, the steps and evaluations lost, and the steps
redone; exit status 0 when every check holds and at least ``--faults`` faults of ``--min-kinds`` kinds fired.
"""

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("sigkill", "usr2", "torn_write", "disk_full", "corrupt_checkpoint", "corrupt_eval_part")
HOOKS = {"torn_write": "checkpoint_before_rename.kill", "disk_full": "checkpoint_write.enospc",
         "corrupt_eval_part": "eval_part_written.kill"}  # vdt/faults.py: <point>.<action>
RESULT_KEYS = ("metrics", "per_video", "baselines", "references", "x0_psnr_by_t")  # eval.json's numbers per task


def sweep_sets(steps: int) -> list:
    return [f"train.steps={steps}", "train.ckpt_every=5", "train.log_every=1", "train.batch_size=4",
            "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2", "eval.fvd=false", "eval.lpips=false",
            "eval.tasks=predict,interpolate"]


def numbers(ev: dict) -> dict:
    """What eval.json says about the model: each task's metrics, per-video values, baselines and references."""
    return {t: {k: r.get(k) for k in RESULT_KEYS} for t, r in ev.get("tasks", {}).items()}


def final_weights(run_dir: Path) -> dict:
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return {"step": ckpt["step"], "model": ckpt["model"], "ema": ckpt["ema"]}


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a["step"] == b["step"] and all(
        a[p].keys() == b[p].keys() and all(torch.equal(a[p][k], b[p][k]) for k in a[p]) for p in ("model", "ema"))


def clean_reference(specs: list, folder: Path) -> dict:
    """run id -> (weights, eval numbers) of each run trained and evaluated without a fault, one thread."""
    import torch

    from ablations import rundir
    from metrics import evaluate
    from vdt import train

    torch.set_num_threads(1)
    out = {}
    for spec in specs:
        d = folder / spec.run_id
        rundir.prepare(d, spec.cfg.to_dict(), spec.run_info())
        train.main(spec.cfg, d, progress=False)
        ev = evaluate.evaluate_run(d, spec.cfg, progress=False)
        out[spec.run_id] = (final_weights(d), numbers(ev))
    return out


class Monitor(threading.Thread):
    """Polls every run dir: each new eval.json (checked against the clean numbers), the highest step logged (a drop
    means steps redone), and which job pid works on which run (from heartbeat.json)."""

    def __init__(self, sweep_dir: Path, clean: dict, every: float = 0.02):
        super().__init__(daemon=True)
        self.sweep_dir, self.clean, self.every = sweep_dir, clean, every
        self.seen, self.wrong, self.peak, self.redone = set(), [], {}, collections.Counter()
        self.pids, self.stop = {}, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.poll()

    def poll(self) -> None:
        from ablations import rundir

        for run_id in self.clean:
            d = self.sweep_dir / run_id
            try:
                blob = (d / "eval.json").read_bytes()
            except OSError:
                blob = None
            if blob is not None and hashlib.sha256(blob).hexdigest() not in self.seen:
                self.seen.add(hashlib.sha256(blob).hexdigest())
                try:
                    got = numbers(json.loads(blob))
                except ValueError:
                    got = "not JSON"
                if got != self.clean[run_id][1]:
                    self.wrong.append((run_id, got))
            step = rundir.last_logged(d).get("step", 0)
            if step < self.peak.get(run_id, 0):
                self.redone[run_id] += self.peak[run_id] - step
            self.peak[run_id] = step
            beat = rundir.read_json(d / "heartbeat.json")
            if isinstance(beat, dict) and beat.get("pid"):
                self.pids[int(beat["pid"])] = run_id


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Injector:
    """The seeded plan of faults, and their injection into a running sweep."""

    def __init__(self, plan: list, rng: random.Random, sweep_dir: Path, hooks: Path, monitor: Monitor):
        self.queue, self.rng, self.sweep_dir, self.hooks, self.monitor = list(plan), rng, sweep_dir, hooks, monitor
        self.fired, self.armed = [], {}  # [(kind, run_id)], kind -> hook file
        self.usr2_sent = collections.Counter()  # per job pid: submitit's local controller restarts a task 6 times

    def live_jobs(self) -> list:
        from ablations import rundir

        jobs = []
        for run_id in self.monitor.clean:
            beat = rundir.read_heartbeat(self.sweep_dir / run_id)
            if beat and beat.get("pid") and alive(int(beat["pid"])):
                jobs.append((run_id, int(beat["pid"])))
        return jobs

    def during_launch(self) -> None:
        """Inject the next fault of the plan that can be injected into a running sweep, if one applies now."""
        live = [i for i, k in enumerate(self.queue) if k != "corrupt_checkpoint" and k not in self.armed]
        if not live:
            return
        kind = self.queue[live[0]]
        if kind in HOOKS:
            self.armed[kind] = self.hooks / HOOKS[kind]
            self.armed[kind].touch()
            del self.queue[live[0]]
            return
        jobs = [j for j in self.live_jobs() if kind != "usr2" or self.usr2_sent[j[1]] < 3]
        if not jobs:
            return
        run_id, pid = self.rng.choice(sorted(jobs))
        os.kill(pid, signal.SIGKILL if kind == "sigkill" else signal.SIGUSR2)
        self.usr2_sent[pid] += kind == "usr2"
        self.fired.append((kind, run_id))
        del self.queue[live[0]]

    def after_launch(self, unfinished: list) -> None:
        """Collect the hooks that fired, cut the eval part a killed evaluation left, corrupt a stopped checkpoint."""
        for kind, path in list(self.armed.items()):
            fired = sorted(path.parent.glob(path.name + ".fired-*"))
            if fired:
                pid = int(fired[0].name.rsplit("-", 1)[1])
                run_id = self.monitor.pids.get(pid, "?")
                self.fired.append((kind, run_id))
                fired[0].unlink()
                if kind == "corrupt_eval_part" and run_id != "?":
                    parts = sorted((self.sweep_dir / run_id / "eval_parts").glob("*.json"),
                                   key=lambda p: p.stat().st_mtime_ns)
                    if parts:
                        data = parts[-1].read_bytes()
                        parts[-1].write_bytes(data[: len(data) // 2])
            elif unfinished:
                path.unlink(missing_ok=True)  # never reached: try again in the next launch
                self.queue.insert(0, kind)
            else:
                path.unlink(missing_ok=True)
            del self.armed[kind]
        runs = [r for r in unfinished if (self.sweep_dir / r / "checkpoints" / "last.pt").exists()]
        if "corrupt_checkpoint" in self.queue and runs:  # a stopped run: no job will overwrite last.pt first
            run_id = self.rng.choice(sorted(runs))
            last = self.sweep_dir / run_id / "checkpoints" / "last.pt"
            size = last.stat().st_size
            with open(last, "r+b") as f:  # in place: the step file it is linked to goes with it
                f.truncate(size // 2)
            self.fired.append(("corrupt_checkpoint", run_id))
            self.queue.remove("corrupt_checkpoint")


def unfinished_runs(sweep_dir: Path, run_ids) -> list:
    from ablations import rundir

    return [r for r in run_ids if not (rundir.read_state(sweep_dir / r)["state"] == "done"
                                       and rundir.evaluated(sweep_dir / r))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/fault_injection.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds (default all: {','.join(KINDS)})")
    p.add_argument("--min-kinds", type=int, default=5, help="kinds that must fire for success (default 5)")
    p.add_argument("--seeds", type=int, default=3, help="runs in the sweep (seeds of token_concat; default 3)")
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault plan and its timing (default 0)")
    p.add_argument("--gap-s", type=float, nargs=2, default=(1.0, 3.0), help="random wait between faults (s)")
    p.add_argument("--max-launches", type=int, default=60)
    p.add_argument("--work", type=Path, help="work folder (default: a new one under /tmp)")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        p.error(f"--kinds: unknown {bad}; choose from {KINDS}")

    import tempfile

    from ablations import sweeps

    work = args.work or Path(tempfile.mkdtemp(prefix="vdt-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    sets = sweep_sets(args.steps)
    specs = sweeps.expand("conditioning", sets=sweeps.parse_sets(sets), seeds=list(range(args.seeds)),
                          variants=["token_concat"])
    rng = random.Random(args.seed)
    plan = (kinds * (args.faults // len(kinds) + 1))[: max(args.faults, 0)]
    rng.shuffle(plan)
    t0 = time.time()
    print(f"fault injection: {len(specs)} runs x {args.steps} steps, {len(plan)} faults planned "
          f"({', '.join(f'{k} {plan.count(k)}' for k in kinds)}), seed {args.seed}, work {work}", flush=True)

    clean = clean_reference(specs, work / "clean" / "conditioning")
    print(f"clean run: {time.time() - t0:.0f} s", flush=True)
    sweep_dir, hooks = work / "faulty" / "conditioning", work / "hooks"
    hooks.mkdir(exist_ok=True)
    monitor = Monitor(sweep_dir, clean)
    monitor.start()
    injector = Injector(plan, rng, sweep_dir, hooks, monitor)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VDT_FAULTS": str(hooks),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(ROOT / "ablations" / "run.py"), "--sweep", "conditioning", "--variants",
           "token_concat", "--seeds", *map(str, range(args.seeds)), "--results", str(work / "faulty"), "--executor",
           "local", "--retry-failed", "--no-progress", "--poll-s", "0.2", "--set", *sets]
    launches = 0
    while launches < args.max_launches:
        launches += 1
        with open(work / f"launch-{launches:02d}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            next_at = time.time() + rng.uniform(*args.gap_s)
            while proc.poll() is None:
                if time.time() >= next_at:
                    before = len(injector.fired) + len(injector.armed)
                    injector.during_launch()
                    if len(injector.fired) + len(injector.armed) > before:
                        next_at = time.time() + rng.uniform(*args.gap_s)
                time.sleep(0.05)
        monitor.poll()
        left = unfinished_runs(sweep_dir, clean)
        injector.after_launch(left)
        left = unfinished_runs(sweep_dir, clean)
        if not left and not injector.queue:
            break
        if not left and injector.queue:  # everything finished before the plan did: the rest can't be injected
            print(f"runs finished with {len(injector.queue)} faults not injected: {injector.queue}", flush=True)
            break
    monitor.stop.set()
    monitor.join()
    monitor.poll()
    return report(specs, sweep_dir, clean, monitor, injector, launches, args, time.time() - t0)


def report(specs, sweep_dir: Path, clean: dict, monitor: Monitor, injector: Injector, launches: int, args,
           seconds: float) -> int:
    from ablations import rundir

    fired = collections.Counter(k for k, _ in injector.fired)
    hit = {r for _, r in injector.fired}
    finished, equal_w, equal_ev, short = [], [], [], 0
    for spec in specs:
        d = sweep_dir / spec.run_id
        if rundir.read_state(d)["state"] == "done" and rundir.evaluated(d):
            finished.append(spec.run_id)
        got = final_weights(d) if (d / "checkpoints" / "last.pt").exists() else None
        short += spec.cfg.train.steps - (got["step"] if got else 0)
        if got is not None and same_weights(got, clean[spec.run_id][0]):
            equal_w.append(spec.run_id)
        ev = rundir.read_json(d / "eval.json")
        if ev is not None and numbers(ev) == clean[spec.run_id][1]:
            equal_ev.append(spec.run_id)
    n = len(specs)
    kinds_fired = len(fired)
    print(f"faults injected: {sum(fired.values())} of {kinds_fired} kinds ("
          + ", ".join(f"{k} {fired[k]}" for k in KINDS if fired[k]) + f") over {launches} launches, {seconds:.0f} s")
    print(f"runs recovered: {len(finished)} of {n} finished ({len(hit & set(finished))} of them hit by a fault); "
          f"final weights bitwise equal to the clean run's: {len(equal_w)} of {n}; eval.json numbers equal: "
          f"{len(equal_ev)} of {n}")
    print(f"steps lost: {short} (final step short of train.steps); evaluations lost: {n - len(equal_ev)}; "
          f"wrong eval.json ever seen: {len(monitor.wrong)} of {len(monitor.seen)} versions; steps redone after "
          f"faults (seen): {sum(monitor.redone.values())}")
    for run_id, got in monitor.wrong:
        print(f"  WRONG eval.json in {run_id}: {str(got)[:300]}")
    enough = sum(fired.values()) >= args.faults and kinds_fired >= min(args.min_kinds, len(set(args.kinds.split(","))))
    ok = len(finished) == len(equal_w) == len(equal_ev) == n and short == 0 and not monitor.wrong and enough
    print("fault injection: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
