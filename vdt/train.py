"""Training: ``main(cfg, run_dir) -> dict``, and ``python -m vdt.train``.

Resume is exact. Every random draw of step s (data order, masks, timesteps, noise, label
dropout) comes from generators seeded by (seed, s), and every item is a pure function of its
index, so a run stopped anywhere and restarted from its last checkpoint takes the same path as
one that never stopped: N steps in one go, N/2 then a resume, and a SIGKILL part-way then a
restart all end with bitwise-identical weights on the CPU.

Stopping early: ``main(..., stop=event)`` finishes the step in progress when ``event`` is set,
writes checkpoints/last.pt and returns with ``preempted=True`` (the job sets it on SLURM's USR2);
train_log.jsonl records ``{"event": "preempted", "step": s}`` and, on the next start,
``{"event": "resumed", "step": s}``.

DDP: rank and world size come from the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT: torchrun and submitit both set them). The global batch (and its label dropout) is
drawn the same way on every rank and each rank takes its slice, so 2 processes match 1 process
at the same batch. Each step all-reduces the loss together with a non-finite flag and the stop
flag before the backward pass, so the ranks stop together (no rank waits alone in an all-reduce).
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from vdt import cli as vdt_cli
from vdt import signals
from vdt.checkpoint import CheckpointStore, rng_state
from vdt.config import NOT_IN_RUN_ID, ConfigError, ModelConfig, RunConfig, load_config
from vdt.data import announce_skipped, build_dataset
from vdt.denoiser import Denoiser
from vdt.diffusion import GaussianDiffusion
from vdt.errors import PathError
from vdt.layout import RunLayout, read_json, write_json
from vdt.masks import MaskGenerator
from vdt.model import VDT, count_flops
from vdt.tblog import TensorBoardLog


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """The generator for one stream (data, masks, noise) of one step: same on every rank and resume."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 16 + stream)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, length: int) -> torch.Tensor:
    """The seeded permutation of the dataset that epoch ``epoch`` reads in order."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def batch_indices(seed: int, step: int, batch: int, length: int) -> list:
    """(epoch, dataset index) pairs of global step ``step``."""
    start, out = step * batch, []
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), length)
        perm = epoch_order(seed, epoch, length)
        out.extend((epoch, i) for i in perm[offset: offset + batch - len(out)].tolist())
    return out


# Fields that may change when a run is continued: they don't change the path training takes.
RESUMABLE_CHANGES = {"train.steps", *NOT_IN_RUN_ID}  # NOT_IN_RUN_ID: cadence, workers, paths


def training_identity(cfg: RunConfig) -> dict:
    """The flattened config minus what a continued run may change (and evaluation settings)."""
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()}
    return {k: v for k, v in flat.items() if k not in RESUMABLE_CHANGES and not k.startswith("eval.")}


def check_same_training(old: RunConfig, new: RunConfig, where) -> None:
    """A ConfigError naming the fields that differ when ``new`` would not continue the run ``old`` in ``where``."""
    was, now = training_identity(old), training_identity(new)
    diff = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"{where} holds a run with a different training config ({', '.join(diff)}); "
                          "use a new run directory (--run-dir)")


def write_config(run_dir, cfg: RunConfig) -> bool:
    """config.json's one writer (the launcher's ``rundir.prepare``, and ``main`` for a standalone run).

    Writes it when there is none; rewrites it when only what a continued run may change differs
    (``RESUMABLE_CHANGES``, ``eval.*``); leaves it when equal. Another training config is a
    ConfigError: the directory holds a different run. Returns whether it wrote."""
    path = RunLayout(run_dir).config
    new, old = json.loads(json.dumps(cfg.to_dict())), read_json(path)  # tuples -> lists, as on disk
    if old == new:
        return False
    if old is not None:
        check_same_training(RunConfig.from_dict(old), cfg, path)
    write_json(path, new)
    return True


def model_for_training(cfg: ModelConfig) -> ModelConfig:
    """The model config the trainer builds: label dropout is drawn by the trainer (``label_dropout``), not
    the model, so that it comes from the step's generator and is sliced per rank like the rest of the batch."""
    return dataclasses.replace(cfg, class_dropout=0.0) if cfg.num_classes > 0 else cfg


