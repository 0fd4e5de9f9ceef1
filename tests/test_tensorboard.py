"""TensorBoard curves: a tiny training run's event file, read back with tensorboard's own reader."""

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from vdt import tblog, train
from vdt.config import RunConfig

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install -e '.[tb]')")

TINY = ["model.preset=cpu-tiny", "data.size=16", "data.frames=8", "train.batch_size=4", "train.log_every=2",
        "train.ckpt_every=4", "train.warmup=2", "eval.every=3", "eval.every_videos=2", "eval.batch_size=2",
        "eval.sample_steps=2"]


def tiny(*extra) -> RunConfig:
    return RunConfig().with_overrides(TINY + list(extra))


def events(run_dir) -> "event_accumulator.EventAccumulator":
    acc = event_accumulator.EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"images": 0})
    return acc.Reload()


def test_training_writes_scalars_and_images_tensorboard_reads(tmp_path):
    train.main(tiny("train.steps=6"), tmp_path, progress=False)
    acc = events(tmp_path)
    tags = acc.Tags()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    lines = [r for r in log if "loss" in r]
    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "train_flops"):
        got = acc.Scalars(f"train/{name}")
        assert [e.step for e in got] == [2, 4, 6], name
        assert [e.value for e in got] == pytest.approx([r[name] for r in lines], rel=1e-6), name
    assert all(e.value > 0 for e in acc.Scalars("train/tokens_per_s"))
    evals = [r for r in log if r.get("event") == "eval"]
    for metric in ("psnr", "ssim"):
        got = acc.Scalars(f"val/predict/{metric}")
        assert [e.step for e in got] == [3, 6]
        assert [e.value for e in got] == pytest.approx([r["eval"]["predict"][metric] for r in evals], rel=1e-6)
    (tag,) = [t for t in tags["images"] if t.startswith("val/predict/samples")]
    images = acc.Images(tag)
    assert [im.step for im in images] == [3, 6]
    # 2 clips x (truth, generated) rows of 8 frames, 16 px enlarged 4x to 64 px
    assert (images[0].height, images[0].width) == (2 * 2 * 64, 8 * 64)
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_run_purges_what_the_killed_one_logged_past_its_checkpoint(tmp_path):
    train.main(tiny("train.steps=8", "eval.every=0"), tmp_path, progress=False)
    for name in ("last.pt", "step_0000008.pt"):  # as if killed after logging step 8, before its checkpoint
        (tmp_path / "checkpoints" / name).unlink()
    train.main(tiny("train.steps=8", "eval.every=0"), tmp_path, progress=False)
    steps = [e.step for e in events(tmp_path).Scalars("train/loss")]
    assert steps == [2, 4, 6, 8]  # 6 and 8 once each: the first run's are purged


def test_video_grid_puts_truth_above_samples():
    real = torch.full((3, 2, 1, 16, 16), -1.0)
    fake = torch.ones(3, 2, 1, 16, 16)
    grid = tblog.video_grid(real, fake, clips=2)
    assert grid.shape == (3, 2 * 2 * 64, 2 * 64)
    rows = grid[0, ::64, 0].tolist()  # one pixel per row of frames
    assert rows == [0.0, 1.0, 0.0, 1.0]  # truth (black), generated (white), for each clip
    with pytest.raises(ValueError, match="video_grid"):
        tblog.video_grid(real, fake[:, :1])


def test_without_tensorboard_training_warns_once_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when it is not installed
    monkeypatch.setattr(tblog, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train.main(tiny("train.steps=2", "eval.every=0"), tmp_path / "a", progress=False)
        train.main(tiny("train.steps=2", "eval.every=0"), tmp_path / "b", progress=False)
    assert out["step"] == 2
    assert [str(w.message) for w in caught].count(next(str(w.message) for w in caught if "TensorBoard" in
                                                       str(w.message))) == 1
    assert "pip install -e '.[tb]'" in next(str(w.message) for w in caught if "TensorBoard" in str(w.message))
    assert not (tmp_path / "a" / "tensorboard").exists()
