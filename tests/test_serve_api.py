"""The served API through real clients: the official `openai` package and raw HTTP, against uvicorn on
127.0.0.1 started by the test. Answers must equal the model's own greedy output (`VLM.stream` with
temperature 0); bad input must give the OpenAI error shape with a 4xx status and leave the server up;
16 streaming clients at once must all get their exact answers; a client that leaves frees its slot."""
from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import httpx
import pytest
from helpers import LiveServer
from PIL import Image

openai = pytest.importorskip("openai")

from minimind_v.pipeline import VLM  # noqa: E402
from minimind_v.serve.app import create_app  # noqa: E402
from minimind_v.serve.images import ImageLimits  # noqa: E402
from minimind_v.serve.testing import build_tiny_model  # noqa: E402

N = 16          # tokens per answer in most tests: enough to differ, quick on a CPU
CONTEXT = 512
IMAGE_BYTES = 200_000


def png_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def picture(seed: int) -> Image.Image:
    """A small picture that differs per seed (colour and a square's position)."""
    img = Image.new("RGB", (48, 40), ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    x = (seed * 7) % 30
    img.paste((255 - (seed * 67) % 256, 20, 200), (x, 5, x + 14, 19))
    return img


def image_part(img):
    return {"type": "image_url", "image_url": {"url": png_url(img)}}


def greedy(vlm, messages, images=None, n=N) -> str:
    """What the model itself answers (the reference every served answer is compared with)."""
    return "".join(vlm.stream(messages, images or [], temperature=0, max_new_tokens=n))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return VLM.load(build_tiny_model(tmp_path_factory.mktemp("serve") / "tiny-vlm"))


@pytest.fixture(scope="module")
def server(vlm):
    app = create_app(vlm, max_context=CONTEXT, limits=ImageLimits(max_bytes=IMAGE_BYTES, max_images=4))
    with LiveServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ the openai client, happy paths

def test_models_and_health(server, client, vlm):
    assert [m.id for m in client.models.list().data] == [vlm.name]
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["model"] == vlm.name and h["max_context"] == CONTEXT
    assert httpx.get(f"{server.url}/v1/models/{vlm.name}").json()["id"] == vlm.name


def test_text_only_non_streaming(client, vlm):
    r = client.chat.completions.create(model=vlm.name, messages=[{"role": "user", "content": "What colour?"}],
                                       temperature=0, max_tokens=N)
    want = greedy(vlm, [{"role": "user", "content": "What colour?"}])
    assert r.choices[0].message.content == want and want
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == N
    assert r.usage.prompt_tokens == len(vlm.prompt_ids([{"role": "user", "content": "What colour?"}], 0))


def test_image_non_streaming_equals_model(client, vlm):
    img = picture(1)
    r = client.chat.completions.create(
        model=vlm.name, temperature=0, max_completion_tokens=N,
        messages=[{"role": "user", "content": [image_part(img), {"type": "text", "text": "What colour?"}]}])
    assert r.choices[0].message.content == vlm.answer("What colour?", images=[img], temperature=0, max_new_tokens=N)
    # the picture matters: another picture gives another answer from this model
    other = vlm.answer("What colour?", images=[picture(2)], temperature=0, max_new_tokens=N)
    assert r.choices[0].message.content != other
    assert r.usage.prompt_tokens == len(vlm.prompt_ids([{"role": "user", "content": "What colour?"}], 1))


def test_streaming_with_image_and_usage(client, vlm):
    img = picture(3)
    stream = client.chat.completions.create(
        model=vlm.name, temperature=0, max_tokens=N, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [image_part(img), {"type": "text", "text": "Describe it."}]}])
    pieces, finish, use = [], None, None
    for ch in stream:
        if ch.usage:
            use = ch.usage
        if ch.choices:
            pieces.append(ch.choices[0].delta.content or "")
            finish = ch.choices[0].finish_reason or finish
    assert "".join(pieces) == vlm.answer("Describe it.", images=[img], temperature=0, max_new_tokens=N)
    assert len([p for p in pieces if p]) > 1                        # really streamed, piece by piece
    assert finish == "length" and use.completion_tokens == N


