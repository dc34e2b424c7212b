"""Search load over HTTP on loopback while images are added and deleted, against the same
searches called in-process.

Starts `lookalike serve -c COLL --port P` as a subprocess on 127.0.0.1 (the command users run),
sends a bounded number of searches from a bounded number of concurrent clients, by stored id
and by uploaded image, while one more client keeps adding images and deleting the ones it added.
It checks every answer: no 5xx (a 503 with Retry-After is load shedding: counted, waited for and
retried), no torn result (every hit's id is fetchable, or a clean 404 for an image deleted
meanwhile), no hit for an image whose deletion finished before the search started, no id twice.
It prints throughput and p50/p99 latency per kind. The baseline runs the same searches through
`Collection.search` in this process with the same number of threads, so the ratio is what HTTP,
multipart parsing, JSON and the server's gates cost on top of the engine.

    .venv/bin/python bench/bench_load.py [--collection DIR] [--requests 200] [--concurrency 8]
        [--describe-ab ROUNDS]   # uploads described in worker processes vs the server's threads
        [--tune RECALL]          # `lookalike tune` the collection first (effort, candidates)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import itertools
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from lookalike.api import Collection
from lookalike.samples import TRANSFORMS, sample_photo, write_samples
from lookalike.server.admission import GIL_SWITCH_S, budget_threads
from lookalike.server.app import ServerSettings

MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
API_KEY = "bench-load-key"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
ATTRIBUTES = [
    "color", "texture", "shape", "color_location", "texture_location", "shape_location",
    "perceptual",
]  # fmt: skip


def build_collection(folder: Path, variants: tuple[str, ...] = tuple(TRANSFORMS)) -> Path:
    """The sample photos and their transformed copies (about 140 images), classic attributes."""
    originals, copies = write_samples(folder / "images", variants=variants)
    with Collection.create(folder / "coll", attributes=ATTRIBUTES) as coll:
        coll.add([str(p) for p in originals + copies])
    return folder / "coll"


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def query_images() -> list[bytes]:
    return [jpeg(TRANSFORMS["rotate5"](sample_photo(name))) for name in PHOTOS]


def new_image(rng: random.Random) -> bytes:
    """A small image nobody stored yet (noise over a sample photo), for the writer client."""
    base = np.asarray(sample_photo(rng.choice(PHOTOS)).resize((160, 120)), dtype=np.int16)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-20, 21, base.shape)
    return jpeg(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(collection: Path, port: int, env: dict[str, str] | None = None):
    """`python -m lookalike serve` on 127.0.0.1:port, once /api/health answers. Its log goes to
    a file, not a pipe: a pipe nobody reads fills up under load and blocks the server."""
    environ = {**os.environ, "LOOKALIKE_API_KEY": API_KEY, **(env or {})}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the process object)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "serve", "-c", str(collection), "--port", str(port)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    process.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start-up:\n{server_log(process)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not answer within 120 s")


def process_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and of its children by pid, from /proc
    (Linux): how the cores were shared between the server, its describe workers and us."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            this, parent = int(stat.parent.name), int(fields[1])
            if pid in (this, parent):
                found[this] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def server_log(process: subprocess.Popen) -> str:
    """What the server has logged (into its log file, or a pipe once it has stopped)."""
    log = getattr(process, "log", None)
    if log is None:
        return process.stderr.read() if process.stderr else ""
    log.flush()
    log.seek(0)
    return log.read()


def stop_server(process: subprocess.Popen) -> str:
    """Stop the server (SIGTERM, as Ctrl-C would) and return what it logged."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return server_log(process)


class ConnectionLost(Exception):
    """A request that got no HTTP answer (counted in LoadReport.connection_errors)."""


