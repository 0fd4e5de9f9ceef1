"""The shared command line (vdt/cli.py): one style of --set/--data for every entry point, and input errors that print
their message and exit 2 without a traceback, while a bug keeps its traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablations import run as sweep_cli
from metrics import evaluate, report
from vdt import cli, train
from vdt.config import RunConfig
from vdt.errors import ConfigError, DataError, InputError, PathError, WeightsMissingError

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"vdt.train": train.get_args_parser, "metrics/evaluate.py": evaluate.get_args_parser,
           "ablations/run.py": sweep_cli.get_args_parser}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VDT_CACHE_DIR", str(tmp_path / "cache"))


def option(parser, flag):
    return next(a for a in parser._actions if flag in a.option_strings)


# ---------------------------------------------------------------- one parser


@pytest.mark.parametrize("name", PARSERS)
def test_every_entry_point_takes_set_and_data_the_same_way(name):
    p = PARSERS[name]()
    extra = ["--run-dir", "x"] if name == "metrics/evaluate.py" else []
    args = p.parse_args([*extra, "--data", "ucf101:/data/UCF-101", "--set", "data.size=64", "eval.num_videos=8",
                         "--set", "data.root=/other"])
    assert cli.overrides(args) == ["data.name=ucf101", "data.root=/data/UCF-101", "data.size=64",
                                   "eval.num_videos=8", "data.root=/other"]  # --set comes last: it wins
    assert option(p, "--data").metavar == "NAME:ROOT" and option(p, "--set").metavar == "KEY=VALUE"
    assert "examples:" in p.epilog and "section.field" in p.epilog and "exit status" in p.epilog


def test_help_of_data_and_set_is_one_text():
    assert len({option(make(), "--data").help for make in PARSERS.values()}) == 1
    assert all(option(make(), "--set").help.endswith("(repeatable; wins over --data)") for make in PARSERS.values())


def test_data_shortcut():
    assert cli.data_overrides("taichi:/d/taichi") == ["data.name=taichi", "data.root=/d/taichi"]
    assert cli.data_overrides("bouncing") == ["data.name=bouncing"]
    assert cli.data_overrides(None) == []
    with pytest.raises(ConfigError, match="NAME:ROOT"):
        cli.data_overrides(":/data")


def test_error_classes_are_input_errors_and_their_builtins():
    from metrics.weights import WeightsMissingError as MetricsWeights
    from vdt.autoencoder import VAEWeightsMissingError
    from vdt.config import ConfigError as ConfigFromConfig
    from vdt.data.layouts import DatasetLayoutError
    from vdt.data.scan import BadDataError

    assert ConfigFromConfig is ConfigError and MetricsWeights is WeightsMissingError
    for cls, builtin in ((ConfigError, ValueError), (DataError, ValueError), (DatasetLayoutError, ValueError),
                         (BadDataError, ValueError), (WeightsMissingError, FileNotFoundError),
                         (VAEWeightsMissingError, FileNotFoundError), (PathError, FileNotFoundError)):
        assert issubclass(cls, InputError) and issubclass(cls, builtin)


def test_run_prints_input_errors_and_reraises_bugs(capsys):
    def bad_input(argv):
        raise DataError("data.root=/x: missing")

    def bug(argv):
        raise KeyError("a bug")

    assert cli.run(bad_input, []) == 2
    assert capsys.readouterr().err == "error: data.root=/x: missing\n"
    with pytest.raises(KeyError):
        cli.run(bug, [])


# ---------------------------------------------------------------- vdt.train


def train_exit(tmp_path, capsys, *argv):
    code = train.cli(["--run-dir", str(tmp_path / "run"), "--no-progress", *argv])
    return code, capsys.readouterr().err


def test_train_bad_set(tmp_path, capsys):
    code, err = train_exit(tmp_path, capsys, "--set", "model.depth=0")
    assert code == 2 and "model.depth" in err


def test_train_missing_data_root(tmp_path, capsys):
    code, err = train_exit(tmp_path, capsys, "--data", f"ucf101:{tmp_path / 'nope'}")
    assert code == 2 and "data.root" in err and "Expected layout" in err


def test_train_bad_layout(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = train_exit(tmp_path, capsys, "--data", f"ucf101:{tmp_path / 'empty'}")
    assert code == 2 and "UCF-101" in err


def test_train_too_many_bad_videos(tmp_path, capsys):
    for split in ("train", "test"):
        (tmp_path / "taichi" / split).mkdir(parents=True)
        for k in range(3):
            (tmp_path / "taichi" / split / f"bad{k}.mp4").write_bytes(os.urandom(2000))
    code, err = train_exit(tmp_path, capsys, "--data", f"taichi:{tmp_path / 'taichi'}",
                           "--set", "data.frames=4", "data.size=16")
    assert code == 2 and "bad0.mp4" in err and "data.max_bad_fraction" in err


def test_train_missing_vae_weights(tmp_path, capsys):
    code, err = train_exit(tmp_path, capsys, "--set", "data.autoencoder=sd-vae", f"data.vae_path={tmp_path / 'nope'}",
                           "data.size=64")
    assert code == 2 and "SD-VAE" in err and "nope" in err


def test_train_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not an input")

    monkeypatch.setattr(train, "main", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train.cli(["--run-dir", str(tmp_path / "run")])


def test_train_process_prints_the_message_alone(tmp_path):
    """The real process: exit 2, the message, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VDT_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "vdt.train", "--run-dir", str(tmp_path / "run"), "--data",
                          f"sky:{tmp_path / 'nope'}"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: data.name=sky data.root=")


