"""PCA-whitening learned from a collection's own deep vectors.

CNN embeddings are anisotropic: a few directions (lighting, "photo-ness", dataset bias) carry
most of the variance and make every pair of images look somewhat alike (cosine 0.2-0.5 between
unrelated photos). Subtracting the collection mean and rescaling each principal direction to
unit variance (Radenović et al., "Fine-tuning CNN image retrieval") spreads the images over
the sphere and usually improves retrieval of the same object or place by a few mAP points.

When it helps: a collection of thousands of images of one domain, with n well above the output
dimension (rule of thumb n >= 10 x dim; `fit_pca_whitening` refuses n < 2 x dim, where the
smallest directions are pure noise that whitening would blow up). With a small collection, or
one whose content changes a lot after fitting, keep the raw L2-normalised vectors. Whitened
vectors are centred, so cosine takes negative values: pair them with a lower `cos_floor` in
`DeepExtractor` (e.g. -0.2). The fitted transform is stored with the collection
(`to_bytes`/`from_bytes`) and must be refitted (and vectors recomputed) when the model changes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.features.base import (
    IndexSpace,
    cosine_distance,
    cosine_space,
    rough_cosine_distance,
)

_FORMAT = 1
MIN_SAMPLES_PER_DIM = 2
FIT_SAMPLE = 100_000  # vectors a whitening is learned from at most (evenly spaced by id)


class WhiteningError(LookalikeError):
    """Whitening cannot be fitted or loaded (too few vectors, bad shapes, unreadable bytes)."""


@dataclass(frozen=True)
class Whitening:
    """x -> normalise((x - mean) @ projection); projection is (d, k) with k <= d."""

    mean: np.ndarray  # (d,) float32
    projection: np.ndarray  # (d, k) float32
    eps: float = 0.0

    @property
    def input_dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) or (d,) -> L2-normalised whitened float32 vectors of width `dim`."""
        x = np.asarray(vectors, dtype=np.float32)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != self.input_dim:
            raise WhiteningError(
                f"whitening was fitted on {self.input_dim}-d vectors, got {x.shape[1]}-d"
            )
        y = (x - self.mean) @ self.projection
        y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y[0] if single else y

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(_FORMAT),
            mean=self.mean,
            projection=self.projection,
            eps=np.float64(self.eps),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Whitening:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                fmt = int(z["format"])
                mean = z["mean"].astype(np.float32)
                projection = z["projection"].astype(np.float32)
                eps = float(z["eps"])
        except Exception as e:
            raise WhiteningError(f"stored whitening is unreadable ({e})") from None
        if fmt != _FORMAT:
            raise WhiteningError(f"stored whitening has format {fmt}, this version reads {_FORMAT}")
        if mean.ndim != 1 or projection.ndim != 2 or projection.shape[0] != mean.shape[0]:
            raise WhiteningError(
                f"stored whitening has inconsistent shapes {mean.shape} and {projection.shape}"
            )
        return cls(mean, projection, eps)


def evenly_spaced(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], total: int, limit: int | None = None
) -> np.ndarray:
    """At most `limit` (default FIT_SAMPLE) rows of `total` streamed in chunks, every k-th
    by position: a whitening fitted on all 1M deep vectors held them as float32 and twice as
    float64 (~25 GB, more than this machine's memory); 100k rows estimate a 1,280 x 1,280
    covariance well."""
    limit = FIT_SAMPLE if limit is None else limit
    step = max(1, -(-total // max(limit, 1)))
    kept, seen = [], 0
    for _, matrix in chunks:
        first = (-seen) % step  # the chunk's first row whose overall position is a multiple
        kept.append(np.array(matrix[first::step], np.float32))
        seen += len(matrix)
    if not kept:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(kept)[:limit]


def fit_pca_whitening(vectors: np.ndarray, dim: int | None = None, eps: float = 1e-4) -> Whitening:
    """Learn mean and whitening projection from (n, d) vectors, keeping `dim` directions.

    `eps` is added to every eigenvalue relative to the largest one (eps * lambda_max): a floor
    that stops nearly empty directions from being magnified into noise.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise WhiteningError(f"expected a non-empty (n, d) array of vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise WhiteningError("vectors contain NaN or infinite values")
    n, d = x.shape
    k = d if dim is None else int(dim)
    if not 1 <= k <= d:
        raise WhiteningError(f"dim must be between 1 and {d}, got {dim}")
    if n < MIN_SAMPLES_PER_DIM * k:
        raise WhiteningError(
            f"{n} vectors are too few to whiten to {k} dimensions: need at least "
            f"{MIN_SAMPLES_PER_DIM * k} (better {10 * k}); pass dim <= {n // MIN_SAMPLES_PER_DIM} "
            "or keep the unwhitened vectors"
        )
    if eps < 0:
        raise WhiteningError(f"eps must be >= 0, got {eps}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(n - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigvals)[::-1][:k]
    eigvals = np.clip(eigvals[order], 0.0, None)
    if eigvals[0] <= 0:
        raise WhiteningError("all vectors are identical: nothing to whiten")
    projection = eigvecs[:, order] / np.sqrt(eigvals + eps * eigvals[0])
    return Whitening(mean.astype(np.float32), projection.astype(np.float32), float(eps))


WHITENED_COS_FLOOR = -0.2  # whitened vectors are centred: cosines go negative


def whitened_distance(query: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Cosine distance of whitened vectors on the 0..100 scale, floor -0.2 (see DeepExtractor)."""
    return cosine_distance(query, stored, WHITENED_COS_FLOOR)


def whitened_rough_distance(query: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray, float]:
    """`whitened_distance` in float32 with its error bound (features/base.py)."""
    return rough_cosine_distance(query, stored, WHITENED_COS_FLOOR)


def whitened_space(dim: int) -> IndexSpace:
    """The index space of `whitened_distance`: inner product of unit whitened vectors."""
    return cosine_space(dim, WHITENED_COS_FLOOR)
