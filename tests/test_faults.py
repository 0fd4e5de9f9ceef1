"""The fault-injection run in miniature (the full one: ``nox -s faults``): one run of the tiny sweep, a USR2, a job
killed between a checkpoint's write and its rename, and a job killed after an evaluation part, that part then cut in
half. The run must end with a clean run's weights and eval.json numbers, bitwise, and no wrong eval.json seen."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_faulty_sweep_ends_as_a_clean_one(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fault_injection.py"), "--faults", "3", "--kinds",
                        "usr2,torn_write,corrupt_eval_part", "--seeds", "1", "--steps", "30", "--gap-s", "0.5", "1",
                        "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "fault injection: PASSED" in out, out
    assert re.search(r"faults injected: 3 of 3 kinds \(usr2 1, torn_write 1, corrupt_eval_part 1\)", out), out
    assert "runs recovered: 1 of 1 finished (1 of them hit by a fault)" in out
    assert "steps lost: 0" in out and "evaluations lost: 0; wrong eval.json ever seen: 0" in out
    assert "bitwise equal to the clean run's: 1 of 1; eval.json numbers equal: 1 of 1" in out
