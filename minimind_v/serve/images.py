"""Image parts of a chat request -> RGB PIL images, with every limit checked before decoding.

Accepted by default: `data:image/<type>;base64,<payload>` URLs only (what the web page and most clients
send). `http(s)://` URLs are refused unless the server was started with `--allow-remote-images`
(fetching makes the server a client of any address a caller names); `file://` URLs and local paths are
always refused, so a request can never read the server's disk.

Order of checks, cheapest and safest first:

  1. scheme (data / http(s) / anything else refused)
  2. bytes: the base64 length gives the decoded size (4 chars -> 3 bytes) before decoding; a remote
     body is read at most `max_bytes + 1` bytes
  3. format: PIL opens the header only, restricted to PNG / JPEG / GIF / WebP / BMP (no plugins that
     shell out, such as EPS)
  4. pixels: width x height from the header against `max_pixels`, BEFORE `load()`: a decompression
     bomb (a tiny file declaring 50 000 x 50 000 pixels) is refused without decoding a single row
  5. decode, then convert any mode (palette, CMYK, 16-bit, alpha) to RGB.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from PIL import Image

from .errors import APIError, bad_request

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


@dataclass
class ImageLimits:
    max_bytes: int = 10_000_000        # encoded size of one image
    max_pixels: int = 25_000_000       # width * height of one image (5000 x 5000)
    max_images: int = 8                # images in one request, all messages together
    allow_remote: bool = False         # fetch http(s):// image URLs
    remote_timeout: float = 10.0       # seconds in total for a remote fetch (connect + headers + body)


def load_image_url(url, limits: ImageLimits, param: str = "image_url.url") -> Image.Image:
    """An `image_url.url` value -> RGB image, or `APIError` (400/413) saying what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise bad_request("image_url.url must be a non-empty string", param, "invalid_image_url")
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme == "data":
        data = decode_data_url(url, limits, param)
    elif scheme in ("http", "https"):
        if not limits.allow_remote:
            raise bad_request("remote image URLs are disabled on this server; send the image inline as "
                              "data:image/png;base64,... (or start the server with --allow-remote-images)",
                              param, "remote_images_disabled")
        data = fetch_remote(url, limits, param)
    elif scheme == "file":
        raise bad_request("file:// image URLs are never accepted; send the image inline as a data URL",
                          param, "unsupported_image_url")
    else:
        raise bad_request("image_url.url must be a data:image/...;base64,... URL (local paths are never read)",
                          param, "unsupported_image_url")
    return decode_image(data, limits, param)


