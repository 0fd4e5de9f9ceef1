"""Training: exact resume (three ways), DDP equivalence, overfitting, checkpoints, bad config."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from vdt import train
from vdt.config import ConfigError, RunConfig

TINY = ["model.preset=cpu-tiny", "data.size=16", "data.frames=8", "train.batch_size=4",
        "train.log_every=2", "train.ckpt_every=4", "train.warmup=2", "eval.num_videos=2"]


def tiny(*extra) -> RunConfig:
    return RunConfig().with_overrides(TINY + list(extra))


def weights(run_dir) -> dict:
    ckpt = torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=False)
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_resume_is_exact(tmp_path):
    """N steps in one go == N/2 steps, then a resume to N (same run dir, larger --steps)."""
    train.main(tiny("train.steps=8"), tmp_path / "once", progress=False)
    train.main(tiny("train.steps=4"), tmp_path / "twice", progress=False)
    out = train.main(tiny("train.steps=8"), tmp_path / "twice", progress=False)
    assert out["step"] == 8
    assert_bitwise_equal(weights(tmp_path / "once"), weights(tmp_path / "twice"))
    log = read_log(tmp_path / "twice")
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8]
    assert {"event": "resumed", "step": 4} in [{k: r[k] for k in ("event", "step")} for r in log if "event" in r]
    assert all({"loss", "lr", "grad_norm", "gen_frac", "tokens_per_s", "wall_time"} <= r.keys()
               for r in log if "loss" in r)


def test_cosine_schedule_warms_up_then_decays_to_zero_and_resumes_exactly(tmp_path, monkeypatch):
    """train.lr_schedule=cosine: linear warmup, then lr * (1 + cos(pi * progress)) / 2, 0 at train.steps; a run
    killed and resumed at the same train.steps follows the same schedule, bitwise."""
    cos = ("train.steps=8", "train.lr=1e-3", "train.warmup=2", "train.lr_schedule=cosine", "train.log_every=1")
    train.main(tiny(*cos), tmp_path / "once", progress=False)
    logged = [r["lr"] for r in read_log(tmp_path / "once") if "loss" in r]
    expected = [1e-3 * 0.5, 1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 6)) for s in range(2, 8)]
    assert logged == pytest.approx(expected, rel=1e-9)
    assert logged[2] == pytest.approx(1e-3) and logged[-1] < 0.1 * 1e-3
    assert all(a > b for a, b in zip(logged[2:-1], logged[3:], strict=True))  # strictly decreasing after warmup
    # the same run stopped during step 4 and resumed (same train.steps) matches the uninterrupted one
    stop = threading.Event()
    real_step = train.Trainer.train_step

    def signalled(self, step):
        if step == 3:
            stop.set()
        return real_step(self, step)

    monkeypatch.setattr(train.Trainer, "train_step", signalled)
    assert train.main(tiny(*cos), tmp_path / "twice", progress=False, stop=stop)["step"] == 4
    monkeypatch.setattr(train.Trainer, "train_step", real_step)
    assert train.main(tiny(*cos), tmp_path / "twice", progress=False, stop=threading.Event())["step"] == 8
    assert_bitwise_equal(weights(tmp_path / "once"), weights(tmp_path / "twice"))


def read_log(run_dir) -> list:
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def test_gen_frac_is_the_measured_share_of_generated_positions(tmp_path):
    """Each log line's gen_frac is the mean of the masks of its interval's batches (here: exactly known)."""
    train.main(tiny("train.steps=4", "masks.mixture=predict:1", "masks.predict_k=2"), tmp_path, progress=False)
    assert [r["gen_frac"] for r in read_log(tmp_path)] == [0.75, 0.75]  # 6 of 8 frames generated


def _cli(run_dir, steps, **popen):
    cmd = [sys.executable, "-m", "vdt.train", "--run-dir", str(run_dir), "--steps", str(steps),
           "--ckpt-every", "2", "--no-progress", "--set", *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_sigkill_then_restart_is_exact(tmp_path):
    """A run killed with SIGKILL part-way, then restarted, ends with the same weights."""
    steps = 40
    ref = _cli(tmp_path / "ref", steps)
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()
    proc = _cli(tmp_path / "killed", steps)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while not (ckpts / "step_0000004.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed; raise the step count"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpts / "last.pt", weights_only=False)["step"]
    assert 2 <= killed_at < steps
    again = _cli(tmp_path / "killed", steps)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()
    assert_bitwise_equal(weights(tmp_path / "ref"), weights(tmp_path / "killed"))


def test_corrupt_last_falls_back(tmp_path):
    cfg = tiny("train.steps=8")
    train.main(cfg, tmp_path, progress=False)
    last = tmp_path / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.unlink()  # last.pt is a hard link to step_0000008.pt: replace the name, not the shared file
    last.write_bytes(data[:1000])  # truncated
    with pytest.warns(UserWarning, match="unreadable"):
        out = train.main(tiny("train.steps=10"), tmp_path, progress=False)
    assert out["step"] == 10  # resumed from step_0000008.pt, not from scratch
    assert torch.load(last, weights_only=False)["step"] == 10


def test_a_save_is_one_write_and_a_crash_mid_write_keeps_the_previous(tmp_path, monkeypatch):
    from vdt import checkpoint

    store = checkpoint.CheckpointStore(tmp_path, keep=2)
    calls = []
    real_save = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f: calls.append(1) or real_save(obj, f))
    state = {"model": {"w": torch.arange(4.0)}, "ema": {}, "optimizer": {}, "config": {}}
    for step in (1, 2, 3):
        store.save({**state, "step": step}, step)
    assert len(calls) == 3  # one torch.save per checkpoint
    assert os.path.samefile(tmp_path / "last.pt", tmp_path / "step_0000003.pt")
    assert [p.name for p in store.step_files()] == ["step_0000003.pt", "step_0000002.pt"]

    def crash(obj, f):  # half the bytes reach the disk, then the process dies
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save({**state, "step": 4}, 4)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the previous checkpoint loads as it is, no fallback needed
        assert store.load_latest()["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_0000002.pt", "step_0000003.pt"]


def test_stop_finishes_the_step_saves_and_the_resume_redoes_nothing(tmp_path, monkeypatch):
    """A stop asked for during step 6 (between checkpoints 4 and 8): step 6 is finished and saved, the resumed
    run starts at step 6, and the weights end equal to an uninterrupted run's."""
    train.main(tiny("train.steps=10"), tmp_path / "once", progress=False)
    stop = threading.Event()
    real_step = train.Trainer.train_step

    def signalled(self, step):
        if step == 5:
            stop.set()  # as the USR2 handler does, in the middle of the step
        return real_step(self, step)

    monkeypatch.setattr(train.Trainer, "train_step", signalled)
    out = train.main(tiny("train.steps=10"), tmp_path / "stopped", progress=False, stop=stop)
    assert out["preempted"] and out["step"] == 6
    assert torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)["step"] == 6
    monkeypatch.setattr(train.Trainer, "train_step", real_step)
    out = train.main(tiny("train.steps=10"), tmp_path / "stopped", progress=False, stop=threading.Event())
    assert not out["preempted"] and out["step"] == 10
    log = read_log(tmp_path / "stopped")
    events = [(r["event"], r["step"]) for r in log if "event" in r]
    assert events == [("preempted", 6), ("resumed", 6)]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8, 10]  # nothing redone, nothing dropped
    assert_bitwise_equal(weights(tmp_path / "once"), weights(tmp_path / "stopped"))


