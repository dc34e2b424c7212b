"""Deep embeddings, automatic tags and search by text, through the Collection and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from lookalike.api import Collection  # noqa: E402
from lookalike.samples import TRANSFORMS, write_samples  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deep")
    originals, _ = write_samples(tmp / "images", variants=())
    coll = Collection.create(tmp / "coll", attributes=["color", "deep"])
    report = coll.add([tmp / "images"])
    assert not report.failed
    yield coll, {Path(p).stem: i for p, i in report.ids.items()}, tmp
    coll.close()


def test_photos_get_sensible_tags(photos):
    coll, ids, _ = photos
    cat = {k for k, source, _ in coll.get(ids["chelsea"]).keywords if source == "auto"}
    coffee = {k for k, source, _ in coll.get(ids["coffee"]).keywords if source == "auto"}
    assert "cat" in cat or cat & {"tabby", "tiger cat", "egyptian cat"}
    assert coffee & {"espresso", "cup", "coffee mug", "coffee"}


@pytest.mark.parametrize(
    "query,expected", [("cat", "chelsea"), ("kitten", "chelsea"), ("coffee", "coffee"),
                       ("cup of coffee", "coffee")]
)  # fmt: skip
def test_text_queries_find_the_right_photo_first(photos, query, expected):
    coll, ids, _ = photos
    results = coll.query(text=query, top_k=3)
    assert results[0].id == ids[expected], results.explain["text"]
    assert results[0].score < 50


def test_expansion_is_visible(photos):
    coll, _, _ = photos
    explain = coll.query(text="kitten", top_k=1).explain["text"]
    assert any("kitten" in e["reason"] for e in explain["expanded"])
    colours = coll.query(text="red", top_k=1).explain["text"]["expanded"]
    assert {"maroon", "burgundy"} & {e["term"] for e in colours}


@pytest.mark.parametrize("transform", ["crop80", "half", "jpeg30", "rotate5", "bright120", "hflip"])
def test_transformed_copy_finds_original_with_deep_alone(photos, transform):
    coll, ids, tmp = photos
    from lookalike.samples import sample_photo

    for name in ("astronaut", "chelsea", "coffee", "rocket", "brick"):
        query = tmp / f"{name}_{transform}.jpg"
        TRANSFORMS[transform](sample_photo(name)).save(query, quality=92)
        results = coll.search(query, weights="deep=1", top_k=1)
        assert results[0].id == ids[name], f"{name}/{transform}"
        assert set(results[0].breakdown) == {"deep"}


def test_deep_mixes_with_classic_weights(photos):
    coll, ids, _ = photos
    results = coll.search(ids["coffee"], weights="deep=0.5,color=0.5", top_k=2)
    assert results[0].id == ids["coffee"]
    assert results.weights == {"deep": 0.5, "color": 0.5}


def test_cli_text_search_and_tags(photos):
    coll, ids, tmp = photos
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "search",
            "-c",
            str(coll.directory),
            "--text",
            "kitten",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["id"] == ids["chelsea"]
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike", "tags", str(tmp / "images" / "photos" / "coffee.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "espresso" in proc.stdout or "cup" in proc.stdout


def test_whitening_learned_from_the_collection(photos, tmp_path):
    coll, ids, _ = photos
    from lookalike.errors import LookalikeError
    from lookalike.samples import sample_photo

    before = coll.search(ids["rocket"], weights="deep=1", top_k=20)
    with pytest.raises(LookalikeError):
        coll.fit_whitening("deep")  # 20 images cannot whiten 1280 dimensions
    info = coll.fit_whitening("deep", dim=8)
    assert info == {"images": 20, "dim": 8, "input_dim": 1280}
    query = tmp_path / "rocket.jpg"
    TRANSFORMS["crop80"](sample_photo("rocket")).save(query)
    whitened = coll.search(query, weights="deep=1", top_k=20)
    assert whitened[0].id == ids["rocket"]
    assert [h.score for h in whitened] != [h.score for h in before]
    with Collection.open(coll.directory) as reopened:  # persisted with the collection
        assert reopened.search(query, weights="deep=1", top_k=1)[0].score == pytest.approx(
            whitened[0].score
        )
    assert coll.clear_whitening("deep") is True
    again = coll.search(ids["rocket"], weights="deep=1", top_k=20)
    assert [h.score for h in again] == pytest.approx([h.score for h in before])


def test_a_user_model_by_path_through_the_cli(tmp_path):
    import torch
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Conv2d(6, 12, 3), nn.ReLU())
    model = tmp_path / "tiny.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(net.eval(), torch.rand(1, 3, 64, 64)), str(model))
    images = tmp_path / "imgs"
    write_samples(images, variants=(), names=("coffee", "rocket", "chelsea"))
    coll = tmp_path / "coll"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "index",
            str(images),
            "-c",
            str(coll),
            "--attributes",
            "color,deep",
            "--deep-model",
            str(model),
            "--deep-pooling",
            "gem",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with Collection.open(coll) as opened:
        assert opened.info()["attributes"]["deep"]["dim"] == 12
        assert opened.attributes["deep"] == {"model": str(model), "pooling": "gem"}
        hit = opened.search(images / "photos" / "rocket.png", weights="deep=1", top_k=1)[0]
        assert Path(hit.path).name == "rocket.png" and hit.score == pytest.approx(0, abs=1e-3)
        assert not any(s == "auto" for _, s, _ in opened.get(hit.id).keywords)  # no classifier
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "index",
            str(images),
            "-c",
            str(tmp_path / "c2"),
            "--deep-model",
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "broken.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_tag_floor_is_a_collection_setting(tmp_path):
    images = tmp_path / "imgs"
    write_samples(images, variants=(), names=("coffee",))
    with Collection.create(tmp_path / "strict", attributes=["deep"], tag_floor=0.99) as strict:
        strict.add([images])
        assert not [k for k in strict.get(1).keywords if k[1] == "auto"]
    with Collection.create(tmp_path / "loose", attributes=["deep"], tag_floor=0.05) as loose:
        loose.add([images])
        tags_ = {k: s for k, src, s in loose.get(1).keywords if src == "auto"}
        assert "espresso" in tags_ and min(tags_.values()) >= 0.05


def test_vocabulary_vectors_are_kept_in_the_catalog(photos):
    coll, ids, _ = photos
    from lookalike import semantic
    from lookalike.query.expansion import TEMPLATE

    coll.query(text="kitten", top_k=1)
    vocabulary = coll.catalog.keyword_vocabulary()
    keys = [TEMPLATE.format(v.lower()) for v in vocabulary]
    stored = coll.catalog.text_vectors(keys, semantic.MODEL_NAME)
    assert len(stored) == len(set(keys)) > 10  # every keyword embedded once, and kept
    assert TEMPLATE.format("kitten") not in coll.catalog.text_vectors(
        [TEMPLATE.format("kitten")], semantic.MODEL_NAME
    )  # queries are not stored
    with Collection.open(coll.directory) as again:  # a new process-like opener reuses them
        assert again.query(text="kitten", top_k=1)[0].id == ids["chelsea"]


def test_a_clip_style_text_tower_joins_text_search(tmp_path):
    """A random 'CLIP' (image tower + text tower of the same width) proves the plumbing."""
    import warnings

    import numpy as np
    import torch
    from torch import nn

    from lookalike import semantic
    from lookalike.errors import LookalikeError

    class Text(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.embed = nn.Embedding(30522, width)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.embed(ids) * mask.unsqueeze(-1).float()  # (n, L, d): pooled by us

    torch.manual_seed(0)
    image_tower = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(
            torch.jit.trace(image_tower.eval(), torch.rand(1, 3, 64, 64)),
            str(tmp_path / "image.pt"),
        )
        torch.jit.save(torch.jit.script(Text(8).eval()), str(tmp_path / "text.pt"))
        torch.jit.save(torch.jit.script(Text(5).eval()), str(tmp_path / "narrow.pt"))
    images = tmp_path / "imgs"
    write_samples(images, variants=(), names=("coffee", "rocket", "chelsea"))
    cli = [sys.executable, "-m", "lookalike"]
    coll_dir = str(tmp_path / "coll")
    subprocess.run(
        [
            *cli,
            "index",
            str(images),
            "-c",
            coll_dir,
            "--attributes",
            "deep",
            "--deep-model",
            str(tmp_path / "image.pt"),
            "--deep-pooling",
            "gap",  # the plumbing is under test: GAP keeps the pinned random towers' geometry
        ],
        check=True,
        timeout=300,
    )
    tokenizer = str(semantic.model_path())
    proc = subprocess.run(
        [
            *cli,
            "text-tower",
            "-c",
            coll_dir,
            "--model",
            str(tmp_path / "text.pt"),
            "--tokenizer",
            tokenizer,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with Collection.open(coll_dir) as coll:
        results = coll.query(text="a rocket on its launch pad", top_k=None)
        assert results.explain["text"]["text_tower"].endswith("text.pt")
        tower_vector = coll._text_tower().embed(["a rocket on its launch pad"])[0]
        index = coll.index_for("deep")
        cosines = index.matrix @ tower_vector / np.linalg.norm(index.matrix, axis=1)
        pairs = zip(index.ids, cosines, strict=True)
        expected = {int(i): 100 * (1 - c) for i, c in pairs if c > 0}
        assert expected  # no image has a keyword here: whatever matches, the tower found it
        assert {h.id: h.breakdown["text"] for h in results} == pytest.approx(expected, abs=1e-3)
        with pytest.raises(LookalikeError, match="must come from one model"):
            coll.set_text_tower(tmp_path / "narrow.pt", tokenizer)
        with pytest.raises(LookalikeError, match="not found"):
            coll.set_text_tower(tmp_path / "missing.pt", tokenizer)
        onnx = tmp_path / "text.onnx"  # the same tower as ONNX gives the same distances
        ids = torch.ones((2, 5), dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                torch.jit.load(str(tmp_path / "text.pt")),
                (ids, ids),
                str(onnx),
                input_names=["input_ids", "attention_mask"],
                dynamo=False,
                dynamic_axes={"input_ids": {0: "n", 1: "l"}, "attention_mask": {0: "n", 1: "l"}},
            )
        coll.set_text_tower(onnx, tokenizer)
        again = coll.query(text="a rocket on its launch pad", top_k=None)
        assert again.explain["text"]["text_tower"].endswith("text.onnx")
        assert {h.id: h.breakdown["text"] for h in again} == pytest.approx(expected, abs=1e-2)
        assert coll.clear_text_tower() is True
        assert "text_tower" not in coll.query(text="rocket", top_k=1).explain["text"]


def test_whitening_of_a_large_collection_is_learned_from_an_even_sample(tmp_path, monkeypatch):
    """Fitted on every vector, a whitening of 1M deep vectors held them twice in float64
    (20 GB, more than the machine). It is learned from at most FIT_SAMPLE of them, every k-th
    by id, read chunk by chunk: the same whitening as fitting that sample directly."""
    import numpy as np

    from lookalike.features import whitening as whitening_module
    from lookalike.store import catalog as catalog_module

    rng = np.random.default_rng(12)
    vectors = np.abs(rng.normal(size=(403, 1280))).astype(np.float32)
    with Collection.create(tmp_path / "coll", attributes=["deep"]) as coll:
        coll.add_vectors([f"/v/{i}.jpg" for i in range(403)], {"deep": vectors})
        monkeypatch.setattr(whitening_module, "FIT_SAMPLE", 100)
        monkeypatch.setattr(catalog_module, "SIGNATURE_CHUNK", 37)  # edges inside the steps
        info = coll.fit_whitening("deep", dim=16)
        assert info["images"] == 81  # every 5th of 403 (ceil(403 / 100) = 5): at most 100
        learned = coll._whitening("deep")
    expected = whitening_module.fit_pca_whitening(vectors[::5], dim=16)
    assert np.allclose(learned.mean, expected.mean) and np.allclose(
        np.abs(learned.projection), np.abs(expected.projection), atol=1e-6
    )
