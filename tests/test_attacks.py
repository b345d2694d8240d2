"""phaseguard.attacks on a real smallcnn trained for a few seconds on real Fashion-MNIST images.

Every attack goes through one parametrised contract test (ball, [0, 1], shape and dtype, modes
and requires_grad restored exactly, no parameter gradients, eps=0 is the identity, robust
accuracy below clean); then the behaviours of single attacks and the AutoAttack adapter.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phaseguard.attacks import (
    CW,
    FGSM,
    PGD,
    Attack,
    CWLinf,
    TradesKL,
    build_attack,
    list_attacks,
    run_autoattack,
)
from phaseguard.attacks.pgd import cw_margin
from phaseguard.data import load_dataset
from phaseguard.errors import ConfigError, DataError
from phaseguard.models import bn_branch, convert_split_bn, create_model
from phaseguard.models.split_bn import SplitBatchNorm

EPS = 0.1  # the usual linf radius on Fashion-MNIST
EPS_L2 = 1.5

# name -> (norm, factory(model, eps)); steps are kept small, the suite runs on two CPU cores.
CASES: dict[str, tuple[str, Callable[[nn.Module, float], Attack]]] = {
    "fgsm": ("linf", lambda m, eps: FGSM(m, eps)),
    "fgsm-rs": ("linf", lambda m, eps: FGSM(m, eps, random_start=True)),
    "pgd-linf": ("linf", lambda m, eps: PGD(m, eps, eps / 4, 10)),
    "pgd-l2": ("l2", lambda m, eps: PGD(m, eps, eps / 4, 10, norm="l2")),
    "pgd-restarts": ("linf", lambda m, eps: PGD(m, eps, eps / 4, 5, restarts=3)),
    "cw": ("linf", lambda m, eps: CWLinf(m, eps, eps / 4, 10)),
    "trades-kl": ("linf", lambda m, eps: TradesKL(m, eps, eps / 4, 5)),
    "dat-eaeg": (
        "linf",
        lambda m, eps: TradesKL(m, eps, eps / 4, 5, beta=15.0, ce_weight=1.0, label_smoothing=0.5),
    ),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run on one thread: these batches are small, and two threads on a shared 2-core machine
    were measured up to ten times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def trained_smallcnn() -> tuple[nn.Module, Tensor, Tensor]:
    """smallcnn (width 8) trained 2 epochs on 2000 Fashion-MNIST images (~75% clean accuracy).

    Returns (model in eval mode, 200 test images float [200, 1, 28, 28] in [0, 1], labels).
    Shared by the attack test modules: copy it before changing it.
    """
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist")
    x, y = data.x_train[:2000].float() / 255, data.y_train[:2000]
    model = create_model("smallcnn", 10, 1, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        for idx in torch.randperm(len(y)).split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), data.x_test[:200].float() / 255, data.y_test[:200]


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    return trained_smallcnn()


def correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return correct(model, x, y).float().mean().item()


def assert_in_ball(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5


def mode_setups() -> dict[str, Callable[[nn.Module], None]]:
    def mixed(model: nn.Module) -> None:
        model.train()
        model.features[0][1].eval()  # one BatchNorm in eval mode, the rest in train mode
        model.fc.bias.requires_grad_(False)

    return {"train": lambda m: m.train(), "eval": lambda m: m.eval(), "mixed": mixed}


@pytest.mark.parametrize("name", list(CASES))
def test_attack_contract(trained: tuple[nn.Module, Tensor, Tensor], name: str) -> None:
    base, x, y = trained
    norm, make = CASES[name]
    eps = EPS if norm == "linf" else EPS_L2
    model = copy.deepcopy(base)

    for setup_name, setup in mode_setups().items():
        setup(model)
        modes = [m.training for m in model.modules()]
        requires = [p.requires_grad for p in model.parameters()]
        make(model, eps)(x[:8], y[:8])
        assert [m.training for m in model.modules()] == modes, setup_name
        assert [p.requires_grad for p in model.parameters()] == requires, setup_name
        assert all(p.grad is None for p in model.parameters()), setup_name
    model = copy.deepcopy(base)

    clean = accuracy(model, x, y)
    x_before = x.clone()
    torch.manual_seed(0)
    x_adv = make(model, eps)(x, y)
    assert torch.equal(x, x_before)
    assert not x_adv.requires_grad
    assert_in_ball(x_adv, x, eps, norm)
    robust = accuracy(model, x_adv, y)
    assert robust < clean, (robust, clean)

    x_zero = make(model, 0.0)(x[:32], y[:32])
    assert torch.equal(x_zero, x[:32])
    assert accuracy(model, x_zero, y[:32]) == accuracy(model, x[:32], y[:32])


@pytest.mark.parametrize("name", list(CASES))
def test_attack_under_cpu_bf16_autocast(trained: tuple[nn.Module, Tensor, Tensor], name: str):
    model, x, y = trained
    norm, make = CASES[name]
    eps = EPS if norm == "linf" else EPS_L2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = make(model, eps)(x[:32], y[:32])
    assert_in_ball(x_adv, x[:32], eps, norm)
    assert accuracy(model, x_adv, y[:32]) < accuracy(model, x[:32], y[:32])


def test_more_pgd_steps_do_not_help_the_model(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    torch.manual_seed(0)
    acc5 = accuracy(model, PGD(model, EPS, EPS / 4, 5)(x, y), y)
    torch.manual_seed(0)
    acc20 = accuracy(model, PGD(model, EPS, EPS / 4, 20)(x, y), y)
    assert acc20 <= acc5 + 0.02


def test_restarts_keep_the_per_sample_worst_case(trained: tuple[nn.Module, Tensor, Tensor]):
    model, x, y = trained
    torch.manual_seed(0)
    broken1 = ~correct(model, PGD(model, EPS, EPS / 4, 1)(x, y), y)
    torch.manual_seed(0)  # the first of the five runs draws the same start as the single run
    broken3 = ~correct(model, PGD(model, EPS, EPS / 4, 1, restarts=5)(x, y), y)
    assert (broken3 | ~broken1).all()  # broken by one run -> by the best of five
    assert broken3.sum() > broken1.sum()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_attack_works_with_grad_disabled(
    trained: tuple[nn.Module, Tensor, Tensor], context: Callable[[], object]
) -> None:
    model, x, y = trained
    with context():
        x_adv = PGD(model, EPS, EPS / 4, 5)(x[:64], y[:64])
    assert accuracy(model, x_adv, y[:64]) < accuracy(model, x[:64], y[:64])


def test_cw_margin_values() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    assert cw_margin(logits, y).tolist() == [-1.0, 0.0]  # clamped at 0 once misclassified
    assert cw_margin(logits, y, kappa=5.0).tolist() == [-1.0, 1.0]
    # targeted: z_t - max_{j != t} z_j, clamped at kappa once the target wins
    assert cw_margin(logits, y, targeted=True).tolist() == [0.0, -1.0]
    assert cw_margin(logits, y, kappa=5.0, targeted=True).tolist() == [1.0, -1.0]


def test_torchattacks_spellings_build_the_same_attacks(trained: tuple[nn.Module, Tensor, Tensor]):
    model, x, y = trained
    pgd = PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    assert (pgd.step, pgd.alpha, pgd.steps, pgd.random_start) == (2 / 255, 2 / 255, 10, True)
    assert CWLinf(model, alpha=0.01).step == 0.01 and TradesKL(model, alpha=0.01).step == 0.01
    assert FGSM(model, 0.1, step=0.05).step == 0.05 == FGSM(model, 0.1, alpha=0.05).step
    assert CW is CWLinf and CWLinf(model).steps == 30 and CWLinf(model).step == 2 / 255
    with pytest.raises(ConfigError, match="step=0.1 or alpha=0.2, not both"):
        PGD(model, step=0.1, alpha=0.2)
    torch.manual_seed(0)
    by_alpha = PGD(model, EPS, alpha=EPS / 4, steps=3)(x[:32], y[:32])
    torch.manual_seed(0)
    assert torch.equal(by_alpha, PGD(model, EPS, EPS / 4, 3)(x[:32], y[:32]))


def hits(model: nn.Module, x_adv: Tensor, target: Tensor) -> Tensor:
    """bool [B]: classified as ``target``."""
    with torch.no_grad():
        return model(x_adv).argmax(1) == target


@pytest.mark.parametrize("make", [PGD, CWLinf], ids=["ce", "cw"])
def test_targeted_attacks_drive_images_to_their_target(
    trained: tuple[nn.Module, Tensor, Tensor], make: type[PGD]
) -> None:
    model, x, y = trained
    target = (y + 1) % 10  # no clean image is classified as its target
    eps = 0.2  # some targets (a trouser made a pullover) need a wider ball than 0.1
    torch.manual_seed(0)
    targeted = make(model, eps, eps / 8, 20, targeted=True)(x, target)
    torch.manual_seed(0)
    untargeted = make(model, eps, eps / 8, 20)(x, y)
    assert not hits(model, x, target).any()
    assert hits(model, targeted, target).float().mean() > 0.6  # measured: 0.77 (ce), 0.74 (cw)
    assert hits(model, untargeted, target).float().mean() < 0.3  # measured: 0.16
    assert_in_ball(targeted, x, eps, "linf")


def test_targeted_restarts_keep_the_first_run_that_reaches_the_target(
    trained: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = trained
    target = (y + 1) % 10
    torch.manual_seed(0)
    once = hits(model, PGD(model, EPS, EPS / 4, 5, targeted=True)(x, target), target)
    torch.manual_seed(0)  # the first of three runs draws the same start as the single run
    thrice = hits(model, PGD(model, EPS, EPS / 4, 5, restarts=3, targeted=True)(x, target), target)
    assert (thrice | ~once).all()  # reached by the first run -> kept
    assert thrice.sum() > once.sum()


def test_pgd_spelled_like_torchattacks_matches_it_untargeted_and_targeted(
    trained: tuple[nn.Module, Tensor, Tensor],
) -> None:
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    model, x, y = trained
    target = (y + 1) % 10
    options = {"eps": EPS, "alpha": EPS / 4, "steps": 10, "random_start": True}
    torch.manual_seed(0)
    ours = correct(model, PGD(model, **options)(x, y), y)
    torch.manual_seed(0)
    theirs = correct(model, torchattacks.PGD(model, **options)(x, y), y)
    assert abs(int(ours.sum()) - int(theirs.sum())) <= len(y) // 100
    torch.manual_seed(0)
    ours = hits(model, PGD(model, **options, targeted=True)(x, target), target)
    peer = torchattacks.PGD(model, **options)
    peer.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    theirs = hits(model, peer(x, target), target)
    assert int(ours.sum()) > 0 and abs(int(ours.sum()) - int(theirs.sum())) <= len(y) // 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(CASES))
def test_attack_runs_on_the_models_device(
    trained: tuple[nn.Module, Tensor, Tensor], name: str
) -> None:
    base, x, y = trained
    norm, make = CASES[name]
    eps = EPS if norm == "linf" else EPS_L2
    model = copy.deepcopy(base).cuda()
    x_adv = make(model, eps)(x[:32], y[:32])  # images on the CPU, the model on the GPU
    assert x_adv.is_cuda and next(model.parameters()).is_cuda
    assert_in_ball(x_adv.cpu(), x[:32], eps, norm)
    assert accuracy(model, x_adv, y[:32].cuda()) < accuracy(model, x[:32].cuda(), y[:32].cuda())


def count_forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_trades_kl_computes_the_clean_target_once(trained: tuple[nn.Module, Tensor, Tensor]):
    base, x, y = trained
    model = copy.deepcopy(base)
    calls = count_forwards(model)
    attack = TradesKL(model, EPS, EPS / 4, steps=4)
    torch.manual_seed(0)
    x_adv = attack(x[:16], y[:16])
    assert calls[0] == 4 + 1
    with torch.no_grad():
        target = model(x[:16])
    calls[0] = 0
    torch.manual_seed(0)
    assert torch.equal(attack(x[:16], y[:16], target_logits=target), x_adv)
    assert calls[0] == 4


def test_trades_kl_keeps_a_path_to_the_input(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    x = x[:16].clone().requires_grad_(True)
    # 5 steps of eps/4 reach the boundary, as DAT's 5 steps of 2/255 reach 8/255.
    attack = TradesKL(model, EPS, EPS / 4, steps=5)
    x_adv = attack(x, y[:16], keep_graph_to_input=True)
    assert x_adv.requires_grad
    F.cross_entropy(model(x_adv), y[:16]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)

    # The gradient reaches x exactly where the last projection clipped to the ball.
    x.grad = None
    x_adv = attack(x, y[:16], keep_graph_to_input=True)
    x_adv.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    on_boundary = ((x_adv - x).abs() - EPS).abs() < 1e-6
    assert (x.grad == 1).sum() > 0
    assert ((x.grad == 0) | on_boundary).all()
    assert not attack(x, y[:16]).requires_grad


def test_trades_kl_runs_on_the_callers_bn_branch(trained: tuple[nn.Module, Tensor, Tensor]):
    base, x, y = trained
    model = convert_split_bn(copy.deepcopy(base))
    ran = {"main": 0, "aux": 0}
    for m in model.modules():
        if isinstance(m, SplitBatchNorm):
            for branch in ran:
                getattr(m, branch).register_forward_hook(
                    lambda *_, b=branch: ran.__setitem__(b, ran[b] + 1)
                )
    with bn_branch(model, "aux"):
        TradesKL(model, EPS, EPS / 4, steps=2)(x[:8], y[:8])
        assert all(m.branch == "aux" for m in model.modules() if isinstance(m, SplitBatchNorm))
    assert ran["main"] == 0 and ran["aux"] > 0


def test_mode_restored_when_the_model_raises() -> None:
    class Boom(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.BatchNorm2d(1), Boom()).train()
    model[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        PGD(model)(torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    assert model.training and model[0].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad


def test_registry_builds_the_protocol_attacks(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model = trained[0]
    assert list_attacks() == ["fgsm", "pgd20", "pgd100", "cw"]
    fgsm = build_attack("fgsm", model, eps=8 / 255)
    assert isinstance(fgsm, FGSM) and fgsm.random_start and fgsm.step == pytest.approx(10 / 255)
    for name, steps in [("pgd20", 20), ("pgd100", 100)]:
        attack = build_attack(name, model, eps=8 / 255)
        assert type(attack) is PGD and attack.steps == steps and attack.random_start
        assert attack.step == pytest.approx(2 / 255) and attack.loss == "ce"
    cw = build_attack("cw", model, eps=0.5, norm="l2")
    assert isinstance(cw, CWLinf) and cw.steps == 30 and cw.norm == "l2" and cw.loss == "cw"
    with pytest.raises(ConfigError, match="fgsm, pgd20, pgd100, cw"):
        build_attack("pgd7", model, eps=8 / 255)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: PGD(m, eps=-0.1),
        lambda m: PGD(m, norm="l3"),
        lambda m: PGD(m, loss="dlr"),
        lambda m: PGD(m, steps=-1),
        lambda m: PGD(m, restarts=0),
        lambda m: TradesKL(m, label_smoothing=1.5),
        lambda m: build_attack("pgd20", m, eps=float("nan")),
    ],
)
def test_invalid_options_raise_config_error(make: Callable[[nn.Module], Attack]) -> None:
    with pytest.raises(ConfigError):
        make(nn.Linear(2, 2))


def test_malformed_batches_raise_data_error(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    attack = PGD(model, steps=1)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        attack(x[:4] * 255, y[:4])
    with pytest.raises(DataError, match="labels"):
        attack(x[:4], y[:3])
    with pytest.raises(DataError, match="float"):
        attack((x[:4] * 255).to(torch.uint8), y[:4])
    with pytest.raises(DataError, match="target_logits"):
        TradesKL(model, steps=1)(x[:4], y[:4], target_logits=torch.zeros(3, 10))


# -- AutoAttack adapter ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def autoattack_installed() -> None:
    pytest.importorskip("pyautoattack", reason="pyautoattack (the official AutoAttack) missing")


@pytest.mark.usefixtures("autoattack_installed")
def test_autoattack_is_at_least_as_strong_as_pgd(trained: tuple[nn.Module, Tensor, Tensor]):
    base, x, y = trained
    model = copy.deepcopy(base).train()
    x, y = x[:50], y[:50]
    robust = run_autoattack(model, x, y, eps=EPS, version="custom", attacks=["apgd-ce", "apgd-t"])
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
    torch.manual_seed(0)
    pgd20 = accuracy(model, PGD(model, EPS, EPS / 4, 20)(x, y), y)
    assert robust.dtype == torch.bool and robust.shape == (50,)
    assert not (robust & ~correct(model, x, y)).any()  # robust implies clean-correct
    assert robust.float().mean().item() <= pgd20 + 0.02


@pytest.mark.usefixtures("autoattack_installed")
def test_autoattack_takes_channels_last_models_and_inputs(
    trained: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model = copy.deepcopy(trained[0]).to(memory_format=torch.channels_last)
    x = trained[1][:4].contiguous(memory_format=torch.channels_last)
    y = trained[2][:4]
    # A small eps leaves images for APGD-DLR, whose gradient check is what failed on this layout.
    robust = run_autoattack(model, x, y, eps=0.002, version="custom", attacks=["apgd-dlr"])
    assert robust.shape == (4,) and robust.any()


class Interrupted(Exception):
    pass


class StopAfter(nn.Module):
    """Wraps a model and raises Interrupted after ``calls`` forwards (a killed evaluation)."""

    def __init__(self, net: nn.Module, calls: int) -> None:
        super().__init__()
        self.net, self.left = net, calls

    def forward(self, x: Tensor) -> Tensor:
        self.left -= 1
        if self.left < 0:
            raise Interrupted
        return self.net(x)


@pytest.mark.usefixtures("autoattack_installed")
def test_autoattack_resumes_from_its_state_file(
    trained: tuple[nn.Module, Tensor, Tensor], tmp_path: Path
) -> None:
    model, x, y = trained
    x, y = x[:24], y[:24]
    options = dict(eps=EPS, version="custom", attacks=["apgd-ce", "apgd-t"], batch_size=8)
    counted = StopAfter(model, 10**9)
    expected = run_autoattack(counted, x, y, **options)
    assert expected.sum() < len(y)

    state = tmp_path / "aa.json"
    with pytest.raises(Interrupted):  # killed half-way through
        run_autoattack(
            StopAfter(model, (10**9 - counted.left) // 2), x, y, state_path=state, **options
        )
    saved = json.loads(state.read_text())
    assert saved["done"] == [] and saved["next_index"] > 0  # stopped inside APGD-CE

    assert torch.equal(run_autoattack(model, x, y, state_path=state, **options), expected)
    assert json.loads(state.read_text())["done"] == ["apgd-ce", "apgd-t"]
    finished = StopAfter(model, 0)  # a finished state needs no forward at all
    assert torch.equal(run_autoattack(finished, x, y, state_path=state, **options), expected)

    # A state of other weights or settings is never returned: the run starts over.
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        next(retrained.parameters()).mul_(-1)
    lines: list[str] = []
    assert torch.equal(
        run_autoattack(retrained, x, y, state_path=state, log=lines.append, **options),
        run_autoattack(retrained, x, y, **options),
    )
    assert "another model_sha256" in lines[0] and lines[0].endswith("starting over")
    run_autoattack(retrained, x[:8], y[:8], state_path=state, log=lines.append, **options)
    assert "another n, data_sha256" in lines[-3]


@pytest.mark.usefixtures("autoattack_installed")
def test_autoattack_rejects_bad_options(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    with pytest.raises(ConfigError, match="custom"):
        run_autoattack(model, x[:2], y[:2], attacks=["apgd-ce"])
    with pytest.raises(ConfigError, match="known attacks"):
        run_autoattack(model, x[:2], y[:2], version="custom", attacks=["pgd"])
    with pytest.raises(ConfigError, match="norm"):
        run_autoattack(model, x[:2], y[:2], norm="Lfoo")
