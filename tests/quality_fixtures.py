"""Helpers of the issue-12 quality tests: the CLI as a subprocess, and small labelled sets from
Fashion-MNIST (Debian's dataset-fashion-mnist) as folders of PNGs.

The dataset is no Python dependency of lookalike: tests that need it skip where the Debian
package is not installed (bench_quality.py installs it when run as root).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "lookalike"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`lookalike ARGS` as a user runs it; fails the test on a non-zero exit when `check`."""
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


DATA = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]  # fmt: skip


def fashion_test_set() -> tuple[np.ndarray, np.ndarray]:
    if not (DATA / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            "Debian's dataset-fashion-mnist is missing (scripts/install.sh --test installs it)"
        )
    with gzip.open(DATA / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DATA / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def write_fashion(folder: Path, classes: list[str], per_class: int, skip: int = 0) -> list[Path]:
    """`per_class` test images of each named class into folder/<class>/NNNNN.png (the first
    `skip` of each class left out, so two calls can give disjoint sets)."""
    images, labels = fashion_test_set()
    paths = []
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == CLASSES.index(name))[skip : skip + per_class]:
            path = folder / name / f"{i:05d}.png"
            Image.fromarray(images[i]).save(path)
            paths.append(path)
    return paths
