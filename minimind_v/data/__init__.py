"""Data: chat rendering + label masks (chat.py), readers for parquet (parquet.py) and JSONL (text.py),
batching (collate.py), the synthetic shapes set (synth.py)."""
