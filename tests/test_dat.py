"""DAT's iteration on real images: branches, generator gradient and ascent, ablation switches."""

from __future__ import annotations

import socket
import weakref

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from phaseguard.build import build_method
from phaseguard.config import AttackConfig, Config
from phaseguard.data import load_dataset, random_crop_flip
from phaseguard.errors import ConfigError
from phaseguard.methods.adversarial import kl_div
from phaseguard.methods.dat import distractor_statistics, js_divergence
from phaseguard.methods.objective import objective_loss
from phaseguard.models import SplitBatchNorm, bn_branch, create_model, has_split_bn, list_models
from phaseguard.spectrum import mix_amplitude, recompose
from phaseguard.training.step import ScaledBackward, TrainingStep

EPS = 0.1


@pytest.fixture(scope="module")
def batch():
    ds = load_dataset("fashion-mnist")
    return ds.x_train[:64].float() / 255, ds.y_train[:64]


def make_dat(seed: int = 0, augment: bool = True, **options):
    torch.manual_seed(seed)
    section = {"name": "dat", **options}
    split = section.get("split_bn", True) and section.get("mixed_branch", True)
    net = create_model("smallcnn", 10, 1, split_bn=split, width=8)
    g = torch.Generator().manual_seed(seed)
    cfg = Config(attack=AttackConfig(eps=EPS, step=EPS / 4, steps=5), method=section)
    crop_flip = (lambda x: random_crop_flip(x, 2, True, g)) if augment else None
    return build_method(cfg, net, 10, (1, 28, 28), augment=crop_flip), net


def run_prepare(method, batch, seed=1):
    torch.manual_seed(seed)
    return method.prepare(*batch)


def generator_params(method):
    return list(method.generator.module.parameters())


class RecordingBackward(ScaledBackward):
    """The trainer's backward (no gradient scaling), keeping each piece's value."""

    def __init__(self, model):
        super().__init__(model, torch.amp.GradScaler("cpu", enabled=False))
        self.pieces = []

    def __call__(self, piece):
        self.pieces.append(piece.detach())
        super().__call__(piece)


def test_views_stay_in_their_balls_and_x_hat_keeps_a_path_to_the_generator(batch):
    method, _ = make_dat()
    b = run_prepare(method, batch)
    for view in ("x", "x_adv", "x_hat", "x_hat_adv"):
        assert b[view].shape == batch[0].shape and b[view].min() >= 0 and b[view].max() <= 1
    assert (b["x_adv"] - b["x"]).abs().max() <= EPS + 1e-6
    assert (b["x_hat_adv"] - b["x_hat"]).abs().max() <= EPS + 1e-6
    assert b["x_hat"].requires_grad and b["x_hat_adv"].requires_grad
    assert not b["x_adv"].requires_grad
    assert not torch.allclose(b["x_hat"], b["x"])


def test_aux_branch_sees_only_mixed_views_and_main_never_does(batch):
    method, net = make_dat()
    first = next(m for m in net.modules() if isinstance(m, SplitBatchNorm))
    seen: list[tuple[str, torch.Tensor]] = []
    net.register_forward_pre_hook(lambda m, args: seen.append(["?", args[0].detach()]))
    for name in ("main", "aux"):
        getattr(first, name).register_forward_pre_hook(
            lambda m, args, name=name: seen[-1].__setitem__(0, name)
        )
    b = run_prepare(method, batch)
    x_raw, x, x_hat = batch[0], b["x"], b["x_hat"].detach()

    def near(u, v):
        return (u - v).abs().amax() <= EPS + 1e-5

    assert {branch for branch, _ in seen} == {"main", "aux"}
    for branch, inp in seen:  # generator logits, EAEG(x) on main; EAEG(x_hat) on aux
        if branch == "main":
            assert torch.equal(inp, x_raw) or near(inp, x)
        else:
            assert near(inp, x_hat) and not near(inp, x)
    seen.clear()
    net.train()
    method.loss(net, b)
    assert [branch for branch, _ in seen] == ["main", "main", "aux", "aux"]
    expected = [b["x"], b["x_adv"], b["x_hat"], b["x_hat_adv"]]
    assert all(torch.equal(inp, e.detach()) for (_, inp), e in zip(seen, expected))


