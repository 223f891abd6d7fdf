"""The offline demo: a real pretrained model on real labelled data, the whole pipeline in minutes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["run_demo", "DEMO_FRACTIONS", "DemoResult"]

log = logging.getLogger(__name__)
# About a dozen fractions, log-spaced like the paper's grid; 0.001 x 1280 rounds to one neuron.
DEMO_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


@dataclass
class DemoResult:
    out: Path
    results: pd.DataFrame
    dr: pd.DataFrame  # DR(delta) and critical mass per selector
    figure: Path
    seconds: float


def run_demo(out="critmass-demo", *, model: str = "efficientnet-lite0", dataset: str = "fashion-mnist",
             n_train: int = 4000, n_test: int = 1000, full: bool = False, image_size: int = 112,
             fractions=DEMO_FRACTIONS, seeds=(0, 1, 2), selectors=("random", "pca", "randproj"),
             solver: str = "logistic", delta: float = 0.9, cache=None, data_root=None, download: bool = False,
             device: str = "auto", progress: bool = True, echo=print) -> DemoResult:
    """Extract, probe, measure DR and plot: EfficientNet-Lite0 (ImageNet) on Fashion-MNIST by default.

    ``n_train`` / ``n_test`` take a stratified subset (``full=True`` uses all 70k images). Features are
    cached, so a second run skips extraction. Writes ``results.parquet``, ``per_class.parquet``,
    ``dr.csv`` and ``accuracy_vs_fraction.png`` / ``.pdf`` under ``out``.
    """
    from .features import extract
    from .metrics import dr, dr_table, format_table
    from .probes import run_probes
    from .report import plot_curves, save_figure

    t0 = time.perf_counter()
    out = Path(out)
    max_samples = None if full else {"train": int(n_train), "test": int(n_test)}
    echo(f"[1/4] features: {model} penultimate layer on {dataset} "
         f"({'all samples' if full else f'{n_train} train / {n_test} test'}, {image_size}px)")
    fs = extract(model, dataset, split=["train", "test"], max_samples=max_samples, image_size=image_size, cache=cache,
                 data_root=data_root, download=download, device=device, progress=progress)
    echo(f"      cached at {fs.meta['source']}: train {fs.x_train.shape}, test {fs.x_test.shape}")
    echo(f"[2/4] probes: {solver} on {', '.join(selectors)} subsets, {len(fractions)} fractions x {len(seeds)} seeds")
    probed = run_probes(fs, selectors=list(selectors), fractions=list(fractions), seeds=list(seeds), solver=solver,
                        out=out, device=device, progress=progress)
    res = probed.results
    full_acc = res.loc[res["selector"] == "all", "test_accuracy"].mean()
    echo(f"      full layer ({fs.n_features} neurons): test accuracy {full_acc:.3f}")
    echo(f"[3/4] diffused redundancy at delta = {delta}")
    echo(format_table(dr_table(res, delta=delta, selector="random"), "markdown"))
    dr_all = dr(res, delta, selector=list(selectors))  # one call: one bootstrap per selector
    for sel in selectors:
        r = dr_all[dr_all["selector"] == sel].iloc[0]
        echo(f"      {sel:>16}: critical mass {int(r['critical_n_neurons'])} neurons "
             f"({r['critical_fraction']:.3g} of the layer) -> DR({delta}) = {r['dr']:.2f}"
             + ("" if r["reached"] else "  (never reached)"))
    from ._io import atomic_path

    with atomic_path(out / "dr.csv", suffix=".csv") as tmp:
        dr_all.to_csv(tmp, index=False)
    echo("[4/4] figure")
    fig = plot_curves(res, delta=delta)
    paths = save_figure(fig, out / "accuracy_vs_fraction")
    elapsed = time.perf_counter() - t0
    echo(f"      wrote {paths[0]} and {out / 'results.parquet'} ({len(res)} probes) in {elapsed:.0f} s")
    return DemoResult(out=out, results=res, dr=dr_all, figure=paths[0], seconds=elapsed)
