"""Official checkpoints: load_official reproduces the official VDT (tests/official_reference.py) exactly."""

import pytest
import torch
from official_reference import OfficialVDT  # tests/ is on sys.path under pytest

from vdt.official import infer_config, load_official


def official(seed=0, **kw):
    """A small official VDT with every weight random (zero-init branches included), in eval mode."""
    args = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=4, num_frames=4)
    torch.manual_seed(seed)
    model = OfficialVDT(**{**args, **kw})
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # not the fixed sin-cos tables
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def inputs(model, batch=2):
    g = torch.Generator().manual_seed(1)
    C, side = model.in_channels, int(model.x_embedder.num_patches ** 0.5) * model.patch_size
    x = torch.randn(batch, model.num_frames, C, side, side, generator=g)
    t = torch.tensor([3.0, 917.0])[:batch]
    return x, t


def assert_same_outputs(ref, ours):
    x, t = inputs(ref)
    classes = ref.y_embedder.num_classes
    y = torch.tensor([5, 2]) % classes  # one class: y = 0, as the official sampler passes
    with torch.no_grad():
        want = ref(x, t, y)
        got = ours(x, t) if classes == 1 else ours(x, t, y=y)
    assert got.shape == want.shape
    assert want.abs().max() > 0.1  # the branches are open: a real comparison
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_plain_state_dict_gives_official_outputs():
    ref = official()
    ours = load_official(ref.state_dict())
    assert not ours.training
    assert_same_outputs(ref, ours)


def test_checkpoint_file_prefers_ema_and_strips_module_prefix(tmp_path):
    ema, raw = official(seed=0), official(seed=1)
    prefixed = {f"module.{k}": v for k, v in ema.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": raw.state_dict(), "ema": prefixed, "args": None}, path)
    assert_same_outputs(ema, load_official(path))
    assert_same_outputs(raw, load_official({"model": raw.state_dict()}))


def test_config_is_inferred_from_shapes():
    ref = official(input_size=12, patch_size=3, in_channels=4, hidden_size=128, depth=3, num_frames=5,
                   learn_sigma=False, num_classes=7, mlp_ratio=2.0)
    cfg = infer_config(ref.state_dict())
    assert (cfg.depth, cfg.hidden, cfg.heads, cfg.patch) == (3, 128, 4, 3)  # heads: cpu-small's 128 -> 4
    assert (cfg.frames, cfg.size, cfg.channels) == (5, 12, 4)
    assert (cfg.learn_sigma, cfg.num_classes, cfg.mlp_ratio) == (False, 7, 2.0)
    assert_same_outputs(ref, load_official(ref.state_dict()))


def test_heads_must_be_given_for_unknown_hidden():
    ref = official(hidden_size=96, num_heads=3)
    with pytest.raises(ValueError, match="hidden=96 matches no preset; pass heads="):
        load_official(ref.state_dict())
    assert_same_outputs(ref, load_official(ref.state_dict(), heads=3))


def test_mismatching_state_dicts_raise():
    sd = official().state_dict()
    missing = {k: v for k, v in sd.items() if k != "blocks.1.temporal_fc.bias"}
    with pytest.raises(ValueError, match=r"missing \['blocks.1.temporal_fc.bias'\]"):
        load_official(missing)
    extra = {**sd, "blocks.0.extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"unexpected \['blocks.0.extra.weight'\]"):
        load_official(extra)
    wrong = {**sd, "blocks.0.mlp.fc2.weight": torch.zeros(64, 100)}
    with pytest.raises(ValueError, match=r"wrong shape \[\('blocks.0.mlp.fc2.weight', \(64, 100\)\)\]"):
        load_official(wrong)
    with pytest.raises(ValueError, match="not an official VDT .*missing \\['time_embed'\\]"):
        load_official({k: v for k, v in sd.items() if k != "time_embed"})
    with pytest.raises(ValueError, match="pos_embed is not the fixed sin-cos table"):
        load_official({**sd, "pos_embed": sd["pos_embed"] + 0.1})