def test_config_json_has_one_writer(tmp_path):
    """Standalone, training writes config.json; a continued run updates train.steps; a directory holding another
    training config is refused; a config.json the launcher wrote is only checked (not rewritten)."""
    d = tmp_path / "run"
    train.main(tiny("train.steps=2"), d, progress=False)
    assert RunConfig.from_dict(json.loads((d / "config.json").read_text())) == tiny("train.steps=2")
    train.main(tiny("train.steps=4"), d, progress=False)
    assert json.loads((d / "config.json").read_text())["train"]["steps"] == 4
    with pytest.raises(ConfigError, match="model.depth"):
        train.write_config(d, tiny("train.steps=4", "model.depth=3"))
    assert train.write_config(d, tiny("train.steps=4", "eval.num_videos=3"))  # eval.* may change: rewritten
    before = (d / "config.json").stat().st_mtime_ns
    assert not train.write_config(d, tiny("train.steps=4", "eval.num_videos=3"))
    assert (d / "config.json").stat().st_mtime_ns == before


def test_resume_refuses_other_config(tmp_path):
    train.main(tiny("train.steps=2"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="model.depth"):
        train.main(tiny("train.steps=4", "model.depth=3"), tmp_path, progress=False)


def test_nonfinite_loss_stops_and_keeps_last_good(tmp_path):
    train.main(tiny("train.steps=4"), tmp_path, progress=False)
    good = weights(tmp_path)
    trainer = train.Trainer(tiny("train.steps=8"), tmp_path, progress=False)
    real = trainer.diffusion.training_losses

    def blow_up(fn, x0, mask, t, noise=None):  # the loss turns NaN from step 6 on
        out = real(fn, x0, mask, t, noise=noise)
        return {**out, "loss": out["loss"] * float("nan")} if trainer.step >= 5 else out

    trainer.diffusion.training_losses = blow_up
    with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
        trainer.fit()
    assert_bitwise_equal(good, weights(tmp_path))  # steps 5 was never saved; last.pt is still step 4


def test_overfit_one_batch():
    """On one repeated batch the loss falls by a set factor."""
    cfg = tiny("train.steps=1", "train.lr=2e-3", "train.warmup=0", "diffusion.variance=fixed_small",
               "masks.mixture=predict:1", "model.depth=2")
    trainer = train.Trainer(cfg, Path("/nonexistent-unused"), progress=False)
    trainer.load_batch = lambda step: train.Trainer.load_batch(trainer, 0)  # always batch 0
    fixed = train.step_generator
    losses = []
    try:
        train.step_generator = lambda seed, step, stream: fixed(seed, 0, stream)  # same t and noise
        for s in range(150):
            losses.append(trainer.train_step(s)["loss"])
    finally:
        train.step_generator = fixed
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10, losses[::15]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LABELLED = ["model.num_classes=3", "model.class_dropout=0.5"]


def with_labels(monkeypatch_or_none=None) -> None:
    """Give the bouncing-shapes batches class labels (item index mod 3), as UCF101 would; in this process."""
    real = train.Trainer.load_batch

    def load_batch(self, step):
        video, _ = real(self, step)
        B = self.cfg.train.batch_size
        b = B // self.world
        mine = train.batch_indices(self.cfg.train.seed, step, B, len(self.data))[self.rank * b:(self.rank + 1) * b]
        return video, torch.tensor([i % 3 for _, i in mine])

    if monkeypatch_or_none is None:
        train.Trainer.load_batch = load_batch
    else:
        monkeypatch_or_none.setattr(train.Trainer, "load_batch", load_batch)


def poison_rank_1() -> None:
    """Rank 1's batch of step 3 is NaN (the others are fine); in this process."""
    real = train.Trainer.load_batch

    def load_batch(self, step):
        video, y = real(self, step)
        return (video * float("nan") if self.rank == 1 and step == 2 else video), y

    train.Trainer.load_batch = load_batch


WORKER = """
import sys
sys.path.insert(0, {tests!r})
import test_train
for name in sys.argv[1].split(","):
    if name:
        getattr(test_train, name)()
sys.exit(test_train.train.cli(sys.argv[2:]))
"""


def _ddp(run_dir, steps, patches: str, extra=()) -> list:
    """Two gloo processes training ``run_dir`` through the CLI, with ``patches`` (names of functions above)."""
    port = str(_free_port())
    code = WORKER.format(tests=str(Path(__file__).parent))
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-c", code, patches, "--run-dir", str(run_dir), "--steps", str(steps),
               "--no-progress", "--set", *TINY, *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True))
    return procs


