"""Thumbnails and originals of stored images, for the web page and API clients.

The only files ever read are those the catalog records for an image id: a client names an id,
never a path, so no client string reaches the file system. Thumbnails are made once and kept in
a bounded in-memory LRU cache keyed by (id, content hash, size), so a replaced image never shows
its old thumbnail.
"""

from __future__ import annotations

import io
import mimetypes
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lookalike.decode import decode_bytes, is_url, read_source_bytes
from lookalike.errors import DecodeError
from lookalike.store.catalog import ImageRecord

THUMBNAIL_SIZES = (64, 128, 160, 256, 320, 512)


def pick_size(requested: int) -> int:
    """The smallest offered size at least `requested` (so the cache holds few variants)."""
    for size in THUMBNAIL_SIZES:
        if size >= requested:
            return size
    return THUMBNAIL_SIZES[-1]


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str
    etag: str


class ThumbnailCache:
    """Thread-safe LRU of encoded thumbnails, bounded in total bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, *, max_pixels: int = 100_000_000):
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._items: OrderedDict[tuple[int, str, int], Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, record: ImageRecord, size: int, fetch_url=None) -> Thumbnail:
        """The JPEG thumbnail of `record` at most `size` pixels on its longest side.

        `fetch_url(url) -> bytes` reads images indexed from URLs (the server passes its safe
        fetcher); raises DecodeError when the original cannot be read."""
        size = pick_size(size)
        key = (record.id, record.sha256, size)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        thumb = self._make(record, size, fetch_url)  # outside the lock: others keep being served
        with self._lock:
            if key not in self._items and len(thumb.data) <= self.max_bytes:
                self._items[key] = thumb
                self._bytes += len(thumb.data)
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old.data)
        return thumb

    def forget(self, image_id: int) -> None:
        """Drop every cached size of an image (after it is removed or replaced)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == image_id]:
                self._bytes -= len(self._items.pop(key).data)

    def _make(self, record: ImageRecord, size: int, fetch_url) -> Thumbnail:
        data = read_original(record, fetch_url)
        decoded = decode_bytes(
            data, f"image {record.id}", max_pixels=self.max_pixels, draft=2 * size
        )
        image = Image.fromarray(decoded.rgb)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85, optimize=True)
        return Thumbnail(buffer.getvalue(), "image/jpeg", f'"{record.sha256[:24]}-{size}"')


def read_original(record: ImageRecord, fetch_url=None) -> bytes:
    """The encoded bytes of the image the catalog records (a file, or a URL via `fetch_url`)."""
    if is_url(record.path):
        if fetch_url is None:
            raise DecodeError(record.path, "original is at a URL and fetching is disabled")
        return fetch_url(record.path)
    return read_source_bytes(record.path)


def original_file(record: ImageRecord) -> tuple[Path, str]:
    """(file, media type) of a record's original on disk; DecodeError when it is gone."""
    path = Path(record.path)
    if is_url(record.path) or not path.is_file():
        raise DecodeError(f"image {record.id}", "its original file is no longer there")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path, media_type
