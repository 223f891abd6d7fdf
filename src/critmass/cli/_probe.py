"""``critmass probe``: linear probes on neuron subsets of cached features (wraps ``run_probes``)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .._defaults import DEFAULT_FRACTIONS, DEFAULT_SEEDS, DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, fractions_text
from .._defaults import parse_seeds as _parse_seeds
from .._validation import closest
from ..exceptions import ConfigError
from ..probes import list_solvers
from ._app import app, parse_list


def parse_seeds(value) -> list[int]:
    """'5' -> seeds 0..4; '1,2,3' (any comma) -> exactly those seeds (:func:`critmass._defaults.parse_seeds`)."""
    return _parse_seeds(value, name="--seeds")


def _parse_int(value: str, flag: str, word: str = "all") -> int:
    """An integer option that also takes ``word`` (the caller handles the word)."""
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag} must be a positive integer or {word!r}; got {value!r}") from None


def parse_options(items: list[str]) -> dict:
    """``['KEY=VALUE', ...]`` -> ``{KEY: VALUE}``, each VALUE read as YAML (numbers, booleans, lists)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option must be KEY=VALUE (e.g. --option max_iter=50); got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--option {key.strip()}: cannot read {value!r} as a value; quote strings, e.g. "
                              f"{key.strip()}=abc") from None
    return out


def _parse_n_jobs(value: str):
    return value if value == "auto" else _parse_int(value, "--n-jobs", "auto")


