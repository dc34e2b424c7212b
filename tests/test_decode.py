"""Decoding: every common format and mode becomes RGB; every bad file gets a clear reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lookalike.decode import Preprocess, decode_bytes, load_image, prepare
from lookalike.errors import DecodeError


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_common_formats_decode_to_rgb(fmt):
    data = encode(Image.new("RGB", (40, 30), (200, 30, 30)), fmt)
    decoded = decode_bytes(data, f"x.{fmt}")
    assert decoded.rgb.shape == (30, 40, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.format == fmt
    assert abs(int(decoded.rgb[15, 20, 0]) - 200) < 12 and decoded.rgb[15, 20, 1] < 50


@pytest.mark.parametrize(
    "mode,value",
    [("L", 128), ("1", 1), ("P", 3), ("LA", (90, 255)), ("RGBA", (0, 0, 255, 255)),
     ("CMYK", (0, 255, 255, 0)), ("I;16", 65535), ("I", 30000), ("F", 0.5)],
)  # fmt: skip
def test_every_colour_mode_becomes_rgb(mode, value):
    image = Image.new(mode, (8, 8), value)
    fmt = "TIFF" if mode in ("I;16", "I", "F", "CMYK") else "PNG"
    decoded = decode_bytes(encode(image, fmt), f"mode-{mode}")
    assert decoded.rgb.shape == (8, 8, 3)


def test_cmyk_red_stays_red():
    decoded = decode_bytes(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), "c.jpg")
    r, g, b = decoded.rgb[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    decoded = decode_bytes(encode(image, "PNG"), "t.png")
    assert decoded.rgb[0, 0].tolist() == [255, 255, 255]


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_bytes(buffer.getvalue(), "anim.gif")
    assert decoded.rgb[5, 5, 0] > 200 and decoded.rgb[5, 5, 2] < 50


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white strip at the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_bytes(encode(image, "JPEG", exif=exif, quality=95), "rot.jpg")
    assert decoded.rgb.shape[:2] == (60, 20)  # portrait after transposition
    assert decoded.rgb[:10].mean() > 200  # the strip is now at the top


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"this is plain text, not a picture", "not an image"),
        (encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")[:60], "corrupt"),
        (encode(Image.new("RGB", (256, 256), (1, 2, 3)), "JPEG")[:300], "corrupt"),
    ],
)
def test_bad_bytes_give_a_clear_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        decode_bytes(data, "/photos/bad.jpg")
    assert info.value.path == "/photos/bad.jpg"
    assert reason in info.value.reason


def test_decompression_bomb_is_refused():
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(data, "bomb.png", max_pixels=1_000_000)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DecodeError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(DecodeError, match="directory"):
        load_image(tmp_path)


def test_prepare_scales_to_frame_and_denoises():
    rgb = np.full((100, 400, 3), 128, np.uint8)
    rgb[50, 200] = 255  # a salt pixel
    plain = prepare(rgb, Preprocess(frame=200))
    assert plain.shape == (50, 200, 3) and plain.dtype == np.float32
    cleaned = prepare(rgb, Preprocess(frame=400, denoise=3))
    assert cleaned.max() == pytest.approx(128 / 255, abs=1e-3)


def test_stretch_normalisation_cancels_brightness():
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 160, (64, 64, 3)).astype(np.uint8)
    brighter = np.clip(rgb.astype(int) * 1.3, 0, 255).astype(np.uint8)
    cfg = Preprocess(normalize="stretch")
    assert np.abs(prepare(rgb, cfg) - prepare(brighter, cfg)).mean() < 0.02


@pytest.mark.parametrize("kwargs", [{"frame": 4}, {"normalize": "magic"}, {"denoise": 2}])
def test_invalid_preprocess_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Preprocess(**kwargs)


def test_large_jpeg_decodes_in_draft_but_reports_its_full_size():
    rng = np.random.default_rng(4)
    base = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(base).resize((4000, 3000), Image.Resampling.BILINEAR)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(big, "JPEG", quality=90, exif=exif)
    drafted = decode_bytes(data, "big.jpg", draft=512)
    full = decode_bytes(data, "big.jpg")
    assert (drafted.width, drafted.height) == (full.width, full.height) == (3000, 4000)
    assert 512 <= min(drafted.rgb.shape[:2]) < 1500  # decoded at a reduced scale
    a, b = prepare(drafted.rgb, Preprocess()), prepare(full.rgb, Preprocess())
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.02  # the same picture


@pytest.mark.parametrize(
    "fmt,mode", [("PNG", "RGB"), ("PNG", "I;16"), ("TIFF", "RGBA"), ("WEBP", "RGB")]
)
def test_large_images_of_every_format_are_decoded_reduced(fmt, mode):
    """A 3000 px PNG, TIFF or WebP is brought down by a box reduce before the frame resize:
    small, fast, and the same picture as the full decode (Pillow's reducing_gap=2)."""
    from lookalike.samples import sample_photo

    photo = sample_photo("chelsea").resize((3000, 2000), Image.Resampling.BICUBIC)
    photo = photo.convert("L").convert(mode) if mode == "I;16" else photo.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotated: the orientation must survive the reduce
    data = encode(photo, fmt, **({"exif": exif} if fmt != "WEBP" else {}))
    reduced = decode_bytes(data, f"big.{fmt}", draft=512)
    full = decode_bytes(data, f"big.{fmt}")
    assert (reduced.width, reduced.height) == (full.width, full.height)
    assert max(reduced.rgb.shape[:2]) < 1600 and min(reduced.rgb.shape[:2]) >= 512
    a, b = prepare(reduced.rgb, Preprocess()), prepare(full.rgb, Preprocess())
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.01  # the same picture
    from lookalike.features.base import PreparedImage
    from lookalike.features.color import ColorExtractor

    color = ColorExtractor()
    va, vb = color.extract(PreparedImage(a)), color.extract(PreparedImage(b))
    assert color.distance(va, vb[None, :])[0] < 1.0  # on the 0..100 scale


def test_decode_errors_survive_pickling():
    """A worker process's error crosses back to the parent whole (a broken pool otherwise)."""
    import pickle

    from lookalike.errors import QueryError

    error = pickle.loads(pickle.dumps(DecodeError("/p/x.jpg", "corrupt image")))
    assert (error.path, error.reason, str(error)) == (
        "/p/x.jpg",
        "corrupt image",
        "/p/x.jpg: corrupt image",
    )
    query = pickle.loads(pickle.dumps(QueryError("bad token", 4)))
    assert query.position == 4 and str(query) == "bad token (at position 4)"


def test_heic_where_the_codec_is_installed(tmp_path):
    from lookalike.decode import IMAGE_SUFFIXES

    assert ".heic" in IMAGE_SUFFIXES  # folders pick HEIC files up
    decoded = decode_bytes(encode(Image.new("RGB", (64, 48), (200, 30, 30)), "HEIF"), "x.heic")
    assert decoded.format == "HEIF" and decoded.rgb.shape == (48, 64, 3)
    assert abs(int(decoded.rgb[10, 10, 0]) - 200) < 12