def test_main_statistics_do_not_move_during_the_aux_forwards(batch):
    method, net = make_dat()
    b = run_prepare(method, batch)
    net.train()
    mains = [m.main for m in net.modules() if isinstance(m, SplitBatchNorm)]
    before = [m.running_mean.clone() for m in mains]
    spec = method.objective(b, b["x_hat"].detach(), b["x_hat_adv"].detach())
    hat_branches = [br for br in spec.branches if br.name in ("x_hat", "x_hat_adv")]
    objective_loss(net, hat_branches, spec.terms[:1])
    assert all(torch.equal(m.running_mean, r) for m, r in zip(mains, before))


def test_generator_gets_gradient_and_its_step_increases_l_dat(batch):
    method, net = make_dat(generator_lr=0.5)
    b = run_prepare(method, batch)
    trainable = method.trainables()["generator"]
    assert trainable.maximise and not trainable.joint and trainable.lr == 0.5
    loss = method.trainable_loss("generator", b)
    (-loss).backward(retain_graph=True)
    grads = [p.grad for p in generator_params(method)]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in net.parameters())  # no classifier weight gradients

    # Same batch, z and lam, same adversarial perturbation of x_hat: one generator step (first
    # SGD step: momentum buffer = gradient) raises the L_DAT terms that depend on G.
    method, net = make_dat(generator_lr=1.0, augment=False)

    def regenerated(b, delta):
        torch.manual_seed(11)
        x_hat = method.views(batch[0])["x_hat"]
        return {**b, "x_hat": x_hat, "x_hat_adv": (x_hat + delta).clamp(0, 1)}

    b = run_prepare(method, batch, seed=7)
    delta = (b["x_hat_adv"] - b["x_hat"]).detach()
    b = regenerated(b, delta)
    loss = method.trainable_loss("generator", b)
    ascent = torch.optim.SGD(generator_params(method), lr=1.0, maximize=True)
    loss.backward()
    ascent.step()
    assert method.trainable_loss("generator", regenerated(b, delta)).item() > loss.item()


def test_reference_bn_updates_switch_only_changes_running_statistics(batch):
    losses, stats = [], []
    for reference in (False, True):
        method, net = make_dat(reference_bn_updates=reference)
        b = run_prepare(method, batch)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        losses.append(method.trainable_loss("generator", b).item())
        after = net.state_dict()
        stats.append(any(not torch.equal(before[k], after[k]) for k in before))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert stats == [False, True]


def test_js_switch_removes_exactly_the_js_term(batch):
    totals = {}
    for js in (True, False):
        method, net = make_dat(js=js)
        b = run_prepare(method, batch)
        net.train()
        totals[js] = method.loss(net, b)[0].item()
        if js:
            with torch.no_grad():
                net.train()
                clean = net(b["x"]).float()
                with bn_branch(net, "aux"):
                    hat = net(b["x_hat"]).float()
            js_term = 2.0 * js_divergence(clean, hat).item()
    assert totals[True] - totals[False] == pytest.approx(js_term, rel=1e-3, abs=1e-5)


def test_no_mixup_uses_x_as_x_hat_and_never_calls_the_generator(batch):
    method, _ = make_dat(mixup=False)
    b = run_prepare(method, batch)
    assert torch.equal(b["x_hat"], b["x"])
    assert method.trainables() == {}  # nothing for the trainer to step or checkpoint


def test_eaeg_only_is_l_at_of_x_and_x_adv_alone(batch):
    method, net = make_dat(mixed_branch=False, split_bn=True)
    assert not type(method).wants_split_bn(method.options)  # no x_hat: nothing for an aux BN
    b = run_prepare(method, batch)
    assert "x_hat" not in b and "x_hat_adv" not in b
    net.train()
    loss, metrics = method.loss(net, b)
    net.train()
    logits, logits_adv = net(b["x"]).float(), net(b["x_adv"]).float()
    ce = torch.nn.functional.cross_entropy(logits, b["y"], label_smoothing=0.5)
    kl = kl_div(logits, logits_adv).mean()
    assert loss.item() == pytest.approx((ce + 15.0 * kl).item(), rel=1e-5)
    assert set(metrics) == {"acc", "acc_adv"} and method.trainables() == {}


def test_no_split_bn_model_has_plain_bn_and_both_views_use_it(batch):
    method, net = make_dat(split_bn=False)
    assert not has_split_bn(net)
    b = run_prepare(method, batch)
    assert b["x_hat"].requires_grad  # the generator still trains


def test_random_amplitude_replaces_the_generator(batch):
    method, _ = make_dat(amplitude="random")
    b = run_prepare(method, batch)
    assert not b["x_hat"].requires_grad
    assert not torch.allclose(b["x_hat"], b["x"])
    assert method.trainables() == {}


