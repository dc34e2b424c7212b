"""`lookalike search` in a terminal, run as a user runs it: a subprocess with COLUMNS=80 on a
folder of real photos (with a broken file among them), its lines, pipes and hints."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest

from lookalike.api import Collection
from lookalike.cli_output import fit_left, hit_lines
from lookalike.samples import PHOTO_NAMES, write_samples

CLI = [sys.executable, "-m", "lookalike"]
ATTRIBUTES = ["color", "texture", "color_location", "perceptual"]
HIT_LINE = re.compile(r"^\s*(\d+)\s+(\d+\.\d\d)([* ]) id:(\d+)\s+(\S.*?)( \(the query\))?$")


def run(*args: str, columns: int = 80, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos (and flipped copies) deep enough in folders that full paths pass 80
    columns, a broken file, and a name with brackets (Rich markup if printed carelessly)."""
    root = tmp_path_factory.mktemp("cli_output")
    folder = root / "a-rather-long-folder-name" / "holiday-photographs-2024" / "camera-roll"
    originals, _ = write_samples(folder, variants=("hflip",), names=PHOTO_NAMES[:12])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    bracketed = folder / "photos" / "cat[bold]copy.png"
    bracketed.write_bytes(originals[0].read_bytes())
    coll = root / "photos.lookalike"
    Collection.create(coll, attributes=ATTRIBUTES).close()
    indexed = run("index", str(folder), "-c", str(coll), check=False)
    assert indexed.returncode == 3, indexed.stderr  # 3: finished, broken.jpg was skipped
    return SimpleNamespace(root=root, folder=folder, coll=coll, originals=originals)


def hit_rows(stdout: str) -> list[re.Match]:
    return [m for line in stdout.splitlines() if (m := HIT_LINE.match(line))]


def test_default_output_fits_80_columns_one_line_per_hit(photos):
    query = photos.originals[1]
    assert len(str(query)) > 80  # the full path cannot fit: it is cut from the left
    proc = run("search", str(query), "-c", str(photos.coll), "-k", "10")
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    rows = hit_rows(proc.stdout)
    assert [int(m[1]) for m in rows] == list(range(1, 11))
    assert len(lines) <= 10 + 3  # one line per hit, plus a short header
    assert rows[0][5].endswith(query.name) and rows[0][5].startswith("…")
    scores = [float(m[2]) for m in rows]
    assert scores == sorted(scores) and scores[0] == 0.0


def test_details_adds_the_breakdown_and_still_fits(photos):
    proc = run("search", str(photos.originals[2]), "-c", str(photos.coll), "-k", "4", "--details")
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert len(hit_rows(proc.stdout)) == 4
    breakdown = [line for line in lines if line.lstrip().startswith("color ")]
    assert len(breakdown) == 4
    assert all(name in breakdown[0] for name in ("color", "texture", "color_location"))


def test_likely_matches_are_marked_below_the_engines_cut(photos):
    """The mark is the engine's likely-matches cut, given as one line after the hits; the
    query image itself (and its byte-identical copy) is shown, labelled, and never likely."""
    query = photos.originals[0]
    proc = run("search", str(query), "-c", str(photos.coll), "-k", "12")
    rows = hit_rows(proc.stdout)
    assert len(rows) == 12
    cut_line = [line for line in proc.stdout.splitlines() if line.startswith("likely matches:")]
    assert len(cut_line) == 1, proc.stdout
    cut = float(re.search(r"score below (\d+\.\d+)", cut_line[0])[1])
    own = [m for m in rows if m[6]]
    assert {m[5].rsplit("/", 1)[-1] for m in own} == {query.name, "cat[bold]copy.png"}
    assert all(m[3] == " " and float(m[2]) == 0.0 for m in own)
    others = [m for m in rows if not m[6]]
    assert all((m[3] == "*") == (float(m[2]) < cut) for m in others), proc.stdout
    marked = sum(m[3] == "*" for m in rows)
    assert f"{marked} of 12 shown" in cut_line[0]
    assert ("* = likely match" in proc.stdout) == bool(marked)


def test_hit_lines_mark_likely_hits_and_the_query():
    hits = [
        SimpleNamespace(id=1, path="/p/q.png", score=0.0, similar=None, likely=False,
                        is_query=True, breakdown={}),
        SimpleNamespace(id=2, path="/p/copy.png", score=3.0, similar=None, likely=True,
                        is_query=False, breakdown={}),
        SimpleNamespace(id=3, path="/p/far.png", score=3.5, similar=True, likely=False,
                        is_query=False, breakdown={}),
        SimpleNamespace(id=4, path="/p/old.png", score=4.0, similar=True, breakdown={}),
    ]  # fmt: skip
    lines = hit_lines(hits, 60)
    rows = [HIT_LINE.match(line) for line in lines]
    assert [(m[3], m[5], bool(m[6])) for m in rows] == [
        (" ", "/p/q.png", True),
        ("*", "/p/copy.png", False),
        (" ", "/p/far.png", False),  # the engine's cut wins over the threshold's verdict
        ("*", "/p/old.png", False),  # no cut drawn: the threshold's verdict
    ]
    assert lines[0].endswith("/p/q.png (the query)")


def test_threshold_keeps_only_scores_at_or_below_it(photos):
    proc = run("search", str(photos.originals[0]), "-c", str(photos.coll), "--threshold", "5")
    rows = hit_rows(proc.stdout)
    assert rows and all(float(m[2]) <= 5 for m in rows)
    auto = run("search", str(photos.originals[0]), "-c", str(photos.coll), "--threshold", "auto")
    auto_rows = hit_rows(auto.stdout)
    assert auto_rows and all(m[3] == "*" or m[6] for m in auto_rows), auto.stdout


def test_brackets_in_a_path_are_printed_as_they_are(photos):
    proc = run("search", "id:1", "-c", str(photos.coll), "-k", "30", columns=200)
    assert "cat[bold]copy.png" in proc.stdout


def test_paths_only_pipes_into_xargs_ls(photos):
    search = shlex.join([*CLI, "search", str(photos.originals[3]), "-c", str(photos.coll)])
    shell = f"{search} -k 5 --paths-only | xargs ls -d"
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert piped.returncode == 0, piped.stderr
    listed = piped.stdout.splitlines()
    assert len(listed) == 5 and all(Path(p).is_file() for p in listed)
    alone = run(
        "search", str(photos.originals[3]), "-c", str(photos.coll), "-k", "5", "--paths-only"
    )
    assert sorted(alone.stdout.splitlines()) == sorted(listed)  # nothing else on stdout
    assert alone.stdout.splitlines()[0] == str(photos.originals[3])


def test_json_is_unchanged(photos):
    proc = run("search", str(photos.originals[0]), "-c", str(photos.coll), "-k", "3", "--json")
    data = json.loads(proc.stdout)
    assert set(data) >= {"weights", "threshold", "considered", "explain", "results"}
    assert set(data["results"][0]) >= {"id", "path", "score", "similar", "breakdown", "metadata"}
    twins = {str(photos.originals[0]), str(photos.folder / "photos" / "cat[bold]copy.png")}
    assert data["results"][0]["path"] in twins  # same bytes: the tie goes to the lower id,
    assert data["results"][0]["score"] == 0  # and ids follow the order workers finish in


def test_version_and_examples_in_help():
    assert run("--version").stdout.strip() == f"lookalike {version('lookalike')}"
    help_text = run("search", "--help", columns=100).stdout
    assert "Examples" in help_text and "--paths-only | xargs" in help_text


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["search", "8", "-c", "{coll}"], "did you mean id:8"),
        (["search", "{coll}", "-c", "{coll}"], "is a collection, not a query image"),
        (["search", "{folder}", "-c", "{coll}"], "search takes one query image"),
        (["search", "x.png", "-c", "{folder}"], "make one with: lookalike index"),
        (["search", "{folder}/missing.png", "-c", "{coll}"], "no such file"),
    ],
)
def test_common_slips_get_a_hint_and_a_non_zero_exit(photos, args, hint):
    filled = [a.format(coll=photos.coll, folder=photos.folder) for a in args]
    proc = run(*filled, check=False)
    assert proc.returncode == 1
    assert hint in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_hit_lines_fit_any_width():
    hits = [
        SimpleNamespace(id=i, path="/x/" + "deep/" * 30 + f"img{i}.jpg", score=i * 3.3,
                        similar=None, breakdown={"color": 1.0, "texture": 2.0})
        for i in range(1, 13)
    ]  # fmt: skip
    for width in (40, 80, 120):
        lines = hit_lines(hits, width, details=True)
        assert all(len(line) <= width for line in lines)
        assert len(lines) == 24 and lines[-2].endswith("img12.jpg")
    assert fit_left("abcdef", 4) == "…def" and fit_left("abc", 4) == "abc"