@pytest.mark.parametrize("labels", [False, True], ids=["unconditional", "class-labels-with-dropout"])
def test_ddp_two_processes_match_one(tmp_path, monkeypatch, labels):
    """DDP over gloo with 2 processes == 1 process at the same global batch (with labels: label dropout too)."""
    steps, extra = 4, LABELLED if labels else []
    if labels:
        with_labels(monkeypatch)
    train.main(tiny(f"train.steps={steps}", *extra), tmp_path / "single", progress=False)
    for p in _ddp(tmp_path / "ddp", steps, "with_labels" if labels else "", extra):
        assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ddp_nan_on_one_rank_stops_both(tmp_path):
    """One rank's loss turns NaN: both ranks exit with the clear error (exit 2) within seconds, no hang."""
    procs = _ddp(tmp_path / "ddp", 6, "poison_rank_1")
    ended = []
    try:
        for p in procs:
            p.wait(timeout=240)
            ended.append(time.time())
    except subprocess.TimeoutExpired:
        pytest.fail("a rank hung after the other saw a NaN loss")
    finally:
        for p in procs:
            p.kill()
    for p in procs:
        err = p.stderr.read()
        assert p.returncode == 2 and "loss is not finite at step 3" in err, err
    assert max(ended) - min(ended) < 20, "the ranks did not stop together"


