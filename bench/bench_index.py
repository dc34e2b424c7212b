"""Where indexing time goes, and indexing throughput against plain decode + resize.

Files: scikit-image's photos scaled up to 1024x768 and 1600x1200 (and transformed: crop,
rotation, brightness, mirror), saved as JPEG. In one run, on the same files:

1. per image and per stage, in one process (median ms): decode (JPEG draft, as ingest does),
   preprocessing to the frame, the shared colour conversions, each classic extractor in
   ingest's order (an intermediate two extractors share is charged to the first), the CNN
   forward pass (when torch is installed), the catalog write, and the inter-process transfer
   of a described image (pickle size and time);
2. images/s with all cores: decode + resize alone, the classic attributes (Collection.add),
   the CNN alone against its bare forward pass at the same batch size (ONNX Runtime, the
   default, and torch), and the default set three ways: the CNN in torch after each batch
   while the workers wait (as before ingest3), in ONNX Runtime likewise, and in ONNX Runtime
   in a thread beside the workers (now); and the ratios the targets are stated in, for the
   whole run and for the steady state (worker start excluded: the rate from the time the
   first 2 x jobs images were done to the last), with the parent process's CPU time per image
   during the classic `add` (planning, receiving results, catalog writes, progress).

`--keep DIR` writes the photos there once and reuses them (and `--count 1000` then costs only
the runs); the stage profile takes the first `--profile` photos (default 100); `--profile-only`
stops after it (to alternate two checkouts, one through PYTHONPATH, in A/B runs).

    .venv/bin/python bench/bench_index.py [--count 40] [--jobs N] [--no-deep] [--cpu-time]
        [--keep DIR] [--profile 100] [--profile-only]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lookalike import ingest
from lookalike import pool as worker_pool
from lookalike.api import Collection
from lookalike.decode import Preprocess, decode_bytes, prepare
from lookalike.features.base import PreparedImage
from lookalike.features.registry import CLASSIC_ATTRIBUTES, create_extractor, is_available
from lookalike.ingest import Extracted
from lookalike.samples import PHOTO_NAMES, TRANSFORMS, sample_photo
from lookalike.store.catalog import NewImage

SIZES = ((1024, 768), (1600, 1200))
FRAME = Preprocess().frame


def write_photos(folder: Path, count: int) -> list[str]:
    """`count` JPEGs of 1024x768 and larger: every photo scaled up, then transformed copies
    (a file already there from an earlier run with --keep is reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [t for t in TRANSFORMS if t != "half"]  # "half" would go below 1024x768
    paths = []
    for i in range(count):
        name = PHOTO_NAMES[i % len(PHOTO_NAMES)]
        size = SIZES[(i // len(PHOTO_NAMES)) % len(SIZES)]
        path = folder / f"{i:04d}_{name}_{size[0]}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        image = sample_photo(name).resize(size)
        round_ = i // len(PHOTO_NAMES)
        if round_:
            image = TRANSFORMS[names[(i + round_) % len(names)]](image).resize(size)
        image.save(path, quality=90)
    return paths


def decode_and_resize(path: str) -> None:
    """The baseline: what any indexer must do before describing an image."""
    data = Path(path).read_bytes()
    prepare(decode_bytes(data, path, draft=2 * FRAME).rgb, Preprocess())


CLOCK = {"now": time.perf_counter}  # --cpu-time: this process's CPU time instead


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[float, Any]:
    start = CLOCK["now"]()
    result = fn(*args, **kwargs)
    return (CLOCK["now"]() - start) * 1000, result


def colour_conversions(image: PreparedImage) -> None:
    image.hsv, image.gray  # noqa: B018 - cached on the image for the extractors


def stage_profile(files: list[str], deep: bool, tmp: Path) -> dict[str, list[float]]:
    """ms per image of every stage, in this process."""
    stages: dict[str, list[float]] = {}
    extractors = {name: create_extractor(name) for name in CLASSIC_ATTRIBUTES}
    prepared = []
    with Collection.create(tmp / "profile", attributes=list(CLASSIC_ATTRIBUTES)) as coll:
        for path in files:
            data = Path(path).read_bytes()
            ms, decoded = timed(decode_bytes, data, path, draft=2 * FRAME)
            stages.setdefault("decode (JPEG draft)", []).append(ms)
            ms, rgb = timed(prepare, decoded.rgb, Preprocess())
            stages.setdefault("preprocess to the frame", []).append(ms)
            image = PreparedImage(rgb)
            ms, _ = timed(colour_conversions, image)
            stages.setdefault("colour conversions (HSV, grey)", []).append(ms)
            signatures = {}
            for name, extractor in extractors.items():
                ms, vector = timed(extractor.extract, image)
                stages.setdefault(f"  {name}", []).append(ms)
                signatures[name] = (extractor.version, vector)
            prepared.append(image)
            item = Extracted(path, len(data), 0.0, decoded.sha256, decoded.width,
                             decoded.height, decoded.format, signatures)  # fmt: skip
            ms, blob = timed(pickle.dumps, item, protocol=pickle.HIGHEST_PROTOCOL)
            ms_back, _ = timed(pickle.loads, blob)
            stages.setdefault("transfer: pickle + unpickle", []).append(ms + ms_back)
            stages.setdefault("transfer: bytes (KiB)", []).append(len(blob) / 1024)
            new = NewImage(path, len(data), 0.0, decoded.sha256, decoded.width, decoded.height,
                           decoded.format, signatures, None, None)  # fmt: skip
            ms, _ = timed(coll.catalog.put_image, new)
            stages.setdefault("catalog write (one transaction)", []).append(ms)
    if deep:
        extractor = create_extractor("deep")
        batch = prepared[:32]
        extractor.extract_batch(batch)  # load the model outside the timing
        ms, _ = timed(extractor.extract_batch, batch)
        stages[f"CNN forward (batch of {len(batch)}), per image"] = [ms / len(batch)]
    return stages


def _rate(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def deep_against_bare(files: list[str], batch_size: int) -> dict[str, float]:
    """images/s of DeepExtractor.extract_batch and of the bare network on its batches, through
    ONNX Runtime (the default: the packaged model's cached export) and through torch, and how
    far apart their vectors are."""
    import numpy as np

    images = [
        PreparedImage(prepare(decode_bytes(Path(p).read_bytes(), p, draft=2 * FRAME).rgb,
                              Preprocess()))
        for p in files
    ]  # fmt: skip
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    rates: dict[str, float] = {}
    vectors: dict[str, list[Any]] = {}
    for runtime in ("onnxruntime", "torch"):
        ex = create_extractor("deep", runtime=runtime)
        ex.extract_batch(batches[0])  # load (and export, on a machine's first run)
        loaded = ex._loaded()
        tensors = [ex.preprocess(b) for b in batches]

        def bare(loaded: Any = loaded, tensors: list = tensors) -> None:
            for tensor in tensors:
                loaded.run(tensor, False)

        rates[f"CNN alone ({runtime}, extract_batch, batch {batch_size})"] = _rate(
            len(images),
            lambda ex=ex, r=runtime: [
                vectors.setdefault(r, []).append(ex.extract_batch(b)) for b in batches
            ],
        )
        rates[f"  bare forward pass ({runtime}), batch {batch_size}"] = _rate(len(images), bare)
    gap = np.abs(np.concatenate(vectors["torch"]) - np.concatenate(vectors["onnxruntime"])).max()
    rates["  max |torch - onnxruntime| vector difference"] = float(gap)
    return rates


class SerialStage(ingest.BatchStage):
    """The CNN stage as before ingest3: each batch runs in `submit`, while the workers wait."""

    def submit(self, items: list[Extracted]) -> None:
        if items:
            ingest.finish_batch(items, self._extractors, tag_floor=self._tag_floor)
            self._waiting += 1
            self._done.put((items, None))


def default_set_rates(files: list[str], tmp: Path, jobs: int) -> dict[str, float]:
    """The default set through Collection.add on the same files: CNN in torch after each batch
    (as before ingest3), in ONNX Runtime after each batch, and in ONNX Runtime in a thread
    beside the workers (now)."""
    overlapped = ingest.BatchStage
    runs = {
        "default set, CNN torch, serial (before)": ("torch", SerialStage),
        "default set, CNN onnxruntime, serial": ("onnxruntime", SerialStage),
        "default set, CNN onnxruntime, overlapped (now)": ("onnxruntime", overlapped),
    }
    rates = {}
    try:
        for n, (label, (runtime, stage)) in enumerate(runs.items()):
            os.environ["LOOKALIKE_CNN_RUNTIME"] = runtime
            ingest.BatchStage = stage  # type: ignore[misc]
            rates[label] = add_rate(files, tmp / f"default{n}", None, jobs)
    finally:
        ingest.BatchStage = overlapped  # type: ignore[misc]
        os.environ.pop("LOOKALIKE_CNN_RUNTIME", None)
    return rates


def steady_rate(done_at: list[float], jobs: int) -> float:
    """images/s once every worker is running: from the moment the first 2 x jobs images were
    done to the last one (so the workers' start is not in it)."""
    skip = min(2 * jobs, len(done_at) - 2)
    if skip < 1:
        return float("nan")
    return (len(done_at) - skip) / (done_at[-1] - done_at[skip - 1])


def baseline_rates(files: list[str], jobs: int) -> tuple[float, float]:
    """decode + resize alone in `jobs` spawn processes: (whole run, steady state) images/s."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    done_at = []
    start = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for _ in pool.map(decode_and_resize, files, chunksize=2):
            done_at.append(time.perf_counter())
    return len(files) / (time.perf_counter() - start), steady_rate(done_at, jobs)


def add_rates(
    files: list[str], folder: Path, attributes: list[str] | None, jobs: int
) -> tuple[float, float, float]:
    """Collection.add of `files`: (whole run, steady state) images/s and the parent's CPU ms
    per image."""
    done_at: list[float] = []
    with Collection.create(folder, attributes=attributes) as coll:
        start, cpu = time.perf_counter(), time.process_time()
        report = coll.add(files, jobs=jobs, progress=lambda *_: done_at.append(time.perf_counter()))
        rate = len(report.added) / (time.perf_counter() - start)
        parent_ms = (time.process_time() - cpu) * 1000 / max(1, len(report.added))
        assert not report.failed, report.failed
    return rate, steady_rate(done_at, jobs), parent_ms


def add_rate(files: list[str], folder: Path, attributes: list[str] | None, jobs: int) -> float:
    return add_rates(files, folder, attributes, jobs)[0]


def print_profile(stages: dict[str, list[float]]) -> None:
    """The stage table: median and max per stage, the classic signature and its ratio."""
    print(f"\nper image, one process{'':<21}{'median':>8}{'max':>8}")
    extract_total = 0.0
    for stage, values in stages.items():
        unit = "KiB" if "KiB" in stage else "ms"
        med = statistics.median(values)
        if stage.startswith("  ") or stage.startswith("colour"):
            extract_total += med
        print(f"{stage:<43}{med:8.2f}{max(values):8.2f} {unit}")
    decode_resize = sum(
        statistics.median(stages[s]) for s in ("decode (JPEG draft)", "preprocess to the frame")
    )
    print(f"{'classic signature (conversions + extractors)':<43}{extract_total:8.2f} ms")
    print(f"{'  in images/s, one process':<43}{1000 / extract_total:8.1f}")
    print(f"{'  ratio to decode + preprocess':<43}{extract_total / decode_resize:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="number of photos")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (0 = all cores)")
    parser.add_argument("--no-deep", action="store_true", help="leave the CNN out")
    parser.add_argument("--keep", type=Path, help="write the photos here once and reuse them")
    parser.add_argument("--profile", type=int, default=100, help="photos in the stage profile")
    parser.add_argument(
        "--default-allocator", action="store_true", help="profile without pool.tune_allocator"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="stage profile in this process's CPU time (steadier on a shared, loaded machine; "
        "the CNN's threads add up)",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="print the stage profile and stop (A/B runs of two checkouts, alternated)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        CLOCK["now"] = time.process_time
    load_before = os.getloadavg()[0]
    # The stages are profiled here with the allocator set as in the ingest workers.
    tune = getattr(
        worker_pool, "tune_allocator", None
    )  # absent on older code measured for "before"
    tuned = bool(tune and not args.default_allocator and tune())
    jobs = args.jobs or os.cpu_count() or 1
    deep = not args.no_deep and is_available("deep")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = write_photos((args.keep or tmp) / "images", args.count)
        stages = stage_profile(files[: args.profile], deep, tmp)
        if args.profile_only:
            print_profile(stages)
            return
        baseline, baseline_steady = baseline_rates(files, jobs)
        classic, classic_steady, parent_ms = add_rates(
            files, tmp / "classic", list(CLASSIC_ATTRIBUTES), jobs
        )
        rates = {"classic attributes (Collection.add)": classic}
        if deep:
            rates.update(deep_against_bare(files, 32))
            rates.update(default_set_rates(files, tmp, jobs))

    print(f"{len(files)} JPEG photos of {' and '.join(f'{w}x{h}' for w, h in SIZES)}, "
          f"frame {FRAME}; {jobs} worker processes; {os.cpu_count()} cores; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; allocator "
          f"{'tuned' if tuned else 'glibc default'} in the stage profile, "
          f"{'CPU' if args.cpu_time else 'wall-clock'} time")  # fmt: skip
    print_profile(stages)
    print(f"\nthroughput, {jobs} processes{'':<22}images/s")
    print(f"{'decode + resize alone (baseline)':<48}{baseline:8.1f}")
    for label, rate in rates.items():
        print(f"{label:<48}{rate:8.1e}" if "difference" in label else f"{label:<48}{rate:8.1f}")
    print(f"{'steady state (first 2 x jobs images excluded):':<48}")
    print(f"{'  decode + resize alone':<48}{baseline_steady:8.1f}")
    print(f"{'  classic attributes':<48}{classic_steady:8.1f}")
    print(f"{'parent CPU per image during the classic add':<48}{parent_ms:8.2f} ms")
    print(f"\n{'classic / decode+resize, whole run (>= 0.5)':<48}{classic / baseline:8.3f}")
    print(f"{'classic / decode+resize, steady state':<48}{classic_steady / baseline_steady:8.3f}")
    if deep:
        for runtime in ("torch", "onnxruntime"):
            cnn = rates[f"CNN alone ({runtime}, extract_batch, batch 32)"]
            bare = rates[f"  bare forward pass ({runtime}), batch 32"]
            print(f"{f'CNN / bare forward pass, {runtime} (>= 0.8)':<48}{cnn / bare:8.3f}")
        default = rates["default set, CNN onnxruntime, overlapped (now)"]
        before = rates["default set, CNN torch, serial (before)"]
        print(f"{'default set / decode+resize':<48}{default / baseline:8.3f}")
        print(f"{'default set, now / before':<48}{default / before:8.3f}")


if __name__ == "__main__":
    main()
