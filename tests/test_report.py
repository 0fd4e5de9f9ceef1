"""metrics/report.py on a synthetic sweep: the DataFrame, tables, plots, GIFs and the offline page.

The run directories are fixtures written per the run directory schema, with made-up numbers.
"""

import ast
import hashlib
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from metrics import report, report_plots, report_tables, report_videos

REPO = Path(__file__).resolve().parents[1]
T, SIDE, N_VIDEOS, GIVEN = 8, 16, 5, 4  # sample videos: frames, side, count, given frames


# ---------------------------------------------------------------- fixtures


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_samples(path: Path, seed: int) -> None:
    """samples/<task>.npz: a bright square moving over a dark background; given frames equal real."""
    rng = np.random.default_rng(seed)
    real = np.full((N_VIDEOS, T, 3, SIDE, SIDE), 20, dtype=np.uint8)
    for n in range(N_VIDEOS):
        for t in range(T):
            y, x = (n + t) % (SIDE - 4), (2 * t + n) % (SIDE - 4)
            real[n, t, :, y:y + 4, x:x + 4] = 230
    mask = np.zeros((N_VIDEOS, T, SIDE, SIDE), dtype=np.uint8)
    mask[:, GIVEN:] = 1
    noise = rng.integers(0, 40, real.shape, dtype=np.uint8)
    fake = np.where(mask[:, :, None].astype(bool), np.clip(real.astype(int) + noise - 20, 0, 255), real)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, real=real, fake=fake.astype(np.uint8), mask=mask)


