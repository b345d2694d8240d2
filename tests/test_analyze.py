"""Phase reliance on real Fashion-MNIST: partners, hybrids, the analysis, `phaseguard analyze`."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from phaseguard.analyze import (
    PhaseReliance,
    analyze_phase_reliance,
    cross_class_partners,
    hybrid_images,
)
from phaseguard.cli import main
from phaseguard.data import load_dataset
from phaseguard.errors import DataError
from phaseguard.loading import load_model
from phaseguard.predict import as_unit_float, predict_correct
from phaseguard.run_dir import RunDir

ACCURACIES = (
    "clean",
    "robust",
    "foreign_amplitude",
    "foreign_phase",
    "foreign_amplitude_robust",
    "foreign_phase_robust",
)


def share(correct: torch.Tensor) -> float:
    return int(correct.sum()) / len(correct)


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread inside: beside other jobs on a two-core machine, two threads ran the
    analysis of 200 images seven times slower (35 s against 5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def test_set():
    ds = load_dataset("fashion-mnist")
    return ds.x_test[:200], ds.y_test[:200]  # uint8 [200,1,28,28], all ten classes


@pytest.fixture(scope="module")
def tiny_analysis(tiny_run, test_set):
    model = load_model(tiny_run).model
    x, y = test_set
    with one_thread():
        return model, analyze_phase_reliance(model, x, y, eps=0.1, seed=0, batch_size=100)


def test_partners_are_cross_class_seeded_and_cover_every_index(test_set):
    _, y = test_set
    partner = cross_class_partners(y, seed=0)
    assert partner.shape == y.shape and partner.dtype == torch.int64
    assert ((partner >= 0) & (partner < len(y))).all()
    assert (y[partner] != y).all()
    assert torch.equal(partner, cross_class_partners(y, seed=0))
    assert not torch.equal(partner, cross_class_partners(y, seed=1))
    # uniform among the other-class images: over 20 seeds every image is someone's partner
    drawn = torch.cat([cross_class_partners(y, seed) for seed in range(20)])
    assert drawn.unique().numel() == len(y)


def test_partners_need_two_classes():
    with pytest.raises(DataError, match="at least two classes"):
        cross_class_partners(torch.full((5,), 3), seed=0)


def test_hybrid_with_itself_is_the_image(test_set):
    x = as_unit_float(test_set[0][:32])
    torch.testing.assert_close(hybrid_images(x, torch.arange(32)), x, atol=1e-5, rtol=0)


def test_hybrid_takes_the_partner_amplitude_and_keeps_its_own_phase(test_set):
    # Scaling by 0.5 halves the amplitude and keeps the phase; a circular shift keeps the
    # amplitude and changes the phase. Pairing each image a with b = 0.5 * roll(a) therefore has
    # exact answers inside [0, 1], where recompose does not clamp:
    # amplitude of b + phase of a = 0.5 * a, and amplitude of a + phase of b = roll(a).
    a = as_unit_float(test_set[0][:16])
    rolled = a.roll((3, 5), dims=(-2, -1))
    x = torch.cat([a, 0.5 * rolled])
    partner = torch.cat([torch.arange(16, 32), torch.arange(16)])
    expected = torch.cat([0.5 * a, rolled])
    torch.testing.assert_close(hybrid_images(x, partner), expected, atol=1e-5, rtol=0)


def test_hybrids_of_real_pairs_are_batched_images_in_range(test_set):
    x, y = test_set
    partner = cross_class_partners(y, seed=0)
    whole = hybrid_images(as_unit_float(x), partner)
    assert whole.shape == x.shape and whole.dtype == torch.float32
    assert whole.min() >= 0 and whole.max() <= 1
    torch.testing.assert_close(hybrid_images(x, partner, batch_size=7), whole, atol=1e-6, rtol=0)
    far = (whole - as_unit_float(x)).abs().flatten(1).amax(1) > 0.1
    assert far.all()  # another image's amplitude changes every image
    with pytest.raises(DataError, match="partner indices"):
        hybrid_images(x, partner[:-1])


def test_analysis_scores_the_right_labels_and_attacks_lower_accuracy(tiny_analysis, test_set):
    model, result = tiny_analysis
    x, y = test_set
    assert (result.n, result.eps, result.norm, result.seed, result.attack) == (
        200,
        0.1,
        "linf",
        0,
        "pgd20",
    )
    values = {name: getattr(result, name) for name in ACCURACIES}
    assert all(0 <= v <= 1 for v in values.values()), values
    assert result.clean == share(predict_correct(model, x, y))
    partner = cross_class_partners(y, seed=0)
    hybrids = hybrid_images(x, partner)
    assert result.foreign_amplitude == share(predict_correct(model, hybrids, y))
    assert result.foreign_phase == share(predict_correct(model, hybrids, y[partner]))
    # y[i] != y[partner[i]]: no hybrid is scored correct for both owners
    assert result.foreign_amplitude + result.foreign_phase <= 1
    assert result.robust < result.clean
    assert result.foreign_amplitude_robust <= result.foreign_amplitude
    assert result.foreign_phase_robust <= result.foreign_phase
    assert result.phase_reliance == pytest.approx(result.foreign_amplitude / result.clean)
    assert not model.training


def test_same_seed_gives_the_same_numbers_and_a_line_per_pass(tiny_analysis, test_set):
    model, first = tiny_analysis
    lines = []
    again = analyze_phase_reliance(
        model, *test_set, eps=0.1, seed=0, batch_size=100, log=lines.append
    )
    assert {k: getattr(again, k) for k in ACCURACIES} == {k: getattr(first, k) for k in ACCURACIES}
    passes = [
        ("originals, clean", first.clean),
        ("originals, pgd20", first.robust),
        ("foreign amplitude, clean", first.foreign_amplitude),
        ("foreign phase, clean", first.foreign_phase),
        ("foreign amplitude, pgd20", first.foreign_amplitude_robust),
        ("foreign phase, pgd20", first.foreign_phase_robust),
    ]
    assert len(lines) == len(passes)
    for line, (label, value) in zip(lines, passes):
        hits = round(200 * value)
        assert re.fullmatch(rf"{label}: {100 * value:.2f}% \({hits}/200\), \d+\.\d s", line), line


def test_cli_writes_analysis_json_into_the_run(tiny_run, tiny_analysis, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays untouched
    assert main(["analyze", str(run), "--n", "200", "--batch-size", "100"]) == 0
    stdout = capsys.readouterr().out
    written = json.loads(RunDir(run).analysis_json.read_text())
    assert f"wrote {RunDir(run).analysis_json}" in stdout and "foreign amplitude" in stdout
    _, expected = tiny_analysis  # the run's eps (0.1) and norm, seed 0: the same numbers
    assert {k: written[k] for k in ACCURACIES} == {k: getattr(expected, k) for k in ACCURACIES}
    assert written["phase_reliance"] == expected.phase_reliance
    assert (written["n"], written["eps"], written["norm"], written["attack"]) == (
        200,
        0.1,
        "linf",
        "pgd20",
    )
    assert written["info"]["source"].endswith("best.pt") and written["seconds"] > 0
    fields = {k: v for k, v in written.items() if k != "phase_reliance"}
    assert PhaseReliance(**fields).to_dict() == written


@pytest.mark.parametrize(
    "args, fragment",
    [(["{tmp}/nope"], "does not exist"), (["{run}", "--attack", "aa"], "unknown attack 'aa'")],
)
def test_bad_input_is_one_line(tiny_run, tmp_path, capsys, args, fragment):
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in args]
    assert main(["analyze", *argv, "--out", str(tmp_path / "a.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), lines
    assert fragment in lines[0]
    assert not (tmp_path / "a.json").exists()
