"""Mask generation: a training batch of 256 masks on the default (16, 32, 32) grid, per mixture."""

import pytest
import torch

from benchmarks.machine import median_s, record
from vdt.config import MaskConfig
from vdt.masks import MaskGenerator

BATCH = 256
SHAPE = (16, 32, 32)  # (T, H, W): the default 16 frames of 32x32
MIXTURES = {"official": "official", "spatial_temporal": "spatial_temporal:1", "predict": "predict:1"}


@pytest.mark.quick
@pytest.mark.benchmark(group="masks")
@pytest.mark.parametrize("mixture", list(MIXTURES))
def test_mask_batch(benchmark, mixture):
    gen = MaskGenerator(MaskConfig(mixture=MIXTURES[mixture]), SHAPE)
    g = torch.Generator().manual_seed(0)
    masks = benchmark.pedantic(gen, args=(BATCH, g), rounds=20, warmup_rounds=2, iterations=1)
    if masks.shape != (BATCH, *SHAPE):
        raise AssertionError(f"MaskGenerator returned {tuple(masks.shape)}")
    record(benchmark, torch.device("cpu"), BATCH, dtype="fp32", grid="x".join(map(str, SHAPE)), mixture=mixture,
           items=BATCH, unit="masks", masks_per_s=BATCH / median_s(benchmark))
