"""DDP through torchrun on two CPU processes (gloo) against one process with the same batch."""

from __future__ import annotations

import csv
import subprocess
import sys

from phaseguard.data import load_dataset
from phaseguard.loading import load_model
from phaseguard.predict import predict_correct
from phaseguard.training import train
from tests.conftest import tiny_config
from tests.test_methods import SHORT


def _clean_accuracy(run_dir) -> float:
    ds = load_dataset("fashion-mnist")
    net = load_model(run_dir, "last").model
    return predict_correct(net, ds.x_test[:1000], ds.y_test[:1000]).float().mean().item()


def test_two_gloo_processes_train_like_one(tmp_path):
    """DAT (the classifier, split BN and the generator replicated) on two gloo ranks trains
    like one process; PGD-AT's DDP path is DAT's without the generator."""
    cfg = tiny_config(*SHORT, "method.name=dat", "train.threads=1", "method.eaeg_steps=2")
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.to_yaml())
    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "phaseguard",
            "train",
            str(config),
            "--out",
            str(ddp),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # enough of stderr to hold a failing rank's own lines, not only torchrun's summary
    assert proc.returncode == 0, proc.stderr[-8000:]
    assert proc.stdout.count("best validation PGD accuracy") == 1  # only rank 0 reports
    with (ddp / "log.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]

    single = tmp_path / "single"
    train(cfg, single)
    acc_ddp, acc_single = _clean_accuracy(ddp), _clean_accuracy(single)
    assert acc_ddp > 0.3 and acc_single > 0.3  # both trained (10 classes: chance is 0.1)
    assert abs(acc_ddp - acc_single) < 0.1, (acc_ddp, acc_single)
