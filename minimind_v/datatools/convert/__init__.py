"""Bring-your-own-data converters into the minimind-v parquet format, one module per input kind.

common.py: the shared machinery (records, validation as the trainer does it, image decoding, dedupe,
sharded atomic writing, the train/val split, the report); llava.py, captions.py, hf.py: the readers.
A new input format is one more reader that yields `Record`s and calls `run_conversion`.
"""
from .captions import convert_captions
from .common import CAPTION_PROMPTS, ConvertOptions, ConvertResult, output_schema, val_count
from .hf import convert_hf
from .llava import convert_llava

__all__ = ["CAPTION_PROMPTS", "ConvertOptions", "ConvertResult", "convert_captions", "convert_hf",
           "convert_llava", "output_schema", "val_count"]
