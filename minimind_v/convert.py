"""Old import path of `convert` / `export` (original checkpoints and layouts); the code lives in
`minimind_v.formats.reference` now, next to the other checkpoint formats. Kept so `minimind_v.convert`
imports keep working."""
from .formats.reference import (CHECKPOINT_SUFFIXES, WRAPPER_PREFIXES, convert, convert_checkpoint,  # noqa: F401
                                convert_hf_folder, convert_weights, describe, encoder_vision, export,
                                load_encoder_tensors, parameter_counts, reattach_encoder, read_state_dict,
                                readable, resolve_config, staged_folder, to_reference, write_folder)
