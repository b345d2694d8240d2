"""The ``phaseguard`` command: train, eval, analyze, report, study, data, export, config, list.

Every error a user can cause is printed as one line (``phaseguard: error: ...``) with exit
status 2; nothing already written is lost.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .config import Config, load_config, preset_label, preset_names
from .cpu_memory import keep_freed_memory
from .errors import Interrupted, PhaseguardError
from .hardware import configure_threads
from .user_modules import import_modules, recorded_imports


def _with_imports(cfg: Config, args: argparse.Namespace) -> Config:
    """``cfg`` recording the ``--import`` modules too, its own imported."""
    cfg.imports = list(dict.fromkeys([*cfg.imports, *args.imports]))
    import_modules(cfg.imports)
    return cfg


def _cmd_train(args: argparse.Namespace) -> None:
    from .training import resume_config, train

    if args.resume is not None:
        if args.config is not None and "=" not in args.config:
            raise PhaseguardError("with --resume RUN_DIR give no CONFIG (overrides only)")
        overrides = ([args.config] if args.config else []) + args.overrides
        cfg = _with_imports(resume_config(args.resume, overrides), args)
        result = train(cfg, args.resume, resume=True)
    else:
        if args.config is None or args.out is None:
            raise PhaseguardError("usage: phaseguard train CONFIG [key=value ...] --out RUN_DIR")
        result = train(_with_imports(load_config(args.config, args.overrides), args), args.out)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    print(
        f"run {result.run_dir}: best validation PGD accuracy {result.best_robust_acc:.4f} "
        f"at epoch {result.best_epoch}"
    )


def _cmd_eval(args: argparse.Namespace) -> None:
    from .runs import evaluate_run

    import_modules(recorded_imports(args.target))
    report, out = evaluate_run(
        args.target,
        attacks=args.attacks.split(",") if args.attacks else None,
        n=args.n,
        eps=args.eps,
        norm=args.norm,
        batch_size=args.batch_size,
        which=args.which,
        data_root=args.data_root,
        device=args.device,
        seed=args.seed,
        aa_attacks=args.aa_attacks.split(",") if args.aa_attacks else None,
        out=args.out,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(report.table())
    print(f"wrote {out}")


def _cmd_analyze(args: argparse.Namespace) -> None:
    from .runs import analyze_run

    import_modules(recorded_imports(args.target))
    result, out = analyze_run(
        args.target,
        n=args.n,
        eps=args.eps,
        norm=args.norm,
        attack=args.attack,
        seed=args.seed,
        batch_size=args.batch_size,
        which=args.which,
        data_root=args.data_root,
        device=args.device,
        out=args.out,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(result.table())
    print(f"wrote {out}")


def _cmd_report(args: argparse.Namespace) -> None:
    from .build import resolve_device
    from .report import write_report

    for run in args.runs:
        import_modules(recorded_imports(run))
    out = write_report(
        [Path(p) for p in args.runs],
        Path(args.out) if args.out else None,
        eps_curve=not args.no_eps_curve,
        eps_n=args.eps_n,
        device=resolve_device(args.device),
        log=lambda line: print(line, file=sys.stderr),
        eps_attack=args.eps_attack,
    )
    print(f"wrote {out}")


def _cmd_study(args: argparse.Namespace) -> None:
    from .study import load_study, resolve_study, run_study
    from .study_executors import make_executor

    executor = make_executor(args.executor, args.address, args.cpus_per_run, args.gpus_per_run)
    if args.study and "=" in args.study and not Path(args.study).is_file():
        args.study, args.overrides = None, [args.study, *args.overrides]  # --preset x a.b=1
    spec = load_study(resolve_study(args.study, args.preset), args.overrides, args.imports)
    if args.dry_run:
        for run in spec.runs:
            print(f"{run.label}: {preset_label(run.config)} {' '.join(run.overrides)}")
        return
    summary = run_study(
        spec, args.out, log=lambda line: print(line, file=sys.stderr), executor=executor
    )
    print((Path(args.out) / "summary.md").read_text(), end="")
    print(f"wrote {args.out}/study.json, summary.md, study.png ({summary['total_seconds']:.0f} s)")


def _cmd_data(args: argparse.Namespace) -> None:
    from .data import download, list_datasets, load_dataset

    if args.action == "download":
        path = download(args.name, Path(args.root), base_url=args.base_url)
        print(f"{args.name}: downloaded and verified into {path}")
    elif args.action == "info":
        ds = load_dataset(args.name, args.root)
        print(
            f"{ds.name}: {len(ds.y_train)} train / {len(ds.y_test)} test images of shape "
            f"{tuple(ds.image_shape)}, {ds.num_classes} classes ({', '.join(ds.classes[:10])}"
            f"{', ...' if ds.num_classes > 10 else ''})"
        )
    else:
        print("\n".join(list_datasets()))


def _cmd_export(args: argparse.Namespace) -> None:
    from .loading import export_safetensors

    import_modules(recorded_imports(args.target))
    print(f"wrote {export_safetensors(args.target, args.out, which=args.which)}")


def _cmd_config(args: argparse.Namespace) -> None:
    print(_with_imports(load_config(args.config, args.overrides), args).to_yaml(), end="")


def _cmd_list(args: argparse.Namespace) -> None:
    from .attacks import list_eval_attacks
    from .data import list_datasets
    from .methods import list_methods
    from .models import list_models
    from .study import study_preset_names

    listing = {
        "models": list_models,
        "methods": list_methods,
        "attacks": list_eval_attacks,
        "datasets": list_datasets,
        "presets": preset_names,
        "studies": study_preset_names,
    }
    print("\n".join(listing[args.what]()))


CONFIG_HELP = (
    "CONFIG is a preset name (phaseguard list presets: quick, small/fashion_mnist_dat, "
    "paper/cifar10_resnet18_dat, ...) or a YAML file (a path ending in .yaml or .yml, or any "
    "existing file)."
)


def _train_epilog() -> str:
    """``train --help``'s closing text: what CONFIG is, the config's sections and their keys."""
    import dataclasses
    import textwrap

    lines = [
        textwrap.fill(CONFIG_HELP, 79),
        "",
        textwrap.fill(
            "Config sections and their keys (section.key=value sets one; phaseguard config "
            "show CONFIG prints every value):",
            79,
        ),
    ]
    other = {
        "method": "name (phaseguard list methods) and that method's own options",
        "imports": "modules to import first (user code that registers models, methods, ...)",
    }
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            keys = ", ".join(f.name for f in dataclasses.fields(value))
        else:
            keys = other[section.name]
        line = f"{section.name}: {keys}"
        lines.append(textwrap.fill(line, 79, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .attacks import list_eval_attacks

    parser = argparse.ArgumentParser(
        prog="phaseguard",
        description="Adversarially robust image classifiers: DAT and its baselines, "
        "training, honest evaluation, reports.",
    )
    parser.add_argument("--version", action="version", version=f"phaseguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # every command takes --import: user code that registers models, methods, attacks, datasets
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first (repeatable); a run records it and later commands on the "
        "run import it again",
    )

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = command(
        "train",
        help="train a model into a run folder (or resume one)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_train_epilog(),
    )
    p.add_argument("config", nargs="?", help="preset name or YAML file (see below)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = command("eval", help="evaluate a run or checkpoint under attack, write eval.json")
    p.add_argument("target", help="run folder, .pt checkpoint or .safetensors export")
    p.add_argument(
        "--attacks",
        help=f"comma-separated, from {','.join(list_eval_attacks())} (default: the run's "
        "eval.attacks)",
    )
    p.add_argument("--n", type=int, help="evaluate the first n test images")
    p.add_argument("--eps", type=float, help="perturbation budget (default: the run's)")
    p.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    p.add_argument(
        "--aa-attacks",
        help="run AutoAttack's custom version with these attacks (e.g. apgd-ce,apgd-t) "
        "instead of the standard one",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--data-root", help="where the test set lies (default: the run's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (default: RUN_DIR/eval.json)")
    p.set_defaults(func=_cmd_eval)

    p = command("analyze", help="phase reliance: accuracy on cross-class amplitude/phase hybrids")
    p.add_argument("target", help="run folder, .pt checkpoint or .safetensors export")
    p.add_argument("--n", type=int, default=1000, help="use the first n test images (1000)")
    p.add_argument("--eps", type=float, help="perturbation budget (default: the run's)")
    p.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    p.add_argument("--attack", default="pgd20", help="attack for the robust columns (pgd20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs and the attack")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--data-root", help="where the test set lies (default: the run's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="JSON file (default: RUN_DIR/analysis.json)")
    p.set_defaults(func=_cmd_analyze)

    p = command("report", help="HTML report of one run or a comparison of runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="HTML file (default: report.html in the first run folder)")
    p.add_argument(
        "--eps-n",
        type=int,
        default=500,
        help="test images of the robust-accuracy-against-eps curve (500)",
    )
    p.add_argument(
        "--eps-attack",
        default="pgd20",
        help=f"attack of that curve, one of {','.join(list_eval_attacks())} (pgd20)",
    )
    p.add_argument(
        "--no-eps-curve",
        action="store_true",
        help="skip that curve (the attack at 0-1.5 x the run's eps, cached in "
        "RUN_DIR/eps_curve.json)",
    )
    p.add_argument("--device", default="auto", help="device of the attacks and the DAT figure")
    p.set_defaults(func=_cmd_report)

    p = command(
        "study", help="the paper's comparison: every method x seed + DAT ablations, resumable"
    )
    p.add_argument("study", nargs="?", help="study file (YAML)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    p.add_argument("--preset", help="a study preset: small (this CPU) or full (list studies)")
    p.add_argument("--out", required=True, help="study folder (run again to continue it)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: the runs one after another in this process (default); ray: as many at "
        "once as the Ray cluster's resources allow (pip install 'phaseguard[ray]')",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="ray: join the Ray cluster at ADDR (default: start Ray on this machine)",
    )
    p.add_argument(
        "--cpus-per-run",
        type=int,
        metavar="N",
        help="ray: CPUs of each run, also its torch threads (1)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        metavar="G",
        help="ray: GPUs of each run, 0 to 1, fractions share a GPU (0)",
    )
    p.set_defaults(func=_cmd_study)

    p = command("data", help="datasets: download, info, list")
    p.add_argument("action", choices=["download", "info", "list"])
    p.add_argument("name", nargs="?", default="fashion-mnist")
    p.add_argument("--root", help="folder to download into / read from")
    p.add_argument("--base-url", help="mirror to download from instead of the official address")
    p.set_defaults(func=_cmd_data)

    p = command("export", help="export a run's weights to safetensors")
    p.add_argument("target", help="run folder or .pt checkpoint")
    p.add_argument("--out", required=True, help=".safetensors file to write")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.set_defaults(func=_cmd_export)

    p = command(
        "config",
        help="print a resolved config as YAML (every key with its value)",
        epilog=CONFIG_HELP,
    )
    p.add_argument("action", choices=["show"])
    p.add_argument("config", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.set_defaults(func=_cmd_config)

    p = command("list", help="list models, methods, attacks, datasets, presets or study presets")
    p.add_argument(
        "what", choices=["models", "methods", "attacks", "datasets", "presets", "studies"]
    )
    p.set_defaults(func=_cmd_list)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    raise Interrupted("", signum)


def _stop_on_sigterm() -> signal.Handlers | None:
    """Make SIGTERM stop a command as SIGINT does (an exception, so that writes in progress are
    abandoned cleanly and the line says how to continue); returns the handler to restore, None
    outside the main thread (where Python cannot handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminate)


