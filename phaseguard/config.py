"""Typed configuration: dataclasses, YAML files and ``key=value`` overrides.

A run is described by one :class:`Config`. It is read from a YAML file (or a preset shipped in
``phaseguard/presets/``, named like ``quick``; :func:`resolve_config` says which is which)
whose top-level keys are the sections below, then ``section.key=value`` overrides from the
command line are applied (values are parsed as YAML, and float fields also accept fractions
such as ``8/255``). Every key is checked against the dataclasses: an unknown key is an error
that names it. The method section is free-form here and checked against the chosen method's
own options dataclass when the method is built (:func:`phaseguard.methods.method_options`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Which dataset, how much of it, and the training augmentation."""

    name: str = "fashion-mnist"
    root: str | None = None  # folder or file; None searches the default places
    val_per_class: int = 10  # held-out validation images per class (best-checkpoint selection)
    train_size: int | None = None  # seeded subset of the training split (None: all of it)
    augment: bool = True  # random crop with zero padding + horizontal flip
    padding: int = 4
    flip: bool = True


@dataclass
class ModelConfig:
    """Architecture from the model registry (``phaseguard.models.list_models()``)."""

    name: str = "resnet18"
    normalize: list[list[float]] | None = None  # [mean, std] as the model's first layer
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments


@dataclass
class AttackConfig:
    """Threat model and the training attack (docs/dat.md section 4 defaults)."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10


@dataclass
class OptimConfig:
    """SGD for the classifier (docs/dat.md section 8)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a pure function of the (fractional) epoch.

    ``piecewise``: lr x gamma at each milestone epoch; ``cosine``: cosine decay to 0;
    ``onecycle``: linear warm-up to lr over ``warmup_epochs`` then linear decay to 0 (for short
    runs). ``warmup_epochs`` also adds a linear warm-up to the other two.
    """

    name: Literal["piecewise", "cosine", "onecycle"] = "piecewise"
    milestones: list[int] = field(default_factory=lambda: [100, 110])
    gamma: float = 0.1
    warmup_epochs: float = 0.0


@dataclass
class AWPConfig:
    """Adversarial weight perturbation (Wu et al., 2020) for any adversarial method.

    The proxy ascends the method's own loss, so it is AT-style for PGD-AT and TRADES-style for
    TRADES and DAT (L_DAT), as in the papers.
    """

    enabled: bool = False
    gamma: float = 0.005  # relative size of the weight perturbation
    warmup_epochs: int = 0  # epochs trained without AWP first
    proxy_lr: float = 0.01  # SGD step of the proxy that finds the perturbation


@dataclass
class AveragingConfig:
    """Weight averaging for evaluation: EMA every step, or SWA from an epoch (BN recomputed)."""

    name: Literal["none", "ema", "swa"] = "none"
    ema_decay: float = 0.999
    swa_start: int = 0  # first epoch (0-based) whose end-of-epoch weights enter the average


@dataclass
class TrainConfig:
    """The training loop: length, batch, precision, device, seed, validation."""

    epochs: int = 110
    batch_size: int = 128  # global batch (split across DDP ranks)
    # auto: bf16 where the device computes it natively, fp16 on older CUDA GPUs, else fp32;
    # auto layout: from the device, precision and model (phaseguard/training/precision.py).
    # A run's config.yaml holds the resolved values, so a resumed run keeps them.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto"] | bool = "auto"
    # torch.compile the classifier (training forwards and the attacks alike): true (inductor),
    # false, or a torch.compile backend name ("aot_eager", "cudagraphs", ...)
    compile: bool | str = False
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick its fastest kernels (fixed input sizes)
    device: str = "auto"  # auto: cuda if available, else cpu
    threads: int | None = None  # CPU threads (None: the cores this process may use)
    seed: int = 0
    val_attack_steps: int = 20  # PGD steps of the per-epoch validation
    progress: bool = True


@dataclass
class EvalConfig:
    """What ``phaseguard eval`` runs by default (docs/dat.md section 9)."""

    attacks: list[str] = field(default_factory=lambda: ["natural", "pgd20"])
    n: int = 1000  # first n test images
    batch_size: int = 256


@dataclass
class Config:
    """A whole run. ``method`` holds ``name`` plus that method's own options."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "pgd_at"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    awp: AWPConfig = field(default_factory=AWPConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # modules imported before the run is built or loaded (user code that registers models,
    # methods, attacks or datasets); ``phaseguard --import`` adds to it
    imports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _parse_value(text: str) -> Any:
    """A command-line value: YAML scalar/list/dict syntax."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc.problem}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert where lossless (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        first, *rest = errors
        raise ConfigError("; or ".join([first, *(e.removeprefix(f"{key}: ") for e in rest)]))
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(Fraction(value.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # a bug in a dataclass, not user input


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, naming any unknown or ill-typed key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {known})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested mapping (in place; also returned)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set_path(tree, key.strip(), _parse_value(text))
    return tree


#: Keys that were removed from a section but that configs written earlier hold (every run
#: folder's ``config.yaml`` and every checkpoint lists all keys); none ever had an effect, so
#: they are dropped on reading and old runs still load.
RETIRED_KEYS: dict[str, tuple[str, ...]] = {"eval": ("checkpoint",)}


def _without_retired_keys(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` less the :data:`RETIRED_KEYS` (a copy where one is present)."""
    if not isinstance(tree, dict):
        return tree  # build_dataclass names the error
    out = dict(tree)
    for section, keys in RETIRED_KEYS.items():
        values = out.get(section)
        if isinstance(values, dict) and any(key in values for key in keys):
            out[section] = {k: v for k, v in values.items() if k not in keys}
    return out


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (:data:`RETIRED_KEYS`
    ignored)."""
    cfg = build_dataclass(Config, _without_retired_keys(tree), "")
    cfg.method = {"name": Config().method["name"], **cfg.method}
    return cfg


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``, recursively for mappings."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


#: The presets shipped with phaseguard; ``study/`` holds study files (:mod:`phaseguard.study`).
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CONFIG_SUFFIXES = (".yaml", ".yml")


def preset_names() -> list[str]:
    """Names of the training presets, e.g. ``quick``, ``paper/cifar10_resnet18_dat``."""
    return sorted(
        p.relative_to(PRESETS_DIR).with_suffix("").as_posix()
        for p in PRESETS_DIR.rglob("*.yaml")
        if p.parent != PRESETS_DIR / "study"
    )


def preset_label(path: Path) -> str:
    """A config file's preset name when it is a preset, else the path as given."""
    try:
        return path.resolve().relative_to(PRESETS_DIR).with_suffix("").as_posix()
    except ValueError:
        return str(path)


