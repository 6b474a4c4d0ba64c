"""The remote code shipped inside every exported Hugging Face folder.

`configuration_minimind_v.py`, `modeling_minimind_v.py`, `processing_minimind_v.py`,
`image_processing_minimind_v.py` and the picture code they share are copied as they are into each folder
`minimind-v export --to hf` writes. They import only torch / transformers / PIL / numpy and each other
(relative imports that work both here and inside an exported folder), so the package's own code may use
them, and they may use nothing of the package. The code that writes and reads those folders is
`minimind_v.formats.hf_folder`.
"""
