"""A server reads its indexes' exact vectors into the page cache at start-up (where they fit in
memory), so the first searches do not read scattered rows from disk one by one."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

import numpy as np

from lookalike.index.prefetch import prefetch_vector_maps

PAGE = mmap.PAGESIZE


def resident_share(path: Path) -> float:
    """Share of the file's pages in the page cache (mincore on a private, untouched map)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        pages = (size + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        buffer = ctypes.c_char.from_buffer(mapped)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        assert libc.mincore(ctypes.addressof(buffer), size, vec) == 0, ctypes.get_errno()
        del buffer
        return sum(v & 1 for v in vec) / pages
    finally:
        mapped.close()


def evicted_map(tmp_path: Path) -> np.memmap:
    """A 32 MB vector file, written, synced and dropped from the page cache."""
    path = tmp_path / "vectors.1.f32"
    np.random.default_rng(0).random((8192, 1024), dtype=np.float32).tofile(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert resident_share(path) < 0.5
    return np.memmap(path, "<f4", "r", shape=(8192, 1024))


def test_vector_maps_are_read_into_the_page_cache(tmp_path):
    vectors = evicted_map(tmp_path)
    asked = prefetch_vector_maps([vectors, np.zeros((0, 4), np.float32), None])
    assert asked == 8192 * 1024 * 4
    deadline = time.monotonic() + 10
    while resident_share(Path(vectors.filename)) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resident_share(Path(vectors.filename)) >= 0.99


def test_maps_larger_than_the_share_of_memory_are_left_on_demand(tmp_path):
    vectors = evicted_map(tmp_path)
    assert prefetch_vector_maps([vectors], share=1e-9) == 0
    time.sleep(0.5)
    assert resident_share(Path(vectors.filename)) < 0.5
