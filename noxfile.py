"""nox sessions for vdt-bench. They run in the environment where vdt-bench is installed
(``pip install -e '.[dev]'``, as the README says): torch is several GB, and a fresh virtualenv per
session would copy it every time. ``nox -l`` lists the sessions."""

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "docs", "tests"]


@nox.session
def tests(session):
    """The test suite (CPU, about 3 minutes on 2 idle cores); SLURM tests skip unless the cluster is up."""
    session.run("pytest", "-m", "not slurm", "--ignore=tests/test_docs.py", *session.posargs)


@nox.session
def lint(session):
    """ruff over the whole tree."""
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def docs(session):
    """The docs check: README/docs commands still parse (sweeps as --dry-run) and links resolve (about a minute).

    tests/test_docs.py: the ```bash blocks of README.md and docs/*.md are the runnable commands."""
    session.run("pytest", "tests/test_docs.py", *session.posargs)


@nox.session(default=False)
def bench(session):
    """Speed and memory benchmarks (pytest-benchmark); results go to results/bench/<machine-id>/.
    Pass --quick for the CI smoke subset, --benchmark-compare to compare with the last saved run."""
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(default=False)
def gpu(session):
    """On a CUDA machine (under 8 minutes): the tests marked cuda, then benchmarks/bench_gpu.py (results/bench/).
    A machine where torch sees no GPU fails the tests instead of skipping them."""
    try:
        session.run("pytest", "-m", "cuda", *session.posargs, env={"VDT_REQUIRE_GPU": "1"})
    finally:  # the benchmark's numbers are worth having even when a test fails
        session.run("python", "benchmarks/bench_gpu.py")


@nox.session(default=False)
def faults(session):
    """The full fault-injection run (10 minutes on 2 busy cores): 20 faults of 6 kinds into a miniature sweep, which
    must end bitwise equal to a clean run (scripts/fault_injection.py; the fast version is in tests)."""
    session.run("python", "scripts/fault_injection.py", "--faults", "20", *session.posargs)


@nox.session(default=False)
def slurm(session):
    """Bring up a one-node SLURM cluster (root, apt), run the tests marked slurm, take it down."""
    session.run("bash", "scripts/slurm_up.sh", external=True)
    try:
        session.run("pytest", "-m", "slurm", *session.posargs)
    finally:
        session.run("bash", "scripts/slurm_down.sh", external=True)
