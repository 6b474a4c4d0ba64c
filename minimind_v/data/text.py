"""JSONL readers for the LLM stages.

llm-pretrain: `{"text": ...}` per line -> `<|im_start|>text<|im_end|>`, every token labelled.
llm-sft: `{"conversations": [...]}` per line -> the chat rendering of data/chatml.py (labels on replies).
Line offsets are indexed once, so rows are read on demand (a worker never loads the whole file).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..tokenizer import unicode_problem
from .chatml import BadRow, check_order, count_markers, parse_conversations, render
from .parquet import Sample, Skipped


class JsonlRows:
    def __init__(self, files):
        self.files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
        self.index = []
        for fi, f in enumerate(self.files):
            with open(f, "rb") as fh:
                pos = 0
                for line in fh:
                    if line.strip():
                        self.index.append((fi, pos))
                    pos += len(line)

    def __len__(self):
        return len(self.index)

    def raw(self, i: int) -> bytes:
        fi, pos = self.index[i]
        with open(self.files[fi], "rb") as fh:
            fh.seek(pos)
            return fh.readline()

    def __getitem__(self, i: int) -> dict:
        line = self.raw(i)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRow("invalid_utf8", "line is not valid UTF-8") from None
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise BadRow("invalid_json", str(e)[:200] or "nested too deeply") from None
        if not isinstance(obj, dict):
            raise BadRow("invalid_json", "line is not a JSON object")
        return obj


def validate_text_row(row: dict) -> list[dict] | None:
    """Check one JSONL row: None for a usable `{"text"}` row, the messages of a `{"conversations"}` row;
    raises `BadRow` naming the problem (empty text, bad conversation, an `<image>` marker)."""
    if "text" in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise BadRow("empty_text", "empty text")
        bad = unicode_problem(row["text"])
        if bad:
            raise BadRow("invalid_unicode", f"text that is not valid Unicode ({bad})")
        return None
    msgs = parse_conversations(row.get("conversations"))
    check_order(msgs)
    if count_markers(msgs):
        raise BadRow("marker_mismatch", "<image> marker in a text-only JSONL row")
    return msgs


class TextDataset(Dataset):
    """`{"text"}` rows for pretraining, or `{"conversations"}` rows for SFT (text only)."""

    def __init__(self, files, tokenizer, max_length: int, image_token_len: int = 64,
                 control_tokens_in_text: bool = False):
        self.rows = JsonlRows(files)
        self.tok, self.max_length, self.image_token_len = tokenizer, max_length, image_token_len
        self.control_tokens_in_text = control_tokens_in_text     # data/chatml.py encode_segments

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        try:
            row = self.rows[i]
            msgs = validate_text_row(row)
            if msgs is None:
                body = (self.tok.encode(row["text"]) if self.control_tokens_in_text
                        else self.tok.encode_written_with_offsets(row["text"])[0])  # written text is text
                ids = [self.tok.bos_id] + body + [self.tok.eos_id]
                ids = ids[: self.max_length]
                return Sample(torch.tensor(ids), torch.tensor(ids), None, i)
            r = render(msgs, self.tok, self.image_token_len, self.max_length,
                       control_tokens_in_text=self.control_tokens_in_text)
            return Sample(torch.tensor(r.ids), torch.tensor(r.labels), None, i)
        except BadRow as e:
            return Skipped(e.kind, i, str(e))
