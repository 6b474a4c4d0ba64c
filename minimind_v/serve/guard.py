"""What the server checks before it spends any work on a request, and the limits on slow clients.

`GuardMiddleware` (a plain ASGI middleware, so it runs before routing and before any body is read):

  * Host: when the server listens on loopback only, the `Host` header must name loopback too
    (`localhost`, `127.0.0.1`, `[::1]`): a web page on `evil.example` whose DNS name is re-pointed at
    127.0.0.1 (DNS rebinding) gets 403, not the API.
  * Origin: a browser sends `Origin` with every cross-origin POST. A POST whose Origin is not this server
    itself and not in `--allow-origin` is refused with 403, so a page the user happens to visit cannot make
    the browser call the API (CORS does not stop a "simple" text/plain POST from being *sent*).
  * Content type: a POST must be `application/json` (415 otherwise). A browser cannot send that type
    cross-origin without a CORS preflight, which this server never grants.
  * Security headers on every response: a strict Content-Security-Policy (the page loads only its own
    script and style; pictures from data:/blob: URLs), `X-Frame-Options: DENY`,
    `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.

`protocol_with_header_timeout` wraps uvicorn's HTTP protocol class so that a connection that has not
sent a complete request head within `header_timeout` seconds of connecting (or of its previous answer)
is closed: uvicorn's own `timeout_keep_alive` only starts after a first answer, so 60 sockets that send
nothing, or a byte every few seconds (slowloris), would otherwise be held forever. The body has its own
total deadline in app.py (`read_body`).
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


def is_loopback(host: str) -> bool:
    return host.strip("[]").lower() in LOOPBACK_HOSTS


def host_name(value: str) -> str:
    """`Host` header value -> lower-case name without port (`[::1]:8000` -> `::1`)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class GuardMiddleware:
    def __init__(self, app, allowed_hosts=None, allow_origins=()):
        """`allowed_hosts`: host names the `Host` header may carry (None: any). `allow_origins`: origins
        (`https://app.example:8443`) besides the server itself whose browser POSTs are accepted; `*`: any."""
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.strip("[]").lower() for h in allowed_hosts}
        self.allow_origins = {o.rstrip("/").lower() for o in allow_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        refusal = self.refusal(scope, headers, host)
        if refusal is not None:
            status, message, code = refusal
            return await _send_error(send, status, message, code)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in have]
            await send(message)
        return await self.app(scope, receive, send_with_headers)

    def refusal(self, scope, headers: dict, host: str):
        """(status, message, code) when the request is refused before any work, else None."""
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return 403, (f"Host {host[:80]!r} is not served here (this server answers to "
                         f"{', '.join(sorted(self.allowed_hosts))})"), "invalid_host"
        if scope["method"] != "POST":
            return None
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, host, scope):
            return 403, (f"cross-origin request from {origin[:80]!r} refused; start the server with "
                         f"--allow-origin {origin[:80]} to allow that site"), "origin_not_allowed"
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return 415, (f"Content-Type must be application/json, not {ctype[:60] or 'missing'!r}"), \
                "unsupported_media_type"
        return None

    def origin_ok(self, origin: str, host: str, scope) -> bool:
        o = origin.rstrip("/").lower()
        if "*" in self.allow_origins or o in self.allow_origins:
            return True
        if o == "null":                    # sandboxed frames, file:// pages
            return False
        # this server itself: same host and port (the scheme is not compared: behind a TLS proxy the
        # page is https while the proxied request reaching us is http)
        return urlsplit(o).netloc == host.strip().lower()


async def _send_error(send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")] + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


def protocol_with_header_timeout(header_timeout: float):
    """uvicorn's HTTP protocol class (h11 or httptools, as uvicorn picks) that closes a connection whose
    request head has not arrived within `header_timeout` seconds."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_header_deadline()      # the next request on a kept-alive connection gets the same

        def _arm_header_deadline(self):
            handle = getattr(self, "_header_deadline", None)
            if handle is not None:
                handle.cancel()
            self._header_deadline = self.loop.call_later(header_timeout, self._header_deadline_passed)

        def _header_deadline_passed(self):
            cycle = self.cycle
            if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()        # no request head in time: a slow or idle client

        def connection_lost(self, exc):
            handle = getattr(self, "_header_deadline", None)
            if handle is not None:
                handle.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_options(header_timeout: float = 10.0, keep_alive: float = 5.0) -> dict:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that bound slow clients."""
    return {"http": protocol_with_header_timeout(header_timeout), "timeout_keep_alive": keep_alive,
            "h11_max_incomplete_event_size": 64 * 1024}
