"""A generated corpus of hostile files and of good photos, for the ingest tests.

`write_hostile(folder)` writes one file (or link, pipe, socket, folder) per kind and returns
what each must become: "bad" (skipped with a reason), "good" (added) or "either" (a damaged
file that Pillow may still read whole: it must be added or skipped with a reason, nothing
else). Good photos are scikit-image's, plus scaled-up copies so large decodes are exercised.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path

from PIL import Image

from lookalike.samples import PHOTO_NAMES, sample_photo

FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "tif": "TIFF", "bmp": "BMP"}
TRUNCATIONS = (4, 16, 0.3, 0.6, 0.9, -2)  # bytes kept (fractions of the length; -2: all but 2)
GOOD_BIG = {"chelsea_big.png": 4, "astronaut_big.jpg": 3, "coffee_big.webp": 2}  # scale factor


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def small_photo() -> Image.Image:
    return sample_photo("chelsea").resize((120, 90))


def write_good(folder: Path) -> list[Path]:
    """20 real photos plus 3 scaled-up ones (up to 2048 px): 23 files that must all be added."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTO_NAMES:
        path = folder / f"{name}.png"
        sample_photo(name).save(path)
        paths.append(path)
    for name, factor in GOOD_BIG.items():
        stem, suffix = name.split("_big.")
        photo = sample_photo(stem)
        photo = photo.resize((photo.width * factor, photo.height * factor))
        path = folder / name
        photo.save(path, **({} if suffix == "png" else {"quality": 90}))
        paths.append(path)
    return paths


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A valid-looking PNG that declares width x height pixels in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def huge_gif(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = data.index(b"\x2c")  # image descriptor
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def huge_bmp(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def huge_jpeg(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    at = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), color) for color in ((200, 0, 0), (0, 200, 0), (0, 0, 9))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def broken_exif_jpeg() -> bytes:
    data = encode(small_photo(), "JPEG")
    garbage = b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\x01\x12\x00\x03" * 50
    segment = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    return data[:2] + segment + data[2:]


def write_hostile(folder: Path) -> dict[str, str]:
    """Write every hostile kind into `folder`; name -> "good" | "bad" | "either"."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expect[name] = outcome

    photo = small_photo()
    for suffix, fmt in FORMATS.items():
        valid = encode(photo, fmt)
        put(f"zero.{suffix}", b"", "bad")
        for keep in TRUNCATIONS:
            size = int(len(valid) * keep) if isinstance(keep, float) else keep % len(valid)
            outcome = "bad" if keep in (4, 16, 0.3, 0.6) else "either"
            put(f"trunc-{keep}.{suffix}", valid[:size], outcome)
    put("text.jpg", b"just some text, not an image\n" * 10, "bad")
    put("page.jpg", b"<!doctype html><html><body>404 not found</body></html>", "bad")
    put("data.png", b'{"not": "an image"}', "bad")
    put("doc.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "bad")
    put("archive.png", b"PK\x03\x04" + bytes(100), "bad")
    put("movie.jpg", b"\0\0\0\x18ftypmp42" + bytes(100), "bad")
    put("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "bad")
    put("random.jpg", bytes(range(256)) * 8, "bad")
    put("soi-eoi.jpg", b"\xff\xd8\xff\xd9", "bad")
    put("header-only.gif", b"GIF89a\x08\x00\x08\x00\x00\x00\x00", "bad")
    put("bomb-png.png", huge_png(60_000, 60_000), "bad")
    put("bomb-wide.png", huge_png(2_000_000, 100), "bad")
    put("bomb-gif.gif", huge_gif(65_535, 65_535), "bad")
    put("bomb-bmp.bmp", huge_bmp(200_000, 200_000), "bad")
    put("bomb-jpg.jpg", huge_jpeg(65_000, 65_000), "bad")
    big = Image.new("L", (9000, 9000))  # 81 megapixels in ~80 KB: under the limit, decoded reduced
    put("large-under-limit.png", encode(big, "PNG"), "good")
    put("animated.gif", animated("GIF"), "good")
    put("animated.png", animated("PNG"), "good")  # APNG
    put("pages.tif", animated("TIFF"), "good")
    put("sixteen.png", encode(photo.convert("L").convert("I;16"), "PNG"), "good")
    put("cmyk.jpg", encode(photo.convert("CMYK"), "JPEG"), "good")
    put("exif-broken.jpg", broken_exif_jpeg(), "either")
    exif = Image.Exif()
    exif[0x0112] = 6
    put("rotated.jpg", encode(photo, "JPEG", exif=exif), "good")
    put("one-pixel.png", encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), "good")
    put("sliver.png", encode(Image.new("RGB", (3000, 1), (200, 50, 50)), "PNG"), "good")
    put("palette-alpha.png", encode(photo.convert("P").convert("RGBA"), "PNG"), "good")
    put("png-inside.jpeg", encode(photo, "PNG"), "good")  # the content decides, not the name
    put("UPPER.JPG", encode(photo, "JPEG"), "good")
    crc = bytearray(encode(photo, "PNG"))
    crc[-20] ^= 0xFF  # damage inside the last chunks
    put("bad-crc.png", bytes(crc), "either")
    # the worker test hooks (see LOOKALIKE_TEST_WORKER_FAULTS): a valid image that crashes or
    # hangs its worker, as a codec bug could
    put("crash.jpg", encode(photo, "JPEG"), "bad")
    put("hang.png", encode(photo, "PNG"), "bad")
    put("raise.png", encode(photo, "PNG"), "bad")
    # what is not a regular file
    os.mkfifo(folder / "pipe.jpg")
    expect["pipe.jpg"] = "bad"
    os.symlink(folder / "loop-b.jpg", folder / "loop-a.jpg")
    os.symlink(folder / "loop-a.jpg", folder / "loop-b.jpg")
    expect["loop-a.jpg"] = expect["loop-b.jpg"] = "bad"
    os.symlink("/dev/zero", folder / "endless.jpg")
    expect["endless.jpg"] = "bad"
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    expect["dangling.png"] = "bad"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.png"))
    server.close()
    expect["sock.png"] = "bad"
    (folder / "folder.jpg").mkdir()  # a folder named like an image is a folder: descended
    photo.save(folder / "folder.jpg" / "inside.png")
    expect["inside.png"] = "good"
    secret = folder / "secret.png"
    secret.write_bytes(encode(photo, "PNG"))
    secret.chmod(0)
    expect["secret.png"] = "good" if os.geteuid() == 0 else "bad"  # root reads anything
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not a UTF-8 name
    (folder / name).write_bytes(encode(photo, "JPEG"))
    expect[name] = "bad"
    return expect


FAULTS = "crash=crash.jpg;hang=hang.png;raise=raise.png"