def test_multi_turn_several_images(client, vlm):
    a, b = picture(4), picture(5)
    turn1 = greedy(vlm, [{"role": "user", "content": "<image>\nWhat colour?"}], [a])
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [image_part(a), {"type": "text", "text": "What colour?"}]},
            {"role": "assistant", "content": turn1},
            {"role": "user", "content": [image_part(b), image_part(a), {"type": "text", "text": "And these two?"}]}]
    want = greedy(vlm, [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": "<image>\nWhat colour?"},
                        {"role": "assistant", "content": turn1},
                        {"role": "user", "content": "<image>\n<image>\nAnd these two?"}], [a, b, a])
    r = client.chat.completions.create(model=vlm.name, messages=msgs, temperature=0, max_tokens=N)
    assert r.choices[0].message.content == want
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=vlm.name, messages=msgs, temperature=0, max_tokens=N, stream=True) if c.choices)
    assert streamed == want


def test_stop_sequences_cut_the_answer(client, vlm):
    msgs = [{"role": "user", "content": "How many squares?"}]
    full = greedy(vlm, msgs, n=N)
    stop = full[5:7]
    cut = full[:full.index(stop)]
    r = client.chat.completions.create(model=vlm.name, messages=msgs, temperature=0, max_tokens=N, stop=[stop, "zzz"])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model=vlm.name, messages=msgs, temperature=0, max_tokens=N,
                                                 stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible_and_equals_the_model(client, vlm):
    msgs = [{"role": "user", "content": "Describe the picture."}]
    kw = dict(model=vlm.name, messages=msgs, temperature=1.0, top_p=0.95, seed=1234, max_tokens=N)
    first = client.chat.completions.create(**kw).choices[0].message.content
    assert client.chat.completions.create(**kw).choices[0].message.content == first
    want = "".join(vlm.stream(msgs, [], temperature=1.0, top_p=0.95, seed=1234, max_new_tokens=N))
    assert first == want
    assert client.chat.completions.create(**dict(kw, seed=99)).choices[0].message.content != first


# ------------------------------------------------------------------ malformed input: OpenAI shape, 4xx, still up

def crafted_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with almost no pixel data: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _msgs(content):
    return [{"role": "user", "content": content}]


def _img(url):
    return _msgs([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}])


