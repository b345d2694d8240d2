"""Every training method on real Fashion-MNIST: robust accuracy above clean training; AWP, EMA,
SWA as options of any method."""

from __future__ import annotations

import pytest
import torch

from phaseguard.attacks import PGD
from phaseguard.checkpoint import load_checkpoint
from phaseguard.data import load_dataset
from phaseguard.loading import load_model
from phaseguard.methods import list_methods
from phaseguard.predict import predict_correct
from phaseguard.training import Trainer, train
from tests.conftest import tiny_config

# Enough real data and steps for adversarial training to show, yet seconds per method here.
SHORT = [
    "data.train_size=1536",
    "model.kwargs.width=16",
    "train.batch_size=128",
    "optim.lr=0.1",
]
EPS = 0.1


@pytest.fixture(scope="module")
def test_images():
    ds = load_dataset("fashion-mnist")
    return ds.x_test[:500], ds.y_test[:500]


def robust_accuracy(run_dir, images) -> float:
    net = load_model(run_dir, "last").model
    torch.manual_seed(0)
    attack = PGD(net, eps=EPS, step=EPS / 4, steps=10)
    return predict_correct(net, *images, attack=attack).float().mean().item()


@pytest.fixture(scope="module")
def standard_robust_accuracy(tmp_path_factory, test_images):
    out = tmp_path_factory.mktemp("standard") / "run"
    train(tiny_config(*SHORT, "method.name=standard"), out)
    return robust_accuracy(out, test_images)


@pytest.mark.parametrize("method", [m for m in list_methods() if m != "standard"])
def test_adversarial_methods_beat_clean_training_under_attack(
    method, tmp_path, test_images, standard_robust_accuracy
):
    extra = ["method.eaeg_steps=2"] if method == "dat" else []
    train(tiny_config(*SHORT, f"method.name={method}", *extra), tmp_path / method)
    robust = robust_accuracy(tmp_path / method, test_images)
    assert robust > standard_robust_accuracy + 0.05, (robust, standard_robust_accuracy)


def test_awp_perturbs_only_during_the_step_and_trains(tmp_path):
    trainer = Trainer(
        tiny_config("awp.enabled=true", "awp.gamma=0.01", "optim.lr=0", "optim.weight_decay=0"),
        tmp_path / "awp",
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x, y = next(iter(trainer.data.train))
    batch = trainer.step.method.prepare(x, y)
    with trainer._weight_perturbation(batch):
        during = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    after = trainer.model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], during[k])]
    assert moved and all(before[k].dim() > 1 for k in moved)  # conv/linear weights only
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-6)
    result = trainer.fit()
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_weight_averaging_is_what_checkpoints_evaluate(tmp_path, averaging):
    out = tmp_path / averaging
    options = ["averaging.ema_decay=0.9"] if averaging == "ema" else ["averaging.swa_start=1"]
    train(tiny_config(f"averaging.name={averaging}", *options), out)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    raw, averaged = state["model"], state["eval_model"]
    weight = next(k for k in raw if k.endswith("weight") and raw[k].dim() > 1)
    assert not torch.equal(raw[weight], averaged[weight])
    loaded = load_model(out, "last").model.state_dict()
    assert torch.equal(loaded[weight], averaged[weight])
    if averaging == "swa":  # BN statistics recomputed for the averaged weights
        stat = next(k for k in raw if k.endswith("running_mean"))
        assert not torch.equal(raw[stat], averaged[stat])


def test_dat_combines_with_awp_ema_and_bf16(tmp_path):
    """bf16 autocast around DAT's attacks and staged backward, with AWP and EMA; 2 steps an
    epoch, so that it stays cheap where bf16 is emulated."""
    out = tmp_path / "dat_awp_ema"
    cfg = tiny_config(
        "method.name=dat",
        "method.eaeg_steps=2",
        "awp.enabled=true",
        "averaging.name=ema",
        "train.precision=bf16",
        "data.train_size=128",
        "train.epochs=2",
    )
    result = train(cfg, out)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["eval_model"] and state["method"]["generator"]
