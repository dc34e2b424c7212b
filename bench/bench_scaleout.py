"""Scale-out figures: the folder (embedded) backend against Milvus on the same vectors, and the
compute engines (Dask, Ray) on the same describe work.

    .venv/bin/python bench/bench_scaleout.py --n 100000          # backends
    .venv/bin/python bench/bench_scaleout.py --engines           # Dask vs Ray (needs ray)
    .venv/bin/python bench/bench_scaleout.py --sketch --n 20000  # sketch queries on Milvus

Backends: the same synthetic signatures (bench/synthetic.py, attributes color and texture,
metadata with a `shard` 0..99) go into a folder collection and into a collection on a Milvus
standalone server started here from ./.venv-milvus (fresh data folder, stopped by its pid at
the end), both through `add_vectors` in batches. Then the same queries (stored images' own
signatures) are run unfiltered and with a filter admitting 10% of the images; printed are
inserts per second, median and p95 latency, the Milvus / folder ratios, and how many of the
folder backend's top 10 Milvus also returns (the folder backend is exact below 50,000 images
and IVF-PQ above; Milvus is HNSW candidates re-scored exactly). Milvus's searches are then run
again with every read Strong (`store.snapshots = False`: each read waits for the server's next
time tick, as before reads shared one snapshot timestamp), the baseline of the read path.
Last, text queries (a word of the images' `kind`, held by a tenth of them) alone and fused
with an example image: on Milvus each reads every image's keywords and metadata and rebuilds
the full-text rows in memory (store/text_snapshot.py), the cost this measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic import Generator  # noqa: E402

from lookalike.api import Collection  # noqa: E402

ATTRIBUTES = ["color", "texture"]
BATCH = 10_000
FILTER = "shard < 10"
KINDS = ["shirt", "dress", "shoe", "bag", "hat", "scarf", "coat", "sock", "belt", "glove"]


def insert(coll, gen: Generator, n: int) -> float:
    """Seconds to add n images through add_vectors, in batches."""
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        vectors = gen.chunk(start, stop)
        coll.add_vectors(
            [f"synthetic://{i}" for i in range(start, stop)],
            vectors,
            [
                {"shard": i % 100, "scene": int(gen.scene_of[i]), "kind": KINDS[i % len(KINDS)]}
                for i in range(start, stop)
            ],
        )
    return time.perf_counter() - started


def latencies(coll, queries: list[dict[str, np.ndarray]], where: str | None):
    times, answers = [], []
    for signature in queries:
        started = time.perf_counter()
        result = coll.query(image=_Stored(signature), where=where, top_k=10)
        times.append(time.perf_counter() - started)
        answers.append([h.path for h in result])
    return times, answers


class _Stored:
    """A query given as a ready signature (both backends' `describe` is bypassed)."""

    def __init__(self, signature: dict[str, np.ndarray]):
        self.signature = signature


def _patch_describe(coll) -> None:
    original = coll.describe

    def describe(image, attributes=None):
        if isinstance(image, _Stored):
            names = attributes or list(image.signature)
            return {n: image.signature[n] for n in names}
        return original(image, attributes)

    coll.describe = describe


def text_latencies(coll, queries: list[dict[str, np.ndarray]]) -> tuple[list, list, list]:
    """Seconds of text queries alone, and fused with an example image; their top scores
    (ties, which each backend orders by its own ids, may differ in which image)."""
    alone, fused, answers = [], [], []
    for i, signature in enumerate(queries):
        word = KINDS[i % len(KINDS)]
        started = time.perf_counter()
        answers.append([round(h.score, 4) for h in coll.query(text=word, top_k=10)])
        alone.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = coll.query(image=_Stored(signature), text=word, top_k=10, understand=False)
        fused.append(time.perf_counter() - started)
        answers.append([round(h.score, 4) for h in result])
    return alone, fused, answers


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[int(0.95 * (len(ordered) - 1))] * 1e3


def bench_backends(n: int, queries: int, text_queries: int = 5) -> None:
    from milvus_server import MilvusServer

    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        server = MilvusServer(Path(tmp) / "milvus").start()
        try:
            folder = Collection.create(Path(tmp) / "folder", attributes=ATTRIBUTES)
            milvus = Collection.create(server.uri("bench"), attributes=ATTRIBUTES)
            gen = Generator(folder, n)
            rng = np.random.default_rng(1)
            picks = rng.choice(n, queries, replace=False)
            signature_rows = [gen.chunk(int(i), int(i) + 1) for i in picks]
            query_list = [{k: v[0] for k, v in s.items()} for s in signature_rows]
            results = {}
            for name, coll in (("folder", folder), ("milvus", milvus)):
                _patch_describe(coll)
                seconds = insert(coll, gen, n)
                coll.query(image=_Stored(query_list[0]), top_k=10)  # warm: index build / load
                plain, plain_hits = latencies(coll, query_list, None)
                filtered, filtered_hits = latencies(coll, query_list, FILTER)
                results[name] = (seconds, plain, filtered, plain_hits, filtered_hits)
                p50, p95 = summary(plain)
                f50, f95 = summary(filtered)
                print(
                    f"{name:>6}: insert {n / seconds:9.0f} images/s ({seconds:6.1f} s); search "
                    f"p50/p95 {p50:.1f}/{p95:.1f} ms; filtered ({FILTER}) {f50:.1f}/{f95:.1f} ms"
                )
            milvus.store.snapshots = False  # the baseline: every read Strong
            strong = [summary(latencies(milvus, query_list, w)[0]) for w in (None, FILTER)]
            milvus.store.snapshots = True
            print(
                f"milvus, every read Strong: search p50/p95 {strong[0][0]:.1f}/{strong[0][1]:.1f} "
                f"ms; filtered {strong[1][0]:.1f}/{strong[1][1]:.1f} ms; ratio snapshot/Strong "
                f"p50 {summary(results['milvus'][1])[0] / strong[0][0]:.2f}, filtered "
                f"{summary(results['milvus'][2])[0] / strong[1][0]:.2f}"
            )
            f, m = results["folder"], results["milvus"]
            ratios = (
                m[0] / f[0],
                summary(m[1])[0] / summary(f[1])[0],
                summary(m[2])[0] / summary(f[2])[0],
            )
            print("ratio milvus/folder: insert time {:.2f}, search p50 {:.2f}, filtered p50 {:.2f}"
                  .format(*ratios))  # fmt: skip
            texts = {}
            for name, coll in (("folder", folder), ("milvus", milvus)):
                texts[name] = text_latencies(coll, query_list[:text_queries])
                t50, f50 = summary(texts[name][0])[0], summary(texts[name][1])[0]
                print(f"{name:>6}: text p50 {t50:.1f} ms; image + text p50 {f50:.1f} ms")
            print(
                "ratio milvus/folder: text p50 {:.2f}, image + text p50 {:.2f}; same top-10 "
                "scores: text {}, image + text {}".format(
                    summary(texts["milvus"][0])[0] / summary(texts["folder"][0])[0],
                    summary(texts["milvus"][1])[0] / summary(texts["folder"][1])[0],
                    texts["milvus"][2][::2] == texts["folder"][2][::2],
                    texts["milvus"][2][1::2] == texts["folder"][2][1::2],
                )
            )  # fmt: skip
            for label, k in (("unfiltered", 3), ("filtered", 4)):
                overlap = np.mean(
                    [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(f[k], m[k], strict=True)]
                )
                print(f"top-10 agreement ({label}): {overlap:.3f}")
            milvus.close()
            folder.close()
        finally:
            server.stop()


# -- sketch queries -------------------------------------------------------------------------------


def perceptual_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """n perceptual signatures like photos': a 16x16 index matrix of a few colour regions
    (4x4 blocks of 2-4 terms, with 10% of the cells changed) and its term histogram."""
    from lookalike.features.perceptual import MATRIX_SIZE, N_TERMS

    palette = np.stack([rng.choice(N_TERMS, 4, replace=False) for _ in range(n)])
    blocks = palette[np.arange(n)[:, None, None], rng.integers(0, 4, (n, 4, 4))]
    matrices = blocks.repeat(4, axis=1).repeat(4, axis=2)
    noise = rng.random(matrices.shape) < 0.1
    matrices[noise] = rng.integers(0, N_TERMS, int(noise.sum()))
    cells = matrices.reshape(n, MATRIX_SIZE * MATRIX_SIZE)
    hists = np.stack([np.bincount(row, minlength=N_TERMS) for row in cells]) / cells.shape[1]
    return np.concatenate([hists, cells], axis=1).astype(np.float32)


def bench_sketch(n: int, queries: int) -> None:
    """Sketch queries (8 cells of a stored image's matrix): Milvus (every image's perceptual
    signature read in one scan, then scored) against the folder backend (its memory map)."""
    from milvus_server import MilvusServer

    from lookalike.features.perceptual import MATRIX_SIZE, N_TERMS

    rng = np.random.default_rng(4)
    rows = perceptual_rows(rng, n)
    sketches = []
    for i in rng.choice(n, queries, replace=False):
        grid = np.full(MATRIX_SIZE * MATRIX_SIZE, -1, np.int8)
        picked = rng.choice(grid.size, 8, replace=False)
        grid[picked] = rows[i, N_TERMS:][picked]
        sketches.append(grid.reshape(MATRIX_SIZE, MATRIX_SIZE).tolist())
    with tempfile.TemporaryDirectory(prefix="bench-sketch-") as tmp:
        server = MilvusServer(Path(tmp) / "milvus").start()
        try:
            places = {"folder": Path(tmp) / "folder", "milvus": server.uri("sketch")}
            answers, times = {}, {}
            for name, place in places.items():
                coll = Collection.create(place, attributes=["perceptual"])
                for start in range(0, n, BATCH):
                    stop = min(n, start + BATCH)
                    paths = [f"synthetic://{i}" for i in range(start, stop)]
                    coll.add_vectors(paths, {"perceptual": rows[start:stop]})
                coll.query(sketch=sketches[0], top_k=10)  # warm: index build / load
                taken, found = [], []
                for sketch in sketches:
                    started = time.perf_counter()
                    found.append([round(h.score, 4) for h in coll.query(sketch=sketch, top_k=10)])
                    taken.append(time.perf_counter() - started)
                times[name], answers[name] = summary(taken), found
                print(f"{name:>6}: sketch p50/p95 {times[name][0]:.1f}/{times[name][1]:.1f} ms")
                coll.close()
            same = np.mean(
                [x == y for x, y in zip(answers["folder"], answers["milvus"], strict=True)]
            )
            print(
                f"ratio milvus/folder p50 {times['milvus'][0] / times['folder'][0]:.1f}; "
                f"queries with the folder's top-10 scores: {same:.2f}"
            )
        finally:
            server.stop()


# -- compute engines ----------------------------------------------------------------------------


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(p) for p in out.stdout.split()]
    return kids + [k for kid in kids for k in _children(kid)]


