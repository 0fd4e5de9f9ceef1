"""The smoke profile (the paper path in miniature) through the real SLURM cluster: launcher -> sbatch job ->
training in SD-VAE latents with class labels -> evaluation with guidance -> ``metrics/report.py``.

The same checks as tests/test_smoke.py, with ``--executor slurm``. Without a cluster this skips, except under
CI=true, where a missing cluster is a failure (as in tests/test_slurm.py).
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from test_smoke import (
    ROOT,
    check_evaluated,
    check_report,
    check_trained,
    launch_cmd,
    report,
    smoke_env,
    smoke_run_dir,
    smoke_sets,
)

from ablations import launcher, rundir
from vdt import signals

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def cluster():
    down = launcher.slurm_controller_down()
    if down:
        msg = f"SLURM cluster not available: {down}. Run `nox -s slurm` (it brings up a one-node cluster)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def test_smoke_profile_end_to_end_on_slurm(smoke_ucf, tiny_vae, tmp_path):
    env, results, sets = smoke_env(tmp_path), tmp_path / "runs", smoke_sets(smoke_ucf, tiny_vae)
    t0 = time.time()
    p = subprocess.run(launch_cmd(results, sets, "slurm", "--cpus-per-task", "1"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    d = smoke_run_dir(results, sets)
    state = rundir.read_state(d)
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + (state.get("error") or "")
    assert re.fullmatch(r"\d+(_0)?", state["job_id"]), state  # a SLURM job ran it (one run: no array index)
    assert "Job completed successfully" in Path(state["log"]).read_text()
    check_trained(d, tmp_path / "cache")
    ev = check_evaluated(d)

    check_report(report(results, tmp_path / "report", env), ev)
    print(f"smoke on SLURM: {time.time() - t0:.0f} s")


def test_smoke_run_signalled_in_latent_encoding_requeues_and_resumes_the_cache(smoke_ucf, tiny_vae, tmp_path):
    """USR2 (SLURM's preemption signal) after the first chunk of the smoke run's latent encoding: the job keeps the
    chunk, requeues through SLURM, and the next attempt encodes only the rest, trains and evaluates to the end."""
    env, results = smoke_env(tmp_path), tmp_path / "runs"
    sets = smoke_sets(smoke_ucf, tiny_vae) + ["data.latent_clips=4"]  # more than one chunk of 8 clips
    env.update({signals.PHASE_ENV: "latent encoding:USR2", signals.ONCE_ENV: str(tmp_path / "signalled")})
    # A time limit over 10 minutes, so submitit counts the USR2 as a preemption, not a timeout.
    p = subprocess.run(launch_cmd(results, sets, "slurm", "--cpus-per-task", "1", "--time-min", "30"), cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    d = smoke_run_dir(results, sets)
    state = rundir.read_state(d)
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + (state.get("error") or "")
    assert (tmp_path / "signalled").exists() and state["attempts"] == 2, state
    log = Path(state["log"]).read_text()
    assert "preempted during latent encoding: saved step 0" in log and f"Requeued job {state['job_id']}" in log
    assert "REQUEUED" in subprocess.run(["sacct", "-n", "-D", "-X", "-j", state["job_id"], "-o", "State"],
                                        capture_output=True, text=True).stdout
    (folder,) = (tmp_path / "cache" / "latents").glob("ucf101-train-*/")
    total = json.loads((folder / "meta.json").read_text())["shape"][0]
    assert f"8/{total}" in log  # the second attempt started after the first chunk
    check_trained(d, tmp_path / "cache")
    check_evaluated(d)
