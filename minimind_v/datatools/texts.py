"""Every text in data files of any of our formats, for training a tokenizer (`minimind-v tokenizer train`).

It lives with the data tools, not in tokenizer.py: reading parquet conversations needs data/, and data/
sits above the tokenizer (the tokenizer is imported by the model formats that data/ builds on), so a
tokenizer.py that read data files would close an import cycle. Unreadable lines and rows are skipped and
counted (`TextStats`): a tokenizer trained on the rest is what the user asked for.

Memory stays bounded whatever the files hold: a .txt line is read at most MAX_PIECE characters at a time
(a 100 MB line becomes pieces, never one string the BPE trainer has to split), a JSONL line longer than
MAX_JSON_LINE is skipped without being read whole, and a long text from JSON or parquet is cut into pieces
of MAX_PIECE characters (at a space where there is one near the cut). Text that is not valid Unicode (a
lone surrogate from JSON's "\\ud800", bytes that are not UTF-8) is skipped and counted.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Iterator

from ..data.chatml import parse_conversations
from ..tokenizer import unicode_problem

MAX_PIECE = 10_000               # characters the BPE trainer sees at once (its pre-tokenizer splits further)
MAX_JSON_LINE = 64 * 1024 * 1024  # bytes of one JSONL line that is parsed


class TextStats(Counter):
    """Counts of what was read: `texts`, `chars`, and skipped kinds (invalid_utf8, invalid_unicode, ...)."""

    def skipped(self) -> dict:
        return {k: v for k, v in self.items() if k not in ("texts", "chars", "pieces")}


def pieces(text: str, size: int = MAX_PIECE) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, cut after a space when one is in the last tenth."""
    while len(text) > size:
        cut = text.rfind(" ", size - size // 10, size)
        cut = size if cut < 0 else cut + 1
        yield text[:cut]
        text = text[cut:]
    if text:
        yield text


def _text(value, stats: TextStats) -> Iterator[str]:
    if not isinstance(value, str):
        stats["not_text"] += 1
        return
    if unicode_problem(value):
        stats["invalid_unicode"] += 1
        return
    stats["texts"] += 1
    stats["chars"] += len(value)
    yield from pieces(value)


def _lines(path: str, limit: int) -> Iterator[tuple[bytes, bool]]:
    """(line bytes, complete) pieces of at most `limit` bytes: an over-long line comes as several pieces."""
    with open(path, "rb") as fh:
        while True:
            b = fh.readline(limit)
            if not b:
                return
            yield b, b.endswith(b"\n") or len(b) < limit


def _decode(b: bytes, stats: TextStats) -> str | None:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        stats["invalid_utf8"] += 1
        return None


def iter_texts(files, stats: TextStats | None = None) -> Iterator[str]:
    """.txt (a line each), .jsonl/.json ({'text'} or {'conversations'} per line) or .parquet files, as
    pieces of at most MAX_PIECE characters; what is skipped is counted in `stats`."""
    stats = stats if stats is not None else TextStats()
    for f in files:
        f = str(f)
        if f.endswith(".parquet"):
            from ..data.parquet import ParquetRows
            rows = ParquetRows(f, ["conversations"])
            for i in range(len(rows)):
                try:
                    msgs = parse_conversations(rows[i]["conversations"])
                except ValueError as e:
                    stats[getattr(e, "kind", "bad_row")] += 1
                    continue
                for m in msgs:
                    yield from _text(m["content"], stats)
        elif f.endswith((".jsonl", ".json")):
            long_line = False
            for b, complete in _lines(f, MAX_JSON_LINE):
                if long_line or not complete:          # a line over MAX_JSON_LINE: skipped, never read whole
                    if not long_line:
                        stats["line_too_long"] += 1
                    long_line = not complete
                    continue
                line = _decode(b, stats)
                if line is None or not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    stats["invalid_json"] += 1
                    continue
                if not isinstance(obj, dict):
                    stats["invalid_json"] += 1
                    continue
                if "text" in obj:
                    yield from _text(obj["text"], stats)
                convs = obj.get("conversations")
                for m in convs if isinstance(convs, list) else []:
                    if isinstance(m, dict):
                        yield from _text(m.get("content", m.get("value", "")), stats)
        else:                   # bytes that are not UTF-8 become lone surrogates: counted as invalid_unicode
            with open(f, encoding="utf-8", errors="surrogateescape") as fh:
                while True:
                    text = fh.readline(MAX_PIECE)          # at most MAX_PIECE characters in memory at once
                    if not text:
                        break
                    yield from _text(text, stats)
