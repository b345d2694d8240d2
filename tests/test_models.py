"""Tests for phaseguard.models: every registered architecture, normalisation and split BN."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from phaseguard.errors import ModelError
from phaseguard.models import (
    Normalize,
    NormalizedModel,
    SplitBatchNorm,
    bn_branch,
    convert_split_bn,
    create_model,
    has_split_bn,
    list_models,
    merge_split_bn,
    register_model,
)

MODELS = list_models()
# The generic WRN builder is exercised small; wrn28_10 / wrn34_10 cover the full-size code path.
OPTIONS = {"wrn": {"depth": 10, "widen_factor": 2}}
HEAVY = {"wrn28_10", "wrn34_10"}
# Backward on every layout for these; the others are checked on 32x32 colour (gradients reaching
# every parameter does not depend on the layout, and forward covers all layouts for all models).
BACKWARD_ALL_LAYOUTS = {"resnet18", "smallcnn", "wrn"}
LAYOUTS = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
NUM_CLASSES = 7


def build(name: str, in_channels: int = 3, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES, in_channels, **OPTIONS.get(name, {}), **kwargs)


def images(batch: int, layout: tuple[int, int, int], seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, *layout, generator=torch.Generator().manual_seed(seed))


def labels(batch: int) -> torch.Tensor:
    return torch.arange(batch) % NUM_CLASSES


def splits_of(model: nn.Module) -> list[SplitBatchNorm]:
    return [m for m in model.modules() if isinstance(m, SplitBatchNorm)]


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def train_batch(
    name: str, layout: tuple[int, int, int] = (3, 32, 32), seed: int = 1
) -> torch.Tensor:
    """A train-mode input: 2 images, 1 for the heavy WRNs (train-mode BN averages over B*H*W
    values, so one image is enough and halves their cost)."""
    return images(1 if name in HEAVY else 2, layout, seed)


def train_step_stats(model: nn.Module, branch: str, x: torch.Tensor) -> None:
    """One train-mode forward on ``branch`` without a graph: updates that branch's statistics."""
    model.train()
    with torch.no_grad(), bn_branch(model, branch):
        model(x)


# ---------------------------------------------------------------- architectures


def test_registry_lists_every_architecture() -> None:
    assert sorted(MODELS) == MODELS
    assert {"resnet18", "preact_resnet18", "wrn", "wrn28_10", "wrn34_10", "smallcnn"} <= set(MODELS)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_every_layout(name: str, layout: tuple[int, int, int]) -> None:
    model = build(name, in_channels=layout[0]).eval()
    batch = 1 if name in HEAVY else 3
    with torch.no_grad():
        out = model(images(batch, layout))
    assert out.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name: str) -> None:
    layouts = LAYOUTS if name in BACKWARD_ALL_LAYOUTS else [(3, 32, 32)]
    for layout in layouts:
        model = build(name, in_channels=layout[0]).train()
        x = train_batch(name, layout)
        out = model(x)
        assert out.shape == (len(x), NUM_CLASSES) and torch.isfinite(out).all()
        F.cross_entropy(out, labels(len(x))).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{name} {layout}: no gradient for {missing}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_batchnorm_is_plain_batchnorm2d_initialised(name: str) -> None:
    bns = [m for m in build(name).modules() if isinstance(m, _BatchNorm)]
    assert bns and all(type(m) is nn.BatchNorm2d for m in bns)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)


def test_parameter_counts() -> None:
    def n_params(name: str, **kw: object) -> int:
        return sum(p.numel() for p in create_model(name, 10, 3, **kw).parameters())

    assert n_params("resnet18") == 11_173_962
    assert n_params("preact_resnet18") == 11_172_170
    assert n_params("wrn", depth=28, widen_factor=10) == 36_479_194
    assert 100_000 <= n_params("smallcnn") <= 400_000
    assert n_params("smallcnn", width=16) < n_params("smallcnn") < n_params("smallcnn", width=64)


# ---------------------------------------------------------------- registry errors


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ModelError) as err:
        create_model("resnet19")
    assert "resnet19" in str(err.value)
    assert all(name in str(err.value) for name in MODELS)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ModelError, match="widen_factor"):
        create_model("resnet18", widen_factor=2)
    with pytest.raises(ModelError, match="depht"):
        create_model("wrn", depht=28)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("wrn", {"depth": 30}),
        ("wrn", {"depth": 4}),
        ("wrn", {"widen_factor": 0}),
        ("wrn34_10", {"dropout": 1.0}),
        ("smallcnn", {"width": 0}),
        ("smallcnn", {"width": 2.5}),
        ("smallcnn", {"num_classes": 0}),
        ("smallcnn", {"in_channels": True}),
    ],
)
def test_invalid_values_raise_model_error(name: str, kwargs: dict) -> None:
    with pytest.raises(ModelError):
        create_model(name, **kwargs)


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(ModelError, match="already registered"):
        register_model("resnet18")(lambda num_classes, in_channels: nn.Identity())


