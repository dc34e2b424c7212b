"""`lookalike serve` as users run it: a real subprocess on 127.0.0.1, searched over HTTP, then
stopped; and a small bounded version of the load bench (searches while images are added and
deleted) against it."""

from __future__ import annotations

import subprocess
import sys
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
            hits = http.post("/api/search", files=upload, data={"top_k": "3"}).json()["results"]
            assert hits[0]["id"] == names["chelsea"]
            by_id = http.post("/api/search", data={"id": str(names["solid_red"]), "top_k": "2"})
            assert by_id.json()["results"][0]["id"] == names["solid_red"]
            assert http.get(f"/api/images/{names['coffee']}").json()["name"] == "coffee.png"
            key = {"X-API-Key": "from-a-file"}  # the key came from --api-key-file
            assert http.delete(f"/api/images/{names['coffee']}", headers=key).status_code == 200
            assert http.get("/api/health").json()["images"] == 15
            server = http.get("/api/info").json()["server"]
            assert server["threads"]["blas"] == 1  # one BLAS thread per request
            assert server["threads"]["gil_switch_ms"] == 0.5  # searches not stuck behind uploads
            evil = http.get("/api/info", headers={"host": "rebind.evil.example"})
            assert evil.status_code == 400
    finally:
        log = bench_load.stop_server(process)
    assert process.returncode is not None
    assert "Traceback" not in log, log
    assert "--api-key is visible" not in log


def wait_for_health(process: subprocess.Popen, base: str) -> dict:
    import time

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
    assert "Traceback" not in log, log
