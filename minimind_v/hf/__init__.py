"""Hugging Face export: a folder that plain `transformers` loads (`trust_remote_code=True`), and reading it back.

`configuration_minimind_v.py`, `modeling_minimind_v.py` and `image_processing_minimind_v.py` are the remote
code copied into every exported folder (they import only torch / transformers / PIL / numpy);
`export.py` writes and reads the folders; `fields.py` maps our config to the original's field names.
"""
from .export import export_hf, is_hf_folder, load_hf_model, read_hf_folder

__all__ = ["export_hf", "is_hf_folder", "load_hf_model", "read_hf_folder"]
