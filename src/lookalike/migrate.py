"""`lookalike copy SRC DST`: move a collection between a folder and a Milvus server (or between
two of either) with its signatures, facts, metadata and keywords as they are: nothing is
decoded or extracted again.

Images go in batches; an image whose path DST already holds is skipped, so a copy that was
interrupted (a server outage, Ctrl-C) is finished by running the same command again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.api import Collection
from lookalike.errors import CollectionError
from lookalike.index.source import current_vectors
from lookalike.remote import MilvusCollection
from lookalike.store.backend import is_store_uri
from lookalike.store.catalog import ImageRecord, NewImage, in_chunks

Row = tuple[ImageRecord, dict[str, np.ndarray]]  # an image and its raw signatures


@dataclass
class CopyReport:
    copied: int = 0
    skipped: int = 0  # already at the destination


def copy_collection(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every image of `source` that has a current signature of each attribute."""
    if _same_place(source, target):
        raise CollectionError("source and destination are the same collection")
    report = CopyReport()
    with Collection.open(source) as src:
        settings = {
            "attributes": src.attributes,
            "preprocess": src.preprocess,
            "default_weights": src.default_weights,
            "max_pixels": src.max_pixels,
            "tag_floor": src.tag_floor,
        }
        with Collection.open_or_create(target, **settings) as dst:
            _check_compatible(src, dst)
            for rows in _read(src, batch):
                taken = _present(dst, [record.path for record, _ in rows])
                fresh = [row for row in rows if row[0].path not in taken]
                _write(dst, fresh)
                report.copied += len(fresh)
                report.skipped += len(rows) - len(fresh)
                if progress:
                    progress(report.copied + report.skipped)
    return report


def _same_place(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    if is_store_uri(a) or is_store_uri(b):
        return os.fspath(a).lower().replace("://", ":/") == os.fspath(b).lower().replace(
            "://", ":/"
        )
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def _check_compatible(src: Any, dst: Any) -> None:
    mine = {n: e.version for n, e in src.extractors.items()}
    theirs = {n: e.version for n, e in dst.extractors.items()}
    if mine != theirs or src.attributes != dst.attributes:
        raise CollectionError(
            "the destination exists with other attributes or extractor versions "
            f"({', '.join(f'{k} v{v}' for k, v in theirs.items())}); copy into a new one"
        )


# -- reading ------------------------------------------------------------------------------------


def _read(coll: Any, batch: int) -> Iterator[list[Row]]:
    if isinstance(coll, MilvusCollection):
        yield from coll.export_rows(batch)
        return
    versions = {name: ex.version for name, ex in coll.extractors.items()}
    last = 0
    while True:
        ids = [
            r[0]
            for r in coll.catalog.query(
                "SELECT id FROM images WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            )
        ]
        if not ids:
            return
        last = ids[-1]
        records = coll.catalog.get_many(ids)
        vectors = current_vectors(coll.catalog, ids, versions)
        rows = []
        for image_id in ids:
            signature = {name: vectors[name][image_id] for name in versions}
            if image_id in records and all(v is not None for v in signature.values()):
                rows.append((records[image_id], signature))
        yield rows  # type: ignore[misc]


# -- writing ------------------------------------------------------------------------------------


def _present(coll: Any, paths: list[str]) -> set[str]:
    if isinstance(coll, MilvusCollection):
        return coll.present(paths)
    found: set[str] = set()
    for chunk, marks in in_chunks(paths):
        found.update(
            r[0]
            for r in coll.catalog.query(f"SELECT path FROM images WHERE path IN ({marks})", chunk)
        )
    return found


def _write(coll: Any, rows: list[Row]) -> None:
    if isinstance(coll, MilvusCollection):
        coll.put_rows(rows)
        return
    versions = {name: ex.version for name, ex in coll.extractors.items()}
    for record, signature in rows:
        coll.catalog.put_image(
            NewImage(
                path=record.path,
                size=record.size,
                mtime=record.mtime,
                sha256=record.sha256,
                width=record.width,
                height=record.height,
                format=record.format,
                signatures={n: (versions[n], v) for n, v in signature.items()},
                metadata=record.metadata,
                auto_keywords=[(k, s) for k, source, s in record.keywords if source != "user"],
            )
        )
