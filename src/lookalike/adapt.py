"""Learning from a user's labels: a projection of the deep vectors and attribute weights.

A pretrained CNN separates ImageNet's classes, not the user's ("shirt" against "T-shirt",
"sandal" against "sneaker"). Given labelled examples, `fit_adaptation` learns

* a linear projection of the deep vectors: regularised LDA (between-class over within-class
  scatter, shrunk towards a multiple of the identity so a few hundred examples of 1280-d vectors
  are enough), keeping the directions that separate the classes plus, with a smaller weight,
  the leading PCA-whitened directions, so that what the labels do not speak about (copies, other
  kinds of pictures) is damped, not lost;
* the attribute weights that rank same-class images first (`evaluate.best_weights`);
* the classes' centroids in the projected space, so that text naming a label ("sandal") finds
  that class's images (ConSE over the user's classes, `query.zeroshot.labelled_zero_shot`).

Both are judged on a held-out split of the labelled examples before anything is stored. The
projection is a `Whitening` (mean + matrix), stored in the catalog's meta table beside, not
instead of, a PCA-whitening (`Collection.adapt` / `reset_adaptation`); stored signatures are
never touched, so resetting restores the previous ranking exactly.
"""

from __future__ import annotations

import base64
import csv
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.evaluate import best_weights, fuse_matrices, quality_from_distances
from lookalike.features.whitening import Whitening, whitened_distance

SHRINKAGE = 0.5  # share of the mean eigenvalue added to the within-class scatter
RESIDUAL_WEIGHT = 0.35  # weight of the unsupervised (PCA-whitened) directions beside LDA
RESIDUAL_DIM = 64
HELD_OUT = 0.3
MIN_PER_CLASS = 2
ADAPTATION_KEY = "adaptation:{}"  # catalog meta key; read before "whitening:{}" by searches


class AdaptationError(LookalikeError):
    """Labels that cannot teach anything (one class, too few examples, unknown images)."""


@dataclass
class Adaptation:
    """What `fit_adaptation` learned and how it did on the held-out examples."""

    projection: Whitening
    weights: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    centroids: np.ndarray | None = None  # (classes, dim) in the projected space, for text


