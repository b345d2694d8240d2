"""``phaseguard report`` on real runs: the page and its PNGs, what every table of measurements
says it measured, the runs' configuration and environment, the sanity checks, the cached eps
curve, the phase reliance table and the DAT figure (from a tiny PGD-AT run, evaluated here, and a
tiny DAT run, analysed here, trained on real Fashion-MNIST); the page as Chromium draws it."""

from __future__ import annotations

import json
import re
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

import phaseguard
from phaseguard.build import build_method
from phaseguard.checkpoint import load_checkpoint, save_checkpoint
from phaseguard.config import load_config
from phaseguard.data import load_dataset
from phaseguard.errors import PhaseguardError
from phaseguard.loading import load_model
from phaseguard.models import create_model
from phaseguard.predict import predict_correct
from phaseguard.report import write_report
from phaseguard.report.dat_figure import DATViews, dat_views, plot_dat_views
from phaseguard.report.eps_curve import EPS_MULTIPLES
from phaseguard.report.plots import training_figure
from phaseguard.run_dir import RunDir
from phaseguard.runs import analyze_run, evaluate_run
from phaseguard.spectrum import decompose, mix_amplitude, recompose
from phaseguard.training.logger import read_log
from tests.conftest import tiny_config

EPS_N = 64
EVAL_N = 32  # not EPS_N: the page must say which n each number is on
ANALYSIS_N = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: What every table of measurements starts with.
CONTEXT = ["run", "checkpoint", "epoch", "n", "norm", "eps"]


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


class _Tables(HTMLParser):
    """The page's tables as rows of cell texts, and all its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "style":
            self._style = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "style":
            self._style = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if not self._style:
            self.text.append(data)


def parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def section(page: str, title: str) -> str:
    """The HTML between ``<h2>title</h2>`` and the next ``<h2>``."""
    return page.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]


def rows_of(page: str, title: str) -> dict[str, list[str]]:
    """The rows of the single table of section ``title``, by their first cell."""
    (table,) = parse(section(page, title)).tables
    return {row[0]: row for row in table}


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > 5000, path
    with Image.open(path) as im:
        im.verify()


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(PGD-AT run, DAT run): a private copy of the shared tiny run, evaluated on EVAL_N test
    images, and a 1-epoch DAT run, analysed on ANALYSIS_N."""
    from phaseguard.training import train

    root = tmp_path_factory.mktemp("report_runs")
    pgd = root / "pgd"
    shutil.copytree(tiny_run, pgd)
    evaluate_run(pgd, ["natural", "fgsm", "pgd20"], n=EVAL_N, device="cpu")
    dat = root / "dat"
    train(tiny_config("method.name=dat", "train.epochs=1", "method.eaeg_steps=2"), dat)
    analyze_run(dat, n=ANALYSIS_N, device="cpu")
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


DAT_SECTION = "DAT: amplitude mix-up and its adversarial example"


def test_dat_section_shows_what_the_distractor_did_each_epoch(runs, report):
    page = report.read_text()
    distractor = parse(section(page, DAT_SECTION)).tables[0]
    assert distractor[0][-4:] == ["G mean", "G std", "G effect", "G travel"]
    keys = ("train_ag_mean", "train_ag_std", "train_ag_effect", "train_ag_travel")
    logged = [[f"{r[k]:.4f}" for k in keys] for r in read_log(runs[1] / "log.csv")]
    assert [row[-4:] for row in distractor[1:]] == logged  # the DAT run's epochs only
    assert all(float(row[-1]) > 0 for row in distractor[1:])  # the generator moved
    assert "the amplitude map A_G" in page


def test_dat_figure_appears_for_the_dat_run_only(report):
    page = report.read_text()
    assert "<h3>dat</h3>" in page and "<h3>pgd</h3>" not in page
    assert "DAT views of dat" in page and "DAT views of pgd" not in page
    assert not (report.parent / "cmp_dat0.png").exists()
    assert "lam * A_G + (1 - lam)" in page


