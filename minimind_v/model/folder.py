"""Old import path of the model-folder format, kept so existing code and scripts keep working.

The format lives in `minimind_v.formats.folder` (with the other checkpoint formats); this module only
re-exports it. New code imports from `minimind_v.formats`.
"""
from ..formats.folder import (FRESH_MARKER, WEIGHTS, CheckpointMismatch, absent_ok,  # noqa: F401
                              is_hf_config, load_model, projector_is_fresh, save_model, strict_load)
