"""The training loop. One :class:`Trainer` runs every method; methods only turn batches into losses.

Use from Python::

    from phaseguard import load_config, train
    run = train(load_config("quick", ["train.epochs=2"]), "runs/quick")

or from the command line: ``phaseguard train CONFIG [key=value ...] --out RUN_DIR``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..attacks import PGD
from ..build import build_method, build_model, resolve_device
from ..checkpoint import RESUME_FIELDS, ModelMeta, load_checkpoint, save_checkpoint
from ..config import Config, apply_overrides, config_from_dict, load_yaml
from ..data import BatchLoader, Dataset, load_dataset, split_validation
from ..errors import CheckpointError, ConfigError, Interrupted, TrainingError
from ..files import write_text
from ..hardware import configure_threads, device_name
from ..loading import load_weights
from ..lock import folder_lock
from ..models import check_input_size
from ..predict import nonfinite_logits, predict_correct
from ..run_dir import RunDir
from .averaging import WeightAverager
from .awp import AWP
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
    replicate,
    shutdown,
)
from .logger import RunLogger
from .precision import autocast, resolve_speed_settings
from .schedule import lr_factor
from .step import TrainingStep


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder and the per-epoch metrics."""

    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_robust_acc: float = -1.0


@dataclass
class _Data:
    dataset: Dataset
    train: BatchLoader
    x_val: torch.Tensor
    y_val: torch.Tensor


