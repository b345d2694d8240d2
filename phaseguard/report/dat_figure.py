"""What DAT does to an image, from a run's last checkpoint: the report's DAT figure.

:func:`dat_views` rebuilds the training-time objects (the split-BN classifier with
``state["model"]``, the DAT method with ``state["method"]``: generator and its optimiser) and
asks the method for its views of a few test images (:meth:`phaseguard.methods.dat.DAT.views`),
with no crop/flip so that x and x_hat line up. The forwards run in float32, whatever precision
the run trained in. :func:`plot_dat_views` draws one column per image: x, its log-amplitude,
its phase, the distractor amplitude A_G, the mixed image x_hat and its EAEG example x_hat'.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import pi
from pathlib import Path

import torch
from torch import Tensor

from ..build import build_method
from ..checkpoint import MODEL_FIELDS, ModelMeta, load_checkpoint
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, ConfigError
from ..evaluation import robustbench_eps
from ..loading import build_from_checkpoint, load_weights
from ..methods.dat import DAT
from ..predict import as_unit_float
from ..run_dir import RunDir
from ..training.step import load_trainable_weights
from .plots import pyplot, save_figure


@dataclass
class DATViews:
    """DAT's views of k test images, all on the CPU.

    ``x``: float32 [k,C,H,W] in [0,1]; ``y``: int64 [k]; ``views``: what
    :meth:`~phaseguard.methods.dat.DAT.views` returns for them (amplitude, phase, output,
    distractor, lam, x_hat, x_hat_adv), detached. ``generated``: the output is the generator's
    (False: uniform noise, ``method.amplitude=random``). ``log_scale``: the output is a
    log-amplitude offset (``method.generator_output=log_scale``), not an amplitude map.
    ``eps``/``norm``: the EAEG ball of x_hat_adv.
    """

    x: Tensor
    y: Tensor
    views: dict[str, Tensor]
    classes: list[str]
    generated: bool
    log_scale: bool
    eps: float
    norm: str
    epoch: int
    seed: int


def dat_views(
    run_dir: str | Path,
    k: int = 6,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data: Dataset | None = None,
) -> DATViews:
    """DAT's views of the first ``k`` test images from the run's last checkpoint; lam, the
    generator's noise and EAEG's start are drawn after ``torch.manual_seed(seed)``.

    ``data``: the run's dataset, if the caller has it loaded. Raises ConfigError for a run
    that is not DAT, that has no x_hat branch (``method.mixed_branch=false``) or no amplitude
    mix-up (``method.mixup=false``), and for k < 2 (the generator normalises with batch
    statistics).
    """
    if k < 2:
        raise ConfigError(f"the DAT figure needs at least 2 images, got {k}")
    source = RunDir(Path(run_dir)).checkpoint("last")
    state = load_checkpoint(source, map_location=device, need=(*MODEL_FIELDS, "method"))
    meta = ModelMeta.from_dict(state["meta"])  # checked by load_checkpoint
    model, cfg = build_from_checkpoint(state["config"], meta, source)
    if cfg.method["name"] != DAT.name:
        raise ConfigError(f"{run_dir} is a {cfg.method['name']} run; the DAT figure needs DAT")
    device = torch.device(device)
    load_weights(model, state["model"], source)
    model.to(device)
    method = build_method(cfg, model, meta.num_classes, meta.image_shape)  # no augmentation
    if not method.options.mixed_branch:
        raise ConfigError(f"{run_dir} trains DAT without the x_hat branch (EAEG only)")
    if not method.options.mixup:
        raise ConfigError(f"{run_dir} trains DAT without amplitude mix-up (x_hat = x)")
    try:
        load_trainable_weights(method, state["method"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(
            f"{source}: its DAT generator does not fit the one its config builds ({reason})"
        ) from None
    if data is None:
        data = load_dataset(cfg.data.name, cfg.data.root)
    x = as_unit_float(data.x_test[:k]).to(device)
    y = data.y_test[:k].to(device)
    torch.manual_seed(seed)
    with torch.no_grad():
        views = method.views(x, y)
    return DATViews(
        x=x.cpu(),
        y=y.cpu(),
        views={name: v.detach().cpu() for name, v in views.items()},
        classes=list(meta.classes),
        generated=method.uses_generator,
        log_scale=method.log_scale is not None,
        eps=method.eaeg.eps,
        norm=method.eaeg.norm,
        epoch=int(state["epoch"]),
        seed=seed,
    )


def _image(t: Tensor) -> Tensor:
    """[C,H,W] in [0,1] -> [H,W] (one channel) or [H,W,C] for imshow."""
    return t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)


def plot_dat_views(d: DATViews, out: Path) -> Path:
    """Write the figure (PNG ``out``): one column per image; rows x, log(1+|F(x)|), phase of x
    (both fftshift-ed, DC in the centre; channel 0 for RGB), the generator's output (A_G, or
    the log-amplitude offset; channel 0, one colour scale over the row, its range in the row
    label), x_hat with its lam, x_hat';
    the title names the checkpoint (last), its epoch, the number of images, EAEG's ball and
    the seed."""
    v = d.views
    shifted_phase = torch.fft.fftshift(v["phase"], dim=(-2, -1))
    output = v["output"][:, 0]
    lo, hi = output.min().item(), output.max().item()
    name = "A_G" if d.generated else "A (noise)"
    if d.log_scale:
        name = "log-amp. offset" if d.generated else "offset (noise)"
    channel = "" if d.x.shape[1] == 1 else " (ch 0)"
    rows = [
        ("x", lambda i: _image(d.x[i]), dict(cmap="gray", vmin=0, vmax=1)),
        (f"log(1+|F(x)|){channel}", lambda i: v["amplitude"][i, 0].log1p(), dict(cmap="magma")),
        (
            f"phase of x{channel}",
            lambda i: shifted_phase[i, 0],
            dict(cmap="twilight", vmin=-pi, vmax=pi),
        ),
        (
            f"{name}{channel} in\n[{lo:.3f}, {hi:.3f}]",
            lambda i: output[i],
            dict(cmap="viridis", vmin=lo, vmax=hi),
        ),
        ("x_hat (mixed)", lambda i: _image(v["x_hat"][i]), dict(cmap="gray", vmin=0, vmax=1)),
        ("x_hat' (EAEG)", lambda i: _image(v["x_hat_adv"][i]), dict(cmap="gray", vmin=0, vmax=1)),
    ]
    k = len(d.x)
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), k, figsize=(1.5 * k + 1.0, 1.5 * len(rows)), squeeze=False)
    for r, (label, picture, style) in enumerate(rows):
        for i in range(k):
            ax = axes[r, i]
            ax.imshow(picture(i).numpy(), interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:
                ax.set_title(d.classes[int(d.y[i])], fontsize=8)
            if label == "x_hat (mixed)":
                ax.set_xlabel(f"lam = {float(v['lam'][i]):.2f}", fontsize=8)
    fig.suptitle(
        f"last checkpoint, epoch {d.epoch}; first {k} test images; x_hat': EAEG, "
        f"{d.norm} eps {robustbench_eps(d.eps)}; seed {d.seed}",
        fontsize=8,
    )
    fig.tight_layout()
    save_figure(fig, out)
    return out
