"""Indexing throughput: `Collection.add` against plain decode + resize of the same files.

The ratio says what the signature costs on top of reading the pixels. Prints images/second for
both, in one process, on the bundled sample photos and their transformed copies.

    .venv/bin/python bench/bench_index.py [--attributes color,texture,...] [--jobs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lookalike.api import Collection
from lookalike.decode import Preprocess, load_image, prepare
from lookalike.features.registry import CLASSIC_ATTRIBUTES
from lookalike.samples import TRANSFORMS, write_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attributes", default=",".join(CLASSIC_ATTRIBUTES))
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (0 = all cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        originals, copies = write_samples(Path(tmp) / "images", variants=tuple(TRANSFORMS))
        files = [str(p) for p in originals + copies]
        start = time.perf_counter()
        for path in files:
            prepare(load_image(path).rgb, Preprocess())
        baseline = len(files) / (time.perf_counter() - start)

        attributes = args.attributes.split(",")
        with Collection.create(Path(tmp) / "coll", attributes=attributes) as coll:
            start = time.perf_counter()
            report = coll.add(files, jobs=args.jobs or None)
            indexing = len(report.added) / (time.perf_counter() - start)
            start = time.perf_counter()
            queries = 20
            for path in files[:queries]:
                coll.search(path, top_k=10)
            search_ms = (time.perf_counter() - start) / queries * 1000
            disk_per_image = coll.info()["bytes_on_disk"] / len(coll)
            memory_per_image = sum(coll.index_for(a).matrix.nbytes for a in attributes) / len(coll)
    print(f"images: {len(files)}; attributes: {', '.join(attributes)}")
    print(f"decode + resize only : {baseline:8.1f} images/s (1 process)")
    print(f"lookalike index      : {indexing:8.1f} images/s (jobs={args.jobs or 'all cores'})")
    print(f"ratio index/baseline : {indexing / baseline:8.3f}")
    print(f"search by example    : {search_ms:8.1f} ms/query (includes query extraction)")
    print(f"catalog on disk      : {disk_per_image / 1024:8.1f} KiB/image")
    print(f"search indexes in RAM: {memory_per_image / 1024:8.1f} KiB/image")


if __name__ == "__main__":
    main()
