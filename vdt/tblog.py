"""Live training curves: TensorBoard event files in the run directory (``RunLayout.tensorboard``).

Training writes, beside train_log.jsonl, the same numbers as TensorBoard scalars (``train/loss``,
``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``, ...) and, at each evaluation during
training (``eval.every``), its metrics (``val/<task>/<metric>``: psnr, ssim, the margins over the
motion baseline, val_loss) and an image of a few clips: for each clip a row of true frames above a
row of generated ones. Watch a sweep while it runs with
``tensorboard --logdir results/runs/<sweep>``.

``tensorboard`` is optional (``pip install -e '.[tb]'``): without it ``TensorBoardLog`` warns once
per process and does nothing. On resume the writer purges the events logged after the checkpoint
(a killed run may have logged them), as ``TrainLog.truncate_after`` does for the jsonl log.
"""

import warnings
from pathlib import Path

import torch
from einops import rearrange

_warned = False
GRID_CLIPS = 4  # clips in the image of an evaluation
GRID_MIN_SIDE = 64  # frames are enlarged (nearest) by an integer factor to at least this side


def summary_writer(log_dir: Path, purge_step: int | None):
    """A ``SummaryWriter``, or None (with one warning per process) when tensorboard is not installed."""
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is absent
        if not _warned:
            warnings.warn(f"no TensorBoard curves: {e}; install the extra with pip install -e '.[tb]' "
                          "(train_log.jsonl has the same numbers)", stacklevel=3)
            _warned = True
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)


def video_grid(real: torch.Tensor, fake: torch.Tensor, clips: int = GRID_CLIPS) -> torch.Tensor:
    """(N, T, C, H, W) truth and samples in [-1, 1] -> a (3, 2 * n * H * s, T * W * s) image in [0, 1]: per clip,
    its true frames in one row and the generated clip below, frames enlarged s times (nearest)."""
    if real.shape != fake.shape or real.dim() != 5:
        raise ValueError(f"video_grid expects real and fake (N, T, C, H, W) of one shape; got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    n = min(clips, real.shape[0])
    pair = torch.stack([real[:n], fake[:n]], dim=1).float()  # (n, 2, T, C, H, W)
    pair = ((pair + 1) / 2).clamp(0, 1)
    if pair.shape[3] == 1:
        pair = pair.expand(-1, -1, -1, 3, -1, -1)
    s = max(1, -(-GRID_MIN_SIDE // min(pair.shape[-2:])))
    pair = pair.repeat_interleave(s, -2).repeat_interleave(s, -1)
    return rearrange(pair, "n r t c h w -> c (n r h) (t w)")


class TensorBoardLog:
    """Scalars and images of one run; a no-op when inactive (ranks other than 0) or without tensorboard."""

    def __init__(self, log_dir: Path, active: bool = True, resume_step: int = 0):
        self.writer = None
        if active:
            # events logged after the checkpoint we resume from are dropped (they are logged again)
            self.writer = summary_writer(Path(log_dir), purge_step=resume_step + 1 if resume_step else None)

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """One scalar per finite number of ``values`` under ``prefix/name``."""
        if self.writer is None:
            return
        for name, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                self.writer.add_scalar(f"{prefix}/{name}" if prefix else name, v, step)

    def clips(self, tag: str, step: int, real: torch.Tensor, fake: torch.Tensor) -> None:
        """An image of the first clips: true frames above generated ones (``video_grid``)."""
        if self.writer is not None:
            self.writer.add_image(tag, video_grid(real, fake), step, dataformats="CHW")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
