"""Old import path of the Hugging Face format (`minimind_v.hf.export`), kept so existing code keeps working.

The reading and writing code lives in `minimind_v.formats.hf`; this package only re-exports it. It is a
package rather than `hf/export.py` so that version control sees `hf/export.py -> formats/hf.py` as a move.
"""
from ...formats.hf import (AUTO_MAP, CODE_FILES, HF_ENC, OURS_ENC, HFFolder,  # noqa: F401
                           export_hf, hf_config, hf_state_dict, is_hf_config, is_hf_folder,
                           load_hf_model, model_card, read_hf_folder, read_weights, read_weights_file)