def test_missing_analysis_says_how_to_get_it(runs, report):
    page = report.read_text()
    assert f"<code>phaseguard analyze {runs[0]}</code> produces it" in page
    assert f"phaseguard analyze {runs[1]}" not in page  # analysed


def test_every_table_of_measurements_says_checkpoint_epoch_n_norm_and_eps(runs, report):
    """The evaluation (EVAL_N images), the eps curve (EPS_N), phase reliance (ANALYSIS_N) and the
    DAT figure (6, last checkpoint) each say on what they were measured."""
    page = report.read_text()
    for title in ["Training", "Evaluation", "Robust accuracy against eps", "Phase reliance"]:
        (table,) = parse(section(page, title)).tables
        assert table[0][: len(CONTEXT)] == CONTEXT, title
    best = {run.name: str(load_model(run, which="best").epoch) for run in runs}
    evaluation = rows_of(page, "Evaluation")
    assert evaluation["pgd"][1:6] == ["best", best["pgd"], str(EVAL_N), "linf", "0.1"]
    assert "dat" not in evaluation
    eps = rows_of(page, "Robust accuracy against eps")
    for run in ("pgd", "dat"):
        assert eps[run][1:6] == ["best", best[run], str(EPS_N), "linf", "0.1"]
    phase = rows_of(page, "Phase reliance")
    assert phase["dat"][1:7] == ["best", best["dat"], str(ANALYSIS_N), "linf", "0.1", "pgd20"]
    assert "pgd" not in phase
    training = rows_of(page, "Training")
    assert training["pgd"][1:7] == [
        "each epoch",
        "1-3",
        "4 per class",
        "linf",
        "0.1",
        "PGD-2, step 0.05",
    ]
    assert training["dat"][2] == "1"
    distractor, figure = parse(section(page, DAT_SECTION)).tables
    assert figure == [[*CONTEXT, "seed"], ["dat", "last", "1", "6", "linf", "0.1", "0"]]
    assert distractor[0][: len(CONTEXT)] == CONTEXT
    assert distractor[1][:6] == ["dat", "training", "1", "384", "linf", "0.1"]


def test_page_leaks_no_nan_none_or_null(runs, report):
    text = " ".join(parse(report.read_text()).text)
    # the sanity checks' own words ("a NaN or infinite logit") are prose, not leaked values
    for check in json.loads(RunDir(runs[0]).eval_json.read_text())["sanity"]:
        text = text.replace(check["detail"], "").replace(check["name"], "")
    assert not re.search(r"\b(nan|NaN|None|null|inf)\b", text), text


def test_runs_section_summarises_each_config(runs, report):
    table = parse(section(report.read_text(), "Runs")).tables[0]
    assert table[0] == ["", "pgd", "dat"]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert rows["method"] == ["pgd_at", "dat"]
    assert rows["method options"][0] == "none"
    assert "beta=15" in rows["method options"][1] and "eaeg_steps=2" in rows["method options"][1]
    assert rows["model"] == ["smallcnn (width=8)"] * 2
    assert rows["data"][0].startswith("fashion-mnist, 384 training images, 4 per class held out")
    assert rows["training attack"] == ["linf eps 0.1, 2 steps of 0.05"] * 2
    assert rows["epochs"] == ["3, batch 64", "1, batch 64"]
    precision = [load_config(RunDir(run).config).train.precision for run in runs]
    assert [p.split(",")[0] for p in rows["precision"]] == precision
    assert precision[0] in ("fp32", "bf16", "fp16")  # config.yaml holds the resolved value
    assert rows["seed"] == ["0", "0"]
    assert rows["environment: torch"] == [torch.__version__, "unknown: no eval.json"]
    assert rows["environment: phaseguard"] == [phaseguard.__version__, "unknown: no eval.json"]


