"""Shared fixtures: synthetic images whose right answers are known by construction."""

from __future__ import annotations

import compileall
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSIC = [
    "color", "texture", "shape", "color_location", "texture_location", "shape_location",
    "perceptual",
]  # fmt: skip


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def quadrants() -> tuple[np.ndarray, np.ndarray]:
    """interMedia's example: red top-left, blue bottom-left, yellow right half; and its mirror."""
    a = np.zeros((128, 128, 3), np.uint8)
    a[:64, :64] = (255, 0, 0)
    a[64:, :64] = (0, 0, 255)
    a[:, 64:] = (255, 255, 0)
    return a, a[:, ::-1].copy()


def stripes(horizontal: bool, period: int = 8, size: int = 128) -> np.ndarray:
    line = (np.arange(size) // (period // 2)) % 2 * 255
    grid = np.tile(
        line[:, None] if horizontal else line[None, :], (1, size) if horizontal else (size, 1)
    )
    return np.repeat(grid[..., None], 3, axis=2).astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return make_image_dir(tmp_path / "images")


def make_image_dir(folder: Path) -> Path:
    """A folder of small synthetic images in several formats, one in a sub-folder."""
    (folder / "sub").mkdir(parents=True)
    solid((250, 10, 10)).save(folder / "red.png")
    solid((240, 30, 20)).save(folder / "red2.jpg", quality=95)
    solid((10, 10, 240)).save(folder / "blue.gif")
    solid((20, 200, 30)).save(folder / "sub" / "green.webp")
    Image.fromarray(stripes(True)).save(folder / "hstripes.tiff")
    Image.fromarray(stripes(False)).save(folder / "vstripes.bmp")
    (folder / "notes.txt").write_text("not an image, and not named like one")
    return folder


# The files that take longest (minutes on 2 cores), longest first: with a file per xdist
# worker, a long file left for the end would run alone while the other worker idles. Ordered
# by the per-file totals of a `--durations` run of the whole suite (refresh them from one).
# pyproject.toml passes --no-loadscope-reorder, else xdist orders files by their test count.
# test_cli.py leads since the suite5 run (its 60 slowest tests alone: cli 241 s, Milvus 214,
# server_serve 137, deep_search 137, check 110, filter_index 108 at load 5-7).
LONGEST_FIRST = (  # worker-s of a whole run at 14:20 (load 5-9; Milvus 286, check 270, ...)
    "test_cli.py", "test_scaleout_milvus.py", "test_check.py", "test_collection.py",
    "test_cli_output.py", "test_deep_search.py", "test_zeroshot.py", "test_server_serve.py",
    "test_import.py", "test_index_rerun.py", "test_regional.py", "test_cnn_runtime.py",
    "test_adapt.py", "test_browser.py", "test_ingest_hostile.py", "test_filter_index.py",
    "test_kill.py", "test_scaleout_dask.py", "test_calibration.py", "test_index_cli.py",
    "test_index_ann.py", "test_extractor_speedups.py", "test_understand.py", "test_deep.py",
    "test_search_overhead.py", "test_server_hardening.py", "test_server_api.py", "test_query.py",
    "test_server_http.py", "test_duplicates.py", "test_evaluate_report.py",
    "test_near_duplicates.py", "test_feedback.py", "test_decode.py", "test_plan.py",
    "test_fuzz_decode.py", "test_scan.py", "test_evaluate.py",
)  # fmt: skip


# Fills numba's on-disk cache of the extractors' compiled loops, as the first ingest worker would.
WARM_NUMBA_CACHE = """
from lookalike.features.registry import CLASSIC_ATTRIBUTES
from lookalike.ingest import build_extractors, warm_up
warm_up(build_extractors({name: {} for name in CLASSIC_ATTRIBUTES}).values())
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="also the long runs left out of the normal suite: the tests marked slow (soaks, "
        "Milvus parity beyond the core round trip, exhaustive checks) and the full counts",
    )


def long_run() -> bool:
    """Whether `pytest --long` asked for the long runs: tests use it to pick full counts
    (more kills, more fuzz examples, every case) over the normal suite's smaller ones."""
    return _LONG[0]


_LONG = [False]


def pytest_configure(config: pytest.Config) -> None:
    """`--long` first (in every xdist worker too: each collects on its own). Then once,
    before the hundreds of CLI and worker processes the suite starts, the caches a first run
    leaves behind: .pyc files (where PYTHONDONTWRITEBYTECODE is set, as in CI's
    shell, each process would compile lookalike's source again, ~0.3 s of every CLI start;
    existing .pyc files are still read, a stale one recompiled as usual) and numba's cache (on
    a fresh clone every ingest worker that starts before one has written it compiles the
    loops itself, ~28 s of CPU each). A broken warm-up shows in the tests that index."""
    if config.getoption("long"):
        _LONG[0] = True
        if config.option.markexpr == "not slow":  # addopts' default: --long lifts it
            config.option.markexpr = ""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    spec = importlib.util.find_spec("lookalike")
    assert spec is not None and spec.submodule_search_locations
    for folder in spec.submodule_search_locations:
        compileall.compile_dir(folder, quiet=1)
    subprocess.run([sys.executable, "-c", WARM_NUMBA_CACHE], capture_output=True, timeout=600)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within