class Trainer:
    """Builds data, model, method and optimiser from a config and trains into a run folder."""

    def __init__(self, cfg: Config, out: str | Path, resume: bool = False) -> None:
        self.run = RunDir(Path(out))
        if not resume and self.run.existing():
            names = ", ".join(p.name for p in self.run.existing())
            raise ConfigError(
                f"{self.run.root} already holds a run ({names}); continue it with --resume "
                f"{self.run.root} or choose another --out"
            )
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        torch.manual_seed(cfg.train.seed)

        self.data = self._build_data()
        ds = self.data.dataset
        self.model = build_model(cfg, ds.num_classes, ds.image_shape[0]).to(self.device)
        check_input_size(self.model, ds.image_shape, cfg.model.name)
        stored = resume_config(self.run.root) if resume and self.run.config.is_file() else None
        self.cfg = cfg = self._resolve_for_device(cfg, stored)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.data.train.channels_last = True
        # what every forward calls, the attacks' included: compiled when asked for
        self.compiled = _compiled(self.model, cfg.train.compile)
        method = build_method(
            cfg, self.compiled, ds.num_classes, ds.image_shape, augment=self.data.train.augment
        )
        o = cfg.optim
        optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
        )
        # the training loss runs through the DDP replica when distributed
        train_model = replicate(self.compiled, self.dist, self.device)
        self.step = TrainingStep(
            method, train_model, optimizer, cfg.train.precision, self.device, self.dist
        )
        self.awp = None
        if cfg.awp.enabled:
            amp = lambda: autocast(cfg.train.precision, self.device)  # noqa: E731
            self.awp = AWP(self.model, cfg.awp, self.dist, amp=amp)
        self.averager = (
            WeightAverager(self.model, cfg.averaging) if cfg.averaging.name != "none" else None
        )
        self.epoch = 0
        self.best_epoch = 0
        self.best_robust_acc = -1.0
        self.history: list[dict[str, float]] = []
        if resume:
            self._restore()

    # -- setup -----------------------------------------------------------------------------
    def _resolve_for_device(self, cfg: Config, stored: Config | None) -> Config:
        """``cfg`` with its precision and layout resolved for this device and model (a resumed
        run keeps the values it resolved when it started), threads set; notes what was chosen."""
        cfg, notes, warning = resolve_speed_settings(cfg, self.device, self.model, stored)
        if self.device.type == "cpu":
            notes.append(configure_threads(cfg.train.threads))
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
            notes.append(f"cudnn.benchmark {'on' if cfg.train.cudnn_benchmark else 'off'}")
        self.setup_line = f"{self.device} ({device_name(self.device)}): {', '.join(notes)}"
        self.warning = warning
        return cfg

    def _build_data(self) -> _Data:
        cfg = self.cfg
        ds = load_dataset(cfg.data.name, cfg.data.root)
        train_idx, val_idx = split_validation(ds.y_train, cfg.data.val_per_class, cfg.train.seed)
        if cfg.data.train_size is not None:
            if not 0 < cfg.data.train_size <= len(train_idx):
                raise ConfigError(
                    f"data.train_size={cfg.data.train_size} must be in 1..{len(train_idx)}"
                )
            g = torch.Generator().manual_seed(cfg.train.seed)
            pick = torch.randperm(len(train_idx), generator=g)[: cfg.data.train_size]
            train_idx = train_idx[pick.sort().values]
        if cfg.train.batch_size % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is not divisible by the "
                f"{self.dist.world_size} processes"
            )
        loader = BatchLoader(
            ds.x_train[train_idx],
            ds.y_train[train_idx],
            cfg.train.batch_size // self.dist.world_size,
            shuffle=True,
            augment=cfg.data.augment,
            padding=cfg.data.padding,
            flip=cfg.data.flip,
            drop_last=True,
            seed=cfg.train.seed,
            device=self.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            yield_raw=True,
        )
        if len(loader) == 0:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} exceeds the {len(train_idx)} "
                "training images"
            )
        return _Data(ds, loader, ds.x_train[val_idx], ds.y_train[val_idx])

    def _state(self) -> dict[str, Any]:
        ds = self.data.dataset
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": self.epoch,
            "config": self.cfg.to_yaml(),
            "meta": ModelMeta(ds.name, ds.num_classes, ds.image_shape, list(ds.classes)).to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.step.optimizer.state_dict(),
            "scaler": self.step.scaler.state_dict(),
            "method": self.step.state_dict(),  # the method's trainables
            "averager": self.averager.state_dict() if self.averager else {},
            "eval_model": self.eval_net.state_dict() if self.averager else {},
            "rng": rng,
            "best": {"epoch": self.best_epoch, "robust_acc": self.best_robust_acc},
            "history": self.history,
        }

    def _restore(self) -> None:
        path = self.run.checkpoint("last")
        if not path.is_file():
            if not self.run.config.is_file():
                raise CheckpointError(f"nothing to resume: {path} does not exist")
            # killed before its first checkpoint: the same seed starts the same run again
            if self.dist.is_main:
                print(f"{self.run.root}: no checkpoint yet, training from the start", flush=True)
            return
        state = load_checkpoint(path, map_location=self.device, need=RESUME_FIELDS)
        load_weights(self.model, state["model"], path)
        try:
            self.step.optimizer.load_state_dict(state["optimizer"])
            o = self.cfg.optim  # the settings of this config, not the saved ones
            for group in self.step.optimizer.param_groups:
                group.update(momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
            self.step.scaler.load_state_dict(state["scaler"])
            self.step.load_state_dict(state["method"])
            if self.averager:
                self.averager.load_state_dict(state["averager"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
            self.epoch = int(state["epoch"])
            self.best_epoch = int(state["best"]["epoch"])
            self.best_robust_acc = float(state["best"]["robust_acc"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{path} does not match this run's config ({reason})") from None

    # -- loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``train.epochs``, writing logs and checkpoints; return the history."""
        cfg = self.cfg
        logger = None
        try:
            if self.dist.is_main:
                print(self.setup_line, flush=True)
                if self.warning:
                    print(f"phaseguard: warning: {self.warning}", file=sys.stderr, flush=True)
                self.run.root.mkdir(parents=True, exist_ok=True)
                if not self.run.config.is_file():  # a resumed run's, once its epoch is saved
                    write_text(self.run.config, cfg.to_yaml())
                logger = RunLogger(self.run.log_csv, self.run.tensorboard)
                logger.restore(self.history)
            while self.epoch < cfg.train.epochs:
                row = self._train_epoch()
                self._check_weights_finite()
                row.update(self._validate())
                self.epoch += 1
                improved = row["val_robust_acc"] > self.best_robust_acc
                if improved:
                    self.best_epoch, self.best_robust_acc = self.epoch, row["val_robust_acc"]
                self.history.append({"epoch": float(self.epoch), **row})
                if self.dist.is_main:
                    state = self._state()
                    if improved:  # before last.pt, which a resume starts from, never after it
                        save_checkpoint(state, self.run.checkpoint("best"))
                    save_checkpoint(state, self.run.checkpoint("last"))
                    write_text(self.run.config, cfg.to_yaml())  # the config last.pt holds
                    logger.log(self.epoch, row)
                    self._print_epoch(row)
                barrier(self.dist)
        except KeyboardInterrupt as exc:
            raise Interrupted.of(
                exc,
                "",
                f" in epoch {self.epoch + 1}; {self._last_good()}; "
                f"continue with: phaseguard train --resume {self.run.root}",
            ) from None
        finally:
            if logger is not None:
                logger.close()
        return TrainResult(self.run.root, self.history, self.best_epoch, self.best_robust_acc)

    def _train_epoch(self) -> dict[str, float]:
        cfg, loader = self.cfg, self.data.train
        loader.set_epoch(self.epoch)
        self.step.model.train()
        steps = len(loader)
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        bar = tqdm(
            total=steps,
            desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
            # a bar only on a terminal: cluster logs get the per-epoch line alone
            disable=not (cfg.train.progress and self.dist.is_main and sys.stderr.isatty()),
            leave=False,
            dynamic_ncols=True,
        )
        refresh = max(1, steps // 50)
        start = time.perf_counter()
        for step, (x, y) in enumerate(loader):
            lr = cfg.optim.lr * lr_factor(cfg.schedule, self.epoch + step / steps, cfg.train.epochs)
            for group in self.step.optimizer.param_groups:
                group["lr"] = lr
            loss, metrics = self.step(x, y, weight_perturbation=self._weight_perturbation)
            if self.averager:
                self.averager.after_step()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            if (step + 1) % refresh == 0 or step + 1 == steps:
                self._check_finite(first_bad)
                seen = (step + 1) * loader.batch_size * self.dist.world_size
                bar.set_postfix(
                    loss=f"{sums['loss'].item() / (step + 1):.4f}",
                    img_s=f"{seen / (time.perf_counter() - start):.0f}",
                    refresh=False,
                )
                bar.update((step + 1) - bar.n)
        bar.close()
        if self.averager:
            self.averager.after_epoch(self.epoch, loader)
        seconds = time.perf_counter() - start
        keys = sorted(sums)
        totals = all_reduce_sum(torch.stack([sums[k] for k in keys]), self.dist)
        means = (totals / (steps * self.dist.world_size)).tolist()
        row = {f"train_{k}": v for k, v in zip(keys, means)}
        row.update({f"train_{k}": v for k, v in self.step.method.epoch_metrics().items()})
        row.update(lr=lr, seconds=seconds, images_per_s=steps * cfg.train.batch_size / seconds)
        return row

    def _weight_perturbation(self, batch: dict) -> contextlib.AbstractContextManager:
        if self.awp is None or self.epoch < self.cfg.awp.warmup_epochs:
            return contextlib.nullcontext()
        return self.awp.perturbed(self.step.method, batch)

    @property
    def eval_net(self) -> nn.Module:
        """The classifier validation and checkpoints evaluate: the averaged one when on."""
        return self.averager.model if self.averager and self.averager.ready else self.compiled

    def _check_weights_finite(self) -> None:
        """Stop before validation and checkpoints if a weight or BN statistic is NaN or
        infinite (a finite loss can still leave them so; argmax of NaN logits scores 10%)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            raise TrainingError(
                f"weights became NaN or infinite in epoch {self.epoch + 1}; {self._last_good()}"
            )

    def _check_logits_finite(self, net: nn.Module, x: torch.Tensor) -> None:
        """Stop before checkpoints if the validation images get NaN or infinite logits (an
        overflow can do it with finite weights; they would score as chance, not as broken)."""
        bad = all_reduce_sum(
            torch.tensor([float(nonfinite_logits(net, x, device=self.device))], device=self.device),
            self.dist,
        )
        if bad.item() > 0:
            raise TrainingError(
                f"the model's logits became NaN or infinite on {int(bad.item())} validation "
                f"images after epoch {self.epoch + 1}; {self._last_good()}"
            )

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        bad = int(first_bad)
        if bad >= 0:
            raise TrainingError(
                f"loss became NaN or infinite at epoch {self.epoch + 1}, step {bad + 1}; "
                f"{self._last_good()}"
            )

    def _last_good(self) -> str:
        if self.epoch == 0:
            return "no checkpoint had been written yet"
        last = self.run.checkpoint("last")
        return f"the last good checkpoint ({last}, epoch {self.epoch}) is intact"

    def _validate(self) -> dict[str, float]:
        """Clean and PGD accuracy on this rank's shard of the held-out split, summed over ranks."""
        x = self.data.x_val[self.dist.rank :: self.dist.world_size]
        y = self.data.y_val[self.dist.rank :: self.dist.world_size]
        if len(self.data.y_val) == 0:
            return {"val_clean_acc": math.nan, "val_robust_acc": math.nan}
        # Validation draws its own random starts so that it never shifts the training RNG stream.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.train.seed + 1)
            net = self.eval_net
            attack = PGD(
                net,
                eps=self.cfg.attack.eps,
                step=self.cfg.attack.step,
                steps=self.cfg.train.val_attack_steps,
                norm=self.cfg.attack.norm,
            )
            self._check_logits_finite(net, x)
            clean = predict_correct(net, x, y, device=self.device)
            robust = predict_correct(net, x, y, attack=attack, device=self.device)
        counts = torch.tensor(
            [clean.sum().item(), robust.sum().item(), len(y)],
            dtype=torch.float64,
            device=self.device,
        )
        c, r, n = all_reduce_sum(counts, self.dist).tolist()
        return {"val_clean_acc": c / n, "val_robust_acc": r / n}

    def _print_epoch(self, row: dict[str, float]) -> None:
        tqdm.write(
            f"epoch {self.epoch}/{self.cfg.train.epochs}  loss {row['train_loss']:.4f}  "
            f"val clean {row['val_clean_acc']:.3f}  val PGD-{self.cfg.train.val_attack_steps} "
            f"{row['val_robust_acc']:.3f}  lr {row['lr']:.4g}  {row['seconds']:.1f}s "
            f"({row['images_per_s']:.0f} img/s)"
        )

    def close(self) -> None:
        shutdown(self.dist)


def _compiled(net: nn.Module, compile: bool | str) -> nn.Module:
    """``net`` itself (compile false), or compiled with inductor (true) or the named backend."""
    if compile is False:
        return net
    backend = "inductor" if compile is True else compile
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(f"train.compile={backend!r} is not a torch.compile backend ({known})")
    return torch.compile(net, backend=backend)


def train(cfg: Config, out: str | Path, resume: bool = False) -> TrainResult:
    """Train ``cfg`` into the run folder ``out`` (``resume=True`` continues its last checkpoint),
    holding the folder's lock (:mod:`phaseguard.lock`; the main rank takes it under DDP).

    Raises:
        FolderLocked: another process is writing into ``out``.
        Interrupted: SIGINT or SIGTERM stopped it (the message says how to continue).
    """
    main_rank = os.environ.get("RANK", "0") == "0"
    with folder_lock(out) if main_rank else contextlib.nullcontext():
        trainer = Trainer(cfg, out, resume=resume)
        try:
            return trainer.fit()
        finally:
            trainer.close()


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run was started with, plus ``overrides`` (e.g. ``train.epochs=200``)."""
    path = RunDir(Path(run_dir)).config
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist")
    tree = load_yaml(path.read_bytes(), f"config {path}")
    if not isinstance(tree, dict):
        raise CheckpointError(f"cannot resume: {path} is empty or not a config (a YAML mapping)")
    return config_from_dict(apply_overrides(tree, overrides or []))
