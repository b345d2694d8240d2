"""Typed configuration: dataclasses, YAML files and ``key=value`` overrides.

A run is described by one :class:`Config`. It is read from a YAML file (or a preset shipped in
``phaseguard/presets/``, named like ``quick``; :func:`resolve_config` says which is which)
whose top-level keys are the sections below, then ``section.key=value`` overrides from the
command line are applied (values are parsed as YAML, and float fields also accept fractions
such as ``8/255``). Every key is checked against the dataclasses: an unknown key is an error
that names it. The method section is free-form here and checked against the chosen method's
own options dataclass when the method is built (:func:`phaseguard.methods.method_options`).

Each section checks its values when it is built (``__post_init__``, so Python callers get the
same checks): a value without meaning (``attack.eps`` outside [0, 1] under linf, zero steps,
epochs or batch, a negative or non-finite learning rate, a device string torch cannot parse,
...) is a :class:`ConfigError` naming the dotted key, the value and what is allowed. YAML is
read by :func:`load_yaml`, which refuses aliases that expand past :data:`MAX_CONFIG_VALUES`
values (a "billion laughs" file) or nest past :data:`MAX_CONFIG_DEPTH` levels; every error is
one line.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

#: Bounds on what a config may hold once YAML aliases are expanded: a real config has a few
#: hundred values a few levels deep; a "billion laughs" file (nested aliases) a billion.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64
MAX_CONFIG_BYTES = 1 << 20  # a config file larger than 1 MiB is refused unread
MAX_BASE_CHAIN = 32  # files in one ``base:`` chain

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _show(value: Any) -> str:
    """A short ``repr`` for messages: long or nested values are elided, never expanded."""
    return _REPR.repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError("key=value must be allowed")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={_show(value)} must be {allowed}")


def _check_int(key: str, value: Any, low: int, *, none: str = "", why: str = "") -> None:
    """``value`` is an integer >= ``low``, or None when ``none`` says what None means."""
    if value is None and none:
        return
    extra = "; ".join(x for x in (f"or null: {none}" if none else "", why) if x)
    extra = f" ({extra})" if extra else ""
    _require(_is_int(value), key, value, f"an integer{extra}")
    _require(value >= low, key, value, f"at least {low}{extra}")


def _check_float(
    key: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    why: str = "",
) -> None:
    """``value`` is a finite number from ``low`` to ``high`` (ends excluded when open)."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low)
    ok = ok and (value < high if open_high else value <= high)
    if high == math.inf:
        allowed = f"a finite number {'>' if open_low else '>='} {low:g}"
    else:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        allowed = f"a number in {left}{low:g}, {high:g}{right}"
    _require(ok, key, value, allowed + (f" ({why})" if why else ""))


def _check_device(key: str, value: Any) -> None:
    """``auto`` or a string :class:`torch.device` parses (whether it exists is checked when a
    run starts: a config may name a GPU another machine has)."""
    allowed = "auto, cpu, cuda or cuda:N (a torch device)"
    _require(isinstance(value, str), key, value, allowed)
    if value == "auto":
        return
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        _require(False, key, value, allowed)


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

    def __post_init__(self) -> None:
        _check_int(
            "data.val_per_class",
            self.val_per_class,
            1,
            why="held-out images per class choose the best checkpoint",
        )
        _check_int("data.train_size", self.train_size, 1, none="the whole training split")
        _check_int("data.padding", self.padding, 0)


@dataclass
class ModelConfig:
    """Architecture from the model registry (``phaseguard.models.list_models()``)."""

    name: str = "resnet18"
    normalize: list[list[float]] | None = None  # [mean, std] as the model's first layer
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments

    def __post_init__(self) -> None:
        if self.normalize is not None:
            pair = self.normalize
            ok = isinstance(pair, list | tuple) and len(pair) == 2
            ok = ok and all(isinstance(v, list | tuple) and v for v in pair)
            ok = ok and len(pair[0]) == len(pair[1])
            ok = ok and all(_is_number(v) and math.isfinite(v) for v in [*pair[0], *pair[1]])
            ok = ok and all(v > 0 for v in pair[1])
            _require(
                ok,
                "model.normalize",
                pair,
                "[mean, std] with one finite value per channel in each and every std > 0",
            )
        if isinstance(self.kwargs, dict):
            bad = next((k for k in self.kwargs if not isinstance(k, str)), None)
            if bad is not None:
                raise ConfigError(f"model.kwargs: option names must be strings, got {_show(bad)}")


@dataclass
class AttackConfig:
    """Threat model and the training attack (docs/dat.md section 4 defaults)."""

    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10

    def __post_init__(self) -> None:
        if self.norm == "linf":
            _check_float("attack.eps", self.eps, 0, 1, why="linf: images are in [0, 1]")
        else:
            _check_float("attack.eps", self.eps, 0)
        _check_float("attack.step", self.step, 0, open_low=True)
        _check_int("attack.steps", self.steps, 1)


