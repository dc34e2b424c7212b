"""Bulk vectors: signatures computed elsewhere, validated whole before anything is stored,
read from and written to .npz or Parquet files.

A file holds one row per image: `path` (text), one float matrix (npz) or list column
(Parquet) per attribute, optionally `metadata` (one JSON object as text per image) and the
extractor versions the vectors came from (npz: a `versions` JSON text; Parquet: the schema
metadata key `lookalike.versions`), so that vectors of another extractor version are refused
instead of being compared with this collection's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.features.base import Extractor

RESERVED = ("path", "metadata", "versions")  # columns that are not attributes
VERSIONS_KEY = b"lookalike.versions"


@dataclass
class VectorRows:
    """Validated rows, ready for one transaction."""

    paths: list[str]
    signatures: dict[str, tuple[str, np.ndarray]]  # attribute -> (version, float32 n x dim)
    metadata: list[dict[str, Any]]


@dataclass
class VectorFile:
    """What an import file holds, before validation against a collection."""

    paths: list[str]
    vectors: dict[str, np.ndarray]
    metadata: list[str | None] | None
    versions: dict[str, str] | None


def validate_vectors(
    paths: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    metadata: Sequence[Mapping[str, Any] | str | None] | None,
    extractors: Mapping[str, Extractor],
) -> VectorRows:
    """Refuse, with the reason, anything that would store a signature search cannot use."""
    paths = list(paths)
    count = len(paths)
    if count == 0:
        raise LookalikeError("no images to add: the list of paths is empty")
    for i, path in enumerate(paths):
        if not isinstance(path, str) or not path.strip():
            raise LookalikeError(f"row {i}: path must be non-empty text, got {path!r}")
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise LookalikeError(f"{path} appears twice")
        seen.add(path)
    unknown = sorted(set(vectors) - set(extractors))
    if unknown:
        raise LookalikeError(
            f"unknown attribute(s) {', '.join(unknown)}: this collection has "
            f"{', '.join(extractors)}"
        )
    missing = [name for name in extractors if name not in vectors]
    if missing:
        raise LookalikeError(
            f"missing attribute(s) {', '.join(missing)}: every image needs a signature of each "
            "attribute of the collection to be searched"
        )
    signatures = {
        name: (extractor.version, _matrix(name, vectors[name], count, extractor.dim))
        for name, extractor in extractors.items()
    }
    return VectorRows(paths, signatures, _metadata(metadata, count))


def _matrix(name: str, values: Any, count: int, dim: int) -> np.ndarray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise LookalikeError(f"{name}: vectors must be numbers, got {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise LookalikeError(
            f"{name}: vectors must be {dim}-dimensional (a matrix of {count} x {dim}), "
            f"got shape {array.shape}"
        )
    if array.shape[0] != count:
        raise LookalikeError(f"{name}: {array.shape[0]} rows for {count} paths")
    with np.errstate(over="ignore"):  # an overflow becomes infinity, refused just below
        matrix = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)  # after the cast: 1e300 overflows float32
    if not finite.all():
        raise LookalikeError(
            f"{name}: row {int(np.argmin(finite))} has non-finite values (NaN or infinity)"
        )
    return matrix


def _metadata(
    metadata: Sequence[Mapping[str, Any] | str | None] | None, count: int
) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(count)]
    metadata = list(metadata)
    if len(metadata) != count:
        raise LookalikeError(f"metadata: {len(metadata)} entries for {count} paths")
    out = []
    for i, item in enumerate(metadata):
        if item is None or item == "":
            item = {}
        elif isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError as exc:
                raise LookalikeError(f"metadata of row {i} is not JSON: {exc}") from None
        if not isinstance(item, Mapping):
            raise LookalikeError(f"metadata of row {i} must be a JSON object")
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise LookalikeError(f"metadata of row {i} cannot be stored as JSON: {exc}") from None
        out.append(dict(item))
    return out


# -- files ------------------------------------------------------------------------------------


def read_vector_file(file: str | Path) -> VectorFile:
    """Read an .npz or .parquet import file (see the module doc for its columns)."""
    file = Path(file)
    if not file.is_file():
        raise LookalikeError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        return _read_npz(file)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(file)
    raise LookalikeError(f"{file}: import reads .npz or .parquet files")


def _read_npz(file: Path) -> VectorFile:
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise LookalikeError(f"{file}: not a readable .npz of plain arrays ({exc})") from None
    if "path" not in arrays or arrays["path"].dtype.kind not in "US":
        raise LookalikeError(f"{file}: needs a `path` array of text, one entry per image")
    metadata = arrays.get("metadata")
    if metadata is not None and metadata.dtype.kind not in "US":
        raise LookalikeError(f"{file}: `metadata` must be an array of JSON texts")
    versions = arrays.get("versions")
    return VectorFile(
        paths=[str(p) for p in arrays["path"].ravel()],
        vectors={k: v for k, v in arrays.items() if k not in RESERVED},
        metadata=None if metadata is None else [str(m) for m in metadata.ravel()],
        versions=None if versions is None else _versions(str(versions), file),
    )


def _read_parquet(file: Path) -> VectorFile:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise LookalikeError(f"{file}: not a readable Parquet file ({exc})") from None
    if "path" not in table.column_names or not pa.types.is_string(table.schema.field("path").type):
        raise LookalikeError(f"{file}: needs a `path` column of text, one row per image")
    vectors: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if name in RESERVED:
            continue
        column = table.column(name).combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            raise LookalikeError(f"{file}: column {name} must hold one list of floats per row")
        if column.null_count:
            raise LookalikeError(f"{file}: column {name} has empty (null) rows")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise LookalikeError(f"{file}: column {name} has rows of different lengths")
        width = int(lengths[0]) if len(lengths) else 0
        values = column.flatten().to_numpy(zero_copy_only=False)
        vectors[name] = values.reshape(len(column), width)
    metadata = None
    if "metadata" in table.column_names:
        metadata = table.column("metadata").to_pylist()
    stored = (table.schema.metadata or {}).get(VERSIONS_KEY)
    return VectorFile(
        paths=table.column("path").to_pylist(),
        vectors=vectors,
        metadata=metadata,
        versions=None if stored is None else _versions(stored.decode(), file),
    )


def _versions(text: str, file: Path) -> dict[str, str]:
    try:
        versions = json.loads(text)
    except ValueError:
        versions = None
    if not isinstance(versions, dict):
        raise LookalikeError(f"{file}: `versions` must be a JSON object attribute -> version")
    return {str(k): str(v) for k, v in versions.items()}


def check_versions(found: VectorFile, extractors: Mapping[str, Extractor]) -> None:
    """Refuse vectors made by another version of an extractor than the collection's."""
    for name, version in (found.versions or {}).items():
        if name in extractors and extractors[name].version != version:
            raise LookalikeError(
                f"{name}: the file's vectors come from version {version}, this collection "
                f"uses {extractors[name].version}; they cannot be compared"
            )


