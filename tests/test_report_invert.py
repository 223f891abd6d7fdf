"""`critmass report` shows a partial inversion (`critmass invert --out DIR`) when the run directory holds one."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critmass.cli._app import main
from critmass.exceptions import DataError
from critmass.invert import COLUMNS, METRICS, Inversion, write_inversion
from critmass.report import build_report

from test_report import CHROMIUM, make_run

SELECTORS = ("random", "norm-max")
FRACTIONS = (0.05, 0.2, 1.0)
SEEDS = (0, 1)
D = 64


def make_inversion(path: Path, *, n_targets: int = 2, size: int = 8) -> Path:
    """What `critmass invert` writes, through its own writer, from a synthetic result (no model): the rest-of-layer
    error falls with the fraction from the noise floor (about 1) towards the full-layer reference (0.1)."""
    rng = np.random.default_rng(0)
    targets = rng.random((n_targets, 3, size, size), dtype=np.float32)
    base = {"model": "timm:test_resnet", "weights": "", "layer": "penultimate", "pooling": "auto",
            "regularised": False, "optimizer": "normgrad", "step_size": 1.0, "steps": 5, "image_size": size,
            "fake_relu": "", "n_neurons": D, "loss_start": np.nan, "loss_end": np.nan, "best_step": 0,
            "seconds_per_step": 0.01}
    rows, partial, full, noise = [], {}, {}, {}
    for seed in SEEDS:
        full[seed] = rng.random(targets.shape, dtype=np.float32)
        noise[seed] = rng.random(targets.shape, dtype=np.float32)
        for si, sel in enumerate(SELECTORS):
            for f in FRACTIONS:
                partial[(sel, f, seed)] = rng.random(targets.shape, dtype=np.float32)
                k = max(1, round(f * D))
                for kind in ("partial", "full", "noise"):
                    for t in range(n_targets):
                        start = {"subset_error": 1.0 + 0.01 * t, "rest_error": 1.0 + 0.02 * t, "cosine": 0.3}
                        end = {"partial": {"subset_error": 0.05 * (1 + si), "rest_error": 0.1 + 0.8 * (1 - f) ** 2,
                                           "cosine": 0.9 + 0.05 * f},
                               "full": {"subset_error": 0.02, "rest_error": 0.1, "cosine": 0.99},
                               "noise": start}[kind]
                        row = {**base, "target": t, "target_name": f"img{t}.png", "selector": sel, "fraction": f,
                               "k": k, "seed": seed, "inversion": kind}
                        for m in ("subset_error", "rest_error", "cosine"):
                            noisy = rng.normal(0, 0.01)
                            row[f"{m}_start"] = start[m] + noisy
                            row[f"{m}_end"] = (end[m] if kind != "noise" else start[m]) + noisy
                        if f == 1.0:  # no unselected neurons
                            row["rest_error_start"] = row["rest_error_end"] = np.nan
                        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    result = Inversion(table=table, targets=targets, names=[f"img{t}.png" for t in range(n_targets)],
                       partial=partial, full=full, noise=noise)
    write_inversion(result, path)
    return path


@pytest.fixture(scope="module")
def inv_dir(tmp_path_factory) -> Path:
    return make_inversion(tmp_path_factory.mktemp("inv") / "inv")


@pytest.fixture(scope="module")
def inv_report(inv_dir):
    return build_report(inv_dir, formats="png")


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_invert_only_directory_is_reported(inv_dir, inv_report):
    assert not (inv_dir / "results.parquet").exists()
    page = inv_report.html.read_text()
    assert '<section id="sec-invert"><h2>Partial inversion</h2>' in page
    assert "no results.parquet: this directory holds a partial inversion only" in page
    assert 'id="sec-table1"' not in page
    # The run's grids (one per selector), copied byte for byte and embedded; the rest-error figure redrawn.
    grids = sorted(inv_dir.glob("invert_grid*.png"))
    assert sorted(p.name for p in grids) == ["invert_grid_norm-max.png", "invert_grid_random.png"]
    embedded = _embedded_pngs(page)
    for p in grids:
        assert p.read_bytes() in embedded
        assert (inv_report.out / "figures" / p.name).read_bytes() == p.read_bytes()
    assert len(embedded) == 3
    assert list(inv_report.figures) == ["invert_grid_random", "invert_grid_norm-max", "invert_rest_error"]
    assert (inv_report.out / "figures" / "invert_rest_error.png").is_file()
    assert 'id="invert_rest_error"' in page and "Partial inversion: images (random)" in page
    assert list(inv_report.tables) == ["invert.csv"]


def test_invert_csv_holds_the_means_of_invert_parquet(inv_dir, inv_report):
    raw = pd.read_parquet(inv_dir / "invert.parquet")
    csv = pd.read_csv(inv_report.tables["invert.csv"])
    assert len(csv) == len(SELECTORS) * len(FRACTIONS) * 3
    assert list(csv["selector"].unique()) == list(SELECTORS)
    assert list(csv["inversion"][:3]) == ["partial", "full", "noise"]
    for _, r in csv.iterrows():
        g = raw[(raw["selector"] == r["selector"]) & np.isclose(raw["fraction"], r["fraction"])
                & (raw["inversion"] == r["inversion"])]
        assert r["k"] == g["k"].iloc[0] and r["n_targets"] == 2 and r["n_seeds"] == len(SEEDS)
        for m in METRICS:
            if g[m].isna().all():
                assert pd.isna(r[m]), m
            else:
                assert r[m] == pytest.approx(g[m].mean(), abs=1e-12), (r["selector"], r["fraction"], m)


def test_html_table_shows_start_to_end_next_to_reference_and_floor(inv_dir, inv_report):
    page = inv_report.html.read_text()
    table = re.search(r'<table class="cm-table" id="invert">(.*?)</table>', page, re.DOTALL).group(1)
    for head in ("subset error start → end", "rest-of-layer error start → end", "cosine (end)", "k / D"):
        assert head in table
    raw = pd.read_parquet(inv_dir / "invert.parquet")
    g = raw[(raw["selector"] == "random") & (raw["fraction"] == 0.05)]
    p, full, noise = (g[g["inversion"] == k] for k in ("partial", "full", "noise"))
    row = (f"<td>random</td><td>0.05</td><td>3 / {D}</td><td>partial (subset matched)</td>"
           f"<td>{p['subset_error_start'].mean():.3f} → {p['subset_error_end'].mean():.3f}</td>"
           f"<td>{p['rest_error_start'].mean():.3f} → {p['rest_error_end'].mean():.3f}</td>"
           f"<td>{p['cosine_end'].mean():.3f}</td>")
    assert row in table
    assert "full layer (reference)" in table and "noise seed (floor)" in table
    assert f"→ {full['rest_error_end'].mean():.3f}</td>" in table
    assert f"→ {noise['rest_error_end'].mean():.3f}</td>" in table
    assert "<td>1</td><td>64 / 64</td><td>partial (subset matched)</td>" in table and "<td>–</td>" in table
    # One note per selector at its smallest fraction, with the share of the way from floor to reference.
    note = re.search(r"random: at fraction 0.05 \(k = 3 of 64\)[^<]*\((\d+)% of the way", page)
    share = (noise["rest_error_end"].mean() - p["rest_error_end"].mean()) / (
        noise["rest_error_end"].mean() - full["rest_error_end"].mean())
    assert note and int(note.group(1)) == round(100 * share)


def test_probe_run_with_inversion_gets_the_section(inv_dir, inv_report, tmp_path):
    path = make_run(tmp_path / "run", per_class=False, cka=False)
    for p in inv_dir.iterdir():
        if p.is_file():
            shutil.copy(p, path / p.name)
    rep = build_report(path, formats="png", n_boot=0)
    page = rep.html.read_text()
    assert "Table 1: diffused redundancy" in page and '<section id="sec-invert">' in page
    assert page.index('id="sec-invert"') < page.index('id="sec-config"')
    assert {"accuracy_vs_fraction", "invert_rest_error", "invert_grid_random"} <= set(rep.figures)
    assert {"table1.csv", "invert.csv"} <= set(rep.tables)
    assert "partial inversion: timm:test_resnet, layer penultimate" in page
    assert pd.read_csv(rep.tables["invert.csv"]).equals(pd.read_csv(inv_dir / "report" / "tables" / "invert.csv"))


def test_cli_reports_an_invert_directory_and_errors_are_one_line(inv_dir, tmp_path, capsys):
    run = tmp_path / "inv"
    shutil.copytree(inv_dir, run, ignore=shutil.ignore_patterns("report"))
    assert main(["report", str(run), "--formats", "png"]) == 0
    assert (run / "report" / "report.html").is_file() and "open " in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no results.parquet (nor invert.parquet)" in err and "critmass invert" in err
    pd.DataFrame({"selector": ["random"]}).to_parquet(empty / "invert.parquet")
    with pytest.raises(DataError, match=r"invert.parquet lacks column\(s\) model, layer, target"):
        build_report(empty)
    (empty / "invert.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read .*invert.parquet as Parquet"):
        build_report(empty)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_invert_page_renders_in_headless_chromium(inv_report, tmp_path):
    # The page's own load-time check: every image decoded with a size, every table laid out with rows.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           inv_report.html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    verdict = re.search(r'data-render-check="([^"]*)"', proc.stdout)
    assert verdict, proc.stderr[-2000:]
    assert verdict.group(1) == "ok: 3 figures, 2 tables"