@dataclass
class LoadReport:
    """What a load run saw: latencies per kind and every kind of failure, by count."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    # per kind, the server's own account of each answered search (its Server-Timing header):
    # waiting for a gate slot, the work in the slot, the whole request inside the app; what
    # a latency has beyond "app" is the event loop, HTTP and this client
    in_server: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)  # 5xx other than shedding
    client_errors: list[str] = field(default_factory=list)  # unexpected 4xx
    torn: list[str] = field(default_factory=list)  # hits that should not exist
    connection_errors: list[str] = field(default_factory=list)  # reset, refused, cut short
    shed: int = 0  # 503 + Retry-After, retried
    reused_ids: int = 0  # a deleted id handed to a later upload (the catalog reuses rowids)
    added: int = 0
    deleted: int = 0
    hits_checked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failures(self) -> int:
        return (
            len(self.server_errors)
            + len(self.client_errors)
            + len(self.torn)
            + len(self.connection_errors)
        )


def server_timing(response: httpx.Response) -> dict[str, float]:
    """The steps of a `Server-Timing` header, name -> ms."""
    steps = {}
    for part in response.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        with contextlib.suppress(ValueError):
            steps[name] = float(duration)
    return steps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_load(
    base: str,
    ids: list[int],
    *,
    requests: int,
    concurrency: int,
    top_k: int = 10,
    writes: bool = True,
    seed: int = 0,
) -> LoadReport:
    """`requests` searches of each kind from `concurrency` clients, with a writer adding and
    deleting images meanwhile (if `writes`); every answer checked."""
    report = LoadReport()
    images = query_images()
    deleted_at: dict[int, float] = {}  # id -> when its DELETE had answered
    deleting: set[int] = set()
    reused: set[int] = set()  # ids that named a deleted image, then a new one: not checkable
    stop = threading.Event()
    local = threading.local()
    # each client thread's connection is made before the clock starts: making an httpx
    # client (its TLS context) and connecting took 0.7-0.8 s per thread when 8 did it at once,
    # which was the by-id p99 of every earlier run (the first search of each client)
    ready: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    for _ in range(concurrency + 1):  # and the writer's
        made = httpx.Client(base_url=base, timeout=120)
        made.get("/api/health").raise_for_status()
        ready.put(made)
    gc.freeze()  # this process's own collector pauses are not the server's latency

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = ready.get_nowait()
        return local.client

    def send(method: str, url: str, **kwargs) -> httpx.Response:
        """One request, retried after Retry-After while the server sheds load."""
        for _ in range(50):
            try:
                response = client().request(method, url, **kwargs)
            except httpx.TransportError as exc:  # what a user's client would see: an error
                with report.lock:
                    report.connection_errors.append(
                        f"{time.strftime('%H:%M:%S')} {method} {url}: {type(exc).__name__}: {exc}"
                    )
                raise ConnectionLost from exc
            if response.status_code == 503 and "retry-after" in response.headers:
                with report.lock:
                    report.shed += 1
                time.sleep(min(float(response.headers["retry-after"]), 2) * random.random())
                continue
            if response.status_code >= 500:
                with report.lock:
                    report.server_errors.append(f"{method} {url}: {response.status_code}")
            return response
        return response

    def search(kind: str, what: str, **kwargs) -> None:
        """One timed search (the fetches that check its hits are not part of its latency)."""
        started = time.monotonic()
        start = time.perf_counter()
        response = send("POST", "/api/search", **kwargs)
        latency = (time.perf_counter() - start) * 1000
        with report.lock:
            report.latencies.setdefault(kind, []).append(latency)
            if response.status_code == 200:
                steps = report.in_server.setdefault(kind, {})
                timing = server_timing(response)
                timing["outside the app"] = latency - timing.get("app", 0.0)
                for step, ms in timing.items():
                    steps.setdefault(step, []).append(ms)
        check_hits(response, started, what)

    def check_hits(response: httpx.Response, started: float, what: str) -> None:
        if response.status_code != 200:
            if response.status_code < 500:
                with report.lock:
                    report.client_errors.append(f"{what}: {response.status_code} {response.text}")
            return
        hit_ids = [hit["id"] for hit in response.json()["results"]]
        problems = []
        if len(set(hit_ids)) != len(hit_ids):
            problems.append(f"{what}: an id twice in {hit_ids}")
        for image_id in hit_ids:
            if image_id in reused:
                continue
            gone = deleted_at.get(image_id)
            if gone is not None and gone < started:
                problems.append(f"{what}: hit {image_id} was deleted before the search began")
            record = send("GET", f"/api/images/{image_id}")
            if record.status_code == 404 and (image_id in deleted_at or image_id in deleting):
                continue
            if record.status_code != 200:
                problems.append(f"{what}: hit {image_id} answers {record.status_code}")
        with report.lock:
            report.hits_checked += len(hit_ids)
            report.torn.extend(problems)

    def by_id(i: int) -> None:
        data = {"id": str(ids[i % len(ids)]), "top_k": str(top_k)}
        search("by id", f"id {data['id']}", data=data)

    def by_upload(i: int) -> None:
        files = {"image": ("q.jpg", images[i % len(images)], "image/jpeg")}
        search("by upload", "upload", files=files, data={"top_k": str(top_k)})

    def writer() -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        key = {"X-API-Key": API_KEY}
        while not stop.is_set():
            with contextlib.suppress(ConnectionLost):
                write_once(rng, mine, key)

    def write_once(rng: random.Random, mine: list[int], key: dict[str, str]) -> None:
        if len(mine) < 4 or rng.random() < 0.5:
            files = {"files": (f"w{rng.getrandbits(32)}.jpg", new_image(rng), "image/jpeg")}
            response = send("POST", "/api/images", files=files, headers=key)
            if response.status_code == 201:
                new = [r["id"] for r in response.json()["added"]]
                mine.extend(new)
                with report.lock:
                    report.added += 1
                    for image_id in new:  # a reused id names a new image from now on
                        if deleted_at.pop(image_id, None) is not None:
                            deleting.discard(image_id)
                            reused.add(image_id)
                            report.reused_ids += 1
            elif response.status_code < 500:
                report.client_errors.append(f"add: {response.status_code} {response.text}")
        else:
            victim = mine.pop(rng.randrange(len(mine)))
            deleting.add(victim)
            response = send("DELETE", f"/api/images/{victim}", headers=key)
            if response.status_code == 200:
                deleted_at[victim] = time.monotonic()
                with report.lock:
                    report.deleted += 1
            elif response.status_code < 500:
                report.client_errors.append(f"delete: {response.status_code}")

    def answered(job: Callable[[], None]) -> None:
        """Run one job; a lost connection is already counted, the load goes on."""
        with contextlib.suppress(ConnectionLost):
            job()

    jobs = [lambda i=i: by_id(i) for i in range(requests)]
    jobs += [lambda i=i: by_upload(i) for i in range(requests)]
    random.Random(seed).shuffle(jobs)
    writer_thread = threading.Thread(target=writer, daemon=True)
    if writes:
        writer_thread.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(answered, jobs))
    finally:
        stop.set()
        if writes:
            writer_thread.join(timeout=60)
    return report


def print_report(report: LoadReport, wall: float) -> None:
    for kind, values in sorted(report.latencies.items()):
        print(
            f"  {kind:<10} {len(values) / wall:7.1f} req/s   p50 {percentile(values, 50):7.1f} ms"
            f"   p99 {percentile(values, 99):7.1f} ms   mean {statistics.fmean(values):7.1f} ms"
        )
        for step, inside in sorted(report.in_server.get(kind, {}).items()):
            print(
                f"    server's {step:<16} p50 {percentile(inside, 50):7.1f} ms   p99 "
                f"{percentile(inside, 99):7.1f} ms"
            )
    print(
        f"  writes meanwhile: {report.added} added, {report.deleted} deleted; "
        f"{report.hits_checked} hits fetched back; {report.shed} answers 503 + Retry-After "
        f"(retried); 5xx: {len(report.server_errors)}; unexpected 4xx: "
        f"{len(report.client_errors)}; torn or deleted results: {len(report.torn)}; "
        f"deleted ids reused by a later upload: {report.reused_ids}; requests with no "
        f"answer (connection reset, refused or cut short): {len(report.connection_errors)}"
    )
    errors = report.server_errors + report.client_errors + report.torn
    for line in (errors + report.connection_errors)[:10]:
        print("    " + line)


def baseline(
    coll: Collection,
    ids: list[int],
    requests: int,
    concurrency: int,
    top_k: int,
    budget: bool = True,
):
    """The same searches in-process, with the same number of threads and (`budget`) the
    server's thread budget (one BLAS thread each, its GIL switch interval): (wall s, kind -> ms)."""
    if budget:
        budget_threads(torch_needed="deep" in coll.attributes)
    images = query_images()
    jobs: list[tuple[str, Callable[[], object]]] = []
    for i in range(requests):
        jobs.append(("by id", lambda i=i: coll.search(ids[i % len(ids)], top_k=top_k)))
        jobs.append(("by upload", lambda i=i: coll.search(images[i % len(images)], top_k=top_k)))
    out: dict[str, list[float]] = {}

    def timed(item: tuple[str, Callable[[], object]]) -> None:
        start = time.perf_counter()
        item[1]()
        out.setdefault(item[0], []).append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(timed, jobs))
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", type=Path, help="collection to serve (default: samples)")
    parser.add_argument("--requests", type=int, default=200, help="searches per kind")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--no-writes", action="store_true", help="searches only")
    parser.add_argument(
        "--switch-ab",
        action="store_true",
        help="also: the in-process searches at CPython's default GIL switch interval (5 ms) "
        "against the server's (admission.GIL_SWITCH_S), alternating, 2 rounds",
    )
    parser.add_argument(
        "--describe-ab",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="serve ROUNDS times each way, alternating: uploads described in the server's "
        "worker processes (the default) and in its own threads (describe_workers off)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-process run")
    parser.add_argument(
        "--tune",
        type=float,
        metavar="RECALL",
        help="first run `lookalike tune --recall RECALL` on the collection (it keeps the "
        "cheapest effort and candidates per attribute reaching that recall@k)",
    )
    parser.add_argument(
        "--ipc",
        type=int,
        default=0,
        metavar="N",
        help="only: N single searches by upload in this process, described here against in "
        "one describe worker (niceness 0, so the difference is the round trip), alternating",
    )
    args = parser.parse_args()
    requests = max(1, min(args.requests, MAX_REQUESTS))
    concurrency = max(1, min(args.concurrency, MAX_CONCURRENCY))
    load = dict(requests=requests, concurrency=concurrency, top_k=args.top_k)

    with tempfile.TemporaryDirectory() as tmp:
        collection = args.collection or build_collection(Path(tmp))
        with Collection.open(collection) as coll:
            ids = [int(i) for (i,) in coll.catalog.query("SELECT id FROM images ORDER BY id")]
            print(
                f"collection: {len(ids)} images; {requests} searches per kind; {concurrency} "
                f"concurrent clients; top_k {args.top_k}; {os.cpu_count()} CPUs; loopback HTTP"
            )
            if args.tune:
                tuned = coll.tune(args.tune, k=args.top_k).chosen
                assert tuned is not None
                print(
                    f"tuned for recall@{args.top_k} {args.tune}: kept effort {tuned.level}, "
                    f"{tuned.candidates} x k candidates per attribute (recall {tuned.recall:.3f})"
                )
            settings = coll.indexes.settings()
            print(f"index settings: effort {settings['effort']}, {settings['candidates']} x k")
            if args.ipc:
                describe_round_trip(coll, args.ipc, args.top_k)
                return
            if args.describe_ab:
                ways = {"describe workers": {}, "describe in threads": THREADS_ENV}
                for round_ in range(args.describe_ab):
                    for name, env in ways.items():
                        print(f"round {round_ + 1}, {name}:")
                        serve_and_load(collection, ids, load, not args.no_writes, env)
            else:
                report = serve_and_load(collection, ids, load, not args.no_writes, {})
                if not args.no_baseline:
                    base_wall, base = baseline(coll, ids, requests, concurrency, args.top_k)
                    print(f"in-process baseline ({base_wall:.1f} s), same searches and threads:")
                    for kind, values in sorted(base.items()):
                        http = report.latencies.get(kind, [0.0])
                        print(
                            f"  {kind:<10} p50 {percentile(values, 50):7.1f} ms   p99 "
                            f"{percentile(values, 99):7.1f} ms   ratio of p50 HTTP/in-process "
                            f"{percentile(http, 50) / max(percentile(values, 50), 1e-9):.2f}"
                        )
            if args.switch_ab:
                switch_interval_ab(coll, ids, requests, concurrency, args.top_k)