# ---------------------------------------------------------------- metrics/evaluate.py


def eval_exit(capsys, *argv):
    code = evaluate.cli(["--no-progress", *argv])
    return code, capsys.readouterr().err


def test_evaluate_run_dir_without_config(tmp_path, capsys):
    code, err = eval_exit(capsys, "--run-dir", str(tmp_path / "nope"))
    assert code == 2 and "--run-dir" in err and "config.json" in err


@pytest.fixture
def untrained_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(RunConfig().to_dict()))
    return run


def test_evaluate_bad_set_and_bad_data(untrained_run, capsys):
    code, err = eval_exit(capsys, "--run-dir", str(untrained_run), "--set", "eval.num_videos=-1")
    assert code == 2 and "eval.num_videos" in err
    code, err = eval_exit(capsys, "--run-dir", str(untrained_run), "--data", "nosuchdata:/x")
    assert code == 2 and "data.name" in err


def test_evaluate_missing_checkpoint(untrained_run, capsys):
    code, err = eval_exit(capsys, "--run-dir", str(untrained_run))
    assert code == 2 and "no checkpoint" in err


# ---------------------------------------------------------------- ablations/run.py, metrics/report.py


def sweep_exit(tmp_path, capsys, *argv):
    code = sweep_cli.main(["--sweep", "conditioning", "--results", str(tmp_path / "runs"), "--executor", "inline",
                           "--no-progress", *argv])
    return code, capsys.readouterr().err


def test_sweep_bad_data(tmp_path, capsys):
    code, err = sweep_exit(tmp_path, capsys, "--data", f"ucf101:{tmp_path / 'nope'}")
    assert code == 2 and "data.root" in err and "nope" in err
    assert not (tmp_path / "runs" / "conditioning").exists()  # nothing launched
    code, err = sweep_exit(tmp_path, capsys, "--data", ":x")
    assert code == 2 and "NAME:ROOT" in err


def test_sweep_dry_run_does_not_need_the_data(tmp_path, capsys):
    code = sweep_cli.main(["--sweep", "conditioning", "--dry-run", "--executor", "local", "--data",
                           f"ucf101:{tmp_path / 'nope'}"])
    assert code == 0 and "nothing submitted" in capsys.readouterr().out


