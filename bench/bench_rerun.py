"""A no-change re-run of `lookalike index` over many files: it must cost a stat per file,
not a read, hash or decode (issue 10 item 4; target: 10k files under 10 s).

Makes `--count` small PNG files (8x8, each different), indexes them once through the CLI with
the cheapest attribute (`perceptual`: the first run describes every file, which is not what
is measured, so it is kept cheap), then times the second, no-change run of the same command
and, as the baseline in the same process, reading every file's bytes (what a re-run that
hashed or decoded would at least cost). It also times, in this process, the scan alone
(`ingest.scan`: os.scandir, one stat per file) against the scan it replaced (pathlib's rglob,
sorted Path objects, a stat per entry and per file), checking both find the same files in the
same order; `--scan-only` measures just that (e.g. at 100k files, which take long to index).

    .venv/bin/python bench/bench_rerun.py [--count 10000] [--keep DIR] [--scan-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.decode import IMAGE_SUFFIXES
from lookalike.ingest import scan


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


def rglob_scan(root: Path) -> list[str]:
    """The scan before ingest4, kept as the baseline: rglob, sorted Path objects, a stat per
    entry, an isdir per file, and the plan's own stat per file."""
    found = []
    for entry in sorted(root.rglob("*")):
        if entry.suffix.lower() not in IMAGE_SUFFIXES or any(
            part.startswith(".") for part in entry.relative_to(root).parts
        ):
            continue
        if stat.S_ISREG(entry.stat().st_mode) and not os.path.isdir(entry):
            found.append(str(entry))
    for path in found:
        os.stat(path)  # the plan's stat
    return found


def compare_scans(folder: Path, repeats: int = 3) -> tuple[float, float]:
    """Best-of-`repeats` CPU seconds of the old and the new scan, alternated; same result."""
    root = folder.resolve()
    old_best = new_best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        old = rglob_scan(root)
        old_best = min(old_best, time.process_time() - start)
        start = time.process_time()
        new = scan([root]).sources
        new_best = min(new_best, time.process_time() - start)
        assert new == old, "the two scans disagree"
    return old_best, new_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="number of files")
    parser.add_argument("--keep", type=Path, help="work here and keep it (reuse its index)")
    parser.add_argument("--scan-only", action="store_true", help="only compare the scans")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = args.keep or Path(name)
        folder, collection = tmp / "images", tmp / "collection"
        if not folder.exists():
            write_files(folder, args.count)
        old_scan, new_scan = compare_scans(folder)
        print(f"{args.count} files, load average {os.getloadavg()[0]:.1f}: scan, CPU s: "
              f"rglob + sort + stats (before) {old_scan:.2f}, os.scandir (now) {new_scan:.2f}, "
              f"ratio {old_scan / max(new_scan, 1e-9):.1f}x")  # fmt: skip
        if args.scan_only:
            return
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
