"""Chat rendering (ChatML) and the label mask: which tokens the model is trained to predict.

    <|im_start|>user\n...question with <image> -> image_token_len x <|image_pad|>...<|im_end|>\n
    <|im_start|>assistant\n...reply...<|im_end|>\n

Labels cover exactly each assistant reply plus its closing `<|im_end|>\n`, as in the original. The text
is tokenised in one piece (so ids equal what the original tokenises), and the token offsets tell which
tokens fall inside a reply. A row longer than max_length is cut in text only: never inside an image's
placeholder run; if no reply survives the cut, the row is rejected as `too_long`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

IMAGE_MARKER = "<image>"
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
        except json.JSONDecodeError as e:
            raise BadRow("invalid_json", f"conversations are not valid JSON: {e}") from None
    if not isinstance(raw, list) or not raw:
        raise BadRow("invalid_json", "conversations must be a non-empty list")
    msgs = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise BadRow("wrong_roles", "each message needs a string 'content'")
        role = m.get("role", m.get("from"))
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ROLES:
            raise BadRow("wrong_roles", f"unknown role {role!r}")
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


def render_text(msgs: list[dict], image_token_len: int, image_token: str = "<|image_pad|>",
                add_generation_prompt: bool = False, think_block: bool = False):
    """The prompt string and the character spans [start, end) of every assistant reply."""
    parts, spans, pos = [], [], 0
    for m in msgs:
        content = m["content"]
        if m["role"] != "system":
            content = content.replace(IMAGE_MARKER, image_token * image_token_len)
        head = f"<|im_start|>{m['role']}\n"
        if m["role"] == "assistant" and think_block and "<think>" not in content:   # a real one stays as it is
            content = THINK_BLOCK + content
        piece = head + content + "<|im_end|>\n"
        if m["role"] == "assistant":
            spans.append((pos + len(head), pos + len(piece)))
        parts.append(piece)
        pos += len(piece)
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts), spans


def render(msgs: list[dict], tok, image_token_len: int, max_length: int | None = None,
           add_generation_prompt: bool = False, think_block: bool = False) -> Rendered:
    """Token ids and labels (-100 outside assistant replies) for a validated conversation."""
    text, spans = render_text(msgs, image_token_len, add_generation_prompt=add_generation_prompt,
                              think_block=think_block)
    ids, offsets = tok.encode_with_offsets(text)
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
