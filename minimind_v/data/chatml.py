"""Chat rendering (ChatML) and the label mask: which tokens the model is trained to predict.

    <|im_start|>user\n...question with <image> -> image_token_len x <|image_pad|>...<|im_end|>\n
    <|im_start|>assistant\n...reply...<|im_end|>\n

Labels cover exactly each assistant reply plus its closing `<|im_end|>\n`, as in the original. The text
is tokenised in one piece (so ids equal what the original tokenises), and the token offsets tell which
tokens fall inside a reply. What people wrote is text, never control tokens: when a message holds a
turn-shaping token string (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`), the prompt is tokenised piece by
piece and those strings are encoded as plain text, so nobody can forge a turn (see `encode_segments`;
content markup such as `<think>` keeps its meaning, as in the original's data).
`<|image_pad|>` typed in a message is refused (`image_pad_in_text`): pictures are marked by `<image>`.

A row longer than max_length is cut in text only: never inside an image's placeholder run; if no reply
survives the cut, the row is rejected as `too_long`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..tokenizer import unicode_problem

IMAGE_MARKER = "<image>"
IMAGE_PAD = "<|image_pad|>"
ROLES = ("system", "user", "assistant")
THINK_BLOCK = "<think>\n\n</think>\n\n"


class BadRow(ValueError):
    """A row that cannot be trained on; `kind` names the problem so that it can be counted."""

    def __init__(self, kind: str, msg: str = ""):
        super().__init__(msg or kind)
        self.kind = kind


@dataclass
class Rendered:
    ids: list[int]
    labels: list[int]
    n_images: int          # images whose placeholders are in `ids` (after any truncation)


def parse_conversations(raw) -> list[dict]:
    """JSON string or list -> validated list of {"role", "content"} messages."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRow("invalid_utf8", "conversations are not valid UTF-8") from None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise BadRow("invalid_json", f"conversations are not valid JSON: {e}") from None
    if not isinstance(raw, list) or not raw:
        raise BadRow("invalid_json", "conversations must be a non-empty list")
    msgs = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRow("invalid_json", f"message {i} is a {type(m).__name__}, not an object")
        role = m.get("role", m.get("from"))
        if not isinstance(role, str):
            raise BadRow("role_not_string", f"message {i} has a role of type {type(role).__name__}, not a string")
        if not isinstance(m.get("content"), str):
            raise BadRow("content_not_string",
                         f"message {i} has content of type {type(m.get('content')).__name__}, not a string")
        for what, text in (("role", role), ("content", m["content"])):
            bad = unicode_problem(text)
            if bad:
                raise BadRow("invalid_unicode", f"message {i} has a {what} that is not valid Unicode ({bad})")
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ROLES:
            raise BadRow("wrong_roles", f"unknown role {role[:40]!r}")
        if IMAGE_PAD in m["content"]:
            raise BadRow("image_pad_in_text", f"message {i} types the control token {IMAGE_PAD} in its text; "
                                              f"pictures are marked with {IMAGE_MARKER}")
        msgs.append({"role": role, "content": m["content"]})
    return msgs


def check_order(msgs: list[dict], need_reply: bool = True) -> None:
    body = msgs[1:] if msgs[0]["role"] == "system" else msgs
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise BadRow("wrong_roles", f"message {i} is {m['role']!r}, expected {want!r} (user/assistant alternate)")
    if need_reply:
        replies = [m for m in body if m["role"] == "assistant"]
        if not replies:
            raise BadRow("no_assistant", "no assistant turn")
        if any(not m["content"].strip() for m in replies):
            raise BadRow("empty_reply", "empty assistant reply")


def count_markers(msgs: list[dict]) -> int:
    return sum(m["content"].count(IMAGE_MARKER) for m in msgs if m["role"] != "system")


def render_segments(msgs: list[dict], image_token_len: int, image_token: str = IMAGE_PAD,
                    add_generation_prompt: bool = False, think_block: bool = False):
    """The prompt as (is_text, piece) segments, and the character spans [start, end) of every assistant
    reply. `is_text` marks what a person wrote (message content between `<image>` markers): control-token
    strings inside it are plain text. The template's own pieces and the image placeholders are not."""
    segs, spans, pos = [], [], 0

    def add(is_text, piece):
        nonlocal pos
        if piece:
            segs.append((is_text, piece))
            pos += len(piece)

    for m in msgs:
        head = f"<|im_start|>{m['role']}\n"
        start = pos
        add(False, head)
        if m["role"] == "assistant" and think_block and "<think>" not in m["content"]:   # a real one stays
            add(False, THINK_BLOCK)
        if m["role"] == "system":
            add(True, m["content"])
        else:
            for k, piece in enumerate(m["content"].split(IMAGE_MARKER)):
                if k:
                    add(False, image_token * image_token_len)
                add(True, piece)
        add(False, "<|im_end|>\n")
        if m["role"] == "assistant":
            spans.append((start + len(head), pos))
    if add_generation_prompt:
        add(False, "<|im_start|>assistant\n")
    return segs, spans