@app.command("probe")
def probe(
    features: Path = typer.Argument(..., help="Feature cache entry directory, or a .npz with x_train, y_train, "
                                              "x_test, y_test (optionally x_val, y_val)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for results.parquet, per_class.parquet "
                                                      "and weights/."),
    fractions: str = typer.Option(fractions_text(DEFAULT_FRACTIONS), "--fractions",
                                   help="Comma-separated fractions in (0, 1] (default: the paper's 15)."),
    seeds: str = typer.Option(str(DEFAULT_SEEDS), "--seeds",
                              help="Seed count N (seeds 0..N-1; default 5) or a comma list (1,2,3; '3,' is seed 3)."),
    selector: str = typer.Option("random", "--selector", help="Comma-separated selectors (critmass.subsets."
                                                              "list_selectors()); 'all' is always added."),
    solver: str = typer.Option("logistic", "--solver", help=f"{' | '.join(list_solvers())}, or any solver registered "
                                                            "with critmass.probes.register_solver."),
    alphas: str = typer.Option(None, "--alphas", help="Comma-separated penalty grid (default: the solver's)."),
    val_fraction: float = typer.Option(DEFAULT_VAL_FRACTION, "--val-fraction",
                                       help="Share of train held out for validation (when the features have no "
                                            "val split)."),
    val_seed: int = typer.Option(DEFAULT_VAL_SEED, "--val-seed", help="Seed of the validation split."),
    refit: bool = typer.Option(False, "--refit", help="Refit on train + validation after choosing the penalty."),
    penalty_rule: str = typer.Option("per-probe", "--penalty-rule",
                                     help="per-probe (every probe searches the penalty grid) | first-seed (the "
                                          "other seeds of random selectors reuse the first seed's penalty per "
                                          "size)."),
    epochs: int = typer.Option(None, "--epochs", help="SGD epochs (default 50)."),
    lr_step: int = typer.Option(None, "--lr-step", help="SGD epochs between lr x0.1 decays (default 10)."),
    max_iter: int = typer.Option(None, "--max-iter", help="L-BFGS iterations per probe (default 100)."),
    path: bool = typer.Option(None, "--path/--no-path",
                              help="logistic: fit the penalty grid as a warm-started regularisation path that stops "
                                   "past the validation peak (default), or every penalty from zero."),
    k: str = typer.Option(None, "--k", help="knn: comma-separated k grid chosen on validation (default 1,5,10,20,50)."),
    metric: str = typer.Option(None, "--metric", help="knn / retrieval: cosine (default) | l2; knn also cosine,l2 "
                                                      "(chosen on validation)."),
    vote: str = typer.Option(None, "--vote", help="knn: auto (default: dino for cosine, majority for l2) | majority "
                                                  "| dino (weights exp(cos / temperature))."),
    temperature: float = typer.Option(None, "--temperature", help="knn: temperature of the dino vote (default 0.07)."),
    normalization: str = typer.Option(None, "--normalization",
                                      help="knn / retrieval: auto (default: truncate-renorm for cosine, none for l2) "
                                           "| truncate-renorm | normalize-truncate | none."),
    center: bool = typer.Option(None, "--center/--no-center", help="knn / retrieval: subtract the gallery mean "
                                                                   "first (default off)."),
    index: str = typer.Option(None, "--index", help="knn / retrieval: flat (exact, default) | ivf | hnsw."),
    nlist: int = typer.Option(None, "--nlist", help="knn / retrieval: IVF lists (default ~4 sqrt(n))."),
    nprobe: int = typer.Option(None, "--nprobe", help="knn / retrieval: IVF lists searched (default 16)."),
    ef_search: int = typer.Option(None, "--ef-search", help="knn / retrieval: HNSW efSearch (default 128)."),
    map_at: str = typer.Option(None, "--map-at", help="retrieval: mAP cutoff (default 100) or 'all' (whole gallery)."),
    codec: str = typer.Option(None, "--codec", help="knn / retrieval: comma-separated codecs the gallery is stored in, "
                                                    "each probe run once per codec: float32 (default) | float16 | "
                                                    "int8 | binary | binary-rerank | pq | opq (pqM, pqMxNBITS)."),
    option: list[str] = typer.Option(None, "--option", help="A solver option as KEY=VALUE (repeatable; VALUE read as "
                                                            "YAML: 3, 0.5, true, [1, 5]); any option of the solver, "
                                                            "e.g. a registered solver's own."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch (1 is fastest on a busy machine)."),
    n_jobs: str = typer.Option("auto", "--n-jobs", help="Processes for the fits of a forkable solver (logistic) on a "
                               "CPU (Linux): 'auto' "
                               "(one per core for large runs) or N; 1 = one process."),
    csv: bool = typer.Option(False, "--csv", help="Also write CSV copies of the tables."),
    no_weights: bool = typer.Option(False, "--no-weights", help="Do not save probe weights."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
):
    """Fit linear (or kNN / retrieval) probes on random (or other) neuron subsets for every fraction and seed."""
    from ..probes import SOLVERS, run_probes, solver_spec

    if solver not in SOLVERS:
        raise ConfigError(f"unknown --solver {solver!r}{closest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")
    unset = object()  # --map-at all means None (the whole gallery): tell it apart from "not given"
    flags = {"epochs": epochs, "lr_step": lr_step, "max_iter": max_iter, "path": path,
             "ks": None if k is None else parse_list(k, int),
             "metric": None if metric is None else (parse_list(metric) if "," in metric else metric),
             "vote": vote, "temperature": temperature, "normalization": normalization, "center": center,
             "index": index, "nlist": nlist, "nprobe": nprobe, "ef_search": ef_search,
             "map_at": unset if map_at is None else (None if map_at.strip().lower() == "all"
                                                      else _parse_int(map_at, "--map-at"))}
    options = {}
    for name, value in flags.items():
        if value is None and name != "map_at" or value is unset:
            continue
        if name not in solver_spec(solver).options:  # the registry says which solver takes which option
            takers = [n for n in SOLVERS if name in solver_spec(n).options]
            flag = {"ks": "k"}.get(name, name).replace("_", "-")
            raise ConfigError(f"--{flag} applies to --solver {'/'.join(takers)}, not {solver!r}")
        options[name] = value
    extra = parse_options(option or [])
    both = sorted(set(extra) & set(options))
    if both:
        raise ConfigError(f"--option {both[0]}=... repeats a dedicated flag; give it once")
    options.update(extra)
    t0 = time.perf_counter()
    res = run_probes(
        features,
        selectors=parse_list(selector),
        fractions=parse_list(fractions, float),
        seeds=parse_seeds(seeds),
        solver=solver,
        out=out,
        alphas=None if alphas is None else parse_list(alphas, float),
        val_fraction=val_fraction,
        val_seed=val_seed,
        refit=refit,
        device=device,
        csv=csv,
        save_weights=not no_weights,
        progress=progress,
        solver_options=options or None,
        n_threads=threads,
        n_jobs=_parse_n_jobs(n_jobs),
        penalty_rule=penalty_rule,
        codecs=codec,
    )
    full = res.full_accuracy()
    what = solver_spec(solver).score_label
    typer.echo(f"wrote {len(res.results)} probe rows ({len(res.per_class)} per-class rows) to {out}/results.parquet"
               f"{' (+ .csv)' if csv else ''}; full-layer {what} {100 * full:.2f}%; "
               f"{time.perf_counter() - t0:.1f} s")