def read_labels(source: str | Path) -> dict[str, str]:
    """Image -> label from a folder (one sub-folder per class) or a CSV with a `label` column
    and a `path` or `id` column (an id is written "id:42", as on the command line)."""
    path = Path(source).expanduser()
    if path.is_dir():
        from lookalike.ingest import scan

        files = scan([path]).sources
        labels = {f: Path(f).parent.name for f in files if Path(f).parent != path.resolve()}
        if not labels:
            raise AdaptationError(f"{path} has no images in class sub-folders")
        return labels
    if not path.is_file():
        raise AdaptationError(f"labels not found: {path} (a folder of class folders or a CSV)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AdaptationError(f"cannot read labels from {path}: {exc}") from None
    out: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip()
        key = (row.get("path") or "").strip()
        image_id = (row.get("id") or "").strip()
        if not label or not (key or image_id):
            raise AdaptationError(
                f"{path} line {number}: need a 'label' and a 'path' or 'id' column value"
            )
        if key and not Path(key).is_absolute():
            key = str((path.parent / key).resolve())
        out[key or f"id:{image_id.removeprefix('id:')}"] = label
    if not out:
        raise AdaptationError(f"{path} has no labelled rows")
    return out


def split_held_out(
    labels: Sequence[str], fraction: float = HELD_OUT, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) positions: each class gives `fraction` of its examples,
    at least one, while keeping at least MIN_PER_CLASS for training."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train, held = [], []
    for label in dict.fromkeys(labels):
        members = rng.permutation(np.flatnonzero(labels_arr == label))
        n_held = min(max(1, round(fraction * len(members))), len(members) - MIN_PER_CLASS)
        held += list(members[: max(n_held, 0)])
        train += list(members[max(n_held, 0) :])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def fit_projection(vectors: np.ndarray, labels: Sequence[str]) -> Whitening:
    """Regularised LDA on (n, d) L2-normalised vectors, plus damped PCA-whitened directions.

    Both are computed in the span of the centred examples (at most n - 1 directions, found by
    one SVD), so a few hundred examples of 1280-d vectors cost milliseconds, not a d x d
    eigenproblem; directions outside that span carry no information from the labels anyway."""
    x = np.asarray(vectors, dtype=np.float64)
    labels_arr = np.asarray(labels)
    classes = list(dict.fromkeys(labels_arr.tolist()))
    if len(classes) < 2:
        raise AdaptationError("labels name one class only: nothing to separate")
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, basis_t = np.linalg.svd(centred, full_matrices=False)
    keep = singular > singular[0] * 1e-6
    basis = basis_t[keep].T  # (d, r): the examples' span
    variances = singular[keep] ** 2 / len(x)
    z = centred @ basis  # (n, r) coordinates, uncorrelated, variance `variances`
    within = np.zeros((z.shape[1], z.shape[1]))
    between = np.zeros_like(within)
    for label in classes:
        members = z[labels_arr == label]
        class_mean = members.mean(axis=0)
        spread = members - class_mean
        within += spread.T @ spread
        between += len(members) * np.outer(class_mean, class_mean)
    within /= len(x)
    between /= len(x)
    within += SHRINKAGE * np.trace(within) / len(within) * np.eye(len(within))
    from scipy import linalg

    eigvals, eigvecs = linalg.eigh(between, within)
    order = np.argsort(eigvals)[::-1][: len(classes) - 1]
    # eigh(b, w) gives w-orthonormal vectors: projected classes have unit within-class spread;
    # scale each direction by its separation so strong directions count more.
    lda = eigvecs[:, order] * np.sqrt(np.clip(eigvals[order], 0, None) / eigvals[order[0]])
    top = min(RESIDUAL_DIM, len(variances))
    residual = np.eye(len(variances))[:, :top] / np.sqrt(variances[:top] + 1e-4 * variances[0])
    # Bring both halves to comparable size on the training vectors, then weigh.
    lda /= np.sqrt(np.mean(np.sum((z @ lda) ** 2, axis=1))) + 1e-12
    residual /= np.sqrt(np.mean(np.sum((z @ residual) ** 2, axis=1))) + 1e-12
    projection = basis @ np.hstack([lda, RESIDUAL_WEIGHT * residual])
    return Whitening(mean.astype(np.float32), projection.astype(np.float32))


def _distance_matrix(vectors: np.ndarray, projection: Whitening | None, extractor: Any):
    if projection is None:
        return np.stack([extractor.distance(v, vectors) for v in vectors])
    projected = projection.apply(vectors)
    return np.stack([whitened_distance(v, projected) for v in projected])


def fit_adaptation(
    signatures: Mapping[str, np.ndarray],
    labels: Sequence[str],
    extractors: Mapping[str, Any],
    *,
    attribute: str = "deep",
    held_out: float = HELD_OUT,
    k: int = 10,
    seed: int = 0,
) -> Adaptation:
    """Learn the projection of `attribute` and the attribute weights from labelled signatures
    ({attribute: (n, dim)}), reporting P@k and mAP on the held-out examples before and after."""
    labels = [str(label) for label in labels]
    counts = {label: labels.count(label) for label in dict.fromkeys(labels)}
    if len(counts) < 2:
        raise AdaptationError("labels name one class only: nothing to separate")
    thin = [label for label, n in counts.items() if n < MIN_PER_CLASS + 1]
    if thin:
        raise AdaptationError(
            f"every class needs at least {MIN_PER_CLASS + 1} examples; too few: "
            + ", ".join(sorted(thin)[:5])
        )
    train, held = split_held_out(labels, held_out, seed)
    held_labels = [labels[i] for i in held]
    train_labels = [labels[i] for i in train]
    projection = fit_projection(signatures[attribute][train], train_labels)

    def matrices(rows: np.ndarray, adapted: bool) -> dict[str, np.ndarray]:
        return {
            name: _distance_matrix(
                matrix[rows],
                projection if adapted and name == attribute else None,
                extractors[name],
            )
            for name, matrix in signatures.items()
        }

    tuned = best_weights(matrices(train, True), train_labels, k, list(range(len(train))))
    before = matrices(held, False)
    after = matrices(held, True)
    report = {
        "examples": len(labels),
        "classes": len(counts),
        "trained_on": len(train),
        "held_out": len(held),
        "before": {
            attribute: quality_from_distances(before[attribute], held_labels, k).to_dict(),
        },
        "after": {
            attribute: quality_from_distances(after[attribute], held_labels, k).to_dict(),
            "fused": quality_from_distances(fuse_matrices(after, tuned), held_labels, k).to_dict(),
        },
        "weights": tuned,
    }
    projected = projection.apply(signatures[attribute])
    names = list(counts)
    labels_arr = np.asarray(labels)
    centroids = np.stack([projected[labels_arr == name].mean(axis=0) for name in names])
    return Adaptation(projection, tuned, report, names, centroids.astype(np.float32))


def stored_classes(meta: Mapping[str, Any] | None) -> tuple[list[str], np.ndarray] | None:
    """(label names, centroids) kept by `adaptation_meta`, for zero-shot text; None if none."""
    if not meta or "centroids" not in meta:
        return None
    data = np.frombuffer(base64.b64decode(meta["centroids"]), dtype="<f4")
    names = list(meta["classes"])
    return names, data.reshape(len(names), -1)


def labelled_signatures(
    collection: Any, labels: str | Path | Mapping[str, str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """({attribute: (n, dim)}, labels) for labelled images: stored signatures for images in
    the collection (by path or "id:N"), freshly extracted ones for other files."""
    if "deep" not in collection.attributes:
        raise AdaptationError("adapt learns a projection of the 'deep' attribute, which this "
                              "collection does not extract")  # fmt: skip
    mapping = labels if isinstance(labels, Mapping) else read_labels(labels)
    names = list(collection.extractors)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    out_labels: list[str] = []
    for key, label in mapping.items():
        image_id = _stored_id(collection, key)
        signature = collection.describe(image_id if image_id is not None else key)
        for name in names:
            rows[name].append(np.asarray(signature[name], dtype=np.float32))
        out_labels.append(str(label))
    return {name: np.stack(vectors) for name, vectors in rows.items()}, out_labels


def _stored_id(collection: Any, key: str) -> int | None:
    if key.startswith("id:"):
        try:
            return int(key.removeprefix("id:"))
        except ValueError:
            raise AdaptationError(f"not an image id: {key!r}") from None
    rows = collection.catalog.query(
        "SELECT id FROM images WHERE path = ?", (str(Path(key).expanduser().resolve()),)
    )
    return int(rows[0][0]) if rows else None


def adaptation_meta(
    adaptation: Adaptation, current_weights: Mapping[str, float], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Catalog meta entries that store `adaptation`; the weights in use before the first
    adaptation are kept so that a reset restores them, however often adapt ran."""
    before = previous["previous_weights"] if previous else dict(current_weights)
    return {
        "default_weights": adaptation.weights,
        ADAPTATION_KEY.format("deep"): {
            "fitted_at": time.time(),
            "dim": adaptation.projection.dim,
            "input_dim": adaptation.projection.input_dim,
            "report": adaptation.report,
            "previous_weights": before,
            "data": base64.b64encode(adaptation.projection.to_bytes()).decode("ascii"),
            "classes": adaptation.class_names,
            "centroids": base64.b64encode(np.asarray(adaptation.centroids, "<f4").tobytes()).decode(
                "ascii"
            ),
        },
    }