def make_run(runs: Path, sweep: str, variant: str, seed: int, state: str, metrics=None, steps: int = 40,
             error=None) -> Path:
    """One run dir. metrics: {task: {metric: value or None}} -> eval.json and samples/<task>.npz."""
    run_id = hashlib.sha256(f"{sweep}/{variant}/{seed}".encode()).hexdigest()[:12]
    d = runs / sweep / run_id
    config = {"model": {"preset": "cpu-tiny", "depth": 2, "conditioning": variant},
              "train": {"seed": seed, "steps": 40, "lr": 3e-4}, "eval": {"tasks": sorted(metrics or ["predict"])}}
    write_json(d / "config.json", config)
    write_json(d / "run.json", {"sweep": sweep, "variant": variant, "seed": seed, "run_id": run_id,
                                "overrides": {"model.conditioning": variant}, "profile": "cpu",
                                "env": {"torch": "9.9.9-fixture", "device": "cpu", "git_commit": "abc123"}})
    write_json(d / "state.json", {"state": state, "step": steps, "job_id": None, "log": f"{d}/logs/x.out",
                                  "error": error, "updated": "2024-01-01T00:00:00", "attempts": 1})
    lines = []
    for step in range(0, steps + 1, 10):
        lines.append({"step": step, "loss": 1.0 * math.exp(-step / (10 + seed)) + 0.01, "lr": 3e-4,
                      "grad_norm": 1.0, "tokens_per_s": 100.0, "wall_time": 0.5 * step + seed, "time": "t"})
        if step and step % 20 == 0:
            lines.append({"step": step, "eval": {"predict": {"psnr": 10.0 + step / 4 + seed, "ssim": 0.5}}})
    (d / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if metrics:
        tasks = {task: {"metrics": m, "missing": {k: "fixture: not computed" for k, v in m.items() if v is None},
                        "per_video": {}, "protocol": {"sampler": "ddim", "steps": 50, "num_videos": N_VIDEOS,
                                                      "frames": T, "uncalibrated": True},
                        "baselines": {"black_fill": {"psnr": 14.0 + seed, "ssim": 0.25},
                                      "nearest_given_frame": {"psnr": 18.5, "ssim": 0.5}}}
                 for task, m in metrics.items()}
        write_json(d / "eval.json", {"step": steps, "checkpoint": "checkpoints/last.pt", "weights": "ema",
                                     "tasks": tasks, "higher_is_better": {"psnr": True, "ssim": True,
                                                                          "lpips": False, "fvd": False}})
        for task in metrics:
            write_samples(d / "samples" / f"{task}.npz", seed)
    return d


def scores(psnr, lpips, fvd, seed):
    return {"psnr": psnr + 0.5 * seed, "ssim": 0.8 + 0.01 * seed, "lpips": lpips + 0.01 * seed, "fvd": fvd}


def make_results(root: Path) -> Path:
    """Sweep 'conditioning': 3 variants x seeds, one failed, one running, one missing FVD; sweep 'partial'."""
    runs = root / "runs"
    for seed in range(3):  # token_concat: best PSNR, worst LPIPS
        make_run(runs, "conditioning", "token_concat", seed, "done",
                 {"predict": scores(30.0, 0.30, 300.0, seed), "interpolate": scores(33.0, 0.25, 250.0, seed)})
    for seed in range(2):  # cross_attn: best (lowest) LPIPS; seed 1 has no FVD
        make_run(runs, "conditioning", "cross_attn", seed, "done",
                 {"predict": scores(25.0, 0.10, None if seed else 200.0, seed)})
    make_run(runs, "conditioning", "adaln", 0, "done", {"predict": scores(20.0, 0.20, 400.0, 0)})
    make_run(runs, "conditioning", "adaln", 1, "failed", steps=10,
             error="Traceback (most recent call last):\nRuntimeError: fixture out of memory")
    make_run(runs, "conditioning", "adaln", 2, "running", steps=20)
    make_run(runs, "partial", "a", 0, "running", steps=20)
    make_run(runs, "partial", "b", 0, "pending", steps=0)
    bench = {"benchmarks": [{"name": f"test_step[tokens={n}]", "group": "train_step", "stats": {"mean": n * 1e-5,
             "median": n * 1e-5}, "extra_info": {"tokens": n, "device": "cpu"}} for n in (64, 256, 1024)]}
    write_json(root / "bench" / "machine-a" / "0001_step.json", bench)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_results(tmp_path_factory.mktemp("results"))
    pages = report.build_report(root, out=root / "out", n_boot=500, seed=0)
    return root, pages


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_matches_exact_two_point_distribution():
    # With two values a < b the bootstrap means are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are exactly a and b.
    mean, low, high, n = report_tables.bootstrap_ci([2.0, 6.0], n_boot=4000, seed=1)
    assert (mean, low, high, n) == (4.0, 2.0, 6.0, 2)


def test_bootstrap_ci_edge_cases_and_determinism():
    mean, low, high, n = report_tables.bootstrap_ci([3.0, float("nan")])
    assert (mean, n) == (3.0, 1) and math.isnan(low) and math.isnan(high)  # one seed: no interval
    assert report_tables.bootstrap_ci([])[3] == 0
    x = np.random.default_rng(0).normal(size=7)
    a, b = report_tables.bootstrap_ci(x, seed=3), report_tables.bootstrap_ci(x, seed=3)
    assert a == b
    assert x.min() <= a[1] <= a[0] <= a[2] <= x.max()
    assert report_tables.bootstrap_ci(x, seed=4)[1] != a[1]


# ---------------------------------------------------------------- data


def test_frame_rows_columns_and_missing_stays_nan(built):
    root, pages = built
    assert set(pages) == {"conditioning", "partial"}
    frame = pd.read_csv(root / "out" / "conditioning" / "runs.csv")
    assert len(frame) == 3 * 2 + 2 + 3  # token_concat 2 tasks, cross_attn, adaln (done, failed, running)
    for col in ("sweep", "variant", "seed", "state", "task", "model.conditioning", "train.seed", "psnr", "ssim",
                "lpips", "fvd", "protocol", "final_loss"):
        assert col in frame.columns, col
    assert "model.depth" not in frame.columns  # the same in every run: not a varied field
    fvd = frame.loc[(frame.variant == "cross_attn") & (frame.seed == 1), "fvd"]
    assert fvd.isna().all()
    assert frame["fvd"].notna().sum() == 8 and (frame["fvd"].dropna() > 0).all()
    failed = frame[frame.state == "failed"]
    assert len(failed) == 1 and failed["psnr"].isna().all() and "out of memory" in failed["error"].iloc[0]
    assert sorted(frame.state.unique()) == ["done", "failed", "running"]
    assert json.loads(frame["protocol"].dropna().iloc[0])["sampler"] == "ddim"
    parquet = pd.read_parquet(root / "out" / "conditioning" / "runs.parquet")
    assert len(parquet) == len(frame) and parquet["fvd"].isna().sum() == frame["fvd"].isna().sum()


# ---------------------------------------------------------------- tables


def test_table_ci_and_best_by_direction(built):
    root, _ = built
    out = root / "out" / "conditioning"
    table = pd.read_csv(out / "table.csv")
    predict = table[table.task == "predict"].set_index("variant")
    assert list(predict.index[predict["psnr_best"]]) == ["token_concat"]  # higher is better
    assert list(predict.index[predict["lpips_best"]]) == ["cross_attn"]  # lower is better
    assert list(predict.index[predict["fvd_best"]]) == ["cross_attn"]
    for m in ("psnr", "ssim", "lpips"):
        many = table[table[f"{m}_n"] >= 2]
        assert len(many) and (many[f"{m}_ci_low"] <= many[f"{m}_mean"]).all()
        assert (many[f"{m}_mean"] <= many[f"{m}_ci_high"]).all()
    assert predict.loc["token_concat", "n_seeds"] == 3 and predict.loc["cross_attn", "fvd_n"] == 1
    assert predict.loc["adaln", "n_seeds"] == 1 and math.isnan(predict.loc["adaln", "psnr_ci_low"])
    assert predict.loc["token_concat", "psnr_mean"] == pytest.approx(30.5)

    md = (out / "table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| predict | token_concat"))
    assert "**30.50 ±" in row
    assert "± n/a" in next(line for line in md.splitlines() if line.startswith("| predict | adaln"))
    assert "(n=1)" in next(line for line in md.splitlines() if line.startswith("| predict | cross_attn"))
    tex = (out / "table.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{30.50 $\pm$", r"token\_concat"):
        assert cmd in tex, cmd


