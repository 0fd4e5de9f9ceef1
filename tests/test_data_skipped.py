"""Skipped data is announced: a dataset with a few bad videos (within data.max_bad_fraction) makes training
and evaluation print one line (how many of how many, and where the list is), and run.json records the count."""

import json
import os

import pytest
from test_data_real import write_video

from vdt import train
from vdt.config import DataConfig, RunConfig
from vdt.data import announce_skipped, build_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def taichi(tmp_path):
    """TaiChi-HD layout: 5 good videos and 1 unreadable in each split (train/ has a 6th good one, the val split)."""
    root = tmp_path / "taichi"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for k in range(6 if split == "train" else 5):
            write_video(root / split / f"ok{k}.mp4", 10)
        (root / split / "garbage.mp4").write_bytes(os.urandom(4000))
    return root


def skipped_lines(text: str) -> list:
    return [line for line in text.splitlines() if "skipped" in line]


def test_dataset_says_what_it_skipped(taichi, capsys):
    cfg = DataConfig(name="taichi", root=str(taichi), frames=4, size=16, max_bad_fraction=0.5)
    ds = build_dataset(cfg, "train")
    record = announce_skipped(ds, "training")
    line, = skipped_lines(capsys.readouterr().err)
    assert line == f"training: skipped 1 of 6 videos (bad or too short, within data.max_bad_fraction); the list: " \
                   f"{ds.bad_log}"
    assert record == {"skipped": 1, "total": 6, "list": str(ds.bad_log)}
    assert "garbage.mp4" in ds.bad_log.read_text()
    clean = build_dataset(cfg, "train")
    clean.skipped = type(ds.skipped)(0, 5, str(ds.bad_log))
    assert announce_skipped(clean, "training") == {"skipped": 0, "total": 5, "list": str(ds.bad_log)}
    assert capsys.readouterr().err == ""  # nothing skipped: no line
    assert announce_skipped(build_dataset(DataConfig(length=4), "train"), "training") is None  # procedural


def test_training_and_evaluation_print_one_line_and_run_json_records_the_count(taichi, tmp_path, capsys):
    from metrics.evaluate import evaluate_run

    cfg = RunConfig().with_overrides([
        "data.name=taichi", f"data.root={taichi}", "data.frames=4", "data.size=16", "data.max_bad_fraction=0.5",
        "model.preset=cpu-tiny", "train.steps=1", "train.batch_size=2", "train.log_every=1", "train.ckpt_every=1",
        "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2", "eval.fvd=false", "eval.lpips=false"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"sweep": "s", "variant": "v"}))  # the launcher's part stays
    train.main(cfg, run_dir, progress=False)
    line, = skipped_lines(capsys.readouterr().err)
    assert line.startswith("training: skipped 1 of 6 videos") and line.endswith("bad_videos.txt")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["sweep"] == "s" and info["skipped_videos"]["skipped"] == 1 and info["skipped_videos"]["total"] == 6
    assert "garbage.mp4" in open(info["skipped_videos"]["list"]).read()

    evaluate_run(run_dir, cfg, progress=False)
    line, = skipped_lines(capsys.readouterr().err)
    assert line.startswith("evaluation: skipped 1 of 6 videos") and line.endswith("bad_videos.txt")
