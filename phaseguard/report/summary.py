"""What a run is, in words for the report: its configuration summary (from ``config.yaml``), the
environment its evaluation ran in (from ``eval.json``'s ``info["environment"]``) and the
checkpoint a measurement used.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..evaluation import robustbench_eps
from ..methods import method_options


def checkpoint_name(source: object) -> str | None:
    """``best`` or ``last`` for a run's ``checkpoints/best.pt`` / ``last.pt`` (``source`` as
    ``eval.json`` and ``analysis.json`` record it), the file name for any other file, None when
    ``source`` is not a path."""
    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    return path.stem if path.parent.name == "checkpoints" and path.suffix == ".pt" else path.name


def _value(v: Any) -> str:
    """A config value in words: numbers in short form, lists comma-separated, None as unset."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    return str(v)


def _method_options(section: dict[str, Any]) -> str:
    """Every option of the run's method, defaults included; the ``method`` section as written
    when the method is not registered in this process (a method from the user's own module)."""
    try:
        options = asdict(method_options(section))
    except ConfigError:
        options = {k: v for k, v in section.items() if k != "name"}
    return _value(options) if options else "none"


def config_summary(cfg: Config) -> dict[str, str]:
    """The settings that make a run what it is, as label -> text, in reading order."""
    d, m, a, o, s, t = cfg.data, cfg.model, cfg.attack, cfg.optim, cfg.schedule, cfg.train
    subset = "all training images" if d.train_size is None else f"{d.train_size} training images"
    augment = "no augmentation"
    if d.augment:
        augment = f"crop (padding {d.padding})" + (" + flip" if d.flip else "")
    schedule = s.name
    if s.name == "piecewise":
        schedule += f", x{s.gamma:g} at epochs {_value(s.milestones)}"
    if s.warmup_epochs:
        schedule += f", {s.warmup_epochs:g} warm-up epochs"
    model = m.name + (f" ({_value(m.kwargs)})" if m.kwargs else "")
    if m.normalize:
        model += f", normalised by mean {_value(m.normalize[0])} std {_value(m.normalize[1])}"
    averaging = "none"
    if cfg.averaging.name == "ema":
        averaging = f"EMA, decay {cfg.averaging.ema_decay:g}"
    elif cfg.averaging.name == "swa":
        averaging = f"SWA from epoch {cfg.averaging.swa_start + 1}"
    awp = "off"
    if cfg.awp.enabled:
        awp = f"gamma {cfg.awp.gamma:g}, after {cfg.awp.warmup_epochs} epochs"
    return {
        "method": str(cfg.method["name"]),
        "method options": _method_options(cfg.method),
        "model": model,
        "data": f"{d.name}, {subset}, {d.val_per_class} per class held out for validation, "
        + augment,
        "training attack": f"{a.norm} eps {robustbench_eps(a.eps)}, "
        f"{a.steps} steps of {robustbench_eps(a.step)}",
        "optimiser": f"SGD lr {o.lr:g}, momentum {o.momentum:g}"
        + (" (Nesterov)" if o.nesterov else "")
        + f", weight decay {o.weight_decay:g}",
        "schedule": schedule,
        "epochs": f"{t.epochs}, batch {t.batch_size}",
        "precision": f"{t.precision}, channels_last {_value(t.channels_last)}, "
        f"compile {_value(t.compile)}",
        "AWP": awp,
        "weight averaging": averaging,
        "seed": str(t.seed),
    }


def environment(evaluation: dict[str, Any] | None) -> dict[str, str] | None:
    """The environment ``phaseguard eval`` recorded in ``eval.json`` (versions, device, date, as
    label -> text, nested entries as ``outer.inner``), or None where it recorded none."""
    info = (evaluation or {}).get("info")
    record = info.get("environment") if isinstance(info, dict) else None
    if not isinstance(record, dict) or not record:
        return None
    flat: dict[str, str] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": _value(v) for k, v in value.items()})
        else:
            flat[str(key)] = _value(value)
    return flat
