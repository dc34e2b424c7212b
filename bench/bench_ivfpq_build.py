"""IVF-PQ build time and candidate recall, ours against faiss's own PCA training, one process.

    .venv/bin/python bench/bench_ivfpq_build.py --vectors /tmp/load_c100k/indexes
    .venv/bin/python bench/bench_ivfpq_build.py --n 2000      # a new synthetic collection

`--vectors` reads the exact vectors an existing collection's indexes keep (read-only memory
maps, nothing is written there). For every attribute whose vectors are wider than its PCA
width, the IVF-PQ index is built twice with the default options: "faiss" trains faiss's
PCAMatrix on the whole training sample (how `IvfPqIndex.build` did it before), "ours" hands
it the PCA learned by `ann.pca_matrix`. Prints CPU and wall seconds of each build, their
ratio, and recall of the exact top-10 (in the index space) among the 100 candidates each
index returns at nprobe 16 (what the planner asks for at default settings).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as a user's process runs the build: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import make_collection  # noqa: E402

from lookalike.api import Collection  # noqa: E402
from lookalike.index import ann  # noqa: E402
from lookalike.index.manager import default_options  # noqa: E402

K, CANDIDATES, NPROBE = 10, 100, 16


def faiss_trained_pca(sample: np.ndarray, reduced: int, seed: int) -> faiss.PCAMatrix:
    """The baseline: an untrained PCAMatrix, which IndexPreTransform.train then trains itself
    on the whole sample (up to 40,000 rows), as the build did before."""
    return faiss.PCAMatrix(sample.shape[1], reduced)


def exact_top(space: np.ndarray, metric: str, queries: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlat(space.shape[1], faiss.METRIC_L1 if metric == "l1" else 0)
    flat.add(space)
    return flat.search(space[queries], K)[1]


def build_and_measure(space, metric, options, queries, truth) -> tuple[float, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    index = ann.IvfPqIndex.build(space, metric, **options)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    found = index.search(space[queries], CANDIDATES, NPROBE)
    recall = np.mean([len(set(t) & set(f)) / K for t, f in zip(truth, found, strict=True)])
    return cpu, wall, float(recall)


def attribute_vectors(args) -> dict[str, tuple[np.ndarray, object]]:
    """attribute -> (exact vectors, its extractor), from an index folder or a new collection."""
    if args.vectors is None:
        folder = Path(tempfile.mkdtemp(prefix="bench_ivfpq_")) / "coll"
        make_collection(folder, args.n).close()
        args.vectors = folder / "indexes"
        with Collection.open(folder) as coll:
            for name in coll.attributes:
                coll.index_for(name)
    extractors = Collection.open(args.reference).extractors if args.reference else None
    out = {}
    for state_file in sorted(args.vectors.glob("*/state.json")):
        state = json.loads(state_file.read_text())
        name = state["attribute"]
        dim = int(state["fingerprint"].split("|")[1])
        path = state_file.parent / state["files"]["vectors"]
        rows = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, dim)[: state["count"]]
        out[name] = (rows, extractors[name] if extractors else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, help="a collection's indexes folder")
    parser.add_argument("--n", type=int, default=2000, help="without --vectors: images")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--only", help="comma-separated attributes")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_ivfpq_ref_")) / "coll"
    make_collection(scratch, 10).close()  # extractors of the default attribute set
    args.reference = scratch
    vectors = attribute_vectors(args)
    print(f"bench_ivfpq_build: {args.vectors}, {os.cpu_count()} cores, one thread")
    totals = {"faiss": [0.0, 0.0], "ours": [0.0, 0.0]}
    ours = ann.pca_matrix
    for name, (rows, extractor) in vectors.items():
        if args.only and name not in args.only.split(","):
            continue
        space = extractor.index_space()
        matrix = np.ascontiguousarray(space(np.asarray(rows)), dtype=np.float32)
        options = default_options("ivfpq", matrix.shape[1])
        if not options["pca"]:
            continue
        queries = np.random.default_rng(1).choice(len(matrix), args.queries, replace=False)
        truth = exact_top(matrix, space.metric, queries)
        line = [f"{name:16s} {len(matrix):,} x {matrix.shape[1]} -> {options['pca']}"]
        measured = {}
        for label, trainer in (("faiss", faiss_trained_pca), ("ours", ours)):
            ann.pca_matrix = trainer
            try:
                measured[label] = build_and_measure(matrix, space.metric, options, queries, truth)
            finally:
                ann.pca_matrix = ours
            cpu, wall, recall = measured[label]
            totals[label][0] += cpu
            totals[label][1] += wall
            line.append(f"{label}: {cpu:6.1f} s CPU {wall:6.1f} s wall recall {recall:.3f}")
        line.append(f"CPU ratio {measured['ours'][0] / measured['faiss'][0]:.2f}")
        print(" | ".join(line), flush=True)
    ratio = totals["ours"][0] / max(totals["faiss"][0], 1e-9)
    print(
        f"all: faiss {totals['faiss'][0]:.1f} s CPU ({totals['faiss'][1]:.1f} s wall), "
        f"ours {totals['ours'][0]:.1f} s CPU ({totals['ours'][1]:.1f} s wall), "
        f"CPU ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
