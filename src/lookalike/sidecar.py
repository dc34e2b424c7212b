"""Metadata sidecar files: JSON or CSV keyed by image path.

JSON: {"shirts/a.jpg": {"category": "shirt", "price": 19.5}, ...} or a list of objects with a
"path" field. CSV: a header row with a "path" column; other cells become metadata, numbers as
numbers, and a "keywords" cell split on ";" or ",". Relative paths are taken relative to the
sidecar's own folder, so a catalogue travels with its images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lookalike.decode import is_url
from lookalike.errors import LookalikeError


def _number(value: str) -> Any:
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def load_sidecar(file: str | Path) -> dict[str, dict[str, Any]]:
    """path (absolute, resolved) -> metadata dict."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LookalikeError(f"{file}: cannot read metadata file ({exc.strerror or exc})") from None
    rows: list[dict[str, Any]]
    if file.suffix.lower() == ".csv":
        rows = []
        for row in csv.DictReader(text.splitlines()):
            record: dict[str, Any] = {}
            for key, value in row.items():
                if key is None or value is None or value == "":
                    continue
                if key == "keywords":
                    record[key] = [
                        k.strip() for k in value.replace(";", ",").split(",") if k.strip()
                    ]
                else:
                    record[key] = value if key == "path" else _number(value)
            rows.append(record)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LookalikeError(f"{file}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            rows = [{"path": path, **meta} for path, meta in data.items() if isinstance(meta, dict)]
        elif isinstance(data, list):
            rows = [r for r in data if isinstance(r, dict)]
        else:
            raise LookalikeError(f"{file}: expected an object keyed by path or a list of objects")
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = row.pop("path", None)
        if not path:
            raise LookalikeError(f"{file}: a metadata entry has no 'path'")
        text_path = str(path)
        if not is_url(text_path):
            text_path = str((file.parent / text_path).resolve())
        out[text_path] = row
    return out
