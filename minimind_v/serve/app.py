"""`create_app(vlm, ...)`: the FastAPI app behind `minimind-v serve`.

    POST /v1/chat/completions   the OpenAI Chat Completions shape, streaming (SSE, ends with [DONE]) or not
    GET  /v1/models             the one model served;  GET /v1/models/{id}
    GET  /health                liveness, model name, defaults, limits, queue state (no key needed)
    GET  /                      the chat page;  /static/*  its script and style
    GET  /web/                  with `web`: the model in the visitor's browser (an `export --to web` folder)

A request goes: auth -> body read with a byte limit (413 before JSON parsing) -> JSON + field
validation -> images (limits before decoding) -> prompt ids and context check -> the engine queue.
Everything up to the queue is CPU work done in a worker thread, so a large image never stalls other
clients' streams. Every failure before the first byte of the answer is an `APIError` (OpenAI JSON,
4xx); after that (a stream already started) it is an SSE `{"error": ...}` event followed by [DONE].
A client that disconnects is noticed (stream cancelled, or polled while waiting for a non-streamed
answer) and its slot is given back to the engine.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import protocol as P
from .engine import Engine, Job, QueueFull
from .errors import APIError, bad_request
from .guard import GuardMiddleware
from .images import ImageLimits, load_image_url

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("minimind_v.serve")


def create_app(vlm, *, name: str | None = None, api_key: str | None = None, limits: ImageLimits | None = None,
               defaults: P.Defaults | None = None, max_context: int | None = None, max_batch: int = 16,
               max_queue: int = 256, max_body_bytes: int | None = None, poll_s: float = 0.25,
               image_cache: int = 64, allowed_hosts=None, allow_origins=(), body_timeout: float = 30.0,
               engine: Engine | None = None, web: str | Path | None = None) -> FastAPI:
    """The app serving `vlm` (a `pipeline.VLM`). The engine thread starts and stops with the app.
    `allowed_hosts` / `allow_origins`: see guard.py; `body_timeout`: seconds to receive a whole body;
    `engine`: another engine over the same jobs (onnx_engine.py's, for `serve --runtime onnx`); `web`: a
    folder written by `export --to web`, served at /web/ and offered by the chat page (web_folder.py)."""
    name = name or vlm.name
    limits = limits or ImageLimits()
    defaults = defaults or P.Defaults()
    max_context = max_context or min(vlm.model.cfg.max_position_embeddings, 2048)
    if max_body_bytes is None:        # every image at its byte limit, base64-inflated by 4/3, plus 1 MiB of text
        max_body_bytes = limits.max_images * (limits.max_bytes * 4 // 3 + 1024) + (1 << 20)
    engine = engine or Engine(vlm, max_batch=max_batch, max_queue=max_queue, image_cache=image_cache)
    # Work is bounded before it is spent: a prompt of more characters than the context could hold even if
    # every token were the vocabulary's longest is refused before tokenising (10 MB of text once took 25 s
    # and 4 GB to tokenise, only to be refused for its length afterwards).
    served = Served(vlm, engine, name, defaults, limits, max_context, max_context * vlm.tok.max_token_chars, poll_s)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="minimind-v", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware, allowed_hosts=allowed_hosts, allow_origins=allow_origins)
    app.state.engine, app.state.vlm, app.state.name = engine, vlm, name
    install_error_handlers(app)

    def check_auth(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer YOUR_KEY'",
                           code="invalid_api_key")

    def model_card() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "minimind-v",
                "context_length": max_context}

    created = P.now()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "auth": bool(api_key), "max_context": max_context,
                "defaults": {"temperature": defaults.temperature, "top_p": defaults.top_p,
                             "max_tokens": defaults.max_tokens},
                "limits": {"max_image_bytes": limits.max_bytes, "max_image_pixels": limits.max_pixels,
                           "max_images": limits.max_images, "remote_images": limits.allow_remote},
                "web": "/web/" if web is not None else None, **engine.stats()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str, request: Request):
        check_auth(request)
        if model_id != name:
            raise APIError(404, f"The model '{model_id}' does not exist (this server has '{name}')",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_auth(request)
        body = await read_body(request, max_body_bytes, body_timeout)
        req, job = await run_in_threadpool(prepare, body, served)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job.emit = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        try:
            engine.submit(job)
        except QueueFull as e:
            raise APIError(429, f"the server is busy ({e}); retry later", code="server_busy") from None
        cid, t0 = P.new_id(), P.now()
        if req.stream:
            return StreamingResponse(sse(job, events, cid, t0, req.include_usage, served), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await collect(request, job, events, cid, t0, served)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if web is not None:
        from .web_folder import WebFolder, check_web_folder
        app.mount("/web", WebFolder(directory=check_web_folder(web), html=True), name="web")
    return app


@dataclass
class Served:
    """What the request handlers read: the model, its engine and name, and the limits it is served under."""
    vlm: object
    engine: object
    name: str
    defaults: P.Defaults
    limits: ImageLimits
    max_context: int
    max_prompt_chars: int       # characters no max_context tokens could spell: refused before tokenising
    poll_s: float


def prepare(body: bytes, s: "Served"):
    """JSON -> request -> images -> prompt ids -> a Job (without its emit callback). Worker thread."""
    req = P.parse_request(P.parse_json(body), s.defaults, s.limits.max_images)
    if req.model != s.name:
        raise APIError(404, f"The model '{req.model}' does not exist (this server has '{s.name}')",
                       param="model", code="model_not_found")
    chars = sum(len(m["content"]) for m in req.messages)
    if 4 * len(req.messages) > s.max_context:          # each message's template alone takes 4 tokens or more
        raise bad_request(f"This model's maximum context length is {s.max_context} tokens, and {len(req.messages)} "
                          f"messages take at least {4 * len(req.messages)}", "messages", "context_length_exceeded")
    if chars > s.max_prompt_chars:
        raise bad_request(f"This model's maximum context length is {s.max_context} tokens, and the messages hold "
                          f"{chars} characters: more than {s.max_prompt_chars}, which no {s.max_context} tokens "
                          f"can spell", "messages", "context_length_exceeded")
    images = [load_image_url(ref.url, s.limits, ref.param) for ref in req.images]
    try:
        ids = s.vlm.prompt_ids(req.messages, len(images))
    except ValueError as e:
        raise bad_request(f"cannot build the prompt: {e}", "messages") from None
    room = s.max_context - len(ids)
    if room < 1:
        raise bad_request(f"This model's maximum context length is {s.max_context} tokens, but the messages "
                          f"take {len(ids)} tokens (each image counts {s.vlm.model.cfg.image_token_len})",
                          "messages", "context_length_exceeded")
    if req.max_tokens is not None and req.max_tokens > room:
        raise bad_request(f"This model's maximum context length is {s.max_context} tokens: {len(ids)} in the "
                          f"messages leave {room} for the completion, but {req.max_tokens} were requested",
                          "max_tokens", "context_length_exceeded")
    params = s.vlm.params(max_new_tokens=req.max_tokens or min(s.defaults.max_tokens, room),
                        temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
    return req, Job(ids=ids, pixels=s.vlm.pixels(images), params=params, emit=None, stop=req.stop)



async def collect(request: Request, job: Job, events: asyncio.Queue, cid: str, t0: int, s: "Served"):
    parts, checked = [], loop_time()
    while True:
        try:
            ev = await asyncio.wait_for(events.get(), s.poll_s)
        except asyncio.TimeoutError:
            ev = None
        if loop_time() - checked >= s.poll_s:         # events may never pause: look at the clock
            checked = loop_time()
            if await request.is_disconnected():
                s.engine.cancel(job)
                return Response(status_code=400)       # nobody is listening any more
        if ev is None:
            continue
        if ev[0] == "delta":
            parts.append(ev[1])
        elif ev[0] == "done":
            return P.completion(cid, t0, s.name, "".join(parts), ev[1], P.usage(ev[2], ev[3]))
        else:
            raise APIError(500, ev[1], code="generation_failed")



async def sse(job: Job, events: asyncio.Queue, cid: str, t0: int, include_usage: bool, s: "Served"):
    try:
        yield data(P.chunk(cid, t0, s.name, {"role": "assistant", "content": ""}))
        while True:
            ev = await events.get()
            if ev[0] == "delta":
                yield data(P.chunk(cid, t0, s.name, {"content": ev[1]}))
            elif ev[0] == "done":
                yield data(P.chunk(cid, t0, s.name, {}, ev[1]))
                if include_usage:
                    yield data(P.usage_chunk(cid, t0, s.name, P.usage(ev[2], ev[3])))
                break
            else:
                yield data(APIError(500, ev[1], code="generation_failed").body())
                break
        yield "data: [DONE]\n\n"
    finally:
        s.engine.cancel(job)          # no-op when finished; frees the slot when the client went away



def loop_time() -> float:
    return asyncio.get_running_loop().time()


def data(obj) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (never read in full), and
    with 408 when it has not all arrived within `timeout` seconds (a client dripping its body). A client
    that goes away mid-body ends the request quietly (`ClientGone`: no traceback in the log)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                       code="request_too_large")

    async def read() -> bytes:
        chunks, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
            chunks.append(part)
        return b"".join(chunks)
    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s", code="request_timeout") from None
    except ClientDisconnect:
        raise ClientGone() from None


class ClientGone(Exception):
    """The client closed the connection before its request was read: nobody to answer, nothing to log."""


def error_response(e: APIError, headers: dict | None = None) -> Response:
    """The error body as ASCII JSON: a message may quote client text holding lone surrogates."""
    return Response(json.dumps(e.body()), status_code=e.status, headers=headers, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves in the OpenAI shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e, {"WWW-Authenticate": "Bearer"} if e.status == 401 else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        msg = {404: f"Unknown route: {request.method} {request.url.path}",
               405: f"Method {request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        code = {404: "unknown_route", 405: "method_not_allowed"}.get(e.status_code)
        return error_response(APIError(e.status_code, msg, code=code), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return error_response(bad_request(f"invalid request: {e.errors()[:1]}"))

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, e: ClientGone):
        return Response(status_code=400)          # never delivered: the client has gone

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("unexpected error")
        return error_response(APIError(500, f"internal error: {type(e).__name__}", code="internal_error"))
