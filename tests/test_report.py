"""``phaseguard report`` on real runs: the page and its PNGs, the cached eps curve, the phase
reliance table and the DAT figure (from a tiny DAT run trained here on real Fashion-MNIST)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from phaseguard.build import build_method
from phaseguard.checkpoint import load_checkpoint, save_checkpoint
from phaseguard.data import load_dataset
from phaseguard.errors import PhaseguardError
from phaseguard.loading import load_model
from phaseguard.models import create_model
from phaseguard.predict import predict_correct
from phaseguard.report import write_report
from phaseguard.report.dat_figure import DATViews, dat_views, plot_dat_views
from phaseguard.report.eps_curve import EPS_MULTIPLES
from phaseguard.run_dir import RunDir
from phaseguard.spectrum import decompose, mix_amplitude, recompose
from tests.conftest import tiny_config

EPS_N = 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.src.append(dict(attrs)["src"])


def image_sources(page: str) -> list[str]:
    parser = _Images()
    parser.feed(page)
    return parser.src


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 5000, path
    with Image.open(path) as im:
        im.verify()


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(PGD-AT run, DAT run): a private copy of the shared tiny run and a 1-epoch DAT run."""
    from phaseguard.training import train

    root = tmp_path_factory.mktemp("report_runs")
    pgd = root / "pgd"
    shutil.copytree(tiny_run, pgd)
    dat = root / "dat"
    train(tiny_config("method.name=dat", "train.epochs=1", "method.eaeg_steps=2"), dat)
    return pgd, dat


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cmp.html"
    assert write_report(list(runs), out, eps_n=EPS_N) == out
    return out


def test_page_references_only_valid_pngs_next_to_it(report):
    sources = image_sources(report.read_text())
    assert sources == ["cmp_curves.png", "cmp_eps.png", "cmp_dat1.png"]
    for src in sources:
        assert_valid_png(report.parent / src)


def test_dat_figure_appears_for_the_dat_run_only(report):
    page = report.read_text()
    assert "<h3>dat</h3>" in page and "<h3>pgd</h3>" not in page
    assert "DAT views of dat" in page and "DAT views of pgd" not in page
    assert not (report.parent / "cmp_dat0.png").exists()
    assert "lam * A_G + (1 - lam)" in page


def test_missing_analysis_says_how_to_get_it(runs, report):
    page = report.read_text()
    for run in runs:
        assert f"<code>phaseguard analyze {run}</code> produces it" in page


def test_eps_curve_starts_at_clean_accuracy_and_does_not_rise(runs, report):
    ds = load_dataset("fashion-mnist")
    for run in runs:
        curve = json.loads(RunDir(run).eps_curve_json.read_text())
        loaded = load_model(run, which="best")
        eps = loaded.config.attack.eps
        assert curve["n"] == EPS_N and curve["norm"] == "linf" and curve["attack"] == "pgd20"
        assert curve["eps"] == pytest.approx([m * eps for m in EPS_MULTIPLES])
        assert curve["checkpoint"] == "checkpoints/best.pt" and curve["seed"] == 0
        clean = predict_correct(loaded.model, ds.x_test[:EPS_N], ds.y_test[:EPS_N])
        assert curve["correct"][0] == int(clean.sum())
        assert curve["accuracy"][0] == pytest.approx(clean.float().mean().item())
        counts = curve["correct"]
        assert all(b <= a + 2 for a, b in zip(counts, counts[1:])), counts
        assert counts[-1] < counts[0], counts  # 1.5 x the training eps does hurt


