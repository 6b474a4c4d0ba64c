"""`minimind-v export --to web`: a static folder in which a web browser runs the model (being written)."""
from __future__ import annotations


def export_web(src, dst, dtype: str = "fp32", quantize: str | None = None, log=print):
    raise ValueError("--to web is not available in this version yet")