THREADS_ENV = {"LOOKALIKE_DESCRIBE_WORKERS": "0"}  # the server describes in its own threads


def serve_and_load(
    collection: Path, ids: list[int], load: dict[str, int], writes: bool, env: dict[str, str]
) -> LoadReport:
    """One server, one load run against it; prints the report with the load average."""
    port = free_port()
    server = start_server(collection, port, env=env)
    try:
        cpu_before, own_before = process_cpu_s(server.pid), time.process_time()
        start = time.perf_counter()
        report = run_load(f"http://127.0.0.1:{port}", ids, writes=writes, **load)
        wall = time.perf_counter() - start
        cpu_after, own = process_cpu_s(server.pid), time.process_time() - own_before
    finally:
        log = stop_server(server)
    loads = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"HTTP (lookalike serve, {wall:.1f} s, load average {loads} at the end):")
    print_report(report, wall)
    server_cpu = cpu_after.get(server.pid, 0.0) - cpu_before.get(server.pid, 0.0)
    workers_cpu = sum(
        cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items() if pid != server.pid
    )
    print(
        f"  CPU over the run, in cores busy: server process {server_cpu / wall:.2f}, its "
        f"describe workers {workers_cpu / wall:.2f}, the clients (this process) {own / wall:.2f}"
    )
    if report.connection_errors:
        print("  the server's log, last lines:\n" + log[-3000:])
    elif "Traceback" in log:
        print("  the server logged a traceback:\n" + log[-2000:])
    return report