def bench_engines(images: int) -> None:
    from lookalike import ingest
    from lookalike.samples import write_samples

    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        write_samples(tmp, variants=("half", "crop80", "hflip"))
        sources = sorted(str(p) for p in Path(tmp).rglob("*.*"))[:images]
        settings = ingest.Settings(
            preprocess={}, attributes={n: {} for n in ("color", "texture", "shape")},
            max_pixels=50_000_000,
        )  # fmt: skip
        started = time.perf_counter()
        local = list(ingest.describe_many(sources, settings, 2))
        base = time.perf_counter() - started
        print(f"local processes (2): {len(local) / base:.1f} images/s")
        engines = {"dask": _dask_run, "ray": _ray_run}
        for name, runner in engines.items():
            try:
                startup, seconds, memory = runner(sources, settings)
            except ImportError as exc:
                print(f"{name}: not installed ({exc.name}); pip install {name} to measure")
                continue
            print(
                f"{name}: start {startup:.1f} s, {len(sources) / seconds:.1f} images/s on 2 "
                f"workers (x{base / seconds:.2f} of local processes), cluster RSS {memory:.0f} MB"
            )


def _dask_run(sources, settings):
    from distributed import Client, LocalCluster

    from lookalike import ingest

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    futures = client.map(ingest.describe_source, sources, settings=settings, pure=False)
    client.gather(futures)
    seconds = time.perf_counter() - started
    memory = _rss_mb([os.getpid(), *_children(os.getpid())]) - _rss_mb([os.getpid()])
    client.close()
    cluster.close()
    return startup, seconds, memory


def _ray_run(sources, settings):
    import ray

    from lookalike import ingest

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    describe = ray.remote(num_cpus=1)(ingest.describe_source)
    ray.get([describe.remote(sources[0], settings) for _ in range(2)])  # both workers up
    startup = time.perf_counter() - started
    started = time.perf_counter()
    ray.get([describe.remote(s, settings) for s in sources])
    seconds = time.perf_counter() - started
    memory = _rss_mb(_children(os.getpid()))
    ray.shutdown()
    return startup, seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images per backend")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--text-queries", type=int, default=5)
    parser.add_argument("--engines", action="store_true", help="Dask vs Ray instead")
    parser.add_argument("--sketch", action="store_true", help="sketch queries instead")
    parser.add_argument("--images", type=int, default=80, help="images for --engines")
    args = parser.parse_args()
    if args.engines:
        bench_engines(args.images)
    elif args.sketch:
        bench_sketch(args.n, args.queries)
    else:
        bench_backends(args.n, args.queries, args.text_queries)


if __name__ == "__main__":
    main()