def test_environment_from_eval_json_or_unknown(runs, tmp_path):
    with_env, without = tmp_path / "with_env", tmp_path / "without"
    for run, environment in [
        (with_env, {"torch": "2.13.0", "device": {"type": "cpu"}}),
        (without, None),
    ]:
        shutil.copytree(runs[0], run)
        e = json.loads(RunDir(run).eval_json.read_text())
        e["info"].pop("environment", None)
        if environment:
            e["info"]["environment"] = environment
        RunDir(run).eval_json.write_text(json.dumps(e))
    page = write_report([with_env, without], eps_curve=False).read_text()
    rows = {row[0]: row[1:] for row in parse(section(page, "Runs")).tables[0][1:]}
    assert rows["environment: torch"] == ["2.13.0", "unknown: eval.json records none"]
    assert rows["environment: device.type"] == ["cpu", "unknown: eval.json records none"]
    page = write_report([without], eps_curve=False).read_text()
    rows = {row[0]: row[1:] for row in parse(section(page, "Runs")).tables[0][1:]}
    assert rows["environment"] == ["unknown: eval.json records none"]


def test_sanity_checks_passed_and_failed_are_shown(runs, report, tmp_path):
    checks = json.loads(RunDir(runs[0]).eval_json.read_text())["sanity"]
    assert len(checks) >= 4 and all(c["passed"] for c in checks)
    page = report.read_text()
    assert rows_of(page, "Evaluation")["pgd"][-1] == f"{len(checks)} of {len(checks)} passed"
    (table,) = parse(section(page, "Sanity checks")).tables
    assert table[1] == ["pgd", "passed", checks[0]["name"], checks[0]["detail"]]
    assert [row[-3:] for row in table[1:]] == [["passed", c["name"], c["detail"]] for c in checks]

    bad = tmp_path / "bad"
    shutil.copytree(runs[0], bad)
    e = json.loads(RunDir(bad).eval_json.read_text())
    e["sanity"][1].update(passed=False, detail="made up for this test")
    RunDir(bad).eval_json.write_text(json.dumps(e))
    page = write_report([bad], eps_curve=False).read_text()
    evaluation = parse(section(page, "Evaluation")).tables[0]
    assert evaluation[1][-1] == f"1 of {len(checks)} failed"
    assert evaluation[2] == [f"warning (bad): {checks[1]['name']}: made up for this test"]
    (table,) = parse(section(page, "Sanity checks")).tables
    assert [row[-3] for row in table[1:]] == ["passed", "FAILED"] + ["passed"] * (len(checks) - 2)


def test_training_curves_tick_whole_epochs_only(runs):
    fig = training_figure({run.name: read_log(RunDir(run).log_csv) for run in runs})
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


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
    out = write_report([odd, runs[0], runs[1]], tmp_path / "rep.html", eps_curve=False)
    page = out.read_text()
    assert "run&lt;&amp;&gt;" in page and "run<&>" not in page
    row = rows_of(page, "Phase reliance")["run<&>"]
    assert row[1:] == ["-", "-", "64", "-", "-", "-", "50.00%", "25.00%", "12.50%"] + ["-"] * 4
    assert f"<code>phaseguard analyze {runs[0]}</code> produces it" in page
    assert "--no-eps-curve" in page and "eps_curve.json" in page
    assert not (tmp_path / "rep_eps.png").exists()
    assert image_sources(page) == ["rep_curves.png", "rep_dat2.png"]