def decode_data_url(url: str, limits: ImageLimits, param: str) -> bytes:
    """`data:image/png;base64,AAAA` -> bytes, refusing non-image types and oversize payloads unread."""
    head, sep, payload = url.partition(",")
    if not sep:
        raise bad_request("malformed data URL: no ',' before the payload", param, "invalid_image_url")
    meta = [p.strip().lower() for p in head[len("data:"):].split(";")]
    mime = meta[0]
    if not mime.startswith("image/"):
        raise bad_request(f"the data URL holds {mime or 'text/plain'}, not an image", param, "invalid_image")
    if "base64" not in meta[1:]:
        raise bad_request("image data URLs must be base64-encoded (data:image/png;base64,...)", param,
                          "invalid_image_url")
    if len(payload) > 4 * (limits.max_bytes // 3 + 1) + 64:           # cheap bound before stripping
        raise _too_big(len(payload) * 3 // 4, limits, param)
    payload = "".join(payload.split())                                # tolerate line breaks
    size = len(payload) * 3 // 4 - payload[-2:].count("=")            # 4 base64 chars -> 3 bytes
    if size > limits.max_bytes:
        raise _too_big(size, limits, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the image payload is not valid base64", param, "invalid_image") from None
    if not data:
        raise bad_request("the image payload is empty", param, "invalid_image")
    return data


def _too_big(size: int, limits: ImageLimits, param: str) -> APIError:
    return APIError(413, f"image of about {size} bytes exceeds the limit of {limits.max_bytes} bytes",
                    param=param, code="image_too_large")


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) (never ftp:// or file://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if newurl.split(":", 1)[0].lower() not in ("http", "https"):
            raise urllib.error.URLError(f"redirect to a non-http URL refused: {newurl[:80]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """A total time limit for one fetch: when it passes, every socket the fetch opened is shut down, so a
    server that drips a byte every few seconds (each read within a per-read timeout) still ends on time."""

    def __init__(self, seconds: float):
        self.seconds, self.expired, self.socks, self.lock = seconds, False, [], threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def expire(self):
        with self.lock:
            self.expired = True
            for s in self.socks:
                _shut(s)

    def add(self, sock):
        with self.lock:
            self.socks.append(sock)
            if self.expired:
                _shut(sock)

    def handlers(self):
        """urllib handlers whose connections register their sockets here."""
        deadline = self

        def tracked(base):
            class Tracked(base):
                def connect(self):
                    super().connect()
                    deadline.add(self.sock)
            return Tracked

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(tracked(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(tracked(http.client.HTTPSConnection), req, context=self._context)
        return [HTTP(), HTTPS()]


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# At most this many remote fetches at once: each holds a worker thread, and a flood of slow ones must not
# take every worker from the requests that send their pictures inline.
_FETCH_SLOTS = threading.BoundedSemaphore(4)


def fetch_remote(url: str, limits: ImageLimits, param: str) -> bytes:
    """GET an http(s) image (opt-in), reading at most max_bytes + 1 bytes, within `remote_timeout` seconds
    in total (connect, headers and body together, not per read)."""
    if not _FETCH_SLOTS.acquire(blocking=False):
        raise APIError(429, "too many remote image fetches in progress; retry later or send the image inline",
                       param=param, code="server_busy")
    try:
        with _Deadline(limits.remote_timeout) as deadline:
            data = _fetch(url, limits, param, deadline)
    finally:
        _FETCH_SLOTS.release()
    if len(data) > limits.max_bytes:
        raise _too_big(len(data), limits, param)
    return data


def _fetch(url: str, limits: ImageLimits, param: str, deadline: _Deadline) -> bytes:
    opener = urllib.request.build_opener(_SafeRedirects(), *deadline.handlers())
    req = urllib.request.Request(url, headers={"User-Agent": "minimind-v-serve"})
    chunks, size = [], 0
    try:
        with opener.open(req, timeout=limits.remote_timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise _too_big(int(declared), limits, param)
            while size <= limits.max_bytes:
                part = resp.read(min(65536, limits.max_bytes + 1 - size))
                if not part:
                    break
                chunks.append(part)
                size += len(part)
    except APIError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if deadline.expired:
            raise bad_request(f"could not fetch the image URL within {limits.remote_timeout:g} s", param,
                              "image_fetch_failed") from None
        raise bad_request(f"could not fetch the image URL: {e}", param, "image_fetch_failed") from None
    if deadline.expired:
        raise bad_request(f"could not fetch the image URL within {limits.remote_timeout:g} s", param,
                          "image_fetch_failed")
    return b"".join(chunks)


# Pictures decoded at once, over all requests: 40 worker threads each decoding a 25 Mpx picture would
# hold 3 GB; waiting for a slot bounds that at a few hundred MB (text-only requests never wait).
_DECODE_SLOTS = threading.BoundedSemaphore(4)


def decode_image(data: bytes, limits: ImageLimits, param: str = "image") -> Image.Image:
    """Bytes -> RGB image through the package's one guarded opener (minimind_v/image.py): format and
    pixel count are checked from the header before decoding."""
    from ..image import ImageError, open_image
    if len(data) > limits.max_bytes:
        raise _too_big(len(data), limits, param)
    try:
        with _DECODE_SLOTS:          # a picture at the pixel limit is ~75 MB decoded: a few at a time
            return open_image(data, max_pixels=limits.max_pixels, formats=ALLOWED_FORMATS)
    except ImageError as e:
        if e.kind == "too_many_pixels":
            raise bad_request(str(e), param, "image_too_large") from None          # checked from the header
        if e.kind == "bad_image" and str(e).startswith("undecodable"):
            raise bad_request("the image data is not a PNG, JPEG, GIF, WebP or BMP image", param,
                              "invalid_image") from None
        raise bad_request(f"the image is unusable: {e}", param, "invalid_image") from None