#: Words in the name of a function that creates folders, writes files or reads them, and what
#: :func:`_os_error_line` calls a failure inside it.
_VERBS = (
    (("mkdir", "makedirs"), "create folder"),
    (("write", "save", "dump", "print_png", "replace", "touch", "lock"), "write"),
    (("read", "load"), "read"),
)
#: Errors that only a write gives.
_WRITE_ERRNOS = (errno.EFBIG, errno.ENOSPC, errno.EDQUOT, errno.EROFS)
#: Locals that name the file a function works on, in the order they are trusted.
_PATH_LOCALS = ("path", "out", "target", "file", "filename", "self")


def _os_error_line(exc: OSError) -> str:
    """A file-system failure as one line: ``cannot write|read|create folder|access FILE:
    reason``.

    The file is the one the error names (the destination of a rename); for an error that
    names none (a ``write()`` that hit the file size limit or a full disk) the innermost
    function of the traceback with a path in ``path``/``out``/... (``self`` of a pathlib
    method). Write or read: the innermost function whose name says which, else the error."""
    filename = exc.filename2 or exc.filename
    verb = None
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first
        name = frame.f_code.co_name.lower()
        if verb is None:
            verb = next((v for words, v in _VERBS if any(w in name for w in words)), None)
        if filename is None:
            for local in _PATH_LOCALS:
                value = frame.f_locals.get(local)
                if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
                    filename = value
                    break
    if verb is None:
        verb = "write" if exc.errno in _WRITE_ERRNOS else "access"
    where = os.fsdecode(filename) if isinstance(filename, str | bytes | os.PathLike) else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot {verb} {where}: {reason}"


def _ignore_file_size_signal() -> None:
    """Ignore SIGXFSZ (a write past ``ulimit -f``), which kills the process by default: the
    write then fails with EFBIG, which :func:`main` reports as one line."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (``train CONFIG --out DIR a.b=1``): collect them.
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and args.command not in ("train", "study", "config")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = args.overrides + extra
    if args.command == "data" and args.action == "download" and not args.root:
        print("phaseguard: error: data download needs --root DIR", file=sys.stderr)
        return 2
    keep_freed_memory()
    _ignore_file_size_signal()
    previous = _stop_on_sigterm()
    try:
        configure_threads()  # the cores this process may use (training: train.threads wins)
        import_modules(args.imports)
        args.func(args)
    except PhaseguardError as exc:
        print(f"phaseguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through _terminate
        signum = getattr(exc, "signum", signal.SIGINT)
        what = str(exc) or (
            f"stopped by {signal.Signals(signum).name}; every file written so far is intact "
            "(run the same command again to continue)"
        )
        print(f"phaseguard: {what}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # stdout closed early (``phaseguard list presets | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a read-only folder, a full disk, a file where a folder should be
        print(f"phaseguard: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
