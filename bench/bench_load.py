"""Search load over HTTP on loopback, against the same searches called in-process.

Starts `lookalike`'s server in a subprocess on 127.0.0.1 (a free port), sends a bounded number
of searches from a bounded number of concurrent clients, and prints throughput and p50/p99
latency. The baseline runs the very same searches through `Collection.search` in this process
with the same number of threads, so the ratio is what HTTP, multipart parsing, JSON and the
server's thread hand-off cost on top of the engine.

Two kinds of search: by the id of a stored image (ranking only) and by an uploaded image
(decoding and feature extraction too).

    .venv/bin/python bench/bench_load.py [--collection DIR] [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from lookalike.api import Collection
from lookalike.samples import TRANSFORMS, sample_photo, write_samples

MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
ATTRIBUTES = [
    "color", "texture", "shape", "color_location", "texture_location", "shape_location",
    "perceptual",
]  # fmt: skip


def build_collection(folder: Path) -> Path:
    """The sample photos and their transformed copies (about 140 images), classic attributes."""
    originals, copies = write_samples(folder / "images", variants=tuple(TRANSFORMS))
    with Collection.create(folder / "coll", attributes=ATTRIBUTES) as coll:
        coll.add([str(p) for p in originals + copies])
    return folder / "coll"


def query_images() -> list[bytes]:
    import io

    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        buffer = io.BytesIO()
        TRANSFORMS["rotate5"](sample_photo(name)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from lookalike.server.app import ServerSettings, create_app
    app = create_app(sys.argv[1], ServerSettings(max_top_k=1000))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
    """
)


def start_server(collection: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(collection), str(port)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server exited at start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not answer within 60 s")


def run(jobs: list[Callable[[], None]], concurrency: int) -> tuple[float, list[float]]:
    """Run every job on `concurrency` threads; (wall seconds, per-job latencies in ms)."""

    def timed(job: Callable[[], None]) -> float:
        start = time.perf_counter()
        job()
        return (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(timed, jobs))
    return time.perf_counter() - start, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def report(label: str, wall: float, latencies: list[float]) -> float:
    rate = len(latencies) / wall
    print(
        f"  {label:<22} {rate:8.1f} req/s   p50 {percentile(latencies, 50):7.1f} ms   "
        f"p99 {percentile(latencies, 99):7.1f} ms   mean {statistics.fmean(latencies):7.1f} ms"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", type=Path, help="collection to serve (default: samples)")
    parser.add_argument("--requests", type=int, default=200, help="searches per kind")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    requests = max(1, min(args.requests, MAX_REQUESTS))
    concurrency = max(1, min(args.concurrency, MAX_CONCURRENCY))

    with tempfile.TemporaryDirectory() as tmp:
        collection = args.collection or build_collection(Path(tmp))
        coll = Collection.open(collection)
        ids = [int(i) for (i,) in coll.catalog.query("SELECT id FROM images ORDER BY id")]
        images = query_images()
        port = free_port()
        server = start_server(collection, port)
        url = f"http://127.0.0.1:{port}/api/search"
        clients: dict[int, httpx.Client] = {}

        def client() -> httpx.Client:
            import threading

            key = threading.get_ident()
            if key not in clients:
                clients[key] = httpx.Client(timeout=60)
            return clients[key]

        def http_id(i: int) -> Callable[[], None]:
            def job() -> None:
                data = {"id": str(ids[i % len(ids)]), "top_k": str(args.top_k)}
                client().post(url, data=data).raise_for_status()

            return job

        def http_upload(i: int) -> Callable[[], None]:
            def job() -> None:
                files = {"image": ("q.jpg", images[i % len(images)], "image/jpeg")}
                client().post(url, files=files, data={"top_k": str(args.top_k)}).raise_for_status()

            return job

        def direct_id(i: int) -> Callable[[], None]:
            return lambda: coll.search(ids[i % len(ids)], top_k=args.top_k)

        def direct_upload(i: int) -> Callable[[], None]:
            return lambda: coll.search(images[i % len(images)], top_k=args.top_k)

        try:
            print(
                f"collection: {len(ids)} images; {requests} searches per kind; "
                f"{concurrency} concurrent clients; top_k {args.top_k}; "
                f"{os.cpu_count()} CPUs; loopback HTTP"
            )
            for kind, http_job, direct_job in (
                ("by id", http_id, direct_id),
                ("by uploaded image", http_upload, direct_upload),
            ):
                run([http_job(i) for i in range(min(requests, 2 * concurrency))], concurrency)
                run([direct_job(i) for i in range(min(requests, 2 * concurrency))], concurrency)
                print(f"search {kind}:")
                http_rate = report(
                    "HTTP (server)", *run([http_job(i) for i in range(requests)], concurrency)
                )
                direct_rate = report(
                    "in-process (baseline)",
                    *run([direct_job(i) for i in range(requests)], concurrency),
                )
                print(f"  ratio HTTP/in-process throughput: {http_rate / direct_rate:.2f}")
        finally:
            for c in clients.values():
                c.close()
            server.terminate()
            server.wait(timeout=10)
            coll.close()


if __name__ == "__main__":
    main()
