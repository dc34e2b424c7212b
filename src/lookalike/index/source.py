"""What the indexes read from the catalog to catch up: the change log and the changed images'
vectors (a build streams every signature through `Catalog.signature_chunks`).

The catalog is the truth; these reads are all an index needs to catch up with writes made
since it was built (by this process or another).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from lookalike.store.catalog import Catalog, in_chunks


def change_mark(catalog: Catalog) -> int:
    """The newest change-log sequence number (0 for none)."""
    return int(catalog.query("SELECT coalesce(max(seq), 0) FROM index_changes")[0][0])


def changes_since(catalog: Catalog, mark: int, limit: int) -> tuple[np.ndarray, int, bool]:
    """(ids changed after `mark`, the newest mark read, whether more than `limit` changed)."""
    rows = catalog.query(
        "SELECT seq, image_id FROM index_changes WHERE seq > ? ORDER BY seq LIMIT ?",
        (mark, limit + 1),
    )
    if not rows:
        return np.zeros(0, np.int64), mark, False
    too_many = len(rows) > limit
    return np.unique([r[1] for r in rows]), int(rows[-1][0]), too_many


def current_vectors(
    catalog: Catalog, ids: Iterable[int], versions: Mapping[str, str]
) -> dict[str, dict[int, np.ndarray | None]]:
    """attribute -> id -> current vector, or None when the image or a current vector is gone."""
    ids = [int(i) for i in ids]
    out: dict[str, dict[int, np.ndarray | None]] = {name: dict.fromkeys(ids) for name in versions}
    names = list(versions)
    names_marks = ",".join("?" * len(names))
    for chunk, marks in in_chunks(ids):
        for image_id, attribute, version, blob in catalog.query(
            "SELECT image_id, attribute, version, vector FROM signatures"
            f" WHERE image_id IN ({marks}) AND attribute IN ({names_marks})",
            [*chunk, *names],
        ):
            if versions[attribute] == version:
                out[attribute][image_id] = np.frombuffer(blob, "<f4").copy()
    return out
