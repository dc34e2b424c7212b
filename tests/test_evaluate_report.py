"""`lookalike evaluate --report`: JSON, a precision/recall plot and example queries in HTML."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from lookalike.evaluate import RECALL_LEVELS, precision_recall_curve
from lookalike.samples import TRANSFORMS, sample_photo

CLI = [sys.executable, "-m", "lookalike"]


def test_precision_recall_curve_by_hand():
    # query 0's ranking: 2 (same), 1 (other), 3 (same): precision 1 at recall 0.5, 2/3 at 1
    distances = np.array([[0, 2, 1, 3], [2, 0, 1, 1], [1, 1, 0, 1], [3, 1, 1, 0]], float)
    curve = precision_recall_curve(distances, ["a", "b", "a", "a"], queries=[0])
    assert curve[RECALL_LEVELS <= 0.5].tolist() == pytest.approx([1.0] * 6)
    assert curve[RECALL_LEVELS > 0.5].tolist() == pytest.approx([2 / 3] * 5)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        if tag == "figure":
            self.classes.append(attributes.get("class", ""))


def test_evaluate_writes_a_readable_report(tmp_path):
    # three labelled classes of photos: each photo and two transformed copies of it
    for name in ("chelsea", "coffee", "rocket"):
        folder = tmp_path / "set" / name
        folder.mkdir(parents=True)
        image = sample_photo(name)
        image.save(folder / "original.png")
        for transform in ("crop80", "hflip"):
            TRANSFORMS[transform](image).save(folder / f"{transform}.jpg")
    (tmp_path / "set" / "rocket" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    coll = str(tmp_path / "coll")
    indexed = subprocess.run(
        [*CLI, "index", str(tmp_path / "set"), "-c", coll, "--attributes", "color,texture"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert indexed.returncode == 3, indexed.stderr  # 3: the broken file was skipped, said so
    report = tmp_path / "report"
    proc = subprocess.run(
        [*CLI, "evaluate", "-c", coll, "-k", "2", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    data = json.loads((report / "report.json").read_text())
    assert data["images"] == 9 and data["classes"] == 3
    assert set(data["quality"]) == {"color", "texture", "fused"}
    assert len(data["precision_recall"]["fused"]) == len(RECALL_LEVELS)
    assert (report / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = _Collect()
    page.feed((report / "report.html").read_text())
    sources = [img["src"] for img in page.images]
    assert sources[0].startswith("data:image/png;base64,")  # the plot, embedded
    assert sum(s.startswith("data:image/jpeg;base64,") for s in sources) == 3 * (1 + 2)
    assert page.classes.count("query") == 3
    marks = [c for c in page.classes if c in ("right", "wrong")]
    assert len(marks) == 6 and "right" in marks