# ---------------------------------------------------------------- normalisation


def test_normalize_layer_buffers_and_validation() -> None:
    norm = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert norm.mean.shape == norm.std.shape == (1, 3, 1, 1)
    assert {"mean", "std"} <= set(norm.state_dict())
    with pytest.raises(ModelError):
        Normalize((0.5, 0.5), (0.2,))
    with pytest.raises(ModelError):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ModelError, match="channel"):
        create_model("smallcnn", in_channels=1, normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_normalized_model_equals_plain_model_on_standardised_input(in_channels: int) -> None:
    mean, std = (0.49, 0.48, 0.45)[:in_channels], (0.25, 0.24, 0.26)[:in_channels]
    plain = build("smallcnn", in_channels).eval()
    wrapped = build("smallcnn", in_channels, normalize=(mean, std)).eval()
    assert isinstance(wrapped, NormalizedModel)
    wrapped.net.load_state_dict(plain.state_dict())
    x = images(4, (in_channels, 28, 28))
    expected = plain(
        (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    )
    torch.testing.assert_close(wrapped(x), expected)
    assert set(wrapped.state_dict()) == {"normalize.mean", "normalize.std"} | {
        f"net.{k}" for k in plain.state_dict()
    }


def test_normalized_model_with_split_bn() -> None:
    model = build("smallcnn", 1, normalize=((0.3,), (0.3,)), split_bn=True)
    assert has_split_bn(model) and isinstance(model.normalize, Normalize)
    with bn_branch(model, "aux"):
        assert model(images(2, (1, 28, 28))).shape == (2, NUM_CLASSES)


# ---------------------------------------------------------------- split BN, every model


@pytest.mark.parametrize("name", MODELS)
def test_convert_wraps_every_batchnorm(name: str) -> None:
    model = build(name)
    n_bn = count_bn(model)
    assert convert_split_bn(model) is model and has_split_bn(model)
    splits = splits_of(model)
    assert len(splits) == n_bn
    assert count_bn(model) == 2 * n_bn  # main + aux of each, no plain BN outside
    for full_name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            parent = model.get_submodule(full_name.rpartition(".")[0])
            assert isinstance(parent, SplitBatchNorm), full_name
    convert_split_bn(model)  # idempotent
    assert len(splits_of(model)) == n_bn and count_bn(model) == 2 * n_bn


@pytest.mark.parametrize("name", MODELS)
def test_branches_keep_separate_statistics(name: str) -> None:
    model = convert_split_bn(build(name))
    splits = splits_of(model)
    for active, idle in [("aux", "main"), ("main", "aux")]:
        idle_before = [copy.deepcopy(getattr(s, idle).state_dict()) for s in splits]
        var_before = [getattr(s, active).running_var.clone() for s in splits]
        count_before = [int(getattr(s, active).num_batches_tracked) for s in splits]
        train_step_stats(model, active, train_batch(name, seed=2))
        for s, idle_state, var, count in zip(splits, idle_before, var_before, count_before):
            for key, value in getattr(s, idle).state_dict().items():
                assert torch.equal(value, idle_state[key]), f"{idle}.{key} moved"
            assert int(getattr(s, active).num_batches_tracked) == count + 1
            assert not torch.equal(getattr(s, active).running_var, var)
        assert all(s.branch == "main" for s in splits)


@pytest.mark.parametrize("name", MODELS)
def test_aux_backward_leaves_main_parameters_alone(name: str) -> None:
    model = convert_split_bn(build(name)).train()
    with bn_branch(model, "aux"):
        x = train_batch(name)
        F.cross_entropy(model(x), labels(len(x))).backward()
    for s in splits_of(model):
        assert s.aux.weight.grad is not None and s.aux.bias.grad is not None
        for p in (s.main.weight, s.main.bias):
            assert p.grad is None or not p.grad.any()
    shared = [p for n, p in model.named_parameters() if ".main." not in n and ".aux." not in n]
    assert shared and all(p.grad is not None for p in shared)


@pytest.mark.parametrize("name", MODELS)
def test_conversion_preserves_eval_output_and_merge_restores_plain_bn(name: str) -> None:
    model = build(name).eval()
    x = images(1, (3, 32, 32), seed=5)
    with torch.no_grad():
        expected = model(x)
    keys = set(model.state_dict())
    convert_split_bn(model)
    train_step_stats(model, "aux", train_batch(name, seed=4))  # aux now differs from main
    with torch.no_grad():
        assert torch.equal(model.eval()(x), expected)
        mains = [copy.deepcopy(s.main.state_dict()) for s in splits_of(model)]
        merged = merge_split_bn(model)
        assert not has_split_bn(merged) and set(merged.state_dict()) == keys
        bns = [m for m in merged.modules() if isinstance(m, _BatchNorm)]
        assert len(bns) == len(mains)
        for bn, main in zip(bns, mains):
            assert all(torch.equal(v, main[k]) for k, v in bn.state_dict().items())
        assert torch.equal(merged(x), expected)


@pytest.mark.parametrize("name", MODELS)
def test_split_state_dict_round_trip(name: str) -> None:
    model = build(name, split_bn=True)
    state = model.state_dict()
    for key, value in state.items():  # make the aux branch differ from a fresh model's
        if ".aux." in key and value.is_floating_point():
            value.uniform_(0.5, 1.5)  # state dict tensors share the model's storage
    assert any(".aux." in k for k in state) and any(".main." in k for k in state)
    fresh = build(name, split_bn=True)
    fresh.load_state_dict(state, strict=True)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


# ---------------------------------------------------------------- split BN mechanism


def test_split_batchnorm_copies_configuration_and_state() -> None:
    for bn in (
        nn.BatchNorm1d(5, eps=0.8, momentum=0.3),
        nn.BatchNorm3d(4, affine=False),
        nn.BatchNorm2d(3, track_running_stats=False),
    ):
        bn.eval()
        split = convert_split_bn(bn)  # the root itself is a BN
        assert isinstance(split, SplitBatchNorm) and split.main is bn and not split.training
        assert type(split.aux) is type(bn) and split.aux is not bn
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
            assert getattr(split.aux, attr) == getattr(bn, attr)
        aux_state = split.aux.state_dict()
        assert all(torch.equal(v, aux_state[k]) for k, v in bn.state_dict().items())
        assert merge_split_bn(split) is bn


def test_split_keeps_main_parameter_objects_and_shared_modules() -> None:
    bn = nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(4, 4, 1), bn, nn.ReLU(), bn)
    params = set(map(id, model.parameters()))
    convert_split_bn(model)
    assert model[1] is model[3] and model[1].main is bn
    assert params <= set(map(id, model.parameters()))


def test_bn_branch_restores_previous_branches() -> None:
    model = build("smallcnn", split_bn=True)
    splits = splits_of(model)
    splits[0].branch = "aux"
    with pytest.raises(RuntimeError, match="boom"), bn_branch(model, "aux"):
        assert all(s.branch == "aux" for s in splits)
        with bn_branch(model, "main"):
            assert all(s.branch == "main" for s in splits)
        assert all(s.branch == "aux" for s in splits)
        raise RuntimeError("boom")
    assert splits[0].branch == "aux" and all(s.branch == "main" for s in splits[1:])


def test_bn_branch_rejects_bad_requests() -> None:
    plain = build("smallcnn")
    with bn_branch(plain, "main"):
        pass
    with pytest.raises(ModelError, match="split"), bn_branch(plain, "aux"):
        pass
    split = build("smallcnn", split_bn=True)
    with pytest.raises(ModelError, match="branch"), bn_branch(split, "adv"):
        pass
    with pytest.raises(ModelError):
        splits_of(split)[0].branch = "adv"


def test_split_bn_under_torch_compile() -> None:
    model = build("smallcnn", split_bn=True)
    train_step_stats(model, "aux", images(2, (3, 32, 32), seed=7))
    model.eval()
    x = images(2, (3, 32, 32))
    with torch.no_grad():
        eager_main = model(x)
        with bn_branch(model, "aux"):
            eager_aux = model(x)
        assert not torch.allclose(eager_main, eager_aux)
        compiled = torch.compile(model, backend="eager")
        torch.testing.assert_close(compiled(x), eager_main)
        with bn_branch(model, "aux"):
            torch.testing.assert_close(compiled(x), eager_aux)
        torch.testing.assert_close(compiled(x), eager_main)


def test_split_bn_composes_with_sync_batchnorm() -> None:
    after = nn.SyncBatchNorm.convert_sync_batchnorm(build("smallcnn", split_bn=True))
    before = convert_split_bn(nn.SyncBatchNorm.convert_sync_batchnorm(build("smallcnn")))
    for model in (after, before):
        splits = splits_of(model)
        assert splits and count_bn(model) == 2 * len(splits)
        assert all(type(s.main) is type(s.aux) is nn.SyncBatchNorm for s in splits)


def test_split_bn_under_distributed_data_parallel(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = DistributedDataParallel(build("smallcnn", 1, split_bn=True))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        for step in range(2):  # the second step checks that the reducer accepted the first
            x, y = images(4, (1, 28, 28), seed=step), labels(4)
            loss = F.cross_entropy(ddp(x), y)
            with bn_branch(ddp, "aux"):
                loss = loss + F.cross_entropy(ddp(x.flip(-1)), y)
            opt.zero_grad()
            loss.backward()
            assert all(p.grad is not None for p in ddp.parameters())
            opt.step()
    finally:
        dist.destroy_process_group()
