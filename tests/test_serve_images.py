"""Image parts: data URLs only by default, limits before decoding, every picture mode to RGB, and no
way to make the server read a local file or decode a bomb."""
from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from minimind_v.serve.errors import APIError
from minimind_v.serve.images import ImageLimits, decode_image, load_image_url


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def error_of(url, limits=None) -> APIError:
    with pytest.raises(APIError) as e:
        load_image_url(url, limits or ImageLimits())
    return e.value


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header says width x height but which holds almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_every_mode_and_format_becomes_rgb():
    base = Image.new("RGB", (20, 12), (10, 200, 30))
    cases = [(base, "PNG", {}), (base.convert("L"), "PNG", {}), (base.convert("P"), "GIF", {}),
             (base.convert("RGBA"), "WEBP", {}), (base.convert("CMYK"), "JPEG", {}), (base, "BMP", {}),
             (Image.new("I;16", (20, 12), 40000), "PNG", {}), (base.convert("1"), "PNG", {})]
    for img, fmt, kw in cases:
        out = load_image_url(data_url(encoded(img, fmt, **kw)), ImageLimits())
        assert out.mode == "RGB" and out.size == (20, 12), (img.mode, fmt)


def test_transparency_composites_onto_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image_url(data_url(encoded(img)), ImageLimits()).getpixel((0, 0)) == (255, 255, 255)


def test_decompression_bomb_is_refused_without_decoding(monkeypatch):
    def never(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    e = error_of(data_url(png_declaring(50_000, 50_000)))
    assert e.status == 400 and e.code == "image_too_large" and "2500000000" in e.message
    # a real one: 6000 x 6000 grey compresses to a few KB and would take 36 MB once decoded
    bomb = encoded(Image.new("L", (6000, 6000)))
    assert len(bomb) < 100_000
    assert error_of(data_url(bomb)).code == "image_too_large"


def test_byte_limit_is_checked_before_base64_decoding(monkeypatch):
    import minimind_v.serve.images as images
    monkeypatch.setattr(images.base64, "b64decode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    e = error_of(data_url(b"\0" * 2000), ImageLimits(max_bytes=1000))
    assert e.status == 413 and e.code == "image_too_large"


def test_limits_are_configurable():
    raw = encoded(Image.new("RGB", (100, 100), "white"))
    assert load_image_url(data_url(raw), ImageLimits(max_pixels=10_000)).size == (100, 100)
    assert error_of(data_url(raw), ImageLimits(max_pixels=9_999)).code == "image_too_large"
    assert error_of(data_url(raw), ImageLimits(max_bytes=len(raw) - 1)).status == 413


@pytest.mark.parametrize("url,code", [
    ("file:///etc/passwd", "unsupported_image_url"),
    ("FILE:///etc/hostname", "unsupported_image_url"),
    ("/etc/passwd", "unsupported_image_url"),
    ("./cat.png", "unsupported_image_url"),
    ("C:\\Windows\\win.ini", "unsupported_image_url"),
    ("ftp://example.com/cat.png", "unsupported_image_url"),
    ("http://example.com/cat.png", "remote_images_disabled"),
    ("https://example.com/cat.png", "remote_images_disabled"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", "invalid_image"),
    ("data:image/png;base64,not*base64", "invalid_image"),
    ("data:image/png;base64,", "invalid_image"),
    ("data:image/png,raw", "invalid_image_url"),
    ("data:image/png;base64", "invalid_image_url"),
    ("", "invalid_image_url"),
])
def test_refused_urls(url, code):
    e = error_of(url)
    assert e.status == 400 and e.code == code, e.message


def test_formats_that_shell_out_are_not_even_parsed():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert error_of(data_url(eps, "image/eps")).code == "invalid_image"
    tiff = encoded(Image.new("RGB", (4, 4)), "TIFF")          # a fine format, but not on the list
    assert error_of(data_url(tiff, "image/tiff")).code == "invalid_image"


def test_truncated_image_is_a_client_error():
    raw = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(APIError) as e:
        decode_image(raw[: len(raw) // 2], ImageLimits())
    assert e.value.status == 400 and e.value.code == "invalid_image"
