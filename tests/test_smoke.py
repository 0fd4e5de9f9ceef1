"""The paper path in miniature, end to end: ``--profile smoke`` through the launcher (local executor), then
evaluation (the job's), then ``metrics/report.py``, as a user runs them.

The inputs are the fixtures of tests/conftest.py: a UCF-101-layout folder of bouncing-shape .avi files and a
tiny random-weight diffusers AutoencoderKL. The run trains in SD-VAE latents read through the latent cache,
with class labels, and samples with classifier-free guidance; evaluation scores decoded pixels against pixel
test clips. Each step is checked on its own output, so the test names the step that broke.
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import torch

from ablations import rundir, sweeps

ROOT = Path(__file__).resolve().parents[1]
SWEEP, VARIANT = "conditioning", "token_concat"
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "fvd": "FVD"}  # the report's column names


def smoke_env(tmp_path: Path) -> dict:
    """The caches in tmp_path (latents, scan index, FVD statistics), one thread, this checkout on the path."""
    return {**os.environ, "VDT_CACHE_DIR": str(tmp_path / "cache"), "VDT_STATS_CACHE": str(tmp_path / "stats"),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
                "PYTHONPATH")]))}


def smoke_sets(ucf: Path, vae: Path) -> list:
    return [f"data.root={ucf}", f"data.vae_path={vae}"]


def launch_cmd(results: Path, sets: list, executor: str, *extra) -> list:
    return [sys.executable, str(ROOT / "ablations" / "run.py"), "--sweep", SWEEP, "--profile", "smoke",
            "--variants", VARIANT, "--results", str(results), "--executor", executor, "--no-progress",
            "--poll-s", "0.5", *extra, "--set", *sets]


def smoke_run_dir(results: Path, sets: list) -> Path:
    spec = sweeps.expand(SWEEP, "smoke", sweeps.parse_sets(sets), variants=[VARIANT])[0]
    return results / SWEEP / spec.run_id


def check_trained(d: Path, cache: Path) -> None:
    """Training ran the smoke config to its last step, in latents from the cache, with a label embedding."""
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["data"]["autoencoder"] == "sd-vae" and cfg["data"]["frames"] == 16 and cfg["data"]["class_labels"]
    state = rundir.read_state(d)
    assert state["state"] == "done" and state["step"] == cfg["train"]["steps"], state
    built = sorted(p.parent.name for p in (cache / "latents").glob("*/complete.json"))
    assert any(name.startswith("ucf101-train-") for name in built), built  # training read the latent cache
    ckpt = torch.load(d / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == cfg["train"]["steps"]
    table = ckpt["ema"]["y_embedder.embedding_table.weight"]  # class labels: num_classes rows + the null label
    assert table.shape[0] == cfg["model"]["num_classes"] + 1


def check_evaluated(d: Path) -> dict:
    """eval.json for the final step, scored in pixel space on pixel test clips, sampled with guidance."""
    cfg = json.loads((d / "config.json").read_text())
    ev = json.loads((d / "eval.json").read_text())
    assert ev["step"] == cfg["train"]["steps"] and set(ev["tasks"]) == set(cfg["eval"]["tasks"])
    for task, rec in ev["tasks"].items():
        proto = rec["protocol"]
        assert proto["guidance"] == cfg["eval"]["guidance"] > 1.0
        real = proto["real_clips"]  # the test clips scored against: pixels, not the latent cache
        assert real.get("autoencoder", "none") == "none" and real["resolution"] == cfg["data"]["size"], real
        samples = np.load(d / "samples" / f"{task}.npz")
        n = min(cfg["eval"]["num_videos"], real["num_clips"])
        for part in ("real", "fake"):
            assert samples[part].shape == (n, 16, 3, cfg["data"]["size"], cfg["data"]["size"]), part
        for m in ("psnr", "ssim"):
            assert isinstance(rec["metrics"][m], float) and math.isfinite(rec["metrics"][m]), (task, m)
    return ev


class Page(HTMLParser):
    """The local files a page links to, and its text."""

    def __init__(self):
        super().__init__()
        self.links, self.text = [], []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v and not re.match(r"[a-z]+:|#", v):
                self.links.append(v)

    def handle_data(self, data):
        self.text.append(data)


def table_cell(table_md: str, task: str, variant: str, metric: str) -> str:
    """The cell of ``metric`` in the row (task, variant) of the report's markdown table."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table_md.splitlines()
            if line.startswith("|")]
    header = rows[0]
    col = next(i for i, h in enumerate(header) if h.split()[0] == LABELS[metric])
    row = next(r for r in rows[2:] if task in r and variant in r)
    return row[col]


def report(results: Path, out: Path, env: dict) -> Path:
    """``python metrics/report.py`` on the smoke sweep's runs; returns the report folder."""
    p = subprocess.run([sys.executable, str(ROOT / "metrics" / "report.py"), "--results", str(results),
                        "--sweep", SWEEP, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def check_report(out: Path, ev: dict) -> None:
    """The page opens (every file it links exists) and the table shows each metric the run computed, at its value;
    a metric the run could not compute shows no number."""
    page = Page()
    page.feed((out / SWEEP / "index.html").read_text())
    missing = [link for link in page.links if not (out / SWEEP / link).exists()]
    assert page.links and not missing, missing
    table = (out / SWEEP / "table.md").read_text()
    text = " ".join(page.text)
    for task, rec in ev["tasks"].items():
        for metric, value in rec["metrics"].items():
            cell = table_cell(table, task, VARIANT, metric)
            number = re.search(r"-?\d+(\.\d+)?(e[-+]?\d+)?", cell.replace("*", ""))
            if value is None:
                assert number is None, (metric, cell)
                continue
            assert number is not None, (task, metric, cell)
            decimals = len(number.group(1) or ".") - 1
            assert abs(float(number.group(0)) - value) <= 0.51 * 10 ** -decimals + 1e-9, (metric, cell, value)
            assert LABELS[metric] in text and number.group(0) in text, (metric, "not on the page")


def test_smoke_profile_end_to_end(smoke_ucf, tiny_vae, tmp_path):
    env, results, sets = smoke_env(tmp_path), tmp_path / "runs", smoke_sets(smoke_ucf, tiny_vae)
    t0 = time.time()
    p = subprocess.run(launch_cmd(results, sets, "local"), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    d = smoke_run_dir(results, sets)
    log = p.stdout + p.stderr + "\n" + (rundir.read_state(d).get("error") or "")
    assert p.returncode == 0, log
    t_launch = time.time() - t0
    check_trained(d, tmp_path / "cache")
    ev = check_evaluated(d)

    check_report(report(results, tmp_path / "report", env), ev)
    print(f"smoke: launch (train + evaluate) {t_launch:.0f} s, total {time.time() - t0:.0f} s")