# ---------------------------------------------------------------- plots and videos


def test_plots_exist_as_png_and_pdf(built):
    root, _ = built
    plots = root / "out" / "conditioning" / "plots"
    for stem in ("loss_step", "loss_time", "eval_predict_psnr", "cost"):
        for ext in (".png", ".pdf"):
            assert (plots / (stem + ext)).stat().st_size > 1000, stem + ext
    assert report_plots.read_bench(root / "nowhere") == [] and report_plots.plot_cost([], plots / "x") == []


def test_band_interpolates_seeds_on_one_grid():
    grid, mean, low, high = report_plots.band([(np.array([0.0, 10.0]), np.array([1.0, 3.0])),
                                               (np.array([0.0, 5.0]), np.array([3.0, 3.0]))])
    assert list(grid) == [0.0, 5.0, 10.0]
    np.testing.assert_allclose(mean, [2.0, 2.5, 3.0])
    np.testing.assert_allclose(low[:2], [1.0, 2.0]) and np.testing.assert_allclose(high[:2], [3.0, 3.0])
    assert math.isnan(low[2])  # one seed covers step 10: no band there


def test_gifs_small_with_all_frames_and_given_frames_marked(built):
    root, _ = built
    videos = root / "out" / "conditioning" / "videos"
    names = sorted(p.name for p in videos.glob("*.gif"))
    assert names == ["adaln__predict.gif", "cross_attn__predict.gif", "token_concat__interpolate.gif",
                     "token_concat__predict.gif"]
    for name in names:
        path = videos / name
        assert path.stat().st_size < 1_000_000
        with Image.open(path) as gif:
            assert gif.n_frames == T
            gif.seek(0)
            first = np.asarray(gif.convert("RGB"))
            gif.seek(T - 1)
            last = np.asarray(gif.convert("RGB"))
        corner = (report_videos.HEAD + 1, report_videos.LEFT + 1)  # border of the first panel
        assert np.abs(first[corner].astype(int) - report_videos.BORDER_COLOURS[0]).max() < 30  # given: green
        assert np.abs(last[corner].astype(int) - report_videos.BORDER_COLOURS[2]).max() < 30  # generated: grey


def test_gif_shrinks_to_stay_under_the_limit(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 12, 3, 64, 64), dtype=np.uint8)  # noise: the worst case for GIF
    mask = np.ones((6, 12, 64, 64), dtype=np.uint8)
    mask[:, :3] = 0
    np.savez(tmp_path / "predict.npz", real=real, fake=real[::-1].copy(), mask=mask)
    info = report_videos.sample_gif(tmp_path / "predict.npz", tmp_path / "g.gif", title="noise")
    assert (tmp_path / "g.gif").stat().st_size == info["bytes"] < 1_000_000
    assert info["videos"] < 4 or info["scale"] < 2  # it had to shrink
    with Image.open(tmp_path / "g.gif") as gif:
        assert gif.n_frames == 12


