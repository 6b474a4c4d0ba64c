"""Data: what training reads. Chat rendering + label masks (chat.py), readers for parquet (parquet.py)
and JSONL (text.py), batching (collate.py), picture augmentation (augment.py). The offline tools that
write or inspect data sets (converters, check, stats, preview, synth) are in ../datatools."""
