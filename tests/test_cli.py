"""The `lookalike` command as a user runs it: a real subprocess, real output, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLASSIC, make_image_dir

from lookalike.api import Collection

CLI = [sys.executable, "-m", "lookalike"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    image_dir = make_image_dir(tmp_path / "images")
    coll = tmp_path / "coll"
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    Collection.create(coll, attributes=CLASSIC).close()
    proc = run("index", str(image_dir), "-c", str(coll), check=False)
    return coll, image_dir, proc


def test_index_reports_added_and_skipped(indexed):
    coll, image_dir, proc = indexed
    assert proc.returncode == 3, proc.stderr  # finished, some files skipped
    assert "6 added" in proc.stdout and "1 skipped" in proc.stdout
    assert "broken.png" in proc.stdout
    again = run("index", str(image_dir), "-c", str(coll), "--json", check=False)
    assert again.returncode == 3
    report = json.loads(again.stdout)
    assert len(report["unchanged"]) == 6 and report["skipped"][0]["path"].endswith("broken.png")


def test_search_json_with_weights_top_and_threshold(indexed):
    coll, image_dir, _ = indexed
    proc = run(
        "search",
        str(image_dir / "red.png"),
        "-c",
        str(coll),
        "--weights",
        "color=0.7,texture=0.2,shape=0.1",
        "--top",
        "3",
        "--json",
    )
    data = json.loads(proc.stdout)
    assert data["weights"] == {"color": 0.7, "texture": 0.2, "shape": 0.1}
    assert len(data["results"]) == 3
    assert Path(data["results"][0]["path"]).name == "red.png"
    assert set(data["results"][0]["breakdown"]) == {"color", "texture", "shape"}
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores)
    limited = json.loads(
        run(
            "search", str(image_dir / "red.png"), "-c", str(coll), "--threshold", "1", "--json"
        ).stdout
    )
    assert [Path(r["path"]).name for r in limited["results"]] == ["red.png"]
    assert limited["results"][0]["similar"] is True


def test_search_table_and_by_id(indexed):
    coll, image_dir, _ = indexed
    proc = run("search", "id:1", "-c", str(coll), "--weights", "color=1", "--top", "2")
    assert "score" in proc.stdout and "color" in proc.stdout


def run_importing(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`lookalike ARGS` and the modules its process imported (Python's -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lookalike", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return proc, {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


COMPILED = {"numba", "llvmlite"}  # ~1.5 s of CPU to import: only describing an image needs them
TRANSFORMERS = {"torch", "transformers", "sentence_transformers"}  # ~17 s of CPU to import


@pytest.mark.parametrize(
    ("command", "needed", "not_needed"),
    [
        (["search", "id:1", "--top", "3"], "lookalike.features.filters", COMPILED | TRANSFORMERS),
        (["info"], "lookalike.features.filters", COMPILED | TRANSFORMERS),
    ],
)
def test_commands_import_only_what_they_run(indexed, command, needed, not_needed):
    """A search by id or `info` describes no image, so it never imports numba and llvmlite
    (nor torch: the stored vectors are compared as they are)."""
    coll, _, _ = indexed
    _, modules = run_importing(*command, "-c", str(coll))
    assert needed in modules  # what the command does was really done in this process
    assert not not_needed & modules, sorted(m for m in modules if m.split(".")[0] in not_needed)


def test_remove_and_info(tmp_path, image_dir):
    coll = tmp_path / "coll"
    run(
        "index",
        str(image_dir / "red.png"),
        str(image_dir / "blue.gif"),
        "-c",
        str(coll),
        "--attributes",
        "color,texture",
    )
    assert "1 removed" in run("remove", str(image_dir / "red.png"), "-c", str(coll)).stdout
    info = json.loads(run("info", "-c", str(coll), "--json").stdout)
    assert info["images"] == 1 and "color" in info["attributes"]
    # the id notation search answers and help texts use (id:N) names an image everywhere
    blue = json.loads(
        run("info", "-c", str(coll), "--image", str(image_dir / "blue.gif"), "--json").stdout
    )
    shown = run("update", f"id:{blue['id']}", "-c", str(coll), "--metadata", '{"tag": "sky"}')
    assert "sky" in shown.stdout
    assert "1 removed" in run("remove", f"id:{blue['id']}", "-c", str(coll)).stdout
    assert json.loads(run("info", "-c", str(coll), "--json").stdout)["images"] == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "nope.png", "-c", "{coll}"], "no such file"),
        (["search", "{img}", "-c", "{coll}", "--weights", "location=1"], "location weight"),
        (["search", "{img}", "-c", "{coll}", "--weights", "color=2"], "between 0 and 1"),
        (["search", "{img}", "-c", "{coll}", "--threshold", "150"], "threshold"),
        (["info", "-c", "/nonexistent/coll"], "no collection"),
        (["remove", "999", "-c", "{coll}"], "no image"),
    ],
)
def test_errors_are_one_line_without_traceback(indexed, args, message):
    coll, image_dir, _ = indexed
    args = [a.format(coll=coll, img=image_dir / "red.png") for a in args]
    proc = run(*args, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_preprocessing_is_chosen_at_creation_and_kept(tmp_path, image_dir):
    coll = str(tmp_path / "c")
    run(
        "index",
        str(image_dir / "red.png"),
        "-c",
        coll,
        "--attributes",
        "color",
        "--frame",
        "128",
        "--normalize",
        "stretch",
        "--denoise",
        "3",
    )
    info = json.loads(run("info", "-c", coll, "--json").stdout)
    assert info["preprocess"] == {"frame": 128, "normalize": "stretch", "denoise": 3}
    again = run("index", str(image_dir / "blue.gif"), "-c", coll, "--frame", "512")
    assert "fixed when a collection is created" in again.stderr
    assert json.loads(run("info", "-c", coll, "--json").stdout)["preprocess"]["frame"] == 128
    bad = run("index", str(image_dir), "-c", str(tmp_path / "d"), "--denoise", "2", check=False)
    assert bad.returncode == 1 and "denoise" in bad.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`lookalike demo` as the README's first command runs it (default attributes: the CNN on)."""
    folder = tmp_path_factory.mktemp("demo")
    proc = run("demo", "--folder", str(folder), "--top", "3")
    return folder, proc


