"""Approximate nearest-neighbour structures over one attribute's index space (faiss).

Every structure stores rows by *position* (0, 1, 2, ... in the order added); the attribute
index maps positions to image ids and keeps tombstones. A structure only has to find good
candidates quickly: exact 0..100 scores are computed afterwards from the exact vectors.

Why faiss for every kind: its HNSW and flat indexes search the L1 metric that the classic
histogram attributes need (hnswlib knows L2, inner product and cosine only, so L1 attributes
would lose exactness), filtered search takes an ID selector (a bitmap) inside the graph or the
inverted lists instead of a Python callback, and the wheel needs no compiler.

- `hnsw`: IndexHNSWFlat in the attribute's own metric (L1 or inner product): at high effort it
  returns the exact neighbours. Full vectors in RAM: for up to a few hundred thousand images.
- `ivfpq`: PCA (optional) + IVF + product quantisation, a few dozen bytes per image: for
  millions. PQ knows L2 and inner product only, so an L1 space is searched through the
  square-root (Hellinger) embedding, whose L2 follows L1 closely on non-negative histograms;
  candidates are rescored exactly anyway.
"""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

# One OpenMP thread unless told otherwise: searches run one per request, and on a shared
# 2-core machine faiss's spinning threads made training 10x slower (5.7 s against 0.5 s).
THREADS = int(os.environ.get("LOOKALIKE_FAISS_THREADS", "1"))
faiss.omp_set_num_threads(THREADS)

ANN_KINDS = ("hnsw", "ivfpq")
DEFAULT_EFFORT = {"hnsw": 64, "ivfpq": 16}
EFFORT_LEVELS = {"hnsw": [16, 32, 64, 128, 256, 512], "ivfpq": [2, 4, 8, 16, 32, 64, 128, 256]}


class AnnIndex(Protocol):
    """Positions in, candidate positions out."""

    kind: str

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (index-space vectors); they get the next positions."""

    def search(
        self, queries: np.ndarray, k: int, effort: int, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        """(nq, k) positions of the nearest rows, -1 where fewer; `allowed`: bool per position."""

    def write(self, path: Path) -> None: ...


def _selector(allowed: np.ndarray | None) -> tuple[faiss.IDSelector | None, np.ndarray | None]:
    """A faiss bitmap selector over positions (keep the bits alive while searching)."""
    if allowed is None:
        return None, None
    bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)), bits


class _KeptSelector:
    """The selector of the last mask object searched with, while that object comes back: the
    attribute index keeps its live-row mask until the next change, and packing it (one bit
    per row) on every search was O(collection), ~1 ms per attribute at 1M."""

    def __init__(self) -> None:
        self._kept: tuple[np.ndarray, faiss.IDSelector | None, np.ndarray | None] | None = None

    def __call__(
        self, allowed: np.ndarray | None
    ) -> tuple[faiss.IDSelector | None, tuple[object, ...] | None]:
        """(selector, what must stay alive while it is searched with: hold it)."""
        if allowed is None:
            return None, None
        kept = self._kept  # one read: another thread may replace it meanwhile
        if kept is None or kept[0] is not allowed:
            kept = (allowed, *_selector(allowed))
            self._kept = kept
        return kept[1], kept


def write_faiss(index: faiss.Index, path: Path) -> None:
    """Write to a temporary name and rename: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    faiss.write_index(index, str(partial))
    os.replace(partial, path)


