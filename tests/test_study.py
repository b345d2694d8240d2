"""``phaseguard study``: a real (tiny) study runs end to end, summarises and continues."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest

from phaseguard.checkpoint import load_checkpoint
from phaseguard.cli import main
from phaseguard.errors import ConfigError
from phaseguard.run_dir import RunDir
from phaseguard.study import load_study, resolve_study, run_study
from phaseguard.training.logger import read_log
from tests.study_helpers import METHODS, write_study


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    spec = load_study(write_study(folder))
    out = folder / "out"
    summary = run_study(spec, out, log=lambda line: None)
    return spec, out, summary


def test_plan_covers_methods_seeds_and_ablations(tmp_path):
    spec = load_study(write_study(tmp_path))
    labels = [r.label for r in spec.runs]
    assert labels == ["pgd_at_s0", "pgd_at_s1", "dat_s0", "dat_s1", "dat_no_js_s0"]
    cfgs = {r.label: r.load() for r in spec.runs}
    assert cfgs["dat_s1"].train.seed == 1 and cfgs["dat_s1"].method["name"] == "dat"
    assert cfgs["dat_no_js_s0"].method["js"] is False and "js" not in cfgs["dat_s0"].method
    # identical protocol for every method: only method (and seed) differ
    a, b = cfgs["pgd_at_s0"].to_dict(), cfgs["dat_s0"].to_dict()
    assert {k for k in a if a[k] != b[k]} == {"method"}


def test_study_summary_is_the_mean_and_std_of_its_runs(finished_study):
    spec, out, summary = finished_study
    for study_run in spec.runs:
        run = RunDir(out / "runs" / study_run.label)
        assert run.eval_json.is_file() and run.analysis_json.is_file()
    for method in ("pgd_at", "dat"):
        values = [
            json.loads((out / "runs" / f"{method}_s{s}" / "eval.json").read_text())["attacks"][
                "pgd20"
            ]["accuracy"]
            for s in (0, 1)
        ]
        stat = summary["methods"][method]["pgd20"]
        assert stat["n"] == 2
        assert stat["mean"] == pytest.approx(statistics.fmean(values))
        assert stat["std"] == pytest.approx(statistics.stdev(values))
        assert "foreign_amplitude" in summary["methods"][method]
    assert json.loads((out / "study.json").read_text())["methods"] == summary["methods"]
    table = (out / "summary.md").read_text()
    assert "| dat (2 seeds) |" in table and "| dat_no_js_s0 |" in table
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_continues_where_it_stopped(finished_study):
    spec, out, _ = finished_study
    runs = [RunDir(out / "runs" / r.label) for r in spec.runs]
    stamps = {r.root.name: r.checkpoint("last").stat().st_mtime_ns for r in runs}
    runs[1].eval_json.unlink()  # as if killed before its evaluation
    evaluated = runs[2].eval_json.stat().st_mtime_ns
    lines: list[str] = []
    run_study(spec, out, log=lines.append)
    assert {r.root.name: r.checkpoint("last").stat().st_mtime_ns for r in runs} == stamps
    assert runs[1].eval_json.is_file()
    assert runs[2].eval_json.stat().st_mtime_ns == evaluated
    # one line per step: skipped ones say so, the one run again says when it starts and ends
    assert len(lines) == 3 * len(runs) + 1
    assert "[2/5] pgd_at_s1: train (done)" in lines and "[3/5] dat_s0: eval (done)" in lines
    at = lines.index("[2/5] pgd_at_s1: eval started")
    assert re.fullmatch(r"\[2/5\] pgd_at_s1: eval finished in \d+ s", lines[at + 1])


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_study_resumes_its_training_from_the_checkpoint(tmp_path, signum):
    study = write_study(
        tmp_path, ablations=False, epochs=2, seeds=(0,), methods={"pgd_at": METHODS["pgd_at"]}
    )
    out = tmp_path / "out"
    run = RunDir(out / "runs" / "pgd_at_s0")
    cmd = [sys.executable, "-m", "phaseguard", "study", str(study), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not run.has_checkpoint() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    err = proc.communicate()[1].decode()
    state = load_checkpoint(run.checkpoint("last"))
    assert state["epoch"] == 1, err
    if signum == signal.SIGTERM:  # stopped cleanly, in one line that says how to go on
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert err.splitlines()[-1] == (
            "phaseguard: study stopped by SIGTERM in pgd_at_s0: train; "
            "run the same command again to continue"
        )
    first_epoch = state["history"][0]
    spec = load_study(study)
    assert [r.label for r in spec.runs] == ["pgd_at_s0"]
    run_study(spec, out, log=lambda line: None)
    rows = read_log(run.log_csv)
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert rows[0]["seconds"] == pytest.approx(first_epoch["seconds"])  # not trained again
    assert run.eval_json.is_file() and run.analysis_json.is_file()


def test_settings_that_cannot_change_results_do_not_make_another_run(finished_study):
    """Progress display, threads, device and compile are not part of a run's identity: a
    finished study asked again with other values of them has every step done."""
    spec, out, _ = finished_study
    others = ["train.progress=true", "train.threads=1", "train.device=cpu", "train.compile=true"]
    lines: list[str] = []
    run_study(load_study(spec.path, others), out, log=lines.append)
    steps = [line for line in lines if line.startswith("[")]
    assert len(steps) == 3 * len(spec.runs) and all(s.endswith("(done)") for s in steps)


def test_study_refuses_a_folder_trained_with_another_config(finished_study, tmp_path):
    spec, out, _ = finished_study
    changed = write_study(tmp_path)
    text = changed.read_text().replace("train.batch_size=64", "train.batch_size=32")
    changed.write_text(text)
    with pytest.raises(ConfigError, match="another config"):
        run_study(load_study(changed), out, log=lambda line: None)


def test_study_presets_and_cli_errors(tmp_path, capsys):
    for preset in ("small", "full"):
        spec = load_study(resolve_study(preset=preset))
        assert {r.group for r in spec.runs} == {"dat", "pgd_at", "trades", "mart", "ablation"}
        assert "aa" in spec.eval_attacks and spec.eval_n >= 500
    assert main(["study", "--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown study preset 'nope'" in err[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {dat: missing.yaml}\n")
    assert main(["study", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_without_matplotlib_the_study_writes_its_summary_and_notes_the_figure(
    finished_study, tmp_path
):
    """A study's hours of training are not lost to a missing optional extra at the end."""
    _, out, summary = finished_study
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "summary.json").write_text(json.dumps(summary))
    block = (
        "import json, sys; sys.modules['matplotlib'] = None; "
        "from phaseguard.study_summary import write_summary; "
        f"write_summary(json.loads(open({str(copy / 'summary.json')!r}).read()), {str(copy)!r})"
    )
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "study.json").is_file() and (copy / "summary.md").is_file()
    assert not (copy / "study.png").exists()
    assert "no study.png" in proc.stderr and "phaseguard[report]" in proc.stderr