def test_demo_indexes_the_samples_and_finds_the_original_first(demo):
    folder, proc = demo
    assert "20 photos + 40 transformed copies" in proc.stdout
    assert "60 added" in proc.stdout and "0 skipped" in proc.stdout
    table = proc.stdout.split("query:")[1]
    first_row = next(line for line in table.splitlines() if line.split()[:1] == ["1"])
    assert first_row.endswith("chelsea.png")  # one line per hit: rank, score, id, path
    info = json.loads(run("info", "-c", str(folder / "collection"), "--json").stdout)
    assert info["images"] == 60 and "deep" in info["attributes"]


def test_text_search_embeds_words_without_torch_or_transformers(demo):
    """`search --text` embeds the words with the packaged sentence model in numpy (its
    tokenizer and safetensors weights): the kitten finds the cat through the semantic
    neighbours of the collection's tags, and the process imports neither torch and
    transformers (~17 s of CPU) nor numba."""
    folder, _ = demo
    collection = str(folder / "collection")
    proc, modules = run_importing("search", "--text", "kitten", "-c", collection, "--json")
    assert {"lookalike.semantic", "tokenizers", "safetensors"} <= modules
    assert not (COMPILED | TRANSFORMERS) & modules, sorted(
        m for m in modules if m.split(".")[0] in COMPILED | TRANSFORMERS
    )
    found = json.loads(proc.stdout)
    assert Path(found["results"][0]["path"]).name.startswith("chelsea"), found["results"][:3]
    expanded = {e["term"]: e["reason"] for e in found["explain"]["text"]["expanded"]}
    assert expanded["cat"].startswith("semantic neighbour of 'kitten'"), expanded


def test_whiten_through_the_cli(demo):
    folder, _ = demo
    coll = str(folder / "collection")
    query = str(folder / "query" / "variants" / "chelsea__rotate5.jpg")
    proc = run("whiten", "-c", coll, "--dim", "16")
    assert "whitened to 16 of 1280 dimensions, learned from 60 images" in proc.stdout
    data = json.loads(run("search", query, "-c", coll, "--weights", "deep=1", "--json").stdout)
    assert Path(data["results"][0]["path"]).name.startswith("chelsea")  # the cat or a copy
    assert "whitening removed" in run("whiten", "-c", coll, "--off").stdout
    assert "was not whitened" in run("whiten", "-c", coll, "--off").stdout
    bad = run("whiten", "-c", coll, "--attribute", "nope", check=False)
    assert bad.returncode == 1 and "no 'nope' attribute" in bad.stderr


def test_update_through_the_cli(indexed):
    coll, image_dir, _ = indexed
    red = str(image_dir / "red.png")
    merged = json.loads(run("update", red, "-c", str(coll), "--metadata", '{"price": 9}').stdout)
    assert merged["metadata"]["price"] == 9
    again = run("update", str(merged["id"]), "-c", str(coll), "--metadata", '{"tag": "x"}')
    assert json.loads(again.stdout)["metadata"] == {"price": 9, "tag": "x"}
    replaced = run(
        "update", red, "-c", str(coll), "--metadata", '{"tag": "y"}', "--replace", "--reindex"
    )
    assert json.loads(replaced.stdout)["metadata"] == {"tag": "y"}
    found = json.loads(run("search", "-c", str(coll), "--text", "y", "--json").stdout)
    assert [Path(r["path"]).name for r in found["results"]] == ["red.png"]
    for args, message in (
        (["--metadata", "[1]"], "must be a JSON object"),
        (["--metadata", "{oops"], "not valid JSON"),
        ([], "nothing to update"),
    ):
        proc = run("update", red, "-c", str(coll), *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr
