"""Every text in data files of any of our formats, for training a tokenizer (`minimind-v tokenizer train`).

It lives with the data tools, not in tokenizer.py: reading parquet conversations needs data/, and data/
sits above the tokenizer (the tokenizer is imported by the model formats that data/ builds on), so a
tokenizer.py that read data files would close an import cycle. Unreadable lines and rows are skipped:
a tokenizer trained on the rest is what the user asked for.
"""
from __future__ import annotations

import json
from typing import Iterator

from ..data.chatml import parse_conversations


def iter_texts(files) -> Iterator[str]:
    """.txt (a line each), .jsonl/.json ({'text'} or {'conversations'} per line) or .parquet files."""
    for f in files:
        f = str(f)
        if f.endswith(".parquet"):
            from ..data.parquet import ParquetRows
            rows = ParquetRows(f, ["conversations"])
            for i in range(len(rows)):
                try:
                    for m in parse_conversations(rows[i]["conversations"]):
                        yield m["content"]
                except ValueError:
                    continue
        elif f.endswith((".jsonl", ".json")):
            for line in open(f, encoding="utf-8", errors="replace"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "text" in obj:
                    yield obj["text"]
                for m in obj.get("conversations") or []:
                    yield m.get("content", m.get("value", ""))
        else:
            yield from open(f, encoding="utf-8", errors="replace")
