"""Image loading and preprocessing: the only module that touches Pillow's decoders.

Every source (path, URL, bytes) becomes an RGB uint8 array with EXIF orientation applied, or a
DecodeError that says which source failed and why. Preprocessing (common frame, colour
normalisation, denoising) is a recorded, explicit configuration so that stored images and later
queries are prepared identically.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFile, ImageFilter, UnidentifiedImageError

from lookalike.errors import DecodeError

try:  # HEIC/HEIF where the codec is installed.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # pragma: no cover - depends on the optional codec
    HEIF_AVAILABLE = False

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half image

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".dib"}
    | ({".heic", ".heif", ".avif"} if HEIF_AVAILABLE else set())
)

DEFAULT_MAX_PIXELS = 100_000_000  # about 10k x 10k; larger files are treated as decompression bombs
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
URL_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Decoded:
    """A decoded image and the facts about its source that the catalog keeps."""

    rgb: np.ndarray  # uint8 (H, W, 3) (RGBA: 4), EXIF orientation applied; maybe reduced (draft)
    format: str
    size: int  # bytes of the encoded source
    sha256: str
    width: int  # of the full image, EXIF orientation applied
    height: int


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white, 16-bit scaled to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((scaled * 255 + 0.5).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, I;16 variants handled above


def _to_rgba(img: Image.Image) -> Image.Image:
    """Any mode -> RGBA, keeping transparency (images without it become opaque)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        return img.convert("RGBA")
    return _to_rgb(img).convert("RGBA")


_EXIF_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduced(img: Image.Image, draft: int | None) -> Image.Image:
    """Shrink a big decoded image by an integer box factor whose sides stay at least `draft`
    pixels (what JPEG's draft does while decoding, for every other format): everything after
    (conversion, the LANCZOS resize to the frame) then works on a small image. Keeping at
    least twice the frame is Pillow's `reducing_gap=2`: the result is indistinguishable."""
    if not draft:
        return img
    factor = min(img.size) // draft
    if factor < 2:
        return img
    try:
        reduced = img.reduce(factor)
    except ValueError:  # a mode reduce() does not support: convert first
        reduced = _to_rgb(img).reduce(factor)
    if "transparency" in img.info:
        reduced.info["transparency"] = img.info["transparency"]
    return reduced


