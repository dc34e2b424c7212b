"""`lookalike serve` as users run it: a real subprocess on 127.0.0.1, searched over HTTP, then
stopped; and a small bounded version of the load bench (searches while images are added and
deleted) against it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_fixtures import fresh_collection, ids_by_name, photo_variant_bytes

from lookalike.api import Collection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_load  # noqa: E402  (the load driver lives with the bench that reports figures)


@pytest.fixture
def collection(tmp_path, tmp_path_factory) -> Path:
    return fresh_collection(tmp_path_factory.getbasetemp(), tmp_path / "coll")


def test_serve_subprocess_searches_by_upload_and_id_then_stops(collection, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    shutil.rmtree(collection / "indexes", ignore_errors=True)  # built at start-up, and said
    port = bench_load.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "serve", "-c", str(collection), "--port", str(port),
         "--api-key-file", str(key_file)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_for_health(process, base)
        assert health == {"status": "ok", "images": 16, "busy": {"searches": 0, "describes": 0}}
        with Collection.open(collection) as coll:
            names = ids_by_name(coll)
        with httpx.Client(base_url=base, timeout=30) as http:
            upload = {"image": ("q.jpg", photo_variant_bytes("chelsea", "crop80"), "image/jpeg")}
            by_upload = http.post("/api/search", files=upload, data={"top_k": "3"})
            assert by_upload.json()["results"][0]["id"] == names["chelsea"]
            by_id = http.post("/api/search", data={"id": str(names["solid_red"]), "top_k": "2"})
            assert by_id.json()["results"][0]["id"] == names["solid_red"]
            # each answer says where its time went: waiting for a slot, the work, the whole
            steps = bench_load.server_timing(by_id)
            assert set(steps) == {"search-wait", "search", "app"}, by_id.headers
            assert 0 <= steps["search-wait"] <= steps["app"] and 0 < steps["search"] <= steps["app"]
            assert set(bench_load.server_timing(by_upload)) == {"describe-wait", "describe", "app"}
            assert http.get(f"/api/images/{names['coffee']}").json()["name"] == "coffee.png"
            key = {"X-API-Key": "from-a-file"}  # the key came from --api-key-file
            assert http.delete(f"/api/images/{names['coffee']}", headers=key).status_code == 200
            assert http.get("/api/health").json()["images"] == 15
            server = http.get("/api/info").json()["server"]
            assert server["threads"]["blas"] == 1  # one BLAS thread per request
            assert server["threads"]["gil_switch_ms"] == 0.5  # searches not stuck behind uploads
            # what start-up made is out of the collector's full passes (0.1-0.8 s pauses)
            assert server["gc_frozen_objects"] > 10_000
            # the indexes' exact vectors were read into the page cache at start-up
            assert server["prefetched_vector_bytes"] > 0
            describers = server["describe_workers"]  # uploads described at a lower priority
            assert describers["workers"] == describers["ready"] == 2
            assert describers["nice"] == 10 and describers["replaced"] == 0
            assert describers["measured_nice"] == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)]
            evil = http.get("/api/info", headers={"host": "rebind.evil.example"})
            assert evil.status_code == 400
    finally:
        log = bench_load.stop_server(process)
    assert process.returncode is not None
    assert "Traceback" not in log, log
    assert "--api-key is visible" not in log
    # what start-up did is in the log, as the lines before it
    assert "lookalike: building the color index (flat) of 16 images" in log, log
    assert "lookalike: describe workers:" in log and "lookalike: thread budget:" in log


def wait_for_health(process: subprocess.Popen, base: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            response = httpx.get(f"{base}/api/health", timeout=1)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not answer within 120 s")


def test_api_key_on_the_command_line_is_warned_about(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lookalike", "serve", "-c", str(tmp_path / "none"),
         "--api-key", "visible-to-ps"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0  # no collection there: it stops after the warning
    assert "--api-key is visible to other users in the process list" in result.stderr


def test_small_load_with_writes_has_no_5xx_and_no_torn_results(collection):
    with Collection.open(collection) as coll:
        ids = sorted(ids_by_name(coll).values())
    port = bench_load.free_port()
    process = bench_load.start_server(
        collection, port, env={"LOOKALIKE_MAX_CONCURRENT_DESCRIBES": "1"}
    )
    try:
        report = bench_load.run_load(
            f"http://127.0.0.1:{port}", ids, requests=12, concurrency=3, top_k=20
        )
    finally:
        log = bench_load.stop_server(process)
    assert report.server_errors == [] and report.client_errors == [], report
    assert report.torn == [], report.torn
    assert report.added >= 1 and report.hits_checked > 0
    assert len(report.latencies["by id"]) == 12 and len(report.latencies["by upload"]) == 12
    assert len(report.in_server["by id"]["search"]) == 12  # the server's own account, each
    assert "Traceback" not in log, log


def describe_workers_of(pid: int) -> list[int]:
    """The server's spawned worker processes (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    found = []
    for child in children:
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            found.append(child)
    return found


