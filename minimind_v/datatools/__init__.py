"""Offline data tools: converters (convert/), `data check`, stats, preview, the synthetic shapes set,
and the `minimind-v data ...` commands that run them.

They sit above data/ (what training reads) and import from it, never the other way round: the row
validator `data check` shares with the trainer stays in data/parquet.py and data/text.py, so a row
passes the check exactly when training would take it.
"""
