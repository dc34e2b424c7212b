"""The folder scan (ingest.scan, os.scandir since ingest4) finds exactly the files, in exactly
the order, of the rglob scan it replaced: hidden names and links to folders left out, links to
files and upper-case suffixes kept, a folder named like an image descended into."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from lookalike.decode import IMAGE_SUFFIXES
from lookalike.ingest import scan
from lookalike.samples import PHOTO_NAMES, sample_photo

# Names that sort differently as strings and as path parts ("a-c" < "a/b" as text).
LAYOUT = [
    "a/b.jpg", "a-c.jpg", "a.jpg", "A.JPG", "a/z/deep.png", "b c/space.jpg", "d.jpg/e.jpg",
    ".hidden.jpg", ".cache/in_hidden.jpg", "a/.cache/also_hidden.jpg", "z.webp", "n.tif",
]  # fmt: skip


def rglob_scan(root: Path, recursive: bool = True) -> list[str]:
    """The scan before ingest4, as the reference (images only, problems aside)."""
    found = []
    for entry in sorted(root.rglob("*") if recursive else root.glob("*")):
        if entry.suffix.lower() not in IMAGE_SUFFIXES or any(
            part.startswith(".") for part in entry.relative_to(root).parts
        ):
            continue
        if stat.S_ISREG(entry.stat().st_mode):
            found.append(str(entry))
    return found


def make_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, name in enumerate(LAYOUT):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        photo = sample_photo(PHOTO_NAMES[i % len(PHOTO_NAMES)]).resize((64, 48))
        photo.save(path, format={"png": "PNG", "webp": "WEBP", "tif": "TIFF"}.get(
            path.suffix.lower()[1:], "JPEG"))  # fmt: skip
    (root / "notes.txt").write_text("not an image")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sample_photo("coffee").resize((64, 48)).save(elsewhere / "linked.jpg")
    os.symlink(elsewhere, root / "linked_folder")  # a link to a folder: not entered
    os.symlink(elsewhere / "linked.jpg", root / "m_link.jpg")  # a link to a file: read
    return root


def test_scan_matches_the_rglob_scan(tmp_path):
    root = make_tree(tmp_path)
    for recursive in (True, False):
        found = scan([root], recursive=recursive)
        assert found.sources == rglob_scan(root.resolve(), recursive)
        assert found.failed == []
        for path in found.sources:  # the facts the plan uses are the file's own
            facts = os.stat(path)
            assert found.facts[path] == (facts.st_size, facts.st_mtime)
    names = [os.path.relpath(p, root) for p in scan([root]).sources]
    assert names[:4] == ["A.JPG", "a/b.jpg", "a/z/deep.png", "a-c.jpg"]
    assert "d.jpg/e.jpg" in names and "m_link.jpg" in names
    assert not any("hidden" in n or "linked.jpg" in n for n in names)


def test_index_finds_the_same_files_through_the_cli(tmp_path):
    root = make_tree(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "index", str(root), "-c", str(tmp_path / "c"),
         "--attributes", "perceptual", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)["added"]) == sorted(rglob_scan(root.resolve()))
