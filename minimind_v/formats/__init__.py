"""Every checkpoint format, read and written: our model folder (`folder.py`), Hugging Face folders
(`hf_folder.py`, with the config field mapping in `fields.py`), the original MiniMind-V layout (`reference.py`,
both upstream generations: `generations.py`), one loader that tells them apart (`load.py`),
and the `convert` / `export` commands (`convert_export.py`); LoRA adapter folders (`adapter.py`).

This package sits above `minimind_v.model` and imports from it, never the other way round: the model is
the core, and how it is stored is a separate concern."""