def test_report_input_errors(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path / "nope")]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert report.main(["--results", str(tmp_path), "--bootstrap", "0"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


# ---------------------------------------------------------------- input errors found by trying (issue 29)
TINY_RUN = ["model.preset=cpu-tiny", "data.size=16", "data.frames=10", "train.batch_size=2", "train.steps=2",
            "train.log_every=1", "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2", "eval.fvd=false",
            "eval.lpips=false"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained") / "run"
    train.main(RunConfig().with_overrides(TINY_RUN), d, progress=False)
    return d


def test_task_parameter_without_a_value(untrained_run, capsys):
    code, err = eval_exit(capsys, "--run-dir", str(untrained_run), "--task", "predict:k")
    assert code == 2 and "--task predict:k" in err and "'k' has no value" in err


@pytest.mark.parametrize("content", ["{not json", "", '{"model": {"depth": "eight"}}', "[1, 2]"])
def test_corrupt_config_json(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    code, err = train_exit(tmp_path, capsys)
    assert code == 2 and f"{run / 'config.json'}:" in err, err
    code, err = eval_exit(capsys, "--run-dir", str(run))
    assert code == 2 and f"{run / 'config.json'}:" in err, err


def test_config_json_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "run" / "config.json").mkdir(parents=True)
    code, err = train_exit(tmp_path, capsys)
    assert code == 2 and "is a directory" in err
    code, err = eval_exit(capsys, "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "is a directory" in err


def test_run_dir_naming_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    code, err = train_exit(tmp_path, capsys)
    assert code == 2 and "--run-dir" in err and "is a file" in err
    code, err = eval_exit(capsys, "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "--run-dir" in err and "is a file" in err


@pytest.mark.parametrize("conditioning,task", [("cross_attn", "interpolate"), ("adaln", "backward"),
                                               ("adaln", "predict:k=3")])
def test_task_the_conditioning_cannot_do(tmp_path, capsys, conditioning, task):
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig().with_overrides([f"model.conditioning={conditioning}", "masks.mixture=predict:1",
                                      "eval.tasks=predict"])
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    code, err = eval_exit(capsys, "--run-dir", str(run), "--task", task)
    assert code == 2 and f"--task {task}" in err and conditioning in err, err


def test_steps_below_the_checkpoint_are_refused_and_config_json_kept(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "config.json").read_text()
    code, err = train_exit(tmp_path, capsys, "--steps", "1")
    assert code == 2 and "train.steps=1" in err and "step 2" in err, err
    assert (run / "config.json").read_text() == before  # the run keeps its length: it can still be evaluated


def test_sweep_time_min_zero_is_an_error(tmp_path, capsys):
    for flag, value, named in (("--time-min", "0", "--time-min 0"), ("--nodes", "0", "--nodes"),
                               ("--mfu", "1.5", "--mfu"), ("--poll-s", "0", "--poll-s"),
                               ("--seeds", "-1", "train.seed"), ("--slurm-extra", "=x", "--slurm-extra")):
        code, err = sweep_exit(tmp_path, capsys, flag, value, "--dry-run")  # --dry-run: nothing runs, even before
        assert code == 2 and named in err, (flag, err)
    (tmp_path / "afile").write_text("")
    code = sweep_cli.main(["--sweep", "conditioning", "--results", str(tmp_path / "afile"), "--status"])
    assert code == 2 and "--results" in capsys.readouterr().err


def test_explicit_i3d_weights_that_do_not_exist(trained_run, tmp_path, capsys):
    missing = tmp_path / "i3d.pt"
    code, err = eval_exit(capsys, "--run-dir", str(trained_run), "--i3d-weights", str(missing),
                          "--set", "eval.fvd=true")
    assert code == 2 and str(missing) in err
    assert not (trained_run / "eval.json").exists()  # no FVD null recorded as complete
    with pytest.raises(WeightsMissingError, match="i3d.pt"):  # the same through the API (eval.i3d_weights)
        evaluate.evaluate_run(trained_run, RunConfig().with_overrides(TINY_RUN + ["eval.fvd=true",
                                                                                  f"eval.i3d_weights={missing}"]),
                              progress=False)


@pytest.mark.parametrize("override", ["data.seed=-1", "train.seed=-1", "model.mlp_ratio=-1", "train.weight_decay=-1",
                                      "masks.predict_k=16", "data.num_workers=-1", "train.grad_clip=0"])
def test_values_that_used_to_fail_deep_inside(tmp_path, capsys, override):
    code, err = train_exit(tmp_path, capsys, "--set", *TINY_RUN, "train.steps=1", override)
    assert code == 2 and override.split("=")[0] in err, err


def test_report_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "afile").write_text("")
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err
