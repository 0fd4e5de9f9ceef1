"""Run the benchmark suite, save it, and print the summary table: what ``nox -s bench`` calls.

    python benchmarks/run.py                               # full suite, ~10 min on 2 CPU cores
    python benchmarks/run.py --quick                       # CI smoke subset (< 2 min), saved under quick/
    python benchmarks/run.py --benchmark-compare           # and compare with the last saved run
    python benchmarks/run.py -k train --benchmark-compare=0001

Any argument other than --quick goes to pytest (pytest-benchmark's --benchmark-* options, -k, ...).
Results: ``results/bench/<machine-id>/`` holds pytest-benchmark's autosaved JSON (in its own
``<platform>/NNNN_<commit>_<date>.json`` subfolder, where ``--benchmark-compare`` looks), ``summary.md`` and
``scaling.png``. The machine id is ``cpu-<n>core-<cpu model>`` or ``cuda-<gpu name>`` (benchmarks/machine.py).
"""

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

import json  # noqa: E402

import pytest  # noqa: E402

from benchmarks.machine import device, machine_id  # noqa: E402
from benchmarks.scaling_plot import exponents, plot  # noqa: E402
from benchmarks.summary import first_info, summary_markdown  # noqa: E402


def output_dir(quick: bool) -> Path:
    out = ROOT / "results" / "bench" / machine_id(device())
    return out / "quick" if quick else out


def latest_json(storage: Path) -> Path | None:
    """The newest autosaved run (pytest-benchmark numbers them NNNN_ in its platform subfolder)."""
    runs = sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: (p.name[:4], p.stat().st_mtime))
    return runs[-1] if runs else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0],
                                epilog="Other arguments are passed to pytest, e.g. --benchmark-compare, -k NAME.")
    p.add_argument("--quick", action="store_true", help="only the CI smoke subset (< 2 minutes)")
    args, rest = p.parse_known_args(argv)
    out = output_dir(args.quick)
    before = latest_json(out)
    code = pytest.main([
        str(ROOT / "benchmarks"), "-p", "no:cacheprovider", f"--rootdir={ROOT}",
        f"--benchmark-storage=file://{out}", "--benchmark-autosave", "--benchmark-group-by=group",
        "--benchmark-columns=median,min,max,rounds", *(["--bench-quick"] if args.quick else []), *rest,
    ])
    saved = latest_json(out)
    if saved is None or saved == before:
        print(f"no new benchmark results under {out}", file=sys.stderr)
        return int(code) or 1
    data = json.loads(saved.read_text())
    command = shlex.join(["python", "benchmarks/run.py", *argv])
    plotted = exponents(data)["time_T"] is not None
    if plotted:
        plot(data, out / "scaling.png", title=first_info(data).get("device", ""))
    text = summary_markdown(data, command, machine_id(device()))
    (out / "summary.md").write_text(text)
    print(f"\nSaved {saved.relative_to(ROOT)}, summary.md" + (" and scaling.png" if plotted else "")
          + f" in {out.relative_to(ROOT)}\n")
    print(text)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