def distributed_env() -> tuple:
    """(rank, world_size, local_rank) from the environment; (0, 1, 0) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class Trainer:
    """One run: model, EMA, optimiser, data and checkpoints, driven step by step."""

    def __init__(self, cfg: RunConfig, run_dir: Path, progress: bool = True, stop=None):
        self.cfg, self.run_dir, self.progress, self.stop = cfg, Path(run_dir), progress, stop
        self.layout = RunLayout(run_dir)
        self.rank, self.world, local_rank = distributed_env()
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        if cfg.train.batch_size % self.world:
            raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by {self.world} ranks")
        torch.manual_seed(cfg.train.seed)
        self.model = VDT(model_for_training(cfg.model)).to(self.device)
        self.ema = VDT(model_for_training(cfg.model)).to(self.device).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[local_rank] if
                                                                 self.device.type == "cuda" else None)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.data = build_dataset(cfg.data)
        signals.check("data scan")  # a stop before the loop: nothing to save yet
        skipped = announce_skipped(self.data, "training") if self.rank == 0 else None
        if skipped is not None:  # run.json records the videos training left out
            info = RunLayout(self.run_dir).run_info
            write_json(info, {**read_json(info, {}), "skipped_videos": skipped})
        T, S = cfg.data.frames, cfg.data.grid[1]
        self.masks = MaskGenerator(cfg.masks, (T, S, S))
        self.store = CheckpointStore(self.layout.checkpoints, keep=cfg.train.keep_ckpts)
        self.step, self.wall = 0, 0.0
        use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and self.device.type == "cuda")
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16
                         else contextlib.nullcontext())
        self.step_flops = count_flops(model_for_training(cfg.model), cfg.train.batch_size)  # forward + backward
        self.live = None  # evaluation during training (eval.every > 0), on rank 0
        if cfg.eval.every > 0 and self.rank == 0:
            from metrics.live_eval import LiveEvaluator  # only when asked for: it brings the metrics

            self.live = LiveEvaluator(cfg, self.ema, self.device)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
            "step": self.step, "config": self.cfg.to_dict(), "wall_time": self.wall,
            "data_position": {"samples_seen": self.step * self.cfg.train.batch_size, "dataset_length": len(self.data)},
            "rng": rng_state(),
        }

    def resume(self) -> None:
        ckpt = self.store.load_latest(map_location=self.device)
        if ckpt is None:
            return
        check_same_training(RunConfig.from_dict(ckpt["config"]), self.cfg, self.run_dir)
        if ckpt["step"] > self.cfg.train.steps:  # before write_config: config.json keeps the run's real length
            raise ConfigError(f"train.steps={self.cfg.train.steps}: {self.run_dir} is already at step "
                              f"{ckpt['step']}; a run can't be shortened: give --steps >= {ckpt['step']}, or "
                              "use a new --run-dir")
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.step, self.wall = ckpt["step"], ckpt.get("wall_time", 0.0)

    def save(self) -> None:
        if self.rank == 0:
            self.store.save(self.state_dict(), self.step)
        if self.world > 1:
            dist.barrier()

    # ---------------------------------------------------------------- one step
    def lr_at(self, step: int) -> float:
        """Linear warmup over train.warmup steps, then constant, or a cosine that reaches 0 at train.steps."""
        t = self.cfg.train
        if step < t.warmup:
            return t.lr * (step + 1) / t.warmup
        if t.lr_schedule == "constant":
            return t.lr
        progress = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def load_batch(self, step: int) -> tuple:
        """This rank's slice of global batch ``step``: video (b, T, C, H, W), labels or None."""
        B = self.cfg.train.batch_size
        b = B // self.world
        mine = batch_indices(self.cfg.train.seed, step, B, len(self.data))[self.rank * b:(self.rank + 1) * b]
        items = []
        for epoch, i in mine:
            if hasattr(self.data, "set_epoch"):  # training-time randomness (clip offsets) is per epoch
                self.data.set_epoch(epoch)
            items.append(self.data[i])
        if isinstance(items[0], (tuple, list)):
            return torch.stack([v for v, _ in items]), torch.tensor([y for _, y in items])
        return torch.stack(items), None

    def label_dropout(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """Classifier-free guidance: labels of the global batch become the null label with probability
        ``model.class_dropout``, drawn from the step's generator; this rank keeps its slice."""
        m, B = self.cfg.model, self.cfg.train.batch_size
        b = B // self.world
        drop = torch.rand(B, generator=step_generator(self.cfg.train.seed, step, 3))[self.rank * b:(self.rank + 1) * b]
        return torch.where(drop < m.class_dropout, m.num_classes, y)

    def agree(self, loss: torch.Tensor) -> tuple:
        """(global mean loss, any rank non-finite, any rank asked to stop): one all-reduce on every rank."""
        flags = torch.stack([loss.detach().float(), (~torch.isfinite(loss.detach())).float(),
                             torch.tensor(float(self.stop is not None and self.stop.is_set()), device=loss.device)])
        if self.world > 1:
            dist.all_reduce(flags)  # sum
        return (flags[0] / self.world).item(), bool(flags[1] > 0), bool(flags[2] > 0)

    def train_step(self, step: int) -> dict:
        """One optimiser step; returns loss (global mean), grad_norm, gen_frac (share of generated positions)
        and stop (some rank was asked to stop: the caller saves and returns after this step)."""
        cfg, B = self.cfg, self.cfg.train.batch_size
        b, lo = B // self.world, self.rank * (B // self.world)
        x0, y = self.load_batch(step)
        x0 = x0.to(self.device)
        full = self.masks(B, generator=step_generator(cfg.train.seed, step, 1))  # (B, T, H, W) of the global batch
        mask = full[lo:lo + b].to(self.device)
        draw = step_generator(cfg.train.seed, step, 2)  # timesteps, then noise
        t = torch.randint(0, cfg.diffusion.steps, (B,), generator=draw)[lo:lo + b].to(self.device)
        noise = torch.randn((B, *x0.shape[1:]), generator=draw)[lo:lo + b].to(self.device)
        if y is None and cfg.model.num_classes == 1:  # the official unconditional model: y = 0, dropped like labels
            y = torch.zeros(b, dtype=torch.long)
        if y is not None and cfg.model.class_dropout > 0:
            y = self.label_dropout(y, step)
        torch.manual_seed(cfg.train.seed * 1_000_003 + step)  # nothing should draw from it; if it does, still exact
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step)
        fn = Denoiser(self.net, cfg.model.conditioning, mask, y=None if y is None else y.to(self.device))
        with self.autocast:
            loss = self.diffusion.training_losses(fn, x0, mask, t, noise=noise)["loss"].float().mean()
        mean_loss, nonfinite, stop = self.agree(loss)
        if nonfinite:  # every rank raises here, before the gradient all-reduce
            raise NonFiniteLossError(
                f"loss is not finite at step {step + 1} (on {'some rank' if self.world > 1 else 'this process'}); "
                f"the last good checkpoint stays in {self.store.dir}. Lower train.lr or check the data.")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                ema_p.lerp_(p, 1.0 - cfg.train.ema_decay)
        return {"loss": mean_loss, "grad_norm": gnorm.item(), "gen_frac": full.float().mean().item(), "stop": stop}

    # ---------------------------------------------------------------- evaluation during training
    def evaluate(self, log: "TrainLog", tb: TensorBoardLog, wall: float) -> float:
        """Score the EMA weights on the fixed val clips (rank 0; ``metrics/live_eval.py``), log the record, save the
        samples; every rank returns the seconds it took (rank 0's, the others wait for it)."""
        start = time.perf_counter()
        if self.live is not None:
            metrics, fake = self.live()
            seconds = time.perf_counter() - start
            log.write(**self.live.record(self.step, metrics, train_flops=self.step_flops * self.step, wall_time=wall,
                                         eval_seconds=seconds))
            self.live.save_samples(self.layout.eval_live / f"step_{self.step:07d}.npz", fake)
            tb.scalars(self.step, {**metrics, "seconds": seconds}, f"val/{self.live.spec}")
            tb.clips(f"val/{self.live.spec}/samples (rows: truth, generated)", self.step, self.live.real, fake)
            tb.flush()
        if self.world > 1:
            dist.barrier()
        return time.perf_counter() - start

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict:
        cfg = self.cfg.train
        self.resume()
        signals.check("checkpoint load")
        if self.rank == 0:  # standalone: writes it; under the launcher (which wrote it): only checks it
            write_config(self.run_dir, self.cfg)
        log = TrainLog(self.layout.train_log, active=self.rank == 0)
        log.truncate_after(self.step)
        if 0 < self.step < cfg.steps:  # a finished run started again (to re-evaluate) resumes nothing
            log.write(event="resumed", step=self.step)
        tokens = cfg.batch_size * self.cfg.data.frames * (self.cfg.model.size // self.cfg.model.patch) ** 2
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress or self.rank != 0,
                   desc=f"train {self.run_dir.name}", dynamic_ncols=True)
        every = self.cfg.eval.every
        rows, t0, last, stop = [], time.perf_counter(), None, False
        with contextlib.closing(TensorBoardLog(self.layout.tensorboard, self.rank == 0, self.step)) as tb:
            while self.step < cfg.steps and not stop:
                row = self.train_step(self.step)
                self.step += 1
                rows.append(row)
                stop = row["stop"]
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                    dt = time.perf_counter() - t0
                    self.wall += dt
                    last = sum(r["loss"] for r in rows) / len(rows)
                    values = dict(loss=last, lr=self.lr_at(self.step - 1), grad_norm=max(r["grad_norm"] for r in rows),
                                  gen_frac=sum(r["gen_frac"] for r in rows) / len(rows),
                                  tokens_per_s=tokens * len(rows) / dt, wall_time=self.wall,
                                  train_flops=self.step_flops * self.step)
                    log.write(step=self.step, **values)
                    tb.scalars(self.step, values, "train")
                    bar.set_postfix(loss=f"{last:.4f}")
                    rows, t0 = [], time.perf_counter()
                if every and (self.step % every == 0 or self.step == cfg.steps):
                    # before the checkpoint of this step, so a run resumed from it never skips an evaluation;
                    # its time is left out of the training wall time
                    t0 += self.evaluate(log, tb, wall=self.wall + time.perf_counter() - t0)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or stop:
                    self.save()
        bar.close()
        if stop:
            log.write(event="preempted", step=self.step)
            if self.rank == 0:
                print(f"stop requested: finished step {self.step}, saved {self.store.dir / 'last.pt'}",
                      file=sys.stderr, flush=True)
        return {"run_dir": str(self.run_dir), "step": self.step, "loss": last, "wall_time": self.wall,
                "preempted": stop}


