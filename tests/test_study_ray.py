"""``phaseguard study --executor ray``: runs in parallel on a real local Ray instance, with the
local executor's results, surviving a killed worker; failed runs are reported, not fatal."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from phaseguard.cli import main
from phaseguard.config import load_config
from phaseguard.fingerprint import weights_sha256
from phaseguard.loading import load_model
from phaseguard.lock import LOCK_NAME
from phaseguard.run_dir import RunDir
from phaseguard.study import StudyFailed, load_study, run_study
from phaseguard.study_executors import RayExecutor
from phaseguard.training import train
from phaseguard.training.logger import read_log
from tests.study_helpers import METHODS, write_study

# A method whose weights blow up in the first epoch (the loss becomes NaN), and its repair.
DIVERGING = {"method": {"name": "pgd_at"}, "optim": {"weight_decay": 1e9}}
FAILING_STUDY = {"bad": DIVERGING, "pgd_at": METHODS["pgd_at"]}


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with 2 CPUs for the tests of this file (run_study uses it and
    leaves it running)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def _study_json(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())


def test_executor_ray_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without the extra
    study = write_study(tmp_path, ablations=False)
    assert main(["study", str(study), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "phaseguard: error: phaseguard study --executor ray needs ray: "
        "pip install 'phaseguard[ray]'"
    ]


def test_ray_options_with_the_local_executor_are_refused(tmp_path, capsys):
    study = str(write_study(tmp_path, ablations=False))
    out = str(tmp_path / "out")
    assert main(["study", study, "--out", out, "--address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "phaseguard: error: --address is an option of --executor ray, not of --executor local"
    ]
    assert main(["study", study, "--out", out, "--executor", "ray", "--gpus-per-run", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--gpus-per-run 2: must be in 0..1" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_failed_run_does_not_stop_the_others(tmp_path, capsys):
    study = write_study(tmp_path, ablations=False, seeds=(0,), methods=FAILING_STUDY)
    out = tmp_path / "out"
    one_thread = "train.threads=1"  # quicker than 2 on a machine that other jobs share
    assert main(["study", str(study), one_thread, "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(
        line.startswith("[1/2] bad_s0: train failed: loss became NaN or infinite") for line in err
    ), err
    assert any(line.startswith("[2/2] pgd_at_s0: analyze finished in") for line in err), err
    assert err[-1] == (
        "phaseguard: error: 1 of 2 runs failed (bad_s0; the reasons are above); "
        "run the same command again to retry them"
    )
    assert RunDir(out / "runs" / "pgd_at_s0").analysis_json.is_file()
    assert not (out / "study.json").exists()
    assert set(json.loads((out / "timings.json").read_text())) == {"pgd_at_s0"}

    (tmp_path / "bad.yaml").write_text(json.dumps(METHODS["pgd_at"]))  # repaired
    lines: list[str] = []
    summary = run_study(load_study(study, [one_thread]), out, log=lines.append)
    assert "[1/2] bad_s0: train started" in lines and "[2/2] pgd_at_s0: train (done)" in lines
    assert [r["label"] for r in summary["runs"]] == ["bad_s0", "pgd_at_s0"]
    assert all("pgd20" in r["accuracy"] for r in summary["runs"])


def test_ray_reports_a_failed_run_and_finishes_the_others(ray_instance, tmp_path):
    study = write_study(tmp_path, ablations=False, seeds=(0,), methods=FAILING_STUDY)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(StudyFailed, match=r"^1 of 2 runs failed \(bad_s0; .* to retry them$"):
        run_study(load_study(study), out, log=lines.append, executor=RayExecutor())
    assert any(line.startswith("[bad_s0] train failed: loss became NaN") for line in lines), lines
    assert any(line.startswith("[pgd_at_s0] finished (") for line in lines), lines
    assert RunDir(out / "runs" / "pgd_at_s0").analysis_json.is_file()
    assert not (out / "study.json").exists()


def test_ray_runs_in_parallel_with_the_local_executors_results(ray_instance, tmp_path):
    """2 methods x 2 seeds on 2 CPUs, 1 per run: runs overlap in time, and every accuracy
    equals the local executor's (1 torch thread there too: CPU results depend on it)."""
    study = write_study(tmp_path, ablations=False)
    run_study(load_study(study, ["train.threads=1"]), tmp_path / "local", log=lambda line: None)
    cmd = ["study", str(study), "--out", str(tmp_path / "ray"), "--executor", "ray"]
    assert main([*cmd, "--cpus-per-run", "1"]) == 0

    timings = json.loads((tmp_path / "ray" / "timings.json").read_text())
    spans = sorted(
        (min(s[0] for s in t["spans"].values()), max(s[1] for s in t["spans"].values()))
        for t in timings.values()
    )
    assert len(spans) == 4
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    local, ray = _study_json(tmp_path / "local"), _study_json(tmp_path / "ray")
    assert ray["methods"] == local["methods"]
    assert [(r["label"], r["accuracy"]) for r in ray["runs"]] == [
        (r["label"], r["accuracy"]) for r in local["runs"]
    ]
    assert all(set(r["seconds"]) == {"train", "eval", "analyze"} for r in ray["runs"])


def _kill_during_training(run: RunDir, epochs: int, killed: dict) -> None:
    """SIGKILL the process holding ``run``'s lock once it has finished an epoch of ``epochs``;
    ``killed`` gets its pid and the log rows it had written."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = read_log(run.log_csv) if run.log_csv.is_file() else []
        if 1 <= len(rows) < epochs:
            pid = json.loads((run.root / LOCK_NAME).read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, rows=rows)
            return
        time.sleep(0.01)


def test_a_killed_ray_worker_is_retried_and_resumes_training(ray_instance, tmp_path):
    epochs = 6
    methods = {"pgd_at": METHODS["pgd_at"]}
    study = write_study(tmp_path, ablations=False, epochs=epochs, seeds=(0,), methods=methods)
    spec = load_study(study)
    out = tmp_path / "out"
    run = RunDir(out / "runs" / "pgd_at_s0")
    killed: dict = {}
    killer = threading.Thread(target=_kill_during_training, args=(run, epochs, killed))
    killer.start()
    try:
        run_study(spec, out, log=lambda line: None, executor=RayExecutor())
    finally:
        killer.join()
    assert killed, "training was never caught between its first and last epoch"
    assert killed["pid"] != os.getpid()
    assert len(killed["rows"]) < epochs, "the worker finished training before it was killed"
    # another worker took the lock over and finished the run, resuming its checkpoint
    assert json.loads((run.root / LOCK_NAME).read_text())["pid"] != killed["pid"]
    rows = read_log(run.log_csv)
    assert [r["epoch"] for r in rows] == [float(e) for e in range(1, epochs + 1)]
    assert rows[0]["seconds"] == killed["rows"][0]["seconds"]  # not trained again
    assert run.eval_json.is_file() and run.analysis_json.is_file()

    # the same run uninterrupted, in this process, with the worker's 1 thread
    study_run = spec.runs[0]
    reference = tmp_path / "reference"
    train(load_config(study_run.config, [*study_run.overrides, "train.threads=1"]), reference)
    for which in ("last", "best"):
        resumed = weights_sha256(load_model(run.root, which=which, device="cpu").model)
        assert resumed == weights_sha256(load_model(reference, which=which, device="cpu").model)
    losses = [r["train_loss"] for r in read_log(RunDir(reference).log_csv)]
    assert [r["train_loss"] for r in rows] == losses