@pytest.mark.parametrize("override, field", [
    ("model.preset=VDT-XXL", "model.preset"),
    ("model.conditioning=film", "model.conditioning"),
    ("model.patch=3", "model.patch"),
    ("masks.mixture=predict:0.5,zoom:0.5", "masks.mixture"),
    ("masks.mixture=predict:0.5,backward:0.2", "masks.mixture"),
    ("eval.tasks=predict,teleport", "eval.tasks"),
    ("train.steps=many", "train.steps"),
    ("model.nonsense=1", "model.nonsense"),
])
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RunConfig().with_overrides([override])


def test_data_shortcut_sets_name_and_root(tmp_path):
    args = train.get_args_parser().parse_args(["--data", f"sky:{tmp_path}", "--set", "data.size=64"])
    cfg = train.config_from_args(args)
    assert (cfg.data.name, cfg.data.root, cfg.data.size) == ("sky", str(tmp_path), 64)


def test_cli_help_and_bad_set():
    out = subprocess.run([sys.executable, "-m", "vdt.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--run-dir" in out.stdout and "--set" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vdt.train", "--set", "model.depth=deep"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "model.depth" in bad.stderr


def test_one_class_model_trains_its_null_row_like_the_official_one(tmp_path):
    """model.num_classes=1 without data labels (the paper profile): y = 0, dropped to the null row with
    model.class_dropout in training, as the official VDT in train mode; without dropout the null row never moves."""
    tables = {}
    for p in (0.0, 0.5):
        train.main(tiny("model.num_classes=1", f"model.class_dropout={p}", "train.steps=4", "train.warmup=0"),
                   tmp_path / str(p), progress=False)  # adaLN-Zero: the label row gets gradients from step 2
        tables[p] = weights(tmp_path / str(p))["model.y_embedder.embedding_table.weight"]  # (2, D): y = 0, null
    assert tables[0.0].shape[0] == 2
    assert not torch.equal(tables[0.0][1], tables[0.5][1])  # the null row was trained only with dropout
    assert not torch.equal(tables[0.0][0], tables[0.5][0])
