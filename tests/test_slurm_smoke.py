"""The smoke profile (the paper path in miniature) through the real SLURM cluster: launcher -> sbatch job ->
training in SD-VAE latents with class labels -> evaluation with guidance -> ``metrics/report.py``.

The same checks as tests/test_smoke.py, with ``--executor slurm``. Without a cluster this skips, except under
CI=true, where a missing cluster is a failure (as in tests/test_slurm.py).
"""

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
