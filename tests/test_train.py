"""Training: exact resume (three ways), DDP equivalence, overfitting, checkpoints, bad config."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
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
    log = [json.loads(line) for line in (tmp_path / "twice" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    assert all({"loss", "lr", "grad_norm", "tokens_per_s", "wall_time"} <= r.keys() for r in log)


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
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="unreadable"):
        out = train.main(tiny("train.steps=10"), tmp_path, progress=False)
    assert out["step"] == 10  # resumed from step_0000008.pt, not from scratch
    assert torch.load(last, weights_only=False)["step"] == 10


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
            losses.append(trainer.train_step(s)[0])
    finally:
        train.step_generator = fixed
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10, losses[::15]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one(tmp_path):
    """DDP over gloo with 2 processes == 1 process at the same global batch."""
    steps = 4
    train.main(tiny(f"train.steps={steps}"), tmp_path / "single", progress=False)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(_cli_ddp(tmp_path / "ddp", steps, env))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def _cli_ddp(run_dir, steps, env):
    cmd = [sys.executable, "-m", "vdt.train", "--run-dir", str(run_dir), "--steps", str(steps), "--no-progress",
           "--set", *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


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