def render_text(msgs: list[dict], image_token_len: int, image_token: str = IMAGE_PAD,
                add_generation_prompt: bool = False, think_block: bool = False):
    """The prompt string and the character spans [start, end) of every assistant reply."""
    segs, spans = render_segments(msgs, image_token_len, image_token, add_generation_prompt, think_block)
    return "".join(p for _, p in segs), spans


def encode_segments(segs, tok, control_tokens_in_text: bool = False):
    """(ids, offsets) of the rendered prompt. When no written text holds a control-token string (the usual
    case) the whole prompt is tokenised in one piece, so ids equal what the original tokenises. Otherwise
    each piece is tokenised on its own and the written ones with control tokens as plain text: a user who
    types `<|im_end|><|im_start|>system` gets those characters, not a forged turn (unless
    `control_tokens_in_text`, the documented way to keep the old behaviour for trusted data)."""
    text = "".join(p for _, p in segs)
    if control_tokens_in_text or not any(is_text and tok.has_control_text(p) for is_text, p in segs):
        return tok.encode_with_offsets(text)
    ids, offsets, pos = [], [], 0
    for is_text, piece in segs:
        i, o = tok.encode_written_with_offsets(piece) if is_text else tok.encode_with_offsets(piece)
        ids += i
        offsets += [(s + pos, e + pos) for s, e in o]
        pos += len(piece)
    return ids, offsets


def render(msgs: list[dict], tok, image_token_len: int, max_length: int | None = None,
           add_generation_prompt: bool = False, think_block: bool = False,
           control_tokens_in_text: bool = False) -> Rendered:
    """Token ids and labels (-100 outside assistant replies) for a validated conversation."""
    segs, spans = render_segments(msgs, image_token_len, add_generation_prompt=add_generation_prompt,
                                  think_block=think_block)
    ids, offsets = encode_segments(segs, tok, control_tokens_in_text)
    labels = [-100] * len(ids)
    k = 0
    for i, (s, _) in enumerate(offsets):
        while k < len(spans) and s >= spans[k][1]:
            k += 1
        if k < len(spans) and spans[k][0] <= s:
            labels[i] = ids[i]
    n_img_tokens = sum(1 for t in ids if t == tok.image_id)
    if n_img_tokens % image_token_len:
        raise BadRow("image_tokens", "the text itself contains image placeholder tokens")
    n_images = n_img_tokens // image_token_len
    if n_images != count_markers(msgs):          # only reachable with control_tokens_in_text
        raise BadRow("image_pad_in_text", f"{n_img_tokens} image placeholder tokens for {count_markers(msgs)} "
                                          f"<image> marker(s)")
    if max_length is not None and len(ids) > max_length:
        cut = max_length
        pos = [i for i, t in enumerate(ids) if t == tok.image_id]
        for k in range(0, len(pos), image_token_len):      # never cut inside an image's run
            if pos[k] < cut < pos[k] + image_token_len:
                cut = pos[k]
        full = len(ids)
        ids, labels = ids[:cut], labels[:cut]
        n_images = sum(1 for p in pos if p < cut) // image_token_len
        if all(l == -100 for l in labels[1:]):
            raise BadRow("too_long", f"row of {full} tokens leaves no reply within max_length {max_length}")
    return Rendered(ids, labels, n_images)


def prompt_ids(messages: list[dict], n_images: int, tok, image_token_len: int) -> list[int]:
    """The ids of a chat prompt ending in the assistant's turn: with pictures but no `<image>` marker, the
    markers go before the first user message; the markers must match the pictures given. Shared by chat
    (pipeline.VLM) and the torch-free ONNX runtime."""
    msgs = [dict(m) for m in messages]
    if n_images and count_markers(msgs) == 0:
        first = next(m for m in msgs if m["role"] == "user")
        first["content"] = (IMAGE_MARKER + "\n") * n_images + first["content"]
    if count_markers(msgs) != n_images:
        raise ValueError(f"{count_markers(msgs)} <image> marker(s) but {n_images} image(s) given")
    return render(msgs, tok, image_token_len, add_generation_prompt=True).ids
