"""Retrieval-quality measures against hand-computed values, and the evaluate command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import solid

from lookalike.evaluate import average_precision, quality_from_distances


def test_average_precision_by_hand():
    assert average_precision(np.array([1, 0, 1, 0], bool)) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(np.array([0, 0], bool)) == 0.0
    assert average_precision(np.array([1, 1, 0], bool)) == pytest.approx(1.0)


def test_quality_leave_one_out():
    # two tight pairs far apart: every query's nearest other image is its class mate
    points = np.array([0.0, 0.1, 10.0, 10.1])
    distances = np.abs(points[:, None] - points[None, :])
    q = quality_from_distances(distances, ["a", "a", "b", "b"], k=1)
    assert q.precision_at_k == 1.0 and q.recall_at_k == 1.0 and q.mean_average_precision == 1.0
    swapped = quality_from_distances(distances, ["a", "b", "a", "b"], k=1)
    assert swapped.precision_at_k == 0.0
    # per query AP: 1/2, 1/3, 1/3, 1/2 (the class mate comes 2nd, 3rd, 3rd, 2nd)
    assert swapped.mean_average_precision == pytest.approx(5 / 12)


def test_evaluate_command(tmp_path):
    for label, colours in {
        "reds": [(250, 0, 0), (230, 20, 10), (200, 10, 30)],
        "blues": [(0, 0, 250), (20, 30, 230), (10, 10, 200)],
    }.items():
        (tmp_path / "set" / label).mkdir(parents=True)
        for i, colour in enumerate(colours):
            solid(colour).save(tmp_path / "set" / label / f"{i}.png")
    cli = [sys.executable, "-m", "lookalike"]
    coll = str(tmp_path / "coll")
    subprocess.run(
        [*cli, "index", str(tmp_path / "set"), "-c", coll, "--attributes", "color,texture"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    proc = subprocess.run(
        [*cli, "evaluate", "-c", coll, "-k", "2", "--weights", "color=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    color_row = next(
        line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("color ")
    )
    assert "1.000" in color_row  # colour alone separates reds from blues perfectly
