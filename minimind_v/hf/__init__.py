"""The remote code shipped inside every exported Hugging Face folder.

`configuration_minimind_v.py`, `modeling_minimind_v.py` and `image_processing_minimind_v.py` are copied into
each folder `minimind-v export --to hf` writes (they import only torch / transformers / PIL / numpy). The
code that writes and reads those folders is `minimind_v.formats.hf`; the names below are re-exported from
there lazily, so that importing a remote-code module never drags the format code (and its imports of this
package) in with it.
"""
_FROM_FORMATS = ("export_hf", "is_hf_folder", "load_hf_model", "read_hf_folder")

__all__ = list(_FROM_FORMATS)


def __getattr__(name):
    if name in _FROM_FORMATS:
        from ..formats import hf
        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