# ---------------------------------------------------------------- page and command line


class Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_references_only_existing_local_files(built):
    root, pages = built
    for sweep, index in pages.items():
        assert index == root / "out" / sweep / "index.html"
        text = index.read_text()
        parser = Refs()
        parser.feed(text)
        assert "script" not in parser.tags
        assert not [r for r in parser.refs if r.startswith(("http:", "https:", "//"))]
        for ref in parser.refs:
            assert (index.parent / unquote(ref)).is_file(), ref
        assert (index.parent / "README.md").is_file()
    text = pages["conditioning"].read_text()
    parser = Refs()
    parser.feed(text)
    assert sum(r.endswith(".gif") for r in parser.refs) == 4
    assert sorted(Path(r).stem for r in parser.refs if r.endswith(".png")) == sorted(
        Path(r).stem for r in parser.refs if r.endswith(".pdf")) == [
        "cost", "eval_predict_psnr", "eval_predict_ssim", "loss_step", "loss_time"]
    for needle in ("fixture out of memory", "9.9.9-fixture", "abc123", "sampler", "uncalibrated"):
        assert needle in text, needle
    assert "no evaluated runs yet" in pages["partial"].read_text()


def test_baselines_table_under_the_results(built):
    root, pages = built
    readme = (root / "out" / "conditioning" / "README.md").read_text()
    results = readme[readme.index("## Results"):readme.index("## Plots")]
    # predict was evaluated by 3 + 2 + 1 runs with seeds 0,1,2 / 0,1 / 0: black fill PSNR 14 + mean seed
    assert "| predict | black fill | 6 | 14.67 | 0.2500 |" in results
    assert "| interpolate | black fill | 3 | 15.00 | 0.2500 |" in results
    assert "| predict | nearest given frame | 6 | 18.50 | 0.5000 |" in results
    assert "Trivial baselines" in pages["conditioning"].read_text()
    assert "Trivial baselines" not in pages["partial"].read_text()  # no evaluations, no baselines table


def test_cli_writes_report(tmp_path):
    root = tmp_path / "results"
    make_run(root / "runs", "conditioning", "token_concat", 0, "done", {"predict": scores(30.0, 0.3, 300.0, 0)})
    make_run(root / "runs", "conditioning", "adaln", 0, "failed", steps=10, error="boom")
    # As a user runs it, from the repo root with the package installed (pip install -e .).
    done = subprocess.run([sys.executable, "metrics/report.py", "--results", str(root), "--out", str(tmp_path / "out"),
                           "--bootstrap", "100"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "out" / "conditioning" / "index.html") in done.stdout
    assert "1 of 2 runs failed" in done.stderr  # a partly done sweep: exit 0 with warnings
    assert (tmp_path / "out" / "conditioning" / "table.tex").is_file()


def test_sweep_flag_takes_several_names_and_repeats():
    args = report.get_args_parser().parse_args(["--sweep", "conditioning", "--sweep", "mask_ratio", "depth"])
    assert args.sweep == ["conditioning", "mask_ratio", "depth"]


def test_results_may_name_the_runs_dir_itself(tmp_path):
    """The launcher's --results is the runs directory; the report accepts it as well as its parent."""
    runs = tmp_path / "my-runs"
    make_run(runs, "conditioning", "token_concat", 0, "done", {"predict": scores(30.0, 0.3, 300.0, 0)})
    assert list(report.find_runs(runs)) == ["conditioning"]
    assert report.main(["--results", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "10"]) == 0
    assert (tmp_path / "out" / "conditioning" / "index.html").is_file()


def test_no_runs_is_an_error_that_names_the_command(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path / "empty")]) != 0
    assert "python ablations/run.py --sweep conditioning" in capsys.readouterr().err
    (tmp_path / "r" / "runs" / "s").mkdir(parents=True)
    assert report.main(["--results", str(tmp_path / "r"), "--sweep", "other"]) != 0
    assert "no sweep ['other']" in capsys.readouterr().err


def test_report_modules_import_no_model_training_or_torch():
    # The report reads result files only: no torch, no vdt (model, train), no ablations, no metric code.
    for path in sorted((REPO / "metrics").glob("report*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("torch", "vdt", "ablations", "torchmetrics", "lpips"), (path.name, name)
                assert top != "metrics" or name.split(".")[1].startswith("report"), (path.name, name)