def describe_round_trip(coll: Collection, count: int, top_k: int) -> None:
    """What a search by upload pays for describing in a worker process: the same searches,
    one at a time, described here and in one worker at the same priority, alternating."""
    from lookalike.server.describers import Describers

    budget_threads(torch_needed="deep" in coll.attributes)
    images = query_images()
    describers = Describers(coll, workers=1, niceness=0, budget_s=60.0)
    describers.pool.wait_ready()
    times: dict[str, list[float]] = {"here": [], "worker": []}
    cpu_here: list[float] = []
    try:
        for i in range(count + 2):  # the first round of each way warms up, not counted
            for way in ("here", "worker"):
                coll.describe_elsewhere = describers if way == "worker" else None
                start, cpu = time.perf_counter(), time.process_time()
                coll.search(images[i % len(images)], top_k=top_k)
                if i >= 2:
                    times[way].append((time.perf_counter() - start) * 1000)
                    if way == "worker":
                        cpu_here.append((time.process_time() - cpu) * 1000)
    finally:
        coll.describe_elsewhere = None
        describers.close()
    here, worker = (statistics.median(times[w]) for w in ("here", "worker"))
    print(
        f"search by upload, one at a time, {count} each way: described here p50 {here:.1f} ms, "
        f"in a worker p50 {worker:.1f} ms (difference {worker - here:+.1f} ms, ratio "
        f"{worker / here:.3f}); the server's own CPU per search with a worker: "
        f"{statistics.median(cpu_here):.1f} ms"
    )