@dataclass
class OptimConfig:
    """SGD for the classifier (docs/dat.md section 8)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False

    def __post_init__(self) -> None:
        _check_float("optim.lr", self.lr, 0)
        _check_float("optim.momentum", self.momentum, 0, 1, open_high=True)
        _check_float("optim.weight_decay", self.weight_decay, 0)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")


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

    def __post_init__(self) -> None:
        for i, milestone in enumerate(self.milestones):
            _check_int(f"schedule.milestones[{i}]", milestone, 0)
        _check_float("schedule.gamma", self.gamma, 0, open_low=True)
        _check_float("schedule.warmup_epochs", self.warmup_epochs, 0)


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

    def __post_init__(self) -> None:
        _check_float("awp.gamma", self.gamma, 0)
        _check_int("awp.warmup_epochs", self.warmup_epochs, 0)
        _check_float("awp.proxy_lr", self.proxy_lr, 0, open_low=True)


@dataclass
class AveragingConfig:
    """Weight averaging for evaluation: EMA every step, or SWA from an epoch (BN recomputed)."""

    name: Literal["none", "ema", "swa"] = "none"
    ema_decay: float = 0.999
    swa_start: int = 0  # first epoch (0-based) whose end-of-epoch weights enter the average

    def __post_init__(self) -> None:
        _check_float("averaging.ema_decay", self.ema_decay, 0, 1)
        _check_int("averaging.swa_start", self.swa_start, 0)


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

    def __post_init__(self) -> None:
        _check_int("train.epochs", self.epochs, 1)
        _check_int("train.batch_size", self.batch_size, 1)
        _check_device("train.device", self.device)
        _check_int("train.threads", self.threads, 1, none="the cores this process may use")
        _check_int("train.seed", self.seed, 0)
        _require(self.seed < 2**63, "train.seed", self.seed, "below 2**63")
        _check_int("train.val_attack_steps", self.val_attack_steps, 1)


@dataclass
class EvalConfig:
    """What ``phaseguard eval`` runs by default (docs/dat.md section 9)."""

    attacks: list[str] = field(default_factory=lambda: ["natural", "pgd20"])
    n: int = 1000  # first n test images
    batch_size: int = 256

    def __post_init__(self) -> None:
        _check_int("eval.n", self.n, 1)
        _check_int("eval.batch_size", self.batch_size, 1)


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

    def __post_init__(self) -> None:
        if isinstance(self.method, dict):
            name = self.method.get("name", "pgd_at")
            if not isinstance(name, str):
                raise ConfigError(f"method.name: expected a method name, got {_show(name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _parse_value(text: str, where: str = "") -> Any:
    """A command-line value: YAML scalar/list/dict syntax (``where`` names it in errors)."""
    return load_yaml(text, where or f"value {_show(text)}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def _expanded_size(node: yaml.Node, where: str) -> int:
    """How many values ``node`` holds once its aliases are expanded (shared nodes counted once
    per use, computed once each); refuses more than :data:`MAX_CONFIG_VALUES`, nesting deeper
    than :data:`MAX_CONFIG_DEPTH` and recursive aliases."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{where}: an alias refers to a value that contains it")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: values nested more than {MAX_CONFIG_DEPTH} levels deep")
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"{where}: its aliases expand to more than {MAX_CONFIG_VALUES} values "
                    "(a YAML alias bomb?)"
                )
        active.discard(key)
        sizes[key] = total
        return total

    return size(node, 0)


def load_yaml(data: str | bytes, where: str) -> Any:
    """Parse YAML ``data`` safely (plain data only) for a config: aliases may not expand past
    :data:`MAX_CONFIG_VALUES` values nor nest past :data:`MAX_CONFIG_DEPTH` levels, so a
    "billion laughs" file is refused in microseconds. Every problem is one :class:`ConfigError`
    line that starts with ``where`` (what is read: ``config PATH``)."""
    loader = None
    try:
        loader = yaml.SafeLoader(data)  # decodes the start already: may raise
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar no constructor can build
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


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
            raise ConfigError(f"{key}: {_show(value)} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return dict(value)
    if hint is float:
        number = value
        if isinstance(value, str):
            try:
                number = Fraction(value.replace(" ", ""))
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"{key}: expected a number, got {_show(value)}") from None
        if isinstance(number, bool) or not isinstance(number, int | float | Fraction):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        try:
            return float(number)
        except OverflowError:
            raise ConfigError(f"{key}: {_show(value)} is too large for a number") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{key}: {_show(value)} is too large for an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # a bug in a dataclass, not user input


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, naming any unknown or ill-typed key."""
    if not isinstance(values, dict):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where}: expected a mapping, got {_show(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)
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
        _set_path(tree, key.strip(), _parse_value(text, f"override {_show(item)}"))
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
    if "\0" in str(path):
        raise ConfigError(f"config path {_show(str(path))} holds a NUL character")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"config {path} includes itself through 'base:' ({chain})")
    if len(_seen) >= MAX_BASE_CHAIN:
        raise ConfigError(f"config {path}: 'base:' chain longer than {MAX_BASE_CHAIN} files")
    if path.exists() and not path.is_file():
        raise ConfigError(f"cannot read config {path}: not a regular file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    tree = load_yaml(data, f"config {path}") or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: base must be a preset name or a file, got {_show(base)}")
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