def _decode(
    data: bytes,
    label: str,
    convert: Callable[[Image.Image], Image.Image],
    max_pixels: int,
    draft: int | None,
) -> Decoded:
    """Open, guard, decode, orient and convert; every failure becomes a DecodeError."""
    if not data:
        raise DecodeError(label, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged metadata Pillow skips: not the user's news
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if img.width * img.height > max_pixels:
                raise DecodeError(
                    label,
                    f"{img.width}x{img.height} pixels exceeds the limit of {max_pixels:,} "
                    "(possible decompression bomb)",
                )
            img.seek(0)  # GIF, APNG, multi-page TIFF: the first frame
            full_width, full_height = img.size
            if draft and fmt == "JPEG" and min(img.size) > 2 * draft:
                img.draft("RGB", (draft, draft))
            img.load()
            orientation = img.getexif().get(0x0112, 1)  # read before reducing drops the tags
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
                full_width, full_height = full_height, full_width
            img = _reduced(img, draft)
            if orientation in _EXIF_TRANSPOSE:
                img = img.transpose(_EXIF_TRANSPOSE[orientation])
            pixels = np.asarray(convert(img), dtype=np.uint8)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(label, f"too many pixels (possible decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise DecodeError(label, "not an image, or a format that cannot be read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated or damaged file ({reason})"
        raise DecodeError(label, f"corrupt image: {reason}") from None
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise DecodeError(label, "image has no pixels")
    return Decoded(
        rgb=pixels,
        format=fmt,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=full_width,
        height=full_height,
    )


def decode_bytes(
    data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None
) -> Decoded:
    """Decode encoded image bytes to RGB; `label` names the source in error messages.

    `draft` lets JPEG decode at a reduced scale (1/2, 1/4, 1/8) whose sides stay at least that
    many pixels: a 12-megapixel photo that will be described at 256 pixels decodes several
    times faster. `width` and `height` still report the full image.
    """
    return _decode(data, label, _to_rgb, max_pixels, draft)


def decode_rgba(data: bytes, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to RGBA uint8 (H, W, 4), keeping transparency: a drawn sketch needs to tell
    "not drawn" (transparent) from "drawn white", which RGB decoding composites away."""
    return _decode(data, label, _to_rgba, max_pixels, None).rgb


def probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header without decoding its pixels; None if unreadable.

    Lets a server refuse a decompression bomb by its declared size before any decoding."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError:
        return (2**31, 1)  # far past any limit: refused as too many pixels
    except Exception:
        return None


def is_url(source: str) -> bool:
    """Whether a source names an http(s) URL rather than a file."""
    return source.startswith(("http://", "https://"))


def read_source_bytes(
    source: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """Read a file path or an http(s) URL, bounded in size."""
    text = os.fspath(source)
    if is_url(text):
        return fetch_url(text, max_bytes=max_bytes)
    return read_regular_file(text, max_bytes=max_bytes)


_FILE_KINDS = (
    (stat.S_ISDIR, "is a directory, not an image file"),
    (stat.S_ISFIFO, "is a named pipe, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
)


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this st_mode is not read (None: a regular file, fine to read)."""
    if stat.S_ISREG(mode):
        return None
    return next((reason for test, reason in _FILE_KINDS if test(mode)), "is not a regular file")


def read_regular_file(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a regular file (symlinks followed), never more than `max_bytes`.

    Pipes, sockets and devices are refused before and after opening (O_NONBLOCK: a FIFO named
    x.jpg cannot block the open), and the read stops at the limit even if the file grows
    while it is read: a link to /dev/zero or a log being written cannot exhaust memory."""
    try:
        reason = not_regular_reason(os.stat(path).st_mode)
        if reason:
            raise DecodeError(path, reason)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb", buffering=0) as handle:
            info = os.fstat(handle.fileno())
            reason = not_regular_reason(info.st_mode)  # swapped between stat and open
            if reason:
                raise DecodeError(path, reason)
            if info.st_size > max_bytes:
                raise DecodeError(
                    path, f"file of {info.st_size:,} bytes exceeds the limit of {max_bytes:,}"
                )
            chunks: list[bytes] = []
            total = 0
            while total <= max_bytes:
                chunk = handle.read(min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError(path, "no such file") from None
    except IsADirectoryError:
        raise DecodeError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise DecodeError(path, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError(path, "symbolic link loop") from None
        raise DecodeError(path, f"cannot read: {exc.strerror or exc}") from None
    if total > max_bytes:
        raise DecodeError(path, f"file grew past the limit of {max_bytes:,} bytes while read")
    return b"".join(chunks)


def fetch_url(
    url: str, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = URL_TIMEOUT_S
) -> bytes:
    """Download an http(s) URL, refusing anything larger than `max_bytes`."""
    if not is_url(url):
        raise DecodeError(url, "only http and https URLs can be fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "lookalike/0.1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(url, f"cannot fetch: {getattr(exc, 'reason', exc)}") from None
    if len(data) > max_bytes:
        raise DecodeError(url, f"download exceeds the limit of {max_bytes:,} bytes")
    return data


def load_image(source: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Path or URL -> Decoded."""
    return decode_bytes(read_source_bytes(source), os.fspath(source), max_pixels=max_pixels)


@dataclass(frozen=True)
class Preprocess:
    """How images are brought to a common frame before extraction; stored with a collection.

    frame:       longest side in pixels after scaling (aspect ratio kept; small images upscaled
                 so that block statistics mean the same at every size).
    normalize:   "none" or "stretch" (per-channel 1st..99th percentile contrast stretch, which
                 cancels global brightness and contrast changes at the cost of absolute colour).
    denoise:     median filter size in pixels (0 = off; 3 removes salt-and-pepper noise).
    """

    frame: int = 256
    normalize: str = "none"
    denoise: int = 0

    def __post_init__(self) -> None:
        if not 16 <= self.frame <= 4096:
            raise ValueError("frame must be between 16 and 4096 pixels")
        if self.normalize not in ("none", "stretch"):
            raise ValueError("normalize must be 'none' or 'stretch'")
        if self.denoise < 0 or (self.denoise and self.denoise % 2 == 0):
            raise ValueError("denoise must be 0 or an odd median size such as 3 or 5")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocess:
        return cls(**{k: data[k] for k in ("frame", "normalize", "denoise") if k in data})  # type: ignore[arg-type]


def prepare(rgb: np.ndarray, config: Preprocess) -> np.ndarray:
    """RGB uint8 -> float32 [0, 1] in the common frame, following `config`."""
    img = Image.fromarray(rgb)
    if config.denoise:
        img = img.filter(ImageFilter.MedianFilter(config.denoise))
    scale = config.frame / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.float32) / 255.0
    if config.normalize == "stretch":
        lo = np.percentile(out, 1, axis=(0, 1), keepdims=True)
        hi = np.percentile(out, 99, axis=(0, 1), keepdims=True)
        out = np.clip((out - lo) / np.maximum(hi - lo, 1e-3), 0.0, 1.0)
    return out
