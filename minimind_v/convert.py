"""Old import path of `convert` / `export`; the code lives in `minimind_v.formats` now (`commands.py` for the
two commands, `reference.py` for the original's layout), next to the other checkpoint formats. Kept so
`minimind_v.convert` imports keep working."""
from .formats.commands import (convert, convert_checkpoint, convert_hf_folder, convert_weights,  # noqa: F401
                               describe, export, parameter_counts, reattach_encoder, staged_folder, to_reference,
                               write_folder)
from .formats.reference import (CHECKPOINT_SUFFIXES, WRAPPER_PREFIXES, encoder_vision,  # noqa: F401
                                load_encoder_tensors, read_state_dict, readable, resolve_config)