class HnswIndex:
    kind = "hnsw"

    def __init__(self, index: faiss.Index):
        self.index = index
        self._selector = _KeptSelector()

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str, m: int = 32) -> HnswIndex:
        faiss_metric = faiss.METRIC_L1 if metric == "l1" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss_metric)
        index.hnsw.efConstruction = 80
        out = cls(index)
        out.add(vectors)
        return out

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(
        self, queries: np.ndarray, k: int, effort: int, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        selector, _alive = self._selector(allowed)  # _alive: the bits under the selector
        params = faiss.SearchParametersHNSW(efSearch=max(int(effort), k), sel=selector)
        _, positions = self.index.search(
            np.ascontiguousarray(queries, np.float32), k, params=params
        )
        return positions

    def write(self, path: Path) -> None:
        write_faiss(self.index, path)


PCA_SAMPLE = 10_000  # rows to learn the projection from: 128 directions are settled by then


def pca_matrix(sample: np.ndarray, reduced: int, seed: int) -> faiss.PCAMatrix:
    """A trained faiss PCAMatrix onto the top `reduced` directions of `sample`.

    faiss trains one by a full eigendecomposition of the covariance in double precision, on
    one thread: 4 s for 1,280 dims and 18 s for 2,827 (the perceptual attribute) at 2,000
    rows, most of an IVF-PQ build. Only the top few dozen directions are kept, so a block
    power (subspace) iteration on the covariance finds them in a few matrix products; the
    matrix, bias and file format are faiss's own, so a written index reads as before.
    """
    with blas_threads(THREADS):
        return _pca_matrix(sample, reduced, seed)


def blas_threads(count: int) -> AbstractContextManager:
    """numpy's BLAS held to `count` threads (faiss's budget here, one per worker thread in a
    duplicate self-join): its spinning threads otherwise cost the same 10x."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: BLAS keeps its own default
        return nullcontext()
    return threadpool_limits(limits=count, user_api="blas")


def _pca_matrix(sample: np.ndarray, reduced: int, seed: int) -> faiss.PCAMatrix:
    dim = sample.shape[1]
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = (sample - mean).astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64)  # unscaled, as faiss keeps its eigenvalues
    width = min(dim, reduced + 16)  # a few spare directions make the top ones converge faster
    basis = np.random.default_rng(seed).standard_normal((dim, width))
    for _ in range(6):
        basis, _ = np.linalg.qr(cov @ basis)
    values, vectors = np.linalg.eigh(basis.T @ cov @ basis)
    order = np.argsort(values)[::-1][:reduced]
    directions = (basis @ vectors[:, order]).T  # (reduced, dim), strongest first
    pca = faiss.PCAMatrix(dim, reduced)
    faiss.copy_array_to_vector(mean.astype(np.float32), pca.mean)
    faiss.copy_array_to_vector(values[order].astype(np.float32), pca.eigenvalues)
    faiss.copy_array_to_vector(np.ascontiguousarray(directions, np.float32).ravel(), pca.PCAMat)
    pca.prepare_Ab()
    pca.is_trained = True
    return pca


class IvfPqIndex:
    kind = "ivfpq"

    def __init__(self, index: faiss.Index, metric: str):
        self.index = index
        self.metric = metric
        self._unfiltered: dict[int, faiss.SearchParameters] = {}  # effort -> parameters
        self._selector = _KeptSelector()

    @staticmethod
    def surrogate(vectors: np.ndarray, metric: str) -> np.ndarray:
        """L1 space -> its Hellinger embedding (L2); inner product of unit rows -> L2 as is."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return np.sqrt(np.maximum(vectors, 0.0)) if metric == "l1" else vectors

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metric: str,
        *,
        pca: int | None = None,
        nlist: int | None = None,
        code_bytes: int | None = None,
        train_size: int = 40_000,
        seed: int = 1234,
    ) -> IvfPqIndex:
        n, dim = vectors.shape
        reduced = min(pca or dim, dim)
        nlist = nlist or int(min(4096, max(16, 2 * math.sqrt(n))))
        m = code_bytes or max(4, reduced // 4)
        while reduced % m:  # PQ needs sub-vectors of equal width
            m -= 1
        quantiser = faiss.IndexFlatL2(reduced)
        ivf = faiss.IndexIVFPQ(quantiser, reduced, nlist, m, 8 if n >= 10_000 else 4)
        ivf.cp.niter = 12
        ivf.cp.max_points_per_centroid = 64
        index: faiss.Index = ivf
        rng = np.random.default_rng(seed)
        sample = cls.surrogate(
            vectors if n <= train_size else vectors[np.sort(rng.choice(n, train_size, False))],
            metric,
        )
        if reduced < dim:
            # every k-th row of the (id-ordered) sample: its first rows would be the oldest
            # images only, and a collection added folder by folder drifts
            spread = sample[:: max(1, -(-len(sample) // PCA_SAMPLE))]
            index = faiss.IndexPreTransform(pca_matrix(spread, reduced, seed), ivf)
        index.train(sample)
        out = cls(index, metric)
        out.add(vectors)
        return out

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        for start in range(0, len(vectors), 50_000):
            self.index.add(self.surrogate(vectors[start : start + 50_000], self.metric))

    def search(
        self, queries: np.ndarray, k: int, effort: int, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        selector, _alive = self._selector(allowed)  # _alive: the bits under the selector
        params = self._unfiltered.get(int(effort)) if selector is None else None
        if params is None:
            params = faiss.SearchParametersIVF(nprobe=int(effort), sel=selector)
            if isinstance(self.index, faiss.IndexPreTransform):
                params = faiss.SearchParametersPreTransform(index_params=params)
            if selector is None:  # kept: ~30 µs each time, against ~0.5 ms of search
                self._unfiltered[int(effort)] = params
        _, positions = self.index.search(self.surrogate(queries, self.metric), k, params=params)
        return positions

    def write(self, path: Path) -> None:
        write_faiss(self.index, path)


def build_ann(kind: str, vectors: np.ndarray, metric: str, options: dict) -> AnnIndex:
    if kind == "hnsw":
        return HnswIndex.build(vectors, metric, m=int(options.get("m", 32)))
    if kind == "ivfpq":
        return IvfPqIndex.build(
            vectors,
            metric,
            pca=options.get("pca"),
            nlist=options.get("nlist"),
            code_bytes=options.get("code_bytes"),
        )
    raise ValueError(f"unknown index kind {kind!r}; known: flat, {', '.join(ANN_KINDS)}")


def read_ann(kind: str, path: Path, metric: str) -> AnnIndex:
    """Load a written structure (IVF-PQ: tens of bytes per image; HNSW: its full vectors)."""
    if kind == "ivfpq":
        return IvfPqIndex(faiss.read_index(str(path)), metric)
    if kind == "hnsw":
        return HnswIndex(faiss.read_index(str(path)))
    raise ValueError(f"unknown index kind {kind!r}")