def _one_error_line(cmd: list[str]) -> str:
    """Run ``cmd``; it must exit 2 with exactly one ``phaseguard: error:`` line, returned."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), proc.stderr
    return lines[0]


def test_non_run_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(PhaseguardError, match="not a run folder"):
        write_report([tmp_path])
    cmd = [sys.executable, "-m", "phaseguard", "report", str(tmp_path), "--no-eps-curve"]
    assert "not a run folder" in _one_error_line(cmd)


def test_dat_views_from_the_checkpoint_are_what_dat_trains_on(runs):
    d = dat_views(runs[1], k=6, seed=3)
    v = d.views
    amplitude, phase = decompose(d.x)
    torch.testing.assert_close(v["amplitude"], amplitude)
    torch.testing.assert_close(v["phase"], phase)
    assert ((v["distractor"] > 0) & (v["distractor"] < 1)).all()
    assert torch.equal(v["output"], v["distractor"]) and not d.log_scale
    assert ((v["lam"] >= 0) & (v["lam"] < 1)).all()  # mix_max 1
    mixed = mix_amplitude(amplitude, v["distractor"], v["lam"])
    torch.testing.assert_close(v["x_hat"], recompose(mixed, phase))  # x's phase, no crop/flip
    moved = (v["x_hat"] - d.x).flatten(1).abs().amax(1)
    assert (moved[v["lam"] > 0.05] > 0.01).all(), moved
    assert (v["x_hat_adv"] - v["x_hat"]).abs().max() <= d.eps + 1e-6
    assert (v["x_hat_adv"] != v["x_hat"]).any()
    again = dat_views(runs[1], k=6, seed=3).views
    assert all(torch.equal(v[name], again[name]) for name in v)


@pytest.mark.parametrize("output", ["sigmoid", "log_scale"])
def test_dat_figure_renders_rgb_images(tmp_path, output):
    """RGB: DAT's views of real CIFAR-10 images (foolbox's 20) through a fresh 3-channel DAT,
    with the reference's generator and with the log-amplitude one."""
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("foolbox (its CIFAR-10 sample images) is not installed")
    files = sorted((Path(spec.submodule_search_locations[0]) / "data").glob("cifar10_*.png"))[:4]
    x = torch.from_numpy(np.stack([np.array(Image.open(f).convert("RGB")) for f in files]))
    x = x.permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    torch.manual_seed(0)
    cfg = tiny_config("method.name=dat", f"method.generator_output={output}")
    net = create_model("smallcnn", 10, 3, split_bn=True, width=8)
    method = build_method(cfg, net, 10, (3, 32, 32))
    with torch.no_grad():
        views = method.views(x, y)
    log_scale = output == "log_scale"
    classes = [str(c) for c in range(10)]
    d = DATViews(x, y, views, classes, True, log_scale, cfg.attack.eps, "linf", 0, 0)
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


def test_without_matplotlib_the_report_names_the_extra_before_any_attack(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    RunDir(run).eps_curve_json.unlink(missing_ok=True)
    block = "import sys; sys.modules['matplotlib'] = None; from phaseguard.cli import main; "
    line = _one_error_line(
        [sys.executable, "-c", block + f"sys.exit(main(['report', {str(run)!r}]))"]
    )
    assert "pip install 'phaseguard[report]'" in line
    assert not RunDir(run).eps_curve_json.exists() and not (run / "report.html").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def coloured_share(page: Path, shot: Path) -> float:
    """The share of pixels with a colour (not grey, black or white) in Chromium's 1400 x 4000
    headless screenshot of ``page``, written to ``shot``."""
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1400,4000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (4000, 1400, 3)
    return float(((rgb.max(-1) - rgb.min(-1)) > 60).mean())


@pytest.mark.skipif(
    _chromium() is None,
    reason="no chromium binary on PATH (Debian: apt-get install chromium) for the screenshot",
)
def test_chromium_draws_the_page_with_its_figures(report, tmp_path):
    """Chromium draws the page with its PNGs loaded: the figures' coloured lines and colour
    maps cover far more of the screenshot than the text and the table colours of the same page
    without its PNGs."""
    bare = tmp_path / "bare" / report.name
    bare.parent.mkdir()
    shutil.copy(report, bare)
    with_figures = coloured_share(report, tmp_path / "page.png")
    without = coloured_share(bare, tmp_path / "bare.png")
    assert with_figures > 0.01 and without < 0.005, (with_figures, without)
