"""Training identity is not evaluation identity: the run id hashes the training sections, so other eval.*
settings on a finished run re-evaluate it in the same directory, and never retrain it."""

import contextlib
import hashlib
import io
import json
import time

import pytest

from ablations import run, rundir, sweeps
from vdt.config import NOT_IN_RUN_ID, ConfigError
from vdt.errors import InputError
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
    cfg, sha = spec().cfg.to_dict(), "ab" * 32
    done = {"step": cfg["train"]["steps"], "tasks": {t: {} for t in cfg["eval"]["tasks"]},
            "eval": json.loads(json.dumps(cfg["eval"])), "checkpoint": {"sha256": sha}}
    assert why_not_evaluated(done, cfg, sha) is None
    assert "other eval settings" in why_not_evaluated({**done, "eval": {**cfg["eval"], "num_videos": 99}}, cfg, sha)
    no_record = {k: v for k, v in done.items() if k != "eval"}
    assert "does not record" in why_not_evaluated(no_record, cfg, sha)  # no record of the settings: evaluate again
    assert "lacks task" in why_not_evaluated({**done, "tasks": {}}, cfg, sha)
    assert why_not_evaluated(None, cfg, sha) == "no eval.json"
    assert "another checkpoint" in why_not_evaluated(done, cfg, "cd" * 32)  # the checkpoint changed since
    assert "SHA-256" in why_not_evaluated({**done, "checkpoint": {"step": 4}}, cfg, sha)


# ---------------------------------------------------------------- what the run id hashes
@pytest.mark.parametrize("key,value", [("train.ckpt_every", "7"), ("train.log_every", "3"), ("train.keep_ckpts", "9"),
                                       ("data.num_workers", "4"), ("data.root", "/elsewhere"),
                                       ("data.latent_cache", "/cache"), ("data.vae_path", "/vae"),
                                       ("data.max_bad_fraction", "0.5"), ("eval.num_videos", "9")])
def test_run_id_leaves_out_what_cannot_change_the_weights(key, value):
    assert key in NOT_IN_RUN_ID or key.startswith("eval.")
    assert spec(f"{key}={value}").run_id == spec().run_id


@pytest.mark.parametrize("key,value", [("train.lr", "0.001"), ("train.steps", "5"), ("train.seed", "3"),
                                       ("data.seed", "2"), ("model.depth", "3"), ("train.precision", "bf16")])
def test_run_id_covers_what_changes_the_weights(key, value):
    assert spec(f"{key}={value}").run_id != spec().run_id


def test_a_run_folder_under_its_old_id_is_renamed(tmp_path, capsys):
    """A folder named by the old run id (which hashed cadence, workers, paths) is renamed to the new id and kept:
    its training and evaluation are not lost; a live job in it stops the launch with a message, exit 2."""
    s = spec("train.ckpt_every=1")
    sweep = tmp_path / "conditioning"
    old = sweep / s.cfg.legacy_run_id()
    assert old.name != s.run_id
    rundir.prepare(old, s.cfg.to_dict(), s.run_info())  # what an old launcher made
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.pt").write_bytes(b"weights")
    other = sweep / spec("train.lr=0.5").cfg.legacy_run_id()  # another training: left alone
    rundir.prepare(other, spec("train.lr=0.5").cfg.to_dict(), spec("train.lr=0.5").run_info())
    rundir.write_json(old / "heartbeat.json", {"time": time.time()})
    with pytest.raises(rundir.LegacyRunBusy, match=f"mv {old}"):
        rundir.prepare(sweep / s.run_id, spec().cfg.to_dict(), spec().run_info())
    assert isinstance(rundir.LegacyRunBusy("x"), InputError)  # the launcher exits 2 with the message
    (old / "heartbeat.json").unlink()
    rundir.prepare(sweep / s.run_id, spec().cfg.to_dict(), spec().run_info())  # now with ckpt_every=2: same run
    assert not old.exists() and (sweep / s.run_id / "checkpoints" / "last.pt").read_bytes() == b"weights"
    assert f"renamed {old}" in capsys.readouterr().out
    assert other.exists()