def switch_interval_ab(
    coll: Collection, ids: list[int], requests: int, concurrency: int, top_k: int
) -> None:
    """The server's mix in-process: as many threads describing uploads as it has describe
    slots, the other clients searching by id, each for `requests` searches by id in all, at
    CPython's default GIL switch interval and at the server's, alternating so that the
    machine's load hits both alike."""
    describers = ServerSettings().max_concurrent_describes
    searchers = max(1, concurrency - describers)
    images = query_images()
    print(
        f"in-process, GIL switch interval A/B ({describers} threads describing uploads, "
        f"{searchers} searching by id):"
    )
    ratios = []
    for round_ in range(2):
        p50 = {}
        for interval in (0.005, GIL_SWITCH_S):
            budget_threads(torch_needed="deep" in coll.attributes)
            sys.setswitchinterval(interval)  # after budget_threads, which sets the server's
            by_id: list[float] = []
            uploads: list[float] = []
            done = threading.Event()

            def describe(seed: int, uploads: list[float] = uploads, done=done) -> None:
                for i in itertools.count(seed):
                    if done.is_set():
                        return
                    start = time.perf_counter()
                    coll.search(images[i % len(images)], top_k=top_k)
                    uploads.append((time.perf_counter() - start) * 1000)

            def search(i: int, by_id: list[float] = by_id) -> None:
                start = time.perf_counter()
                coll.search(ids[(i * 7919) % len(ids)], top_k=top_k)
                by_id.append((time.perf_counter() - start) * 1000)

            threads = [threading.Thread(target=describe, args=(s,)) for s in range(describers)]
            for thread in threads:
                thread.start()
            with ThreadPoolExecutor(max_workers=searchers) as pool:
                list(pool.map(search, range(requests)))
            done.set()
            for thread in threads:
                thread.join()
            p50[interval] = percentile(by_id, 50)
            print(
                f"  round {round_ + 1}, {interval * 1000:.1f} ms: by id p50 {p50[interval]:.1f}"
                f" ms p99 {percentile(by_id, 99):.1f} ms; uploads {len(uploads)} done, p50 "
                f"{percentile(uploads, 50):.1f} ms p99 {percentile(uploads, 99):.1f} ms"
            )
        ratios.append(p50[0.005] / max(p50[GIL_SWITCH_S], 1e-9))
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  by id p50, 5 ms / {GIL_SWITCH_S * 1000:g} ms, per round: {shown}")


if __name__ == "__main__":
    main()