class TrainLog:
    """train_log.jsonl: one JSON object per logging interval, appended and flushed."""

    def __init__(self, path: Path, active: bool = True):
        self.path, self.active = Path(path), active

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (a killed run may have written them)."""
        if not self.active or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

    def write(self, **row) -> None:
        if not self.active:
            return
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def main(cfg: RunConfig | None = None, run_dir=None, *, progress: bool = True, stop=None) -> dict:
    """Train (or resume) one run in ``run_dir``; returns the final step, loss, wall time and whether it
    stopped early. ``stop``: an object with ``is_set()`` (a ``threading.Event``); once set, the step in
    progress is finished, checkpointed, and ``main`` returns with ``preempted=True``."""
    cfg = cfg or RunConfig()
    run_dir = Path(run_dir or Path("results/runs/adhoc") / cfg.run_id())
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Trainer(cfg, run_dir, progress=progress, stop=stop).fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def get_args_parser() -> argparse.ArgumentParser:
    p = vdt_cli.parser(
        "python -m vdt.train",
        "Train VDT (or resume: run again on the same --run-dir). With no arguments it trains a CPU-sized model on "
        "the built-in bouncing-shapes data.",
        examples=["python -m vdt.train --run-dir runs/demo --steps 200",
                  "python -m vdt.train --run-dir runs/demo --steps 400   # continues the same run",
                  "python -m vdt.train --set model.depth=8 data.frames=16 --set model.conditioning=cross_attn "
                  "masks.mixture=predict:1 eval.tasks=predict",
                  "python -m vdt.train --data ucf101:/data/UCF-101 --set data.size=64"],
        notes=vdt_cli.CONFIG_KEYS + ".\nexit status: 0 done, 2 an input error (bad --set, data path or layout, too "
                                "many bad videos, missing weights) or a non-finite loss; 128 + N stopped by signal N "
                                "(SIGINT, SIGTERM, USR2) with the run saved: the same command resumes it.")
    p.add_argument("--run-dir", help="where checkpoints and logs go (default results/runs/adhoc/<config hash>); "
                                     "an existing run there is resumed")
    p.add_argument("--steps", type=int, help="total training steps (train.steps); larger than before continues")
    p.add_argument("--ckpt-every", type=int, help="checkpoint interval in steps (train.ckpt_every)")
    vdt_cli.add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args) -> RunConfig:
    """The run dir's saved config (when resuming) or the defaults, with --data, --set, --steps, --ckpt-every on top."""
    saved = RunLayout(args.run_dir or ".").config
    cfg = load_config(saved) if args.run_dir and saved.exists() else RunConfig()
    overrides = vdt_cli.overrides(args)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.ckpt_every is not None:
        overrides.append(f"train.ckpt_every={args.ckpt_every}")
    return cfg.with_overrides(overrides)


def run_cli(argv=None) -> int:
    """``python -m vdt.train``: input errors propagate to ``vdt.cli.run`` (exit 2)."""
    args = get_args_parser().parse_args(argv)
    if args.run_dir and Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        raise PathError(f"--run-dir {args.run_dir}: is a file, not a directory; give a run directory (new or "
                        "existing)")
    cfg = config_from_args(args)
    try:
        with signals.catching() as stop:  # SIGINT, SIGTERM, USR2: save at the current step and exit
            result = main(cfg, args.run_dir, progress=not args.no_progress, stop=stop)
            signum = stop.signum
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except signals.Stopped as e:
        print(f"{e}: nothing lost; run the same command again to resume", file=sys.stderr)
        return signals.exit_status(e.signum)
    if distributed_env()[0] == 0:
        print(json.dumps(result))
    return signals.exit_status(signum) if result["preempted"] else 0


def cli(argv=None) -> int:
    return vdt_cli.run(run_cli, argv)


if __name__ == "__main__":
    sys.exit(cli())
