"""Synthetic collections of known structure for the index tests (vectors written in bulk)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from synthetic import bulk_insert, make_collection  # noqa: E402

__all__ = ["bulk_insert", "make_collection", "recall_at"]


def recall_at(found, truth) -> float:
    """Share of the exact top-k that a result also holds."""
    truth = [h.id for h in truth]
    return len({h.id for h in found} & set(truth)) / max(1, len(truth))
