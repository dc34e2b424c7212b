"""The contract every visual attribute implements.

An extractor turns a prepared image into a float32 vector and knows how to compare two such
vectors on the 0..100 scale users see (0 = no difference, 100 = as different as it gets).
Keeping the distance beside the extraction means the scoring module never needs to know what a
vector means.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
from skimage import color as skcolor


class LazyKernel:
    """A numba kernel compiled (or loaded from numba's on-disk cache) on its first call, so a
    process that describes no image never imports numba and llvmlite (~1.5 s of CPU of every
    `lookalike` start: a search by id, `info`, the server's parent). The first call of any
    lazy kernel makes every one's dispatcher and puts it in place of the wrapper in their
    modules' globals: kernels that call each other find dispatchers there, and later calls
    from those modules go to numba directly."""

    _pending: list[LazyKernel] = []
    _lock = threading.Lock()

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]):
        functools.update_wrapper(self, function)
        self.py_func = function
        self._options = options
        self._dispatcher: Any = None
        LazyKernel._pending.append(self)

    def __call__(self, *args: Any) -> Any:
        if self._dispatcher is None:
            LazyKernel.load_all()
        return self._dispatcher(*args)

    @property
    def signatures(self) -> list[Any]:
        """The compiled signatures; none before the first call (numba not even imported)."""
        return [] if self._dispatcher is None else self._dispatcher.signatures

    @classmethod
    def load_all(cls) -> None:
        """Import numba and make every pending kernel's dispatcher (compiling happens at each
        one's first call, from the cache when it has one)."""
        with cls._lock:
            pending, cls._pending = cls._pending, []
            if not pending:
                return
            import numba

            made = {id(k): numba.njit(**k._options)(k.py_func) for k in pending}
            modules = {id(k.py_func.__globals__): k.py_func.__globals__ for k in pending}
            for namespace in modules.values():
                for name, value in list(namespace.items()):
                    if isinstance(value, LazyKernel) and id(value) in made:
                        namespace[name] = made[id(value)]
            # set last: another thread's first call skips the lock once its kernel has a
            # dispatcher, and must then find every kernel it calls already in place
            for kernel in pending:
                kernel._dispatcher = made[id(kernel)]


def lazy_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`numba.njit(**options)` that imports numba at the kernel's first call (`LazyKernel`)."""

    def decorate(function: Callable[..., Any]) -> Any:
        return LazyKernel(function, options)

    return decorate


class PreparedImage:
    """An RGB image in the collection's common frame, with colour spaces computed once.

    `rgb` is float32 in [0, 1], shape (H, W, 3). Derived views are cached so that several
    extractors working on one image convert it only once.
    """

    def __init__(self, rgb: np.ndarray):
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
        self.rgb = np.ascontiguousarray(rgb, dtype=np.float32)
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """Intermediate results several extractors need (LBP codes, gradients), made once."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @cached_property
    def hsv(self) -> np.ndarray:
        return rgb_to_hsv(self.rgb)

    @cached_property
    def lab(self) -> np.ndarray:
        return skcolor.rgb2lab(self.rgb).astype(np.float32)

    @cached_property
    def gray(self) -> np.ndarray:
        """Luminance with scikit-image's rgb2gray weights (Rec. 709), float32."""
        return self.rgb @ GRAY_WEIGHTS


def warm_up(extractors: Iterable[Extractor]) -> None:
    """Compile the compiled loops (numba) of every extractor that has them, or load them from
    numba's cache, by describing one blank image of its `compile_size` (large enough to take
    every compiled path a photo in the frame takes). Ingest workers call it at start, within
    their start budget, not a photo's; a process that only reads stored signatures (`info`, a
    search by id) never pays the ~0.5 s of loading the kernels."""
    for extractor in extractors:
        size = getattr(extractor, "compile_size", None)
        if size:
            extractor.extract(PreparedImage(np.zeros((size, size, 3), dtype=np.float32)))


GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float32 RGB (..., 3) in [0, 1] -> HSV in [0, 1], all in float32.

    The same arithmetic as scikit-image's rgb2hsv (which vectors were first made with, and which
    tests hold this to), pixel by pixel in one compiled pass (`_hsv_pixels`) instead of its
    masked assignments: ~20x faster on the frame than rgb2hsv, ~3x than numpy passes. Where two
    channels tie for the maximum, blue wins over green over red, as there.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    flat = np.ascontiguousarray(rgb.reshape(-1, 3))
    return _hsv_pixels(flat).reshape(rgb.shape)


@lazy_njit(cache=True, nogil=True)
def _hsv_pixels(rgb: np.ndarray) -> np.ndarray:
    """HSV of (n, 3) float32 pixels, every step in float32 as numpy's vectorised version did
    it (zero added where it added a False: -0.0 becomes 0.0 alike)."""
    zero, one = np.float32(0.0), np.float32(1.0)
    two, four, six = np.float32(2.0), np.float32(4.0), np.float32(6.0)
    out = np.empty_like(rgb)
    for i in range(len(rgb)):
        r, g, b = rgb[i, 0], rgb[i, 1], rgb[i, 2]
        value = max(max(r, g), b)
        delta = value - min(min(r, g), b)
        grey = delta == 0
        divisor = delta + (one if grey else zero)
        out[i, 1] = delta / (value + (one if value == 0 else zero))
        if b == value:
            hue = four + (r - g) / divisor
        elif g == value:
            hue = two + (b - r) / divisor
        else:
            hue = (g - b) / divisor
        hue = hue / six
        hue = hue + (one if hue < 0 else zero)
        out[i, 0] = zero if grey else hue
        out[i, 2] = value
    return out


@runtime_checkable
class Extractor(Protocol):
    """One visual attribute. `version` changes whenever stored vectors would change."""

    name: str
    version: str
    dim: int

    def extract(self, image: PreparedImage) -> np.ndarray:
        """Return a float32 vector of length `dim`."""
        ...

    def distance(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        """Distances from one query vector (dim,) to stored vectors (n, dim), each in [0, 100]."""
        ...

    def index_space(self) -> IndexSpace:
        """How a vector index reproduces `distance` (see IndexSpace)."""
        ...


@dataclass(frozen=True)
class IndexSpace:
    """The space in which a vector index searches one attribute.

    `transform` maps stored vectors (n, dim) to float32 (n, index_dim) where the index metric
    ("l1": sum of absolute differences, "ip": inner product, larger = nearer) is monotone in the
    attribute's 0..100 distance, and `to_distance` maps metric values back onto that scale.
    Indexes then never special-case attributes: each extractor says how its distance is searched.
    """

    metric: str  # "l1" or "ip"
    dim: int
    transform: Callable[[np.ndarray], np.ndarray]
    to_distance: Callable[[np.ndarray], np.ndarray]

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.transform(np.atleast_2d(vectors)), dtype=np.float32)


def block_l1_space(
    block_sizes: list[int],
    block_weights: list[float] | None = None,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> IndexSpace:
    """The L1 space of `block_histogram_distance`: each block scaled by 50 * w / sum(w), so the
    plain L1 norm of a difference *is* the 0..100 distance (before clipping)."""
    scale = _column_weights(block_sizes, block_weights).astype(np.float32)

    def transform(vectors: np.ndarray) -> np.ndarray:
        vectors = prepare(vectors) if prepare is not None else vectors
        return np.asarray(vectors, dtype=np.float32) * scale

    def to_distance(values: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(values, dtype=np.float64), 0.0, 100.0)

    return IndexSpace("l1", len(scale), transform, to_distance)


def cosine_space(dim: int, cos_floor: float) -> IndexSpace:
    """Cosine distance 100 * clip((1 - cos) / (1 - floor), 0, 1) as inner product of unit rows."""

    def transform(vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def to_distance(values: np.ndarray) -> np.ndarray:
        cos = np.asarray(values, dtype=np.float64)
        return np.clip(100.0 * (1.0 - cos) / (1.0 - cos_floor), 0.0, 100.0)

    return IndexSpace("ip", dim, transform, to_distance)


def cosine_distance(query: np.ndarray, stored: np.ndarray, cos_floor: float) -> np.ndarray:
    """The distance of `cosine_space` exactly: 100 * clip((1 - cos) / (1 - floor), 0, 1) in
    float64 (scores agree to 1e-12 whatever the batch), norms by einsum: linalg.norm's generic
    path cost 5x the product itself on a search's 100 candidates."""
    q = np.asarray(query, dtype=np.float64).ravel()
    stored = np.atleast_2d(stored)
    if LOADED_KERNELS["rough"] and len(stored) <= FEW_ROWS and stored.dtype in _FLOAT_ROWS:
        return _float64_cosine_distances(np.ascontiguousarray(stored), q, float(cos_floor))
    stored = np.asarray(stored, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", stored, stored)) * float(np.sqrt(q @ q))
    cos = stored @ q / np.maximum(norms, 1e-12)
    return np.clip(100.0 * (1.0 - cos) / (1.0 - cos_floor), 0.0, 100.0)


FEW_ROWS = 256  # up to this many rows, `cosine_distance` takes one compiled pass (when loaded)
_FLOAT_ROWS = (np.dtype(np.float32), np.dtype(np.float64))
# which compiled kernels this process has loaded: "rough" (`load_rough_kernel`) and "layout"
# (query/layout.py `load_layout_kernels`), as a server does at start-up; numpy until then
LOADED_KERNELS = {"rough": False, "layout": False}
FLOAT32_UNIT = 2.0**-24  # unit roundoff of float32
TINY_NORM = 1e-6  # below this norm product a float32 cosine is not trusted: float64 instead


def rough_cosine_distance(
    query: np.ndarray, stored: np.ndarray, cos_floor: float
) -> tuple[np.ndarray, float]:
    """The cosine distance of `cosine_space` in float32 (a fifth of the float64 cost on a
    search's 100 candidates) and a bound on how far it is from the float64 one, so a caller
    ranks by it and recomputes in float64 only where the bound leaves a doubt.

    Bound: a float32 dot product (any summation order) is off by at most gamma_d * |x|.|y|
    <= gamma_d * ||x|| ||y|| (gamma_d = d u / (1 - d u)), each squared norm by gamma_d of
    itself; the square roots and the division add a few u. So |cos32 - cos| <= 2 gamma_d + 4 u;
    it is doubled here, and clipping to 0..100 only shrinks differences."""
    stored = np.atleast_2d(stored)
    q = np.asarray(query, dtype=np.float32).ravel()
    dim = max(len(q), 1)
    gamma = dim * FLOAT32_UNIT / (1.0 - dim * FLOAT32_UNIT)
    bound = 2.0 * (2.0 * gamma + 4.0 * FLOAT32_UNIT) * 100.0 / (1.0 - cos_floor)
    scale = 100.0 / (1.0 - cos_floor)
    rows = np.ascontiguousarray(stored, np.float32)
    if LOADED_KERNELS["rough"]:  # numba loaded: one pass, ~18 us per 100 rows
        out = _float32_cosine_distances(rows, q, scale)
    else:  # loading numba costs a process 1.3 s (a CLI search by id); numpy ~100 us
        out = _numpy_float32_cosine_distances(rows, q, scale)
    if np.isnan(np.add.reduce(out)):  # a near-zero vector: float32 underflows (one C call)
        tiny = np.isnan(out)  # these few rows in float64
        out[tiny] = cosine_distance(q, stored[tiny], cos_floor)
    return out, bound


def load_rough_kernel() -> None:
    """Load the numba kernels of `rough_cosine_distance`, `cosine_distance` on few rows and
    `within_kth` now (1.3 s the first time in a process), for a process that will search
    many times: a server at start-up."""
    _float32_cosine_distances(np.ones((1, 2), np.float32), np.ones(2, np.float32), 1.0)
    for dtype in _FLOAT_ROWS:  # the candidates' rows (float32) and the delta's (float64)
        _float64_cosine_distances(np.ones((1, 2), dtype), np.ones(2), 0.0)
    _within_kth(np.ones(2), 1, 0.0)
    LOADED_KERNELS["rough"] = True


def within_kth(values: np.ndarray, k: int, margin: float) -> np.ndarray:
    """Positions (ascending) of the values at most `margin` above the k-th smallest (1 <= k
    <= len(values)): the candidates a rough score leaves in doubt (query/plan.py `settle`).
    One compiled pass where the kernels are loaded: numpy's partition and flatnonzero, right
    after a search's ANN scan, cost ~20 us with the CPU caches cold."""
    if LOADED_KERNELS["rough"]:
        return _within_kth(np.ascontiguousarray(values, np.float64), int(k), float(margin))
    kth = np.partition(values, k - 1)[k - 1]
    return np.flatnonzero(values <= kth + margin)


@lazy_njit(cache=True, nogil=True)
def _within_kth(values: np.ndarray, k: int, margin: float) -> np.ndarray:
    """`within_kth`: the k-th smallest by a max-heap of the k smallest, then one scan."""
    heap = np.empty(k, np.float64)  # heap[0]: the largest of the k smallest so far
    for i in range(k):
        heap[i] = values[i]
        at = i
        while at > 0 and heap[(at - 1) // 2] < heap[at]:
            parent = (at - 1) // 2
            heap[parent], heap[at] = heap[at], heap[parent]
            at = parent
    for i in range(k, len(values)):
        value = values[i]
        if value < heap[0]:
            heap[0] = value
            at = 0
            while True:
                left, largest = 2 * at + 1, at
                if left < k and heap[left] > heap[largest]:
                    largest = left
                if left + 1 < k and heap[left + 1] > heap[largest]:
                    largest = left + 1
                if largest == at:
                    break
                heap[at], heap[largest] = heap[largest], heap[at]
                at = largest
    limit = heap[0] + margin
    count = 0
    for i in range(len(values)):
        if values[i] <= limit:
            count += 1
    out = np.empty(count, np.int64)
    j = 0
    for i in range(len(values)):
        if values[i] <= limit:
            out[j] = i
            j += 1
    return out


def _numpy_float32_cosine_distances(
    rows: np.ndarray, query: np.ndarray, scale: float
) -> np.ndarray:
    """`_float32_cosine_distances` in numpy's float32 (any summation order keeps the bound)."""
    dots = rows @ query
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows)) * np.sqrt(np.float32(query @ query))
    out = np.full(len(rows), np.nan)
    trusted = norms >= TINY_NORM
    cos = (dots[trusted] / norms[trusted]).astype(np.float64)
    out[trusted] = np.clip(scale * (1.0 - cos), 0.0, 100.0)
    return out


@lazy_njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _float32_cosine_distances(rows: np.ndarray, query: np.ndarray, scale: float) -> np.ndarray:
    """clip(scale * (1 - cos), 0, 100) per row, cos in float32, in one pass over the rows
    (numpy needs several, and its einsum of the norms cost 3x the product); NaN where the
    norms are too small to trust. Any summation order keeps `rough_cosine_distance`'s bound."""
    count, dim = rows.shape
    out = np.empty(count, np.float64)
    q_square = np.float32(0.0)
    for j in range(dim):
        q_square += query[j] * query[j]
    q_norm = np.sqrt(q_square)
    for i in range(count):
        dot = np.float32(0.0)
        square = np.float32(0.0)
        for j in range(dim):
            value = rows[i, j]
            dot += value * query[j]
            square += value * value
        norms = np.sqrt(square) * q_norm
        if norms < TINY_NORM:
            out[i] = np.nan
        else:
            cos = dot / norms
            out[i] = min(max(scale * (1.0 - np.float64(cos)), 0.0), 100.0)
    return out


@lazy_njit(cache=True, nogil=True)
def _float64_cosine_distances(rows: np.ndarray, query: np.ndarray, cos_floor: float) -> np.ndarray:
    """`cosine_distance` of a few rows in one float64 pass: numpy's ~10 calls on a search's
    ~10 rows to settle cost 40 us, this 3 us. Sums in row order, numpy's BLAS in its own: the
    two agree to ~1e-13 (as BLAS agrees with itself across batch sizes)."""
    count, dim = rows.shape
    out = np.empty(count, np.float64)
    q_square = 0.0
    for j in range(dim):
        q_square += query[j] * query[j]
    q_norm = np.sqrt(q_square)
    for i in range(count):
        dot = 0.0
        square = 0.0
        for j in range(dim):
            value = np.float64(rows[i, j])
            dot += value * query[j]
            square += value * value
        cos = dot / max(np.sqrt(square) * q_norm, 1e-12)
        out[i] = min(max(100.0 * (1.0 - cos) / (1.0 - cos_floor), 0.0), 100.0)
    return out


def block_histogram_distance(
    query: np.ndarray,
    stored: np.ndarray,
    block_sizes: list[int],
    block_weights: list[float] | None = None,
) -> np.ndarray:
    """(Weighted) mean total-variation distance over consecutive histogram blocks, 0..100.

    Each block of the vector is a histogram summing to 1 (or all zero for "nothing there").
    Total variation (half the L1 norm) is 0 for equal histograms and 1 for disjoint ones, so the
    0..100 scale has a plain meaning: the share of mass that would have to move.

    The weighted mean over blocks is one product of |stored - query| with a weight per column
    (einsum: each row summed in float64 in one fixed order, so an image's distance does not
    depend on the batch it is in), 2-5x cheaper than a sum per block on a search's candidates.
    """
    stored = np.atleast_2d(stored)
    diff = np.abs(stored - query[None, :])
    return np.clip(np.einsum("ij,j->i", diff, _column_weights(block_sizes, block_weights)), 0, 100)


def _column_weights(block_sizes: list[int], block_weights: list[float] | None) -> np.ndarray:
    """100 * 0.5 * w / sum(w) of each column's block, float64: the weights of
    `block_histogram_distance` and the scale of its index space (`block_l1_space`)."""
    key = (tuple(block_sizes), tuple(block_weights) if block_weights else None)
    weights = _COLUMN_WEIGHTS.get(key)
    if weights is None:
        per_block = np.asarray(block_weights or [1.0] * len(block_sizes), np.float64)
        weights = np.repeat(50.0 * per_block / per_block.sum(), block_sizes)
        weights.flags.writeable = False
        _COLUMN_WEIGHTS[key] = weights
    return weights


_COLUMN_WEIGHTS: dict[tuple[tuple[int, ...], tuple[float, ...] | None], np.ndarray] = {}


def normalised_histogram(counts: np.ndarray) -> np.ndarray:
    """Counts -> frequencies summing to 1 (all zeros stay zeros)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return (counts / total if total > 0 else counts).astype(np.float32)


def grid_cells(height: int, width: int, rows: int, cols: int) -> list[tuple[slice, slice]]:
    """Row-major (slice, slice) pairs that split an image into a rows x cols grid."""
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [
        (slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1])) for r in range(rows) for c in range(cols)
    ]


def grid_cell_index(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """(height, width) int array: the row-major number of each pixel's `grid_cells` cell, so
    per-cell histograms of a whole grid come from one bincount instead of a loop over cells."""
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    row_of = np.searchsorted(ys, np.arange(height), side="right") - 1
    col_of = np.searchsorted(xs, np.arange(width), side="right") - 1
    return (row_of[:, None] * cols + col_of[None, :]).astype(np.intp)


def cell_histograms(
    bins: np.ndarray, cells: np.ndarray, n_cells: int, n_bins: int, weights=None
) -> np.ndarray:
    """(n_cells, n_bins) frequencies, each row summing to 1 (all zero for an empty cell), of
    per-pixel bin numbers `bins` grouped by per-pixel cell numbers `cells`: one bincount."""
    index = cells.ravel() * n_bins + bins.ravel()
    counts = np.bincount(index, weights=weights, minlength=n_cells * n_bins)
    return normalised_rows(counts.reshape(n_cells, n_bins))


def normalised_rows(counts: np.ndarray) -> np.ndarray:
    """`normalised_histogram` for every row of a 2-D array of counts."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return (counts / np.where(totals > 0, totals, 1.0)).astype(np.float32)
