"""Learning from a user's labels: `lookalike adapt` changes the ranking, `--reset` restores it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from quality_fixtures import run, write_fashion

pytest.importorskip("torch")

from lookalike.adapt import fit_projection, split_held_out  # noqa: E402
from lookalike.evaluate import quality_from_distances  # noqa: E402

CLASSES = ["t-shirt", "shirt", "pullover", "coat", "sandal"]


def test_split_keeps_every_class_on_both_sides():
    labels = ["a"] * 10 + ["b"] * 3
    train, held = split_held_out(labels, 0.3)
    assert sorted([*train, *held]) == list(range(13))
    assert [labels[i] for i in held].count("a") == 3 and [labels[i] for i in held].count("b") == 1


def test_projection_finds_the_one_direction_that_separates_the_classes():
    rng = np.random.default_rng(0)
    x = 3 * rng.normal(size=(300, 20))  # loud noise everywhere ...
    labels = np.arange(300) % 3
    x[:, 7] = rng.normal(size=300) + 2.5 * labels  # ... and one quiet direction that tells
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit vectors, like deep signatures

    def precision(vectors):
        distances = 1 - vectors @ vectors.T
        return quality_from_distances(distances, labels, k=10).precision_at_k

    projected = fit_projection(x[::2], labels[::2].astype(str)).apply(x)  # fitted on half
    assert precision(x) < 0.45 and precision(projected) > 0.65


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapt")
    write_fashion(tmp / "images", CLASSES, 10)
    write_fashion(tmp / "labels", CLASSES, 8, skip=10)  # labelled examples, not in the collection
    coll = tmp / "coll"
    run("index", str(tmp / "images"), "-c", str(coll), "--attributes", "color,texture,deep")
    return tmp, coll, ranking(coll)  # the unadapted ranking, that every test comes back to


def ranking(coll, query="id:1"):
    out = json.loads(run("search", query, "-c", str(coll), "--json", "--top", "20").stdout)
    return [(hit["id"], round(hit["score"], 6)) for hit in out["results"]]


def test_adapt_changes_the_ranking_and_reset_restores_it(labelled):
    tmp, coll, before = labelled
    proc = run("adapt", "-c", str(coll), "--labels", str(tmp / "labels"), "--json")
    report = json.loads(proc.stdout)
    assert report["examples"] == 40 and report["classes"] == 5 and report["held_out"] > 0
    assert set(report["weights"]) <= {"color", "texture", "deep"}
    adapted = ranking(coll)
    assert adapted != before
    assert run("adapt", "-c", str(coll), "--reset").stdout.strip() == "adaptation removed"
    assert ranking(coll) == before
    assert "was not adapted" in run("adapt", "-c", str(coll), "--reset").stdout


def test_adapt_from_a_csv_of_stored_ids(labelled):
    tmp, coll, _ = labelled
    paths = sorted((tmp / "images").rglob("*.png"))
    csv = tmp / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in paths))
    report = json.loads(run("adapt", "-c", str(coll), "--labels", str(csv), "--json").stdout)
    assert report["examples"] == 50
    after = report["after"]["deep"]["precision@10"]
    assert after >= report["before"]["deep"]["precision@10"] - 0.05
    run("adapt", "-c", str(coll), "--reset")


@pytest.mark.parametrize(
    "content,message",
    [
        ("path,label\n", "no labelled rows"),
        ("name,kind\nx.png,a\n", "need a 'label'"),
        ("id,label\n1,a\n2,a\n3,a\n", "one class only"),
        ("id,label\n1,a\n2,b\n", "at least 3 examples"),
    ],
)
def test_labels_that_cannot_teach_are_refused_in_one_line(labelled, content, message):
    tmp, coll, before = labelled
    csv = tmp / "bad.csv"
    csv.write_text(content)
    proc = run("adapt", "-c", str(coll), "--labels", str(csv), check=False)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert ranking(coll) == before  # nothing stored