def test_joint_update_moves_generator_against_the_classifier(batch):
    method, net = make_dat(generator_update="joint")
    b = run_prepare(method, batch)
    net.train()
    loss, _ = method.loss(net, b)
    loss.backward()
    # gradient reversal: the generator receives the negative of dL/dx_hat
    assert method.trainables()["generator"].joint
    assert all(p.grad is not None for p in generator_params(method))
    assert all(p.grad is not None for p in net.parameters())


SHAPES = {"smallcnn": (1, 28, 28), "resnet18": (3, 64, 64), "preact_resnet18": (3, 32, 32)}


@pytest.mark.parametrize("name", list_models())
def test_one_dat_iteration_on_every_model(name):
    """The trainer's iteration (prepare, loss, classifier step, generator step) on every
    registered architecture."""
    shape = SHAPES.get(name, (3, 16, 16))  # the WRNs: small images keep this fast
    kwargs = {"depth": 10, "widen_factor": 2} if name == "wrn" else {}
    torch.manual_seed(0)
    net = create_model(name, 10, shape[0], split_bn=True, **kwargs)
    attack = AttackConfig(eps=EPS, step=EPS, steps=1)
    cfg = Config(attack=attack, method={"name": "dat", "eaeg_steps": 1})
    method = build_method(cfg, net, 10, shape)
    x, y = torch.rand(4, *shape), torch.randint(0, 10, (4,))
    step = TrainingStep(method, net, torch.optim.SGD(net.parameters(), lr=0.1))
    before = [p.clone() for p in net.parameters()]
    gen_before = [p.clone() for p in generator_params(method)]
    net.train()
    loss, metrics = step(x, y)
    assert torch.isfinite(loss) and torch.isfinite(metrics["generator_loss"])
    assert all(p.grad is not None for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(gen_before, generator_params(method)))


def test_lean_generator_step_has_the_reference_gradient(batch):
    """docs/dat.md section 12: dropping the x/x' terms, the weight gradients and the extra graph
    from the generator step changes no gradient that reaches G. The reference computes -L_DAT
    over all four branches with the classifier's weights trainable; written out independently
    here."""
    method, net = make_dat(reference_bn_updates=True)
    b = run_prepare(method, batch)
    params = generator_params(method)
    lean = torch.autograd.grad(-method.trainable_loss("generator", b), params, retain_graph=True)

    import torch.nn.functional as F

    def kl(p_logits, q_logits):  # KL(softmax p || softmax q), batch mean
        return F.kl_div(
            q_logits.log_softmax(1), p_logits.log_softmax(1), reduction="batchmean", log_target=True
        )

    y = b["y"]
    net.train()
    f_x, f_xa = net(b["x"]), net(b["x_adv"])
    with bn_branch(net, "aux"):
        f_h, f_ha = net(b["x_hat"]), net(b["x_hat_adv"])
    l_at = (
        F.cross_entropy(f_x, y, label_smoothing=0.5)
        + 15 * kl(f_x, f_xa)
        + F.cross_entropy(f_h, y, label_smoothing=0.5)
        + 15 * kl(f_h, f_ha)
    ) / 2
    p, q = f_x.softmax(1), f_h.softmax(1)
    m = ((p + q) / 2).clamp(1e-7, 1)
    js = ((p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)).mean() / 2
    reference = torch.autograd.grad(-(l_at + 2 * js), params)
    assert all(r.abs().sum() > 0 for r in reference[-2:])
    for a, r in zip(lean, reference):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def _gradients(method, net, b, staged: bool):
    """Loss value, classifier and generator gradients and BN buffers after one classifier
    backward, through :meth:`loss` (one backward) or :meth:`loss_and_backward` (pieces)."""
    net.zero_grad(set_to_none=True)
    method.generator.module.zero_grad(set_to_none=True)
    net.train()
    if staged:
        backward = RecordingBackward(net)
        loss, _ = method.loss_and_backward(net, b, backward)
        pieces = backward.pieces
    else:
        loss, _ = method.loss(net, b)
        loss.backward()
        pieces = [loss.detach()]
    grads = [p.grad.clone() for p in net.parameters()]
    gen = [None if p.grad is None else p.grad.clone() for p in generator_params(method)]
    return loss.detach(), grads, gen, [t.clone() for t in net.buffers()], pieces


@pytest.mark.parametrize(
    "options",
    [{}, {"generator_update": "joint"}, {"js": False}, {"split_bn": False}, {"mixup": False}],
    ids=["sequential", "joint", "no_js", "no_split_bn", "no_mixup"],
)
def test_backward_in_pieces_equals_the_one_loss_backward(batch, options):
    """Training's staged backward (at most two branch graphs alive) gives the loss's value,
    its weight and generator gradients and the same BN statistics as one backward of it."""
    results = []
    for staged in (False, True):
        method, net = make_dat(**options)
        b = run_prepare(method, batch)
        results.append(_gradients(method, net, b, staged))
    (loss, grads, gen, buffers, _), (loss_s, grads_s, gen_s, buffers_s, pieces) = results
    assert torch.equal(loss, loss_s)
    # x' alone, then x, then x_hat with x_hat' (without JS, x and x' both after x')
    assert len(pieces) == 3
    for a, s in zip(grads, grads_s, strict=True):
        torch.testing.assert_close(s, a, rtol=1e-5, atol=1e-7)
    for a, s in zip(buffers, buffers_s, strict=True):
        assert torch.equal(a, s)
    joint = options.get("generator_update") == "joint"
    assert all((g is not None) == joint for g in gen_s)
    for a, s in zip(gen, gen_s, strict=True):
        if joint:
            torch.testing.assert_close(s, a, rtol=1e-5, atol=1e-7)


class _SavedBytes:
    """Bytes of tensors that autograd graphs hold for their backward, now and at the peak."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def pack(self, t: torch.Tensor) -> _Held:
        held = _Held(t)
        self.now += held.nbytes
        self.peak = max(self.peak, self.now)
        weakref.finalize(held, self._release, held.nbytes)
        return held

    def _release(self, nbytes: int) -> None:
        self.now -= nbytes


class _Held:
    def __init__(self, t: torch.Tensor) -> None:
        self.t, self.nbytes = t, t.numel() * t.element_size()


def test_training_backward_keeps_at_most_two_branch_graphs_alive(batch):
    """The graphs the classifier's backward needs peak at two branches' worth in training
    (loss_and_backward), against all four for one backward of the whole loss."""
    peaks = []
    for staged in (False, True):
        method, net = make_dat()
        b = run_prepare(method, batch)
        saved = _SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda held: held.t):
            _gradients(method, net, b, staged)
        peaks.append(saved.peak)
        assert saved.now == 0  # every graph freed by its backward
    one_loss, staged = peaks
    assert 0.4 * one_loss < staged < 0.6 * one_loss, peaks


def test_backward_in_pieces_under_ddp_reduces_every_parameter(batch, monkeypatch):
    """Through DistributedDataParallel (gloo, one process) and the trainer's backward, the
    pieces give the gradients of the plain backward, and a second iteration runs: DDP raises if a
    parameter missed the reduction (the main BN branch's parameters get no gradient from the
    last piece's own graphs; the trainer's backward adds a zero term after local pieces)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        method, net = make_dat()
        b = run_prepare(method, batch)
        _, plain, *_ = _gradients(method, net, b, staged=True)
        ddp = DistributedDataParallel(net)
        for _ in range(2):
            net.zero_grad(set_to_none=True)
            method.loss_and_backward(
                ddp, b, ScaledBackward(ddp, torch.amp.GradScaler("cpu", enabled=False))
            )
            for a, s in zip(plain, (p.grad for p in net.parameters()), strict=True):
                torch.testing.assert_close(s, a, rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("update", ["sequential", "joint"])
def test_generator_steps_with_unscaled_gradients_under_fp16(batch, update):
    """fp16 with gradient scaling (what CUDA GPUs without bf16 train in; CPU autocast runs it
    here): the trainer scales and unscales the generator's gradients like the classifier's,
    whether they come with the classifier's backward (joint) or from its own objective, so its
    first step matches the fp32 step."""
    moves = {}
    for precision in ("fp32", "fp16"):
        method, net = make_dat(generator_update=update)
        step = TrainingStep(method, net, torch.optim.SGD(net.parameters(), lr=0.01), precision)
        before = [p.clone() for p in generator_params(method)]
        torch.manual_seed(1)
        net.train()
        step(*batch)
        moves[precision] = torch.cat(
            [(p - b).flatten() for p, b in zip(generator_params(method), before)]
        )
        scalers = {
            t.scaler.get_scale() if t.scaler.is_enabled() else 1.0 for t in step.trained.values()
        }
        assert (max(scalers) > 1.0) == (precision == "fp16")
    fp32, fp16 = moves["fp32"], moves["fp16"]
    assert fp32.norm() > 0
    assert (fp16 - fp32).norm() < 0.1 * fp32.norm(), ((fp16 - fp32).norm(), fp32.norm())


def test_distractor_statistics_measure_what_the_generator_changes(batch):
    """ag_effect: the share of x_hat's change from x that A_G's variation causes. A constant
    map causes none; uniform noise (std 0.29) causes more than the generator at its start (std
    0.03, the reference design's sigmoid around 0.5)."""
    stats = {}
    for amplitude in ("generator", "random"):
        method, _ = make_dat(amplitude=amplitude)
        b = run_prepare(method, batch)
        stats[amplitude] = {k: b[k].item() for k in ("ag_mean", "ag_std", "ag_effect")}
        assert 0.4 < stats[amplitude]["ag_mean"] < 0.6
    assert stats["random"]["ag_std"] > 5 * stats["generator"]["ag_std"]
    assert stats["random"]["ag_effect"] > 5 * stats["generator"]["ag_effect"] > 0

    method, _ = make_dat()
    views = method.views(batch[0])
    constant = torch.full_like(views["distractor"], 0.5)
    x_raw = batch[0]
    amplitude, phase, lam = views["amplitude"], views["phase"], views["lam"]
    mixed = recompose(mix_amplitude(amplitude, constant, lam), phase)
    flat = distractor_statistics(x_raw, mixed, amplitude, phase, constant, lam)
    assert flat["ag_std"].item() == 0 and flat["ag_effect"].item() == 0


def test_log_scale_generator_scales_the_image_amplitude(batch):
    """generator_output=log_scale: A_G = |F(x)| * exp(offset), offset in (-s, s) per frequency
    and channel; x_hat is the recomposition of its mix with |F(x)|; the generator's gradient
    is on the amplitude's scale, far larger relative to its weights than the sigmoid map's."""
    x_raw = batch[0]
    relative = {}
    for output in ("sigmoid", "log_scale"):
        method, _ = make_dat(augment=False, generator_output=output, generator_log_scale=0.5)
        torch.manual_seed(3)
        v = method.views(x_raw)
        if output == "log_scale":
            assert v["output"].abs().max() < 0.5 and v["output"].std() > 0
            assert torch.allclose(v["distractor"], v["amplitude"] * v["output"].exp())
        else:
            assert torch.equal(v["distractor"], v["output"])
        mixed = recompose(mix_amplitude(v["amplitude"], v["distractor"], v["lam"]), v["phase"])
        assert torch.allclose(v["x_hat"], mixed.to(x_raw.dtype), atol=1e-6)
        b = run_prepare(method, batch)
        method.trainable_loss("generator", b).backward()
        params = generator_params(method)
        grad = torch.cat([p.grad.flatten() for p in params]).norm()
        relative[output] = (grad / torch.cat([p.detach().flatten() for p in params]).norm()).item()
    assert relative["log_scale"] > 5 * relative["sigmoid"], relative  # 14x here

    method, _ = make_dat(generator_output="log_scale", generator_log_scale=0.5, amplitude="random")
    out = method.views(x_raw)["output"]
    assert out.min() >= -0.5 and out.max() <= 0.5 and out.std() > 0.2


def test_adamw_generator_and_its_travel_over_an_epoch(batch):
    """generator_optimizer=adamw builds AdamW with betas (momentum, 0.999); epoch_metrics
    reports how far the generator's output moved on the epoch's first inputs (0 before any
    step), without touching its BN statistics, and starts over with the next epoch."""
    travel = {}
    for optimizer, lr in (("sgd", 0.1), ("adamw", 1e-3)):
        method, net = make_dat(generator_optimizer=optimizer, generator_lr=lr)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        step = TrainingStep(method, net, opt)
        trained = step.trained["generator"].optimizer
        assert type(trained) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optimizer]
        assert trained.param_groups[0]["lr"] == lr
        net.train()
        torch.manual_seed(0)
        step(*batch)
        buffers = [b.clone() for b in method.generator.module.buffers()]
        metrics = method.epoch_metrics()
        assert all(torch.equal(a, b) for a, b in zip(buffers, method.generator.module.buffers()))
        travel[optimizer] = metrics["ag_travel"]
        assert method.epoch_metrics() == {}  # until the next epoch's first batch
    assert travel["adamw"] > 10 * travel["sgd"] > 0, travel
    assert trained.param_groups[0]["betas"] == (0.9, 0.999)  # generator_momentum's default


@pytest.mark.parametrize(
    "options",
    [
        {"generator_output": "exp"},
        {"generator_optimizer": "adam"},
        {"generator_log_scale": 0},
        {"generator_log_scale": float("nan")},
    ],
)
def test_bad_generator_options_are_refused(options):
    with pytest.raises(ConfigError, match=f"method.{next(iter(options))}"):
        make_dat(**options)