def bad_cases():
    """(id, body: dict | bytes, expected status, expected param or None)."""
    good = png_url(picture(0))
    bomb = "data:image/png;base64," + base64.b64encode(crafted_png(30000, 30000)).decode()
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (IMAGE_BYTES + 10)).decode()
    M = "tiny-vlm"
    return [
        ("not-json", b"{\"model\": ", 400, None),
        ("empty-body", b"", 400, None),
        ("json-array", b"[1, 2]", 400, None),
        ("invalid-utf8", b"{\"model\": \"\xff\xfe\"}", 400, None),
        ("nan-literal", b"{\"model\": \"tiny-vlm\", \"messages\": [], \"temperature\": NaN}", 400, None),
        ("deep-nesting", b"[" * 100000 + b"]" * 100000, 400, None),
        ("no-messages", {"model": M}, 400, "messages"),
        ("empty-messages", {"model": M, "messages": []}, 400, "messages"),
        ("messages-not-list", {"model": M, "messages": "hello"}, 400, "messages"),
        ("message-not-object", {"model": M, "messages": ["hello"]}, 400, "messages[0]"),
        ("role-missing", {"model": M, "messages": [{"content": "hi"}]}, 400, "messages[0].role"),
        ("role-unknown", {"model": M, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        ("role-tool", {"model": M, "messages": [{"role": "tool", "content": "hi"}]}, 400, "messages[0].role"),
        ("only-system", {"model": M, "messages": [{"role": "system", "content": "hi"}]}, 400, "messages"),
        ("content-null", {"model": M, "messages": [{"role": "user", "content": None}]}, 400, "messages[0].content"),
        ("content-number", {"model": M, "messages": _msgs(42)}, 400, "messages[0].content"),
        ("message-unknown-key", {"model": M, "messages": [{"role": "user", "content": "hi", "mood": 1}]}, 400,
         "messages[0].mood"),
        ("part-unknown-type", {"model": M, "messages": _msgs([{"type": "input_audio", "input_audio": {}}])}, 400,
         "messages[0].content[0].type"),
        ("text-part-not-string", {"model": M, "messages": _msgs([{"type": "text", "text": 5}])}, 400,
         "messages[0].content[0].text"),
        ("image-marker-in-text", {"model": M, "messages": _msgs("look <image> here")}, 400, "messages[0].content"),
        ("image-not-image-mime", {"model": M, "messages": _img("data:text/plain;base64,aGVsbG8=")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-garbage-bytes", {"model": M, "messages": _img("data:image/png;base64,aGVsbG8gd29ybGQ=")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-bad-base64", {"model": M, "messages": _img("data:image/png;base64,@@@@")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-not-base64", {"model": M, "messages": _img("data:image/png,rawbytes")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-file-url", {"model": M, "messages": _img("file:///etc/passwd")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-local-path", {"model": M, "messages": _img("/etc/passwd")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-remote-url", {"model": M, "messages": _img("http://127.0.0.1:9/cat.png")}, 400,
         "messages[0].content[0].image_url.url"),
        ("image-url-not-string", {"model": M, "messages": _msgs([{"type": "image_url", "image_url": {"url": 7}}])},
         400, "messages[0].content[0].image_url.url"),
        ("image-bomb-pixels", {"model": M, "messages": _img(bomb)}, 400, "messages[0].content[0].image_url.url"),
        ("image-too-many-bytes", {"model": M, "messages": _img(big)}, 413, "messages[0].content[0].image_url.url"),
        ("too-many-images", {"model": M, "messages": _msgs([{"type": "image_url", "image_url": {"url": good}}] * 5)},
         400, "messages"),
        ("image-in-assistant", {"model": M, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": good}}]},
            {"role": "user", "content": "and?"}]}, 400, "messages[1].content[0]"),
        ("unknown-field", {"model": M, "messages": _msgs("hi"), "foo": 1}, 400, "foo"),
        ("unsupported-tools", {"model": M, "messages": _msgs("hi"), "tools": [{"type": "function"}]}, 400, "tools"),
        ("model-missing", {"messages": _msgs("hi")}, 400, "model"),
        ("model-not-string", {"model": ["x"], "messages": _msgs("hi")}, 400, "model"),
        ("model-unknown", {"model": "gpt-4o", "messages": _msgs("hi")}, 404, "model"),
        ("temperature-string", {"model": M, "messages": _msgs("hi"), "temperature": "hot"}, 400, "temperature"),
        ("temperature-range", {"model": M, "messages": _msgs("hi"), "temperature": 5}, 400, "temperature"),
        ("top-p-range", {"model": M, "messages": _msgs("hi"), "top_p": 1.5}, 400, "top_p"),
        ("max-tokens-zero", {"model": M, "messages": _msgs("hi"), "max_tokens": 0}, 400, "max_tokens"),
        ("max-tokens-bool", {"model": M, "messages": _msgs("hi"), "max_tokens": True}, 400, "max_tokens"),
        ("max-tokens-float", {"model": M, "messages": _msgs("hi"), "max_tokens": 2.5}, 400, "max_tokens"),
        ("seed-string", {"model": M, "messages": _msgs("hi"), "seed": "1"}, 400, "seed"),
        ("n-two", {"model": M, "messages": _msgs("hi"), "n": 2}, 400, "n"),
        ("stream-not-bool", {"model": M, "messages": _msgs("hi"), "stream": "yes"}, 400, "stream"),
        ("stream-options-without-stream", {"model": M, "messages": _msgs("hi"),
                                           "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ("stop-five", {"model": M, "messages": _msgs("hi"), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("stop-number", {"model": M, "messages": _msgs("hi"), "stop": 3}, 400, "stop"),
        ("prompt-longer-than-context", {"model": M, "messages": _msgs("squares " * 400)}, 400, "messages"),
        ("max-tokens-beyond-context", {"model": M, "messages": _msgs("hi"), "max_tokens": CONTEXT}, 400,
         "max_tokens"),
        ("logprobs", {"model": M, "messages": _msgs("hi"), "logprobs": True}, 400, "logprobs"),
        ("lone-surrogate-text", b'{"model": "tiny-vlm", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
         400, "messages[0].content"),
        ("lone-surrogate-model", b'{"model": "\\udfff", "messages": [{"role": "user", "content": "hi"}]}', 400,
         "model"),
        ("seed-too-big", {"model": M, "messages": _msgs("hi"), "seed": 2 ** 70}, 400, "seed"),
    ]


def post(server, body, **kw):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/chat/completions", content=content,
                      headers={"Content-Type": "application/json"}, timeout=30, **kw)


def assert_openai_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c[0])
def test_malformed_request(server, vlm, case):
    _, body, status, param = case
    if isinstance(body, dict) and body.get("model") == "tiny-vlm":
        body = dict(body, model=vlm.name)
    assert_openai_error(post(server, body), status, param)


def test_http_level_errors(server, client, vlm):
    assert_openai_error(httpx.get(server.url + "/v1/chat/completions"), 405)
    assert_openai_error(httpx.get(server.url + "/v1/nothing-here"), 404)
    assert_openai_error(httpx.get(server.url + "/v1/models/gpt-4o"), 404)
    huge = json.dumps({"model": vlm.name, "messages": _msgs("x" * 5_000_000)}).encode()
    assert_openai_error(post(server, huge), 413)
    with socket.create_connection(("127.0.0.1", server.port)) as s:      # a lying, absurd Content-Length
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n{}")
        reply = s.recv(4096)
    assert reply.split(b"\r\n")[0].split(b" ")[1] in (b"400", b"413"), reply[:200]
    # the official client maps the statuses to its exception classes
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=vlm.name, messages=[], max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=_msgs("hi"), max_tokens=2)


def test_odd_but_valid_values(client, vlm):
    msgs = _msgs("What colour?")
    want = greedy(vlm, msgs, n=6)
    for kw in (dict(temperature=1e-40), dict(temperature=0.8, top_p=0), dict(temperature=0, stop=None, seed=None)):
        r = client.chat.completions.create(model=vlm.name, messages=msgs, max_tokens=6, **kw)
        assert r.choices[0].message.content == want, kw


def test_server_still_answers_after_bad_input(server, client, vlm):
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["active"] == 0 and h["errors"] == 0
    r = client.chat.completions.create(model=vlm.name, messages=_msgs("What colour?"), temperature=0, max_tokens=4)
    assert r.choices[0].message.content == greedy(vlm, _msgs("What colour?"), n=4)


# ------------------------------------------------------------------ concurrency and disconnects

def test_sixteen_concurrent_streaming_clients(server, vlm):
    jobs = []
    for i in range(16):
        q = ["What colour?", "How many squares?", "Describe it.", "Is it on the left?"][i % 4]
        img = picture(10 + i) if i % 2 == 0 else None
        content = [image_part(img), {"type": "text", "text": q}] if img else q
        n = 8 + i                                   # different lengths: rows join and leave at different steps
        want = vlm.answer(q, images=[img] if img else None, temperature=0, max_new_tokens=n)
        jobs.append((content, n, want))
    results, errors = [None] * 16, []
    start = threading.Barrier(16)

    def run(i):
        try:
            c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
            content, n, _ = jobs[i]
            start.wait()
            s = c.chat.completions.create(model=vlm.name, messages=_msgs(content), temperature=0, max_tokens=n,
                                          stream=True)
            results[i] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == [want for _, _, want in jobs]
    assert httpx.get(server.url + "/health").json()["peak_batch"] > 1        # decoded together, not one by one


def test_disconnect_mid_stream_frees_the_slot(server, vlm):
    before = httpx.get(server.url + "/health").json()["cancelled"]
    body = json.dumps({"model": vlm.name, "messages": _msgs("Describe it."), "stream": True,
                       "max_tokens": CONTEXT - 40}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data:") < 3:
            got += s.recv(4096)
        assert b"200 OK" in got
    # the socket is closed: the engine must drop the row long before the 470 tokens are done
    assert wait_for(lambda: httpx.get(server.url + "/health").json()["active"] == 0, 10)
    assert httpx.get(server.url + "/health").json()["cancelled"] > before


def test_disconnect_while_waiting_for_a_non_streamed_answer(server, vlm, monkeypatch):
    # each decode step sleeps 10 ms, so the ~270-token answer surely outlasts the client's 0.3 s (a warm
    # server otherwise finishes it in about that time, and the client would get its answer)
    # and the end-of-turn token is never chosen, so the answer is long whatever the random model prefers
    forward, stops = vlm.model.forward, [vlm.tok.eos_id]

    def slow_forward(*a, **k):
        time.sleep(0.01)
        out = forward(*a, **k)
        out.logits[..., stops] = float("-inf")
        return out
    monkeypatch.setattr(vlm.model, "forward", slow_forward)
    before = httpx.get(server.url + "/health").json()["cancelled"]
    with pytest.raises(httpx.TimeoutException):      # the client gives up (and closes) after 0.3 s
        httpx.post(server.url + "/v1/chat/completions", timeout=0.3,
                   json={"model": vlm.name, "messages": _msgs("Describe it."), "max_tokens": CONTEXT - 40})
    assert wait_for(lambda: httpx.get(server.url + "/health").json()["cancelled"] > before, 10)
    assert wait_for(lambda: httpx.get(server.url + "/health").json()["active"] == 0, 10)


# ------------------------------------------------------------------ options: API key, remote images

def test_api_key_and_remote_images(vlm, tmp_path):
    import http.server
    img = picture(7)
    png = io.BytesIO()
    img.save(png, "PNG")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png.getvalue())

        def log_message(self, *a):
            pass

    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{files.server_address[1]}"
    app = create_app(vlm, api_key="s3cret", limits=ImageLimits(allow_remote=True))
    try:
        with LiveServer(app) as srv:
            body = {"model": vlm.name, "messages": _msgs("hi"), "max_tokens": 2}
            assert_openai_error(httpx.post(srv.url + "/v1/chat/completions", json=body), 401)
            assert_openai_error(httpx.post(srv.url + "/v1/chat/completions", json=body,
                                           headers={"Authorization": "Bearer wrong"}), 401)
            assert_openai_error(httpx.get(srv.url + "/v1/models"), 401)
            assert httpx.get(srv.url + "/health").status_code == 200          # probes need no key
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
            c = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
            parts = [{"type": "image_url", "image_url": {"url": remote + "/cat.png"}},
                     {"type": "text", "text": "Colour?"}]
            r = c.chat.completions.create(model=vlm.name, temperature=0, max_tokens=N, messages=_msgs(parts))
            assert r.choices[0].message.content == vlm.answer("Colour?", images=[img], temperature=0, max_new_tokens=N)
            # a redirect to file:// is refused even with remote images on; file:// itself always is
            for url in (remote + "/redirect", "file:///etc/passwd"):
                bad = {"model": vlm.name, "messages": _img(url)}
                assert_openai_error(httpx.post(srv.url + "/v1/chat/completions", json=bad,
                                               headers={"Authorization": "Bearer s3cret"}), 400)
    finally:
        files.shutdown()


def test_serve_command_is_registered():
    from minimind_v.cli import build_parser
    a = build_parser().parse_args(["serve", "--model", "m", "--port", "0", "--api-key", "k", "--allow-remote-images"])
    assert a.command == "serve" and a.api_key == "k" and a.allow_remote_images and a.host == "127.0.0.1"
