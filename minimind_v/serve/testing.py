"""Trying the server without a trained model: a tiny random model folder.

    folder = build_tiny_model(tmp_path / "tiny")             # tokenizer + random tiny VLM, seconds on a CPU

Used by the tests and by `benchmarks/serve_load.py --tiny`, so it stays in the package; the live test
server (`LiveServer`) is test code and lives in tests/helpers.py. The random model's decoder weights are drawn
with std 0.3 instead of the training init's 0.02, so that its greedy answer clearly depends on the prompt
and the picture (with 0.02 it repeats one token whatever it is shown), which makes "the server answers
exactly what the model answers" a test that can fail.
"""
from __future__ import annotations

from pathlib import Path

CORPUS = ["What colour is the circle? The circle is red.", "How many squares are there? There are two squares.",
          "Is the triangle on the left? Yes, the triangle is on the left.", "Describe the picture briefly.",
          "A blue square and a green circle on a white background."]


def build_tiny_model(out: str | Path, seed: int = 0, std: float = 0.3, vocab_size: int = 300) -> Path:
    """Write a model folder (tokenizer + random `tiny` preset) and return its path."""
    import torch

    from ..config import preset
    from ..formats.folder import save_model
    from ..model.vlm import MiniMindVLM
    from ..tokenizer import train_tokenizer
    out = Path(out)
    tok = train_tokenizer(CORPUS * 20, vocab_size=vocab_size, out=out, show_progress=False)
    torch.manual_seed(seed)
    model = MiniMindVLM(preset("tiny", vocab_size=tok.vocab_size, image_token_id=tok.image_id))
    model.reset_parameters(std=std)
    save_model(model, out, tok)
    return out