def resolve_config(ref: str | Path, relative_to: Path | None = None) -> Path:
    """The YAML file that ``ref`` names: a file or a preset.

    A :class:`~pathlib.Path`, a string ending in ``.yaml`` or ``.yml``, or a string naming an
    existing file is a file (relative to ``relative_to`` when given); any other string is a
    preset name (:func:`preset_names`), and an unknown one is an error listing the presets.
    """
    path = Path(ref) if relative_to is None else relative_to / ref
    if isinstance(ref, Path) or path.suffix in CONFIG_SUFFIXES or path.is_file():
        return path
    if ref in preset_names():
        return PRESETS_DIR / f"{ref}.yaml"
    raise ConfigError(
        f"'{ref}' is neither a config file nor a preset (presets: {', '.join(preset_names())})"
    )


def read_config_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a mapping, with its ``base:`` (a preset name, or a file relative to
    it) merged underneath."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"config {path} includes itself through 'base:'")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: base must be a preset name or a file, got {base!r}")
    parent = read_config_tree(resolve_config(base, path.parent), (*_seen, path.resolve()))
    merged = _merge(parent, tree)
    parent_method = parent.get("method") or {}
    child_method = tree.get("method") or {}
    if child_method.get("name", parent_method.get("name")) != parent_method.get("name"):
        merged["method"] = child_method  # another method: its options start afresh
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a preset or a YAML file (or start from the defaults) and apply ``key=value``
    overrides.

    ``path`` is resolved by :func:`resolve_config`: ``"quick"`` is a preset,
    ``"my.yaml"`` a file. A file may name another with ``base: other.yaml`` (relative to
    itself) or ``base: PRESET``; its sections are merged underneath, key by key.
    """
    tree = read_config_tree(resolve_config(path)) if path is not None else {}
    return config_from_dict(apply_overrides(tree, overrides or []))
