"""Old import path of the model-folder format, kept so existing code and scripts keep working.

The format lives in `minimind_v.formats.folder`, and `load_model` (any folder or checkpoint) in
`minimind_v.formats.load`; this module only re-exports them. New code imports from `minimind_v.formats`.
It is the one module under `model/` that names `formats` (tests/test_layout.py allows exactly it).
"""
from ..formats.folder import (FRESH_MARKER, WEIGHTS, CheckpointMismatch, absent_ok,  # noqa: F401
                              projector_is_fresh, save_model, strict_load)
from ..formats.hf import is_hf_config  # noqa: F401
from ..formats.load import load_model  # noqa: F401
