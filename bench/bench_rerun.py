"""A no-change re-run of `lookalike index` over many files: it must cost a stat per file,
not a read, hash or decode (issue 10 item 4; target: 10k files under 10 s).

Makes `--count` small PNG files (8x8, each different), indexes them once through the CLI with
the cheapest attribute (`perceptual`: the first run describes every file, which is not what
is measured, so it is kept cheap), then times the second, no-change run of the same command
and, as the baseline in the same process, reading every file's bytes (what a re-run that
hashed or decoded would at least cost).

    .venv/bin/python bench/bench_rerun.py [--count 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_files(folder: Path, count: int) -> None:
    """`count` distinct 8x8 PNGs, 100 per sub-folder."""
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:06d}.png")


def index(folder: Path, collection: Path, *extra: str) -> tuple[float, dict]:
    command = [sys.executable, "-m", "lookalike", "index", str(folder), "-c", str(collection),
               "--json", *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)


def read_all(folder: Path) -> float:
    start = time.perf_counter()
    for path in sorted(folder.rglob("*.png")):
        hashlib.sha256(path.read_bytes()).hexdigest()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="number of files")
    parser.add_argument("--keep", type=Path, help="work here and keep it (reuse its index)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = args.keep or Path(name)
        folder, collection = tmp / "images", tmp / "collection"
        if not folder.exists():
            write_files(folder, args.count)
        if not collection.exists():
            first, report = index(folder, collection, "--attributes", "perceptual")
            print(f"first run: {len(report['added'])} added in {first:.1f} s "
                  f"({args.count / first:.0f} files/s)")  # fmt: skip
        again, report = index(folder, collection)
        counts = {k: len(report[k]) for k in ("added", "updated", "unchanged", "skipped")}
        hashing = read_all(folder)
    print(f"{args.count} files, load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"no-change re-run (CLI, whole process): {again:6.2f} s  {counts}")
    print(f"baseline: read + sha256 of every file: {hashing:6.2f} s")
    print(f"target: re-run under 10 s over 10k files: {'met' if again < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
