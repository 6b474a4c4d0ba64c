"""Bounded numeric flags: an argparse `type` that refuses a value outside its range before any work starts.

    p.add_argument("--max-new-tokens", type=bounded(int, 1, 32768), default=256)

A value outside [lo, hi], a float that is not finite (nan, inf), or text that is not a number is refused by
argparse itself: exit 2 and one line naming the flag and the bound ("argument --thumb: 100000: must be
between 16 and 1024"). Every numeric flag of the command line goes through it (the training settings
carry their bounds in train/config.py's field metadata instead), so no setting can ask for a runaway
allocation: a KV cache sized by --max-new-tokens, a picture sized by --image-size, a NaN temperature.
Standard library only, so any layer may use it.
"""
from __future__ import annotations

import argparse
import math

BIG = 2 ** 31 - 1               # "any count a person would type"
SEED = 2 ** 63 - 1              # torch.manual_seed and numpy take seeds below 2**64


def bounded(kind: type, lo, hi):
    """An argparse type: `kind` (int or float) in [lo, hi], finite."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text}: must be between {lo:,} and {hi:,}")
        return value

    parse.__name__ = kind.__name__          # argparse names the type in its messages
    return parse
