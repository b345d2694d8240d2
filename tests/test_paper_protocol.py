"""The paper presets follow the reference's protocol: BN updates in the generator step, x_hat's
crop padding, the EAEG's own label smoothing (docs/dat.md section 7, "Protocol of the paper
presets")."""

from __future__ import annotations

import pytest
import torch

from phaseguard.attacks import TradesKL
from phaseguard.build import build_method
from phaseguard.config import AttackConfig, Config, load_config, preset_names
from phaseguard.data import BatchLoader, load_dataset, random_crop_flip
from phaseguard.errors import ConfigError
from phaseguard.methods import method_options
from phaseguard.models import bn_branch, create_model
from phaseguard.spectrum import mix_amplitude, recompose

EPS = 0.1
DAT_PRESETS = [n for n in preset_names() if n.startswith("paper/") and "_dat" in n]


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("fashion-mnist")
    return ds.x_train[:32], ds.y_train[:32]


@pytest.fixture
def loader(data):
    """Raw batches, the benign view cropped with padding 4 (no flip: offsets alone)."""
    return BatchLoader(*data, 32, augment=True, padding=4, flip=False, yield_raw=True)


def make_dat(augment=None, **options):
    torch.manual_seed(0)
    net = create_model("smallcnn", 10, 1, split_bn=True, width=8)
    cfg = Config(
        attack=AttackConfig(eps=EPS, step=EPS / 4, steps=5),
        method={"name": "dat", "eaeg_steps": 3, **options},
    )
    return build_method(cfg, net, 10, (1, 28, 28), augment=augment), net


def prepared(loader, **options):
    method, _ = make_dat(loader.augment, **options)
    x_raw, y = next(iter(loader))  # reseeds the loader's generator: same draws every call
    torch.manual_seed(1)
    return method.prepare(x_raw, y)


def test_mixed_padding_changes_only_the_mixed_view(loader):
    default = prepared(loader)
    same = prepared(loader, mixed_padding=4)  # the benign view's padding: nothing changes
    assert default.keys() == same.keys()
    assert all(torch.equal(default[k], same[k]) for k in default)
    zero = prepared(loader, mixed_padding=0)
    assert torch.equal(zero["x"], default["x"]) and torch.equal(zero["x_adv"], default["x_adv"])
    assert not torch.equal(zero["x_hat"], default["x_hat"])


@pytest.mark.parametrize("mixed_padding", [None, 0])
def test_mixed_view_is_cropped_with_its_padding_from_the_same_stream(loader, mixed_padding):
    method, _ = make_dat(loader.augment, mixed_padding=mixed_padding)
    x_raw, _ = next(iter(loader))
    replay = torch.Generator()
    replay.set_state(loader.generator.get_state())
    x = loader.augment(x_raw)  # the benign view first, as DAT.prepare draws it
    torch.manual_seed(1)
    v = method.views(x_raw)
    mixed = recompose(mix_amplitude(v["amplitude"], v["distractor"], v["lam"]), v["phase"])
    assert torch.equal(x, random_crop_flip(x_raw, 4, False, replay))
    assert not torch.equal(x, x_raw)  # the benign view's offsets are not all zero
    padding = 4 if mixed_padding is None else mixed_padding
    assert torch.equal(v["x_hat"], random_crop_flip(mixed, padding, False, replay))
    if mixed_padding == 0:  # zero offsets: x_hat is the mixed image itself
        assert torch.equal(v["x_hat"], mixed.detach())
    # either way the same number of draws: the loader's later batches are unchanged
    assert torch.equal(loader.generator.get_state(), replay.get_state())


def test_mixed_padding_needs_an_augmentation_whose_padding_it_can_set(data):
    x_raw = data[0][:8].float() / 255
    method, _ = make_dat(mixed_padding=3)  # no augmentation (the report's figure): no crop
    torch.manual_seed(1)
    v = method.views(x_raw)
    mixed = recompose(mix_amplitude(v["amplitude"], v["distractor"], v["lam"]), v["phase"])
    assert torch.equal(v["x_hat"], mixed.detach())
    with pytest.raises(ConfigError, match="mixed_padding=3"):
        make_dat(lambda x: random_crop_flip(x, 2), mixed_padding=3)
    loader = BatchLoader(*data, 32, augment=True, yield_raw=True)
    for bad in (-1, 29):  # 28x28 images
        with pytest.raises(ConfigError, match=f"mixed_padding={bad} must be an integer in 0..28"):
            make_dat(loader.augment, mixed_padding=bad)
    with pytest.raises(ConfigError, match="eaeg_label_smoothing=1.5 must lie in"):
        make_dat(eaeg_label_smoothing=1.5)


def test_eaeg_label_smoothing_reaches_the_attack_and_not_the_training_loss(data):
    x, y = data[0].float() / 255, data[1]
    batches, losses = {}, {}
    for name, options in {
        "attack0": {"label_smoothing": 0.5, "eaeg_label_smoothing": 0.0},
        "same": {"label_smoothing": 0.5},
        "train0": {"label_smoothing": 0.0},
    }.items():
        method, net = make_dat(**options)
        torch.manual_seed(1)
        b = batches[name] = method.prepare(x, y)
        if name == "attack0":  # the EAEG built by hand with the attack's smoothing, 0
            by_hand = TradesKL(net, EPS, EPS / 4, 3, beta=15.0, ce_weight=1.0, label_smoothing=0)
            torch.manual_seed(1)
            assert torch.equal(b["x_adv"], by_hand(x, y))
            torch.manual_seed(2)
            x_hat_adv = method.attack_mixed(b["x_hat"].detach(), y)
            torch.manual_seed(2)
            with bn_branch(net, "aux"):
                assert torch.equal(x_hat_adv, by_hand(b["x_hat"].detach(), y))
        net.train()
        losses[name] = method.loss(net, batches["attack0"])[0].item()
    assert not torch.equal(batches["attack0"]["x_adv"], batches["same"]["x_adv"])
    assert not torch.equal(batches["attack0"]["x_hat_adv"], batches["same"]["x_hat_adv"])
    # the training loss on one batch: the training smoothing's (0.5), whatever the attack's
    assert losses["attack0"] == losses["same"] != losses["train0"]


@pytest.mark.parametrize("name", DAT_PRESETS)
def test_paper_dat_presets_follow_the_reference_protocol(name):
    assert len(DAT_PRESETS) == 6
    cfg = load_config(name)
    options = method_options(cfg.method)
    tiny = "tiny_imagenet" in name
    assert options.reference_bn_updates
    assert options.label_smoothing == 0.5
    assert options.eaeg_label_smoothing == (0.0 if tiny else None)  # None: the training's 0.5
    assert cfg.data.padding == (2 if tiny else 4)
    assert options.mixed_padding == (2 if tiny else 3)
    assert cfg.averaging.name == "none"
    assert cfg.data.val_per_class == 10 and cfg.train.val_attack_steps == 20


def test_small_dat_preset_keeps_the_lean_defaults():
    options = method_options(load_config("small/fashion_mnist_dat").method)
    assert not options.reference_bn_updates
    assert options.mixed_padding is None and options.eaeg_label_smoothing is None
