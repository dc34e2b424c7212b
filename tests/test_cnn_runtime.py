"""The CNN's runtime as a user meets it: `lookalike index` with default settings runs the
packaged model through ONNX Runtime (exported once into the model cache), gives the vectors
torch gives, and commands that need no CNN never import torch (python -X importtime)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.api import Collection
from lookalike.features.deep import ONNX_TOLERANCE, RUNTIME_ENV
from lookalike.samples import write_samples


def lookalike(
    *args: str, cache: Path, runtime: str | None = None
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI with the model cache at `cache`; returns the process and every module it
    imported (from -X importtime)."""
    env = dict(os.environ, LOOKALIKE_CACHE_DIR=str(cache))
    env.pop(RUNTIME_ENV, None)
    if runtime is not None:
        env[RUNTIME_ENV] = runtime
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lookalike", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc, imported


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """20 photos and a broken JPEG indexed with default settings and an empty model cache."""
    root = tmp_path_factory.mktemp("cnn-runtime")
    write_samples(root / "images", variants=())
    (root / "images" / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    cache = root / "cache"
    proc, imported = lookalike("index", str(root / "images"), "-c", str(root / "coll"), cache=cache)
    return root, cache, proc, imported


def test_first_index_exports_the_cnn_once(indexed):
    root, cache, proc, imported = indexed
    assert proc.returncode == 3, proc.stderr  # finished, the broken file skipped
    assert "20 added" in proc.stdout and "broken.jpg" in proc.stdout
    exports = list(cache.rglob("*.onnx"))
    assert len(exports) == 1, exports
    assert {"torch", "onnxruntime"} <= imported  # torch only to export the graph
    with Collection.open(root / "coll") as coll:
        chelsea = coll.catalog.get_by_path(str(root / "images" / "photos" / "chelsea.png"))
        assert chelsea is not None and "cat" in {k for k, _, _ in chelsea.keywords}


def test_later_runs_use_the_export_without_torch(indexed):
    root, cache, _, _ = indexed
    (export,) = cache.rglob("*.onnx")
    exported_at = export.stat().st_mtime_ns
    write_samples(root / "images", variants=("hflip",))  # 20 new files beside the photos
    proc, imported = lookalike(
        "index", str(root / "images"), "-c", str(root / "coll"), "--json", cache=cache
    )
    assert proc.returncode == 3, proc.stderr
    assert '"added"' in proc.stdout and proc.stdout.count("__hflip.jpg") >= 20
    assert "onnxruntime" in imported and "torch" not in imported
    assert export.stat().st_mtime_ns == exported_at
    with Collection.open(root / "coll") as coll:
        assert len(coll) == 40
        flipped = coll.search(
            str(root / "images" / "variants" / "coffee__hflip.jpg"), weights={"deep": 1}, top_k=2
        )
        assert {Path(hit.path).name for hit in flipped} == {"coffee__hflip.jpg", "coffee.png"}


def test_no_change_rerun_info_and_search_import_no_torch(indexed):
    root, cache, _, _ = indexed
    coll = str(root / "coll")
    again, imported = lookalike("index", str(root / "images"), "-c", coll, cache=cache)
    assert again.returncode == 3 and "0 added" in again.stdout, again.stderr
    assert "torch" not in imported
    for args in (("info", "-c", coll), ("search", "id:1", "-c", coll, "--top", "3")):
        proc, imported = lookalike(*args, cache=cache)
        assert proc.returncode == 0, proc.stderr
        assert "torch" not in imported and "onnxruntime" not in imported, args


def test_torch_runtime_stores_the_same_vectors(indexed, tmp_path):
    root, cache, _, _ = indexed
    photos = root / "images" / "photos"
    proc, imported = lookalike(
        "index", str(photos), "-c", str(tmp_path / "torch"), "--cnn-runtime", "torch", cache=cache
    )
    assert proc.returncode == 3, proc.stderr
    assert "torch" in imported and "onnxruntime" not in imported
    with Collection.open(root / "coll") as onnx, Collection.open(tmp_path / "torch") as torch:
        for path in sorted(photos.glob("*.png")):
            theirs = torch.catalog.get_by_path(str(path))
            ours = onnx.catalog.get_by_path(str(path))
            assert theirs is not None and ours is not None
            want = torch.catalog.signature(theirs.id, "deep")
            got = onnx.catalog.signature(ours.id, "deep")
            assert want is not None and got is not None and want[0] == got[0]  # same version
            assert np.abs(want[1] - got[1]).max() <= ONNX_TOLERANCE, path.name
            assert [k for k, _, _ in theirs.keywords] == [k for k, _, _ in ours.keywords]


def test_unknown_runtime_is_a_one_line_error(indexed):
    root, cache, _, _ = indexed
    proc, _ = lookalike(
        "index", str(root / "images"), "-c", str(root / "coll"), cache=cache, runtime="tf"
    )
    assert proc.returncode == 1
    assert "LOOKALIKE_CNN_RUNTIME" in proc.stderr and "Traceback" not in proc.stderr
