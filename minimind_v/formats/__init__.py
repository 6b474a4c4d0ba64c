"""Checkpoint formats of the original MiniMind-V: which generation a file belongs to (`generations.py`)."""
