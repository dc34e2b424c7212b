"""Bulk vectors: `Collection.add_vectors` against a bare SQLite `executemany` of the same blobs.

Synthetic signatures of the default attribute set (the classic attributes plus `deep`, 1280-d:
about 2,500 floats per image); metadata with a keyword on every image. The baseline writes the
same vectors, one row per image and attribute, into a bare table in one transaction: the floor
SQLite allows. The ratio shows what validation, ids, keywords and full text cost on top.
Also times `export` of the result to .npz.

    .venv/bin/python bench/bench_import.py [--images 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.api import Collection
from lookalike.bulk import export_vectors
from lookalike.features.registry import CLASSIC_ATTRIBUTES, is_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    attributes = list(CLASSIC_ATTRIBUTES) + (["deep"] if is_available("deep") else [])
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection.create(Path(tmp) / "coll", attributes=attributes)
        rng = np.random.default_rng(0)
        vectors = {
            name: rng.random((args.images, ex.dim), dtype=np.float32)
            for name, ex in coll.extractors.items()
        }
        floats = sum(ex.dim for ex in coll.extractors.values())
        paths = [f"/archive/{i:08}.jpg" for i in range(args.images)]
        metadata = [{"keywords": [f"lot{i % 1000}"], "price": i % 97} for i in range(args.images)]

        bare = sqlite3.connect(Path(tmp) / "bare.sqlite", isolation_level=None)
        bare.execute("PRAGMA journal_mode = WAL")
        bare.execute("PRAGMA synchronous = NORMAL")
        bare.execute("CREATE TABLE v (id INTEGER, attribute TEXT, vector BLOB)")
        start = time.perf_counter()
        bare.execute("BEGIN")
        for name, matrix in vectors.items():
            bare.executemany(
                "INSERT INTO v VALUES (?, ?, ?)",
                ((i, name, matrix[i].tobytes()) for i in range(args.images)),
            )
        bare.execute("COMMIT")
        baseline = args.images / (time.perf_counter() - start)
        bare.close()

        start = time.perf_counter()
        coll.add_vectors(paths, vectors, metadata)
        ours = args.images / (time.perf_counter() - start)

        start = time.perf_counter()
        exported = export_vectors(coll.catalog, coll.extractors, Path(tmp) / "out.npz")
        export_rate = exported / (time.perf_counter() - start)
        size = (Path(tmp) / "coll" / "catalog.sqlite").stat().st_size
        size += (Path(tmp) / "coll" / "catalog.sqlite-wal").stat().st_size
        coll.close()
    print(f"{args.images} images x {len(attributes)} attributes ({floats} floats per image)")
    print(f"bare executemany of the blobs: {baseline:9.0f} images/s")
    print(f"add_vectors (validated, all or nothing): {ours:9.0f} images/s")
    print(f"ratio add_vectors / bare: {ours / baseline:.2f}")
    print(f"export to .npz: {export_rate:9.0f} images/s")
    print(f"catalog on disk (+ WAL): {size / args.images:.0f} bytes per image")


if __name__ == "__main__":
    main()
