"""The Chat Completions request, validated field by field, and the response objects we send back.

We parse the raw JSON ourselves instead of through a pydantic model so that every mistake gets the
OpenAI error shape with status 400 and a `param` naming the field (pydantic would answer 422 in its
own shape). Rules:

  * `null` for an optional field means "use the default", as in the OpenAI API;
  * numbers are numbers (a JSON `true` is not a 1; NaN and Infinity are refused at parse time);
  * a field we do not know is an error ("Unrecognized request argument"), and a field we know but do
    not implement (tools, response_format, logprobs, n > 1, penalties) is an error that says so: a
    client should not believe it got a feature it did not get;
  * content is a string or a list of parts; an image part becomes an `<image>` marker in the text at
    the same place, so a message [image, "What colour?"] renders exactly like `VLM.answer("What
    colour?", images=[img])` (the marker plus a newline before the question).
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

from ..data.chatml import IMAGE_MARKER
from .errors import bad_request

ROLE_ALIASES = {"developer": "system"}
ROLES = ("system", "user", "assistant")
IMAGE_PAD = "<|image_pad|>"

# Known fields that are accepted and ignored (they do not change the answer).
IGNORED = {"user", "metadata", "store", "service_tier"}
# Known fields with behaviour we do not have: refused unless null/default, with a clear message.
UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias",
               "top_logprobs", "audio", "modalities", "prediction", "reasoning_effort",
               "parallel_tool_calls", "web_search_options"}
SUPPORTED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
             "temperature", "top_p", "top_k", "seed", "stop", "n", "logprobs", "frequency_penalty",
             "presence_penalty"}


@dataclass
class Defaults:
    """Sampling defaults for fields a request leaves out (shown on the web page)."""
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512


@dataclass
class ImageRef:
    url: str
    param: str          # where it sits in the request, for error messages: messages[0].content[1].image_url.url


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]                 # {"role", "content"} with <image> markers, ready for VLM.prompt_ids
    images: list[ImageRef]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None        # None: fill the context up to the server default
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


# A request body may be ~100 MB (it is sized for 8 pictures, which are single base64 strings), but a body
# of 100 MB of `[],` or `{},` would parse into tens of millions of Python objects (GBs). Counting the bytes
# that start a value or separate two (C speed, before parsing) bounds that: pictures contain none of them.
MAX_JSON_VALUES = 1_000_000


def parse_json(body: bytes):
    """Bytes -> JSON object, refusing invalid UTF-8, NaN/Infinity, non-object bodies and bodies of more than
    `MAX_JSON_VALUES` values (checked before parsing)."""
    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")
    values = body.count(b",") + body.count(b"[") + body.count(b"{")
    if values > MAX_JSON_VALUES:
        raise bad_request(f"the request body holds about {values} JSON values, over the limit of {MAX_JSON_VALUES}",
                          code="request_too_large")
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8", code="invalid_json") from None
    except (ValueError, RecursionError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(obj).__name__}", code="invalid_json")
    return obj


def _type_error(param: str, want: str, got) -> Exception:
    return bad_request(f"{param} must be {want}, got {_json_type(got)}", param, "invalid_type")


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _number(body: dict, key: str, lo: float, hi: float, default):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _type_error(key, "a number", v)
    if not lo <= v <= hi:
        raise bad_request(f"{key} must be between {lo} and {hi}, got {v}", key, "invalid_value")
    return float(v)


def _integer(body: dict, key: str, lo: int, hi: int, default):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error(key, "an integer", v)
    if not lo <= v <= hi:
        raise bad_request(f"{key} must be between {lo} and {hi}, got {v}", key, "invalid_value")
    return v


def _boolean(body: dict, key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _type_error(key, "a boolean", v)
    return v


def check_fields(body: dict) -> None:
    for key, v in body.items():
        if key in SUPPORTED or key in IGNORED:
            continue
        if key in UNSUPPORTED:
            if v is None:
                continue
            raise bad_request(f"{key} is not supported by this server", key, "unsupported_parameter")
        raise bad_request(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")


def parse_request(body: dict, defaults: Defaults | None = None, max_images: int = 8) -> ChatRequest:
    """A decoded JSON body -> ChatRequest, or APIError(400) naming the first problem found."""
    d = defaults or Defaults()
    check_fields(body)
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise _type_error("model", "a string", model)
    check_unicode(model, "model")
    messages, images = parse_messages(body.get("messages"), max_images)
    stream = _boolean(body, "stream", False)
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise bad_request("stream_options is only allowed when stream is true", "stream_options",
                              "invalid_value")
        if not isinstance(opts, dict):
            raise _type_error("stream_options", "an object", opts)
        extra = set(opts) - {"include_usage", "include_obfuscation"}
        if extra:
            raise bad_request(f"Unrecognized stream_options field: {sorted(extra)[0]}", "stream_options",
                              "unknown_parameter")
        include_usage = _boolean(opts, "include_usage", False)
    n = _integer(body, "n", 1, 128, 1)
    if n != 1:
        raise bad_request("only n=1 is supported", "n", "unsupported_value")
    if _boolean(body, "logprobs", False):
        raise bad_request("logprobs are not supported by this server", "logprobs", "unsupported_value")
    for key in ("frequency_penalty", "presence_penalty"):
        if _number(body, key, -2.0, 2.0, 0.0) != 0.0:
            raise bad_request(f"{key} is not supported by this server (only 0)", key, "unsupported_value")
    max_tokens = _integer(body, "max_tokens", 1, 10 ** 9, None)
    max_completion = _integer(body, "max_completion_tokens", 1, 10 ** 9, None)
    if max_completion is not None:
        max_tokens = max_completion
    return ChatRequest(
        model=model, messages=messages, images=images, stream=stream, include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=greedy_below(_number(body, "temperature", 0.0, 2.0, d.temperature)),
        top_p=_number(body, "top_p", 0.0, 1.0, d.top_p) or 1e-9,      # top_p 0 means "most likely only"
        top_k=_integer(body, "top_k", 0, 10 ** 6, 0),
        seed=_integer(body, "seed", -2 ** 63, 2 ** 64 - 1, None),
        stop=parse_stop(body.get("stop")))


def greedy_below(t: float, eps: float = 1e-4) -> float:
    """Temperatures near 0 mean greedy; dividing logits by 1e-40 would overflow to inf and NaN."""
    return 0.0 if t < eps else t


def parse_stop(v) -> list[str]:
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list):
        raise _type_error("stop", "a string or an array of strings", v)
    if len(items) > 4:
        raise bad_request("stop may hold at most 4 sequences", "stop", "invalid_value")
    for s in items:
        if not isinstance(s, str):
            raise _type_error("stop", "a string or an array of strings", s)
        if not s or len(s) > 256:
            raise bad_request("each stop sequence must be 1 to 256 characters", "stop", "invalid_value")
        check_unicode(s, "stop")
    return list(items)


def parse_messages(raw, max_images: int) -> tuple[list[dict], list[ImageRef]]:
    if raw is None:
        raise bad_request("you must provide a messages parameter", "messages", "missing_required_parameter")
    if not isinstance(raw, list):
        raise _type_error("messages", "an array", raw)
    if not raw:
        raise bad_request("messages must hold at least one message", "messages", "empty_messages")
    messages, images = [], []
    for i, m in enumerate(raw):
        messages.append(parse_message(m, f"messages[{i}]", images))
        if len(images) > max_images:
            raise bad_request(f"too many images: at most {max_images} per request (all messages together)",
                              "messages", "too_many_images")
    if not any(m["role"] == "user" for m in messages):
        raise bad_request("messages must contain at least one user message", "messages", "invalid_value")
    return messages, images


def parse_message(m, p: str, images: list[ImageRef]) -> dict:
    if not isinstance(m, dict):
        raise _type_error(p, "an object", m)
    role = m.get("role")
    if not isinstance(role, str):
        raise _type_error(f"{p}.role", "a string", role)
    role = ROLE_ALIASES.get(role, role)
    if role in ("tool", "function"):
        raise bad_request(f"{p}.role {role!r} is not supported (this server has no tools)", f"{p}.role",
                          "unsupported_value")
    if role not in ROLES:
        raise bad_request(f"{p}.role must be one of system, developer, user, assistant; got {role!r}",
                          f"{p}.role", "invalid_value")
    allowed = {"role", "content", "name"} | ({"refusal", "tool_calls", "function_call", "audio"}
                                             if role == "assistant" else set())
    for key, v in m.items():
        if key not in allowed:
            raise bad_request(f"Unrecognized field {p}.{key}", f"{p}.{key}", "unknown_parameter")
        if key in ("tool_calls", "function_call", "audio") and v is not None:
            raise bad_request(f"{p}.{key} is not supported (this server has no tools)", f"{p}.{key}",
                              "unsupported_value")
    if "name" in m and m["name"] is not None and not isinstance(m["name"], str):
        raise _type_error(f"{p}.name", "a string", m["name"])
    content = parse_content(m.get("content"), f"{p}.content", role, images)
    return {"role": role, "content": content}


def parse_content(c, p: str, role: str, images: list[ImageRef]) -> str:
    if c is None:
        raise bad_request(f"{p} is required", p, "missing_required_parameter")
    if isinstance(c, str):
        return check_text(c, p)
    if not isinstance(c, list):
        raise _type_error(p, "a string or an array of content parts", c)
    out = []
    for j, part in enumerate(c):
        q = f"{p}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(q, "an object", part)
        kind = part.get("type")
        if kind == "text":
            _only(part, {"type", "text"}, q)
            if not isinstance(part.get("text"), str):
                raise _type_error(f"{q}.text", "a string", part.get("text"))
            out.append(check_text(part["text"], f"{q}.text"))
        elif kind == "image_url":
            _only(part, {"type", "image_url"}, q)
            if role != "user":
                raise bad_request(f"images are only accepted in user messages ({p} is {role})", q, "invalid_value")
            images.append(ImageRef(image_url_of(part.get("image_url"), q), f"{q}.image_url.url"))
            out.append(IMAGE_MARKER + "\n")
        elif isinstance(kind, str):
            raise bad_request(f"{q}.type {kind!r} is not supported (use 'text' or 'image_url')", f"{q}.type",
                              "unsupported_value")
        else:
            raise _type_error(f"{q}.type", "a string", kind)
    return "".join(out)


def _only(part: dict, keys: set, q: str) -> None:
    extra = sorted(set(part) - keys)
    if extra:
        raise bad_request(f"Unrecognized field {q}.{extra[0]}", f"{q}.{extra[0]}", "unknown_parameter")


def image_url_of(v, q: str) -> str:
    """`{"url": "...", "detail": "auto"}` (or the bare string some clients send) -> the URL."""
    if isinstance(v, str):
        return v
    if not isinstance(v, dict):
        raise _type_error(f"{q}.image_url", "an object with a url", v)
    _only(v, {"url", "detail"}, f"{q}.image_url")
    if v.get("detail") not in (None, "auto", "low", "high"):
        raise bad_request(f"{q}.image_url.detail must be auto, low or high", f"{q}.image_url.detail",
                          "invalid_value")
    url = v.get("url")
    if not isinstance(url, str):
        raise _type_error(f"{q}.image_url.url", "a string", url)
    return url


def check_text(text: str, p: str) -> str:
    check_unicode(text, p)
    for token in (IMAGE_MARKER, IMAGE_PAD):
        if token in text:
            raise bad_request(f"{p} contains the reserved text {token!r}; send pictures as image_url parts",
                              p, "invalid_value")
    return text


def check_unicode(text: str, p: str) -> str:
    """JSON may carry lone surrogates (\\ud800) that are not Unicode text: refuse them here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{p} is not valid Unicode text (a lone surrogate)", p, "invalid_value") from None
    return text


# ---------------------------------------------------------------- responses

def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, created: int, model: str, text: str, finish: str, use: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": use}


def chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(cid: str, created: int, model: str, use: dict) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": use}


def now() -> int:
    return int(time.time())
