"""Benchmark: neighbour search on reduced vs full embeddings, exact and approximate, in one run.

A synthetic gallery (default 100,000 x 1,280 float32, 100 classes: class centres in a 64-d subspace plus
isotropic noise, through a ReLU like pooled penultimate features) and 2,000 held-out queries. For the full
vector and random neuron subsets of 10%, 25% and 50% (one seeded permutation, nested prefixes, cosine
after truncate-then-renormalise: what ``critmass probe --solver retrieval`` searches) and for each index
(``flat``: exact ``IndexFlatIP``; ``ivf``: ``IndexIVFFlat``, nlist ~ 4 sqrt(n), nprobe 16; ``hnsw``:
``IndexHNSWFlat``, M 32, efSearch 128), through critmass's own ``NeighbourIndex``:

* build seconds, search queries/s (top 10) and index memory (bytes of the serialised FAISS index);
* recall@1 of same-label neighbours (the retrieval probe's ``test_accuracy``);
* the share of the exact top 10 of the same vectors the approximate index finds (its search recall).

Printed ratios: each subset against the full vector (speed-up, memory share) and each approximate index
against the exact one, all measured in the same run on the same data.

Codecs (``--codecs``, default float32,float16,int8,binary,binary-rerank,pq; :mod:`critmass.codecs`): each
codec other than float32 searches its codes exhaustively at every fraction; its queries/s, index memory
(the serialised FAISS index, plus the float vectors binary-rerank keeps), bytes per vector and recall@1 are
printed against float32 flat at full width, measured in the same run. Every row also goes to
``benchmarks/results/retrieval.csv`` (``--csv``) with the date, commit, CPU, cores and versions.

Usage::

    python benchmarks/retrieval.py                  # 100,000 x 1,280, 2,000 queries
    python benchmarks/retrieval.py --quick          # 20,000 x 256, smoke run of seconds
    python benchmarks/retrieval.py --indexes flat,ivf --threads 2
    python benchmarks/retrieval.py --indexes flat --codecs float32,int8,binary,pq
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


def make_data(n: int, n_queries: int, d: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((64, d), dtype=np.float32) / 16.0  # full-layer recall@1 near 1, 10% near 0.5
    centres = rng.standard_normal((n_classes, 64), dtype=np.float32) @ basis
    offsets = rng.standard_normal(d, dtype=np.float32) * 0.3
    y = rng.integers(0, n_classes, size=n + n_queries)
    X = np.empty((n + n_queries, d), dtype=np.float32)
    for a in range(0, len(y), 20000):
        b = min(len(y), a + 20000)
        block = centres[y[a:b]] + rng.standard_normal((b - a, d), dtype=np.float32) + offsets
        X[a:b] = np.maximum(block, 0)
    return X[:n], y[:n], X[n:], y[n:]


def index_bytes(idx) -> int:
    import faiss

    coded = idx.coded
    if coded is not None:
        inner = getattr(coded, "binary", coded)  # binary-rerank: its Hamming index plus the float vectors it keeps
        size = (faiss.serialize_index_binary(inner.index).nbytes if isinstance(inner.index, faiss.IndexBinary)
                else faiss.serialize_index(inner.index).nbytes)
        return int(size + (coded.gallery.nbytes if inner is not coded else 0))
    if idx.backend == "torch":
        return int(idx._g.element_size() * idx._g.numel())
    return int(faiss.serialize_index(idx._index).nbytes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="gallery size")
    ap.add_argument("--d", type=int, default=1280, help="embedding dimension")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--indexes", default="flat,ivf,hnsw")
    ap.add_argument("--k", type=int, default=10, help="neighbours per query")
    ap.add_argument("--threads", type=int, default=None, help="torch / FAISS threads (default: torch's)")
    ap.add_argument("--backend", default="faiss", choices=["faiss", "torch"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="20,000 x 256, 500 queries")
    ap.add_argument("--codecs", default="float32,float16,int8,binary,binary-rerank,pq",
                    help="codecs searched exhaustively at every fraction (float32: the indexes above)")
    ap.add_argument("--csv", default=None,
                    help="where the rows go (default benchmarks/results/retrieval.csv; with --quick: nowhere)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.queries = 20_000, 256, 500
    if args.csv is None:
        args.csv = "" if args.quick else os.path.join(os.path.dirname(__file__), "results", "retrieval.csv")

    import faiss
    import torch

    from critmass.codecs import faiss_threads, make_codec
    from critmass.probes._knn import NeighbourIndex, SubsetVectors, default_nlist
    from critmass.probes._retrieval import recall_hits

    if args.threads:
        torch.set_num_threads(args.threads)
    fracs = [float(f) for f in args.fractions.split(",")]
    kinds = args.indexes.split(",")
    codecs = [c for c in args.codecs.split(",") if c]
    combos = [(kind, "float32") for kind in kinds] + [("flat", c) for c in codecs if c != "float32"]
    print(f"# retrieval benchmark: gallery {args.n:,} x {args.d}, {args.queries:,} queries, {args.classes} classes, "
          f"top {args.k}; faiss {faiss.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, backend {args.backend}")
    t = time.perf_counter()
    G, yg, Q, yq = make_data(args.n, args.queries, args.d, args.classes, args.seed)
    print(f"# data generated in {time.perf_counter() - t:.1f} s (seed {args.seed})")
    perm = np.random.default_rng(args.seed).permutation(args.d)  # nested random subsets, as the random selector
    gv, qv = SubsetVectors(G, "truncate-renorm"), SubsetVectors(Q, "truncate-renorm")
    rows, exact_ids = [], {}
    with faiss_threads():
        for frac in sorted(fracs, reverse=True):
            k_neurons = max(1, round(frac * args.d))
            cols = np.sort(perm[:k_neurons])
            g, q = gv.get(cols), qv.get(cols)
            for kind, codec in combos:
                if args.backend == "torch" and (kind != "flat" or codec != "float32"):
                    continue
                t0 = time.perf_counter()
                idx = NeighbourIndex(g, "cosine", index=kind, backend=args.backend, seed=args.seed,
                                     codec=None if codec == "float32" else make_codec(codec))
                build = time.perf_counter() - t0
                idx.search(q[:10], args.k)  # warm-up
                t0 = time.perf_counter()
                _, ids = idx.search(q, args.k)
                search = time.perf_counter() - t0
                if kind == "flat" and codec == "float32":
                    exact_ids[frac] = ids
                ref = exact_ids.get(frac)
                overlap = (np.nan if ref is None else
                           float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, ref)])))
                r1 = float(recall_hits(yg[ids.clip(0)] == yq[:, None], [1])[:, 0].mean())
                rows.append(dict(fraction=frac, n_neurons=k_neurons, index=kind, codec=codec,
                                 bytes_per_vector=idx.bytes_per_vector, build_s=build, qps=len(q) / search,
                                 mb=index_bytes(idx) / 2**20, recall1=r1, search_recall=overlap))
                exact = kind == "flat" and codec == "float32"
                print(f"  {kind:5s} {codec:13s} f={frac:<5g} k={k_neurons:5d}: build {build:7.2f} s, "
                      f"{len(q) / search:10.0f} queries/s, {rows[-1]['mb']:8.1f} MiB, recall@1 {r1:.4f}"
                      + ("" if exact else f", finds {overlap:.3f} of the exact top {args.k}"), flush=True)
                del idx
    float_rows = [r for r in rows if r["codec"] == "float32"]
    full = {r["index"]: r for r in float_rows if r["fraction"] == max(fracs)}
    flat = {r["fraction"]: r for r in float_rows if r["index"] == "flat"}
    print(f"\n| index | fraction | neurons | build s | queries/s | speed-up vs full | MiB | memory vs full | "
          f"speed-up vs exact | recall@1 | finds exact top {args.k} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(float_rows, key=lambda r: (kinds.index(r["index"]), r["fraction"])):
        f, e = full[r["index"]], flat.get(r["fraction"])
        vs_exact = "" if r["index"] == "flat" or e is None else f"{r['qps'] / e['qps']:.1f}x"
        found = "" if r["index"] == "flat" else f"{r['search_recall']:.3f}"
        print(f"| {r['index']} | {r['fraction']:g} | {r['n_neurons']} | {r['build_s']:.2f} | {r['qps']:,.0f} | "
              f"{r['qps'] / f['qps']:.2f}x | {r['mb']:.1f} | {r['mb'] / f['mb']:.2f} | {vs_exact} | "
              f"{r['recall1']:.4f} | {found} |")
    print("\n(from nlist", default_nlist(args.n), "IVF lists, nprobe 16; HNSW M 32, efSearch 128, efConstruction 40)")
    base = full.get("flat")
    if base is not None and len(codecs) > 1:
        print(f"\nCodecs (exhaustive search over the codes) against float32 flat at full width "
              f"({base['qps']:,.0f} queries/s, {base['mb']:.1f} MiB, recall@1 {base['recall1']:.4f}):\n")
        print(f"| codec | fraction | neurons | bytes/vector | queries/s | vs full float32 | MiB | memory vs full "
              f"float32 | recall@1 | finds exact top {args.k} of the same neurons |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted((r for r in rows if r["index"] == "flat"), key=lambda r: (codecs.index(r["codec"])
                        if r["codec"] in codecs else -1, r["fraction"])):
            found = "" if r["codec"] == "float32" else f"{r['search_recall']:.3f}"
            print(f"| {r['codec']} | {r['fraction']:g} | {r['n_neurons']} | {r['bytes_per_vector']} | {r['qps']:,.0f} | "
                  f"{r['qps'] / base['qps']:.2f}x | {r['mb']:.2f} | {r['mb'] / base['mb']:.4f} | {r['recall1']:.4f} | "
                  f"{found} |")
    if args.csv:
        write_csv(rows, args)
    return 0


def write_csv(rows, args) -> None:
    import subprocess
    from datetime import date

    import pandas as pd

    from critmass._env import versions

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    v = versions()
    df = pd.DataFrame(rows).assign(n_gallery=args.n, d=args.d, n_queries=args.queries, date=date.today().isoformat(),
                                   commit=commit, cpu=cpu, cores=os.cpu_count(), device="cpu",
                                   threads=__import__("torch").get_num_threads(),
                                   versions=str({k: v.get(k) for k in ("critmass", "torch", "numpy", "faiss")}))
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    tmp = args.csv + ".tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, args.csv)  # a killed run leaves the previous file whole
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    raise SystemExit(main())