def test_a_describe_worker_that_crashes_or_is_killed_mid_request_costs_that_request_only(
    collection,
):
    """A decoder crash (simulated on a named upload) and a worker killed while it describes
    an upload: each request gets a clear 400, the worker is replaced, and the next searches
    and adds are answered correctly; nothing stored is lost."""
    with Collection.open(collection) as coll:
        names = ids_by_name(coll)
    port = bench_load.free_port()
    faults = {"LOOKALIKE_TEST_WORKER_FAULTS": "crash=boom.jpg;hang=stuck.jpg"}
    process = bench_load.start_server(collection, port, env=faults)
    key = {"X-API-Key": bench_load.API_KEY}
    photo = photo_variant_bytes("chelsea", "crop80")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            crashed = http.post("/api/images", files={"files": ("boom.jpg", photo)}, headers=key)
            assert crashed.status_code == 400, crashed.text
            assert "crashed the worker process (exited with code 70)" in crashed.json()["detail"]

            wait_for_describers(http, 2)
            answers: list[httpx.Response] = []
            stuck = threading.Thread(
                target=lambda: answers.append(
                    http.post("/api/images", files={"files": ("stuck.jpg", photo)}, headers=key)
                )
            )
            stuck.start()
            time.sleep(2.0)  # the upload is in a worker, which hangs there
            killed = describe_workers_of(process.pid)
            for worker in killed:
                os.kill(worker, signal.SIGKILL)
            # a killed worker is dead only once the kernel has run it to its exit: niced 10
            # on a busy machine that takes a while, and the pool would hand the idle one the
            # next upload meanwhile (its answer: a 400, as for any worker lost mid-request)
            for worker in killed:
                wait_until_dead(worker)
            stuck.join(60)
            assert answers[0].status_code == 400, answers[0].text
            assert "killed by signal SIGKILL" in answers[0].json()["detail"]

            upload = {"image": ("q.jpg", photo, "image/jpeg")}
            for _ in range(3):  # the other killed worker is replaced, not handed a request
                hits = post_until_served(http, "/api/search", files=upload, data={"top_k": "3"})
                assert hits.status_code == 200, hits.text
                assert hits.json()["results"][0]["id"] == names["chelsea"], hits.text
            assert (
                wait_for_describers(http, 2)["replaced"] == 3
            )  # boom.jpg's worker, then both killed ones
            by_id = http.post("/api/search", data={"id": str(names["solid_red"]), "top_k": "1"})
            assert by_id.json()["results"][0]["id"] == names["solid_red"]
            good = post_until_served(
                http, "/api/images", files={"files": ("fine.jpg", photo)}, headers=key
            )
            assert good.status_code == 201, good.text
            assert http.get("/api/health").json()["images"] == len(names) + 1
    finally:
        log = bench_load.stop_server(process)
    assert "Traceback" not in log, log


def wait_until_dead(pid: int, limit_s: float = 60) -> None:
    """Until `pid` has exited (a zombie or gone)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs {limit_s:g} s after SIGKILL")


def post_until_served(http: httpx.Client, path: str, **request) -> httpx.Response:
    """A POST asked again after each 503 + Retry-After, as a client should: while killed
    workers are replaced (started at the lower priority: slow on a busy machine) the server
    sheds uploads with 503 rather than queue them."""
    deadline = time.monotonic() + 120
    while True:
        response = http.post(path, **request)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert response.headers.get("Retry-After"), response.text
        time.sleep(float(response.headers["Retry-After"]))


def wait_for_describers(http: httpx.Client, ready: int) -> dict:
    """/api/info's describe workers, once `ready` of them are."""
    deadline = time.monotonic() + 120
    while True:
        response = http.get("/api/info")
        assert response.status_code == 200, response.text
        info = response.json()["server"]["describe_workers"]
        if info["ready"] >= ready:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.5)
