"""Indexing on a Dask cluster of 2 local workers, through the CLI: the same signatures as local
processes, and a worker killed mid-run leaves no image missing or doubled."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from milvus_server import free_port
from test_cli import CLI, run

from lookalike.api import Collection
from lookalike.errors import LookalikeError
from lookalike.samples import write_samples

pytestmark = pytest.mark.scaleout
BIN = Path(sys.executable).parent
ATTRIBUTES = "color,texture"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """20 real photos in 3 sizes each (60 images) and a broken file."""
    root = tmp_path_factory.mktemp("photos")
    write_samples(root, variants=("half", "crop80"))
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return root


def index(*args: str) -> subprocess.CompletedProcess:
    """`lookalike index` on folders that hold broken files: exit 3 (files were skipped)."""
    proc = run("index", *args, check=False)
    assert proc.returncode == 3, proc.stderr
    return proc


def signatures(collection: Path) -> dict[str, np.ndarray]:
    with Collection.open(collection) as coll:
        ids, matrix = coll.catalog.signature_matrix("texture", coll.extractors["texture"].version,
                                                    coll.extractors["texture"].dim)  # fmt: skip
        records = coll.catalog.get_many(int(i) for i in ids)
        return {records[int(i)].path: matrix[k] for k, i in enumerate(ids)}


def test_local_cluster_indexes_like_local_processes(photos, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    originals = photos / "photos"  # the 20 photos and the broken file
    index(str(originals), "-c", str(local), "--attributes", ATTRIBUTES)
    out = index(str(originals), "-c", str(cluster), "--attributes", ATTRIBUTES,
              "--cluster", "local:2", "--json")  # fmt: skip
    report = json.loads(out.stdout)
    assert len(report["added"]) == 20 and [s["path"] for s in report["skipped"]] == [
        str(originals / "broken.jpg")
    ]
    a, b = signatures(local), signatures(cluster)
    assert a.keys() == b.keys() and all(np.array_equal(a[p], b[p]) for p in a)


def test_unreachable_scheduler_is_a_clear_error(photos, tmp_path):
    port = free_port()
    proc = run("index", str(photos / "photos"), "-c", str(tmp_path / "c"), "--attributes",
               "color", "--cluster", f"tcp://127.0.0.1:{port}", check=False)  # fmt: skip
    assert proc.returncode == 1 and f"127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with (
        Collection.create(tmp_path / "d", attributes=["color"]) as coll,
        pytest.raises(LookalikeError, match="local:N"),
    ):
        coll.add(photos, cluster="local:zero")


class DaskCluster:
    """`dask scheduler` and 2 `dask worker` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = (folder / "dask.log").open("ab")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.scheduler = self._start(
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-address", ":0", env=env,
        )  # fmt: skip
        self.workers = [
            self._start(
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                env=env,
            )  # fmt: skip
            for _ in range(2)
        ]
        self._wait_for_workers(2)

    def _start(self, *args: str, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "dask"), *args], stdout=self.log,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def _wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(count, timeout=120)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.log.close()


def stored_count(collection: Path) -> int:
    try:
        with sqlite3.connect(f"file:{collection / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_worker_leaves_no_image_missing_or_doubled(photos, tmp_path):
    cluster = DaskCluster(tmp_path)
    collection = tmp_path / "coll"
    try:
        index(str(photos / "photos"), "-c", str(collection), "--attributes", "color")
        indexing = subprocess.Popen(
            [*CLI, "index", str(photos), "-c", str(collection), "--cluster", cluster.address,
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while stored_count(collection) < 26 and time.monotonic() < deadline:
            time.sleep(0.05)  # the 20 originals are stored: wait for a few more
        assert indexing.poll() is None, "the run ended before a worker could be killed"
        cluster.workers[0].kill()  # SIGKILL, mid-run
        cluster.workers[0].wait(timeout=10)
        stdout, stderr = indexing.communicate(timeout=240)
        first = json.loads(stdout) if indexing.returncode == 3 else None
        again = json.loads(
            index(str(photos), "-c", str(collection), "--cluster", cluster.address, "--json").stdout
        )
    finally:
        cluster.stop()
    assert first is not None, stderr  # the scheduler ran the dead worker's tasks elsewhere
    assert len(first["added"]) == 40 and len(first["unchanged"]) == 20
    assert again["added"] == [] and len(again["unchanged"]) == 60
    with Collection.open(collection) as coll:
        paths = [r[0] for r in coll.catalog.query("SELECT path FROM images")]
    expected = {str(p) for p in photos.rglob("*.*") if p.name != "broken.jpg"}
    assert len(paths) == len(set(paths)) == 60 and set(paths) == expected
