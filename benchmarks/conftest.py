"""Shared benchmark fixtures: the device, the session's matmul peak, and the --bench-quick subset."""

import pytest
import torch

from benchmarks.machine import device, matmul_peak


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true", default=False,
                     help="run only the benchmarks marked quick (the CI smoke subset)")


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: part of the --quick smoke subset")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--bench-quick"):
        return
    keep = [it for it in items if it.get_closest_marker("quick")]
    dropped = [it for it in items if not it.get_closest_marker("quick")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.fixture(scope="session")
def quick(pytestconfig) -> bool:
    return pytestconfig.getoption("--bench-quick")


@pytest.fixture(scope="session")
def dev() -> torch.device:
    return device()


@pytest.fixture(scope="session")
def peak(dev) -> dict:
    """The matmul peak MFU divides by, measured on this device at the start and refreshed before each training
    benchmark (the best rate of the session so far; benchmarks/machine.py)."""
    return matmul_peak(dev)
