"""Training identity is not evaluation identity: the run id hashes the training sections, so other eval.*
settings on a finished run re-evaluate it in the same directory, and never retrain it."""

import contextlib
import hashlib
import io
import json

import pytest

from ablations import run, rundir, sweeps
from vdt.config import ConfigError
from vdt.layout import why_not_evaluated

TINY = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.batch_size=4",
        "eval.num_videos=2", "eval.batch_size=2", "eval.sample_steps=2"]


def launch(results, *sets) -> tuple:
    argv = ["--sweep", "conditioning", "--variants", "token_concat", "--seeds", "0", "--results", str(results),
            "--executor", "debug", "--no-progress", "--poll-s", "0.05", "--set", *TINY, *sets]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = run.main(argv)
    return code, out.getvalue()


def spec(*sets):
    return sweeps.expand("conditioning", sets=sweeps.parse_sets([*TINY, *sets]), seeds=[0],
                         variants=["token_concat"])[0]


def fingerprint(path) -> tuple:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_other_eval_settings_reevaluate_without_retraining(tmp_path):
    assert spec("eval.num_videos=3").run_id == spec().run_id
    code, out = launch(tmp_path)
    assert code == 0, out
    d = tmp_path / "conditioning" / spec().run_id
    ckpt, log = d / "checkpoints" / "last.pt", d / "train_log.jsonl"
    before = fingerprint(ckpt), log.read_text()
    first = json.loads((d / "eval.json").read_text())
    assert first["eval"]["num_videos"] == 2 and first["tasks"]["predict"]["protocol"]["num_videos"] == 2

    code, out = launch(tmp_path, "eval.num_videos=3")
    assert code == 0, out
    assert "0 done" in out and "1 to run" in out  # the finished run is taken up again...
    assert (fingerprint(ckpt), log.read_text()) == before  # ...and not retrained: no step taken, no save
    again = json.loads((d / "eval.json").read_text())
    assert again["eval"]["num_videos"] == 3 and again["tasks"]["predict"]["protocol"]["num_videos"] == 3
    assert json.loads((d / "config.json").read_text())["eval"]["num_videos"] == 3  # the latest eval settings
    assert rundir.read_state(d)["state"] == "done" and rundir.read_state(d)["attempts"] == 2

    evaluated = fingerprint(d / "eval.json")
    code, out = launch(tmp_path, "eval.num_videos=3")  # the same settings again: nothing to do
    assert code == 0 and "1 done" in out and "0 to run" in out, out
    assert fingerprint(d / "eval.json") == evaluated


def test_prepare_keeps_the_training_config_and_takes_new_eval_settings(tmp_path):
    s = spec()
    rundir.prepare(tmp_path, s.cfg.to_dict(), s.run_info())
    info = rundir.read_json(tmp_path / "run.json")
    rundir.write_json(tmp_path / "run.json", {**info, "skipped_videos": {"skipped": 1, "total": 9}})  # training's
    more = spec("eval.num_videos=5")
    rundir.prepare(tmp_path, more.cfg.to_dict(), more.run_info())
    assert rundir.read_json(tmp_path / "config.json")["eval"]["num_videos"] == 5
    info = rundir.read_json(tmp_path / "run.json")
    assert info["skipped_videos"]["skipped"] == 1 and info["overrides"]["eval.num_videos"] == "5"
    other = spec("train.lr=0.5")
    with pytest.raises(ConfigError, match="different training config"):
        rundir.prepare(tmp_path, other.cfg.to_dict(), other.run_info())


def test_why_not_evaluated_reads_the_record_of_eval_json():
    cfg = spec().cfg.to_dict()
    done = {"step": cfg["train"]["steps"], "tasks": {t: {} for t in cfg["eval"]["tasks"]},
            "eval": json.loads(json.dumps(cfg["eval"]))}
    assert why_not_evaluated(done, cfg) is None
    assert "other eval settings" in why_not_evaluated({**done, "eval": {**cfg["eval"], "num_videos": 99}}, cfg)
    no_record = {k: v for k, v in done.items() if k != "eval"}
    assert "does not record" in why_not_evaluated(no_record, cfg)  # no record of the settings: evaluate again
    assert "lacks task" in why_not_evaluated({**done, "tasks": {}}, cfg)
    assert why_not_evaluated(None, cfg) == "no eval.json"