def write_vector_file(
    file: str | Path,
    paths: list[str],
    vectors: Mapping[str, np.ndarray],
    metadata: list[str],
    versions: Mapping[str, str],
) -> None:
    """Write an export as .npz or .parquet, to a temporary name renamed into place."""
    file = Path(file)
    suffix = file.suffix.lower()
    partial = file.with_name(file.name + ".partial")
    if suffix == ".npz":
        with partial.open("wb") as handle:
            np.savez(
                handle,
                path=np.array(paths, dtype=str),
                metadata=np.array(metadata, dtype=str),
                versions=np.array(json.dumps(dict(versions))),
                **{name: np.asarray(m, np.float32) for name, m in vectors.items()},
            )
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"path": pa.array(paths, pa.string())}
        for name, matrix in vectors.items():
            matrix = np.ascontiguousarray(matrix, np.float32)
            columns[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.ravel()), matrix.shape[1]
            )
        columns["metadata"] = pa.array(metadata, pa.string())
        table = pa.table(columns).replace_schema_metadata(
            {VERSIONS_KEY: json.dumps(dict(versions)).encode()}
        )
        pq.write_table(table, partial)
    else:
        raise LookalikeError(f"{file}: export writes .npz or .parquet files")
    partial.replace(file)


def export_vectors(
    catalog: Any,
    extractors: Mapping[str, Extractor],
    file: str | Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Write every image that has a current signature of each attribute; how many were.
    `progress(step, done, total)`: each attribute's signatures read, then the file written
    (at 1M images each step takes tens of seconds)."""
    steps = len(extractors) + 2

    def report(step: str, done: int) -> None:
        if progress is not None:
            progress(step, done, steps)

    matrices = {}
    for done, (name, extractor) in enumerate(extractors.items()):
        report(f"reading {name}", done)
        matrices[name] = catalog.signature_matrix(name, extractor.version, extractor.dim)
    report("reading paths and metadata", len(extractors))
    ids = None
    for attribute_ids, _ in matrices.values():
        ids = attribute_ids if ids is None else np.intersect1d(ids, attribute_ids)
    assert ids is not None
    records = catalog.get_many(int(i) for i in ids)
    ids = np.array([i for i in ids if int(i) in records], dtype=np.int64)
    report(f"writing {Path(file).name}", len(extractors) + 1)
    write_vector_file(
        file,
        [records[int(i)].path for i in ids],
        {
            name: matrix[np.searchsorted(attribute_ids, ids)]
            for name, (attribute_ids, matrix) in matrices.items()
        },
        [json.dumps(records[int(i)].metadata, ensure_ascii=False) for i in ids],
        {name: extractor.version for name, extractor in extractors.items()},
    )
    report("done", steps)
    return len(ids)