def test_second_report_reuses_the_cache_and_other_eps_n_recomputes(runs, report, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs[0], run)  # with the 64-image eps_curve.json the report wrote
    cache = RunDir(run).eps_curve_json
    before = (cache.stat().st_mtime_ns, cache.read_text())
    write_report([run], eps_n=EPS_N)
    assert (cache.stat().st_mtime_ns, cache.read_text()) == before
    write_report([run], eps_n=EPS_N // 2)
    curve = json.loads(cache.read_text())
    assert curve["n"] == EPS_N // 2 and len(curve["correct"]) == len(EPS_MULTIPLES)
    assert curve["checkpoint_sha256"] == json.loads(before[1])["checkpoint_sha256"]


def test_phase_reliance_rows_escaping_and_skipped_eps_curve(runs, tmp_path):
    odd = tmp_path / "run<&>"
    shutil.copytree(runs[0], odd)
    (odd / "analysis.json").write_text(
        json.dumps({"clean": 0.5, "robust": 0.25, "foreign_amplitude": 0.125, "n": 64})
    )
    out = write_report([odd, runs[1]], tmp_path / "rep.html", eps_curve=False)
    page = out.read_text()
    assert "run&lt;&amp;&gt;" in page and "run<&>" not in page
    phase = page.split("<h2>Phase reliance</h2>")[1].split("<h2>")[0]
    row = next(line for line in phase.split("<tr>") if line.startswith("<th>run&lt;"))
    assert "<td>50.00%</td><td>25.00%</td><td>12.50%</td><td>-</td>" in row
    assert "<td>64</td>" in row
    assert f"<code>phaseguard analyze {runs[1]}</code> produces it" in page
    assert "--no-eps-curve" in page and "eps_curve.json" in page
    assert not (tmp_path / "rep_eps.png").exists()
    assert image_sources(page) == ["rep_curves.png", "rep_dat1.png"]


def test_non_run_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(PhaseguardError, match="not a run folder"):
        write_report([tmp_path])
    proc = subprocess.run(
        [sys.executable, "-m", "phaseguard", "report", str(tmp_path), "--no-eps-curve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), proc.stderr
    assert "not a run folder" in lines[0]


def test_dat_views_from_the_checkpoint_are_what_dat_trains_on(runs):
    d = dat_views(runs[1], k=6, seed=3)
    v = d.views
    amplitude, phase = decompose(d.x)
    torch.testing.assert_close(v["amplitude"], amplitude)
    torch.testing.assert_close(v["phase"], phase)
    assert ((v["distractor"] > 0) & (v["distractor"] < 1)).all()
    assert ((v["lam"] >= 0) & (v["lam"] < 1)).all()  # mix_max 1
    mixed = mix_amplitude(amplitude, v["distractor"], v["lam"])
    torch.testing.assert_close(v["x_hat"], recompose(mixed, phase))  # x's phase, no crop/flip
    moved = (v["x_hat"] - d.x).flatten(1).abs().amax(1)
    assert (moved[v["lam"] > 0.05] > 0.01).all(), moved
    assert (v["x_hat_adv"] - v["x_hat"]).abs().max() <= d.eps + 1e-6
    assert (v["x_hat_adv"] != v["x_hat"]).any()
    again = dat_views(runs[1], k=6, seed=3).views
    assert all(torch.equal(v[name], again[name]) for name in v)


def test_dat_figure_renders_rgb_images(tmp_path):
    """RGB: DAT's views of real CIFAR-10 images (foolbox's 20) through a fresh 3-channel DAT."""
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("foolbox (its CIFAR-10 sample images) is not installed")
    files = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("cifar10_*.png"))[:4]
    x = torch.from_numpy(np.stack([np.array(Image.open(f).convert("RGB")) for f in files]))
    x = x.permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    torch.manual_seed(0)
    cfg = tiny_config("method.name=dat")
    net = create_model("smallcnn", 10, 3, split_bn=True, width=8)
    method = build_method(cfg, net, 10, (3, 32, 32))
    with torch.no_grad():
        views = method.views(x, y)
    d = DATViews(x, y, views, [str(c) for c in range(10)], True, cfg.attack.eps, "linf", 0, 0)
    out = plot_dat_views(d, tmp_path / "rgb.png")
    assert_valid_png(out)
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 600


def test_dat_run_without_amplitude_mixup_gets_a_note_not_a_figure(runs, tmp_path):
    run = tmp_path / "nomix"
    shutil.copytree(runs[1], run)
    ckpt = RunDir(run).checkpoint("last")
    state = load_checkpoint(ckpt)
    tree = yaml.safe_load(state["config"])
    tree["method"]["mixup"] = False
    save_checkpoint({**state, "config": yaml.safe_dump(tree)}, ckpt)
    page = write_report([run], eps_curve=False).read_text()
    assert "without amplitude mix-up (x_hat = x)" in page
    assert image_sources(page) == ["report_curves.png"]
