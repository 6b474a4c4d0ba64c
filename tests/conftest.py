"""Shared test fixtures: a tiny tokenizer, tiny synthetic data, tiny model folders (all built here).

The parity fixtures made by the original code live in tests/fixtures/ (see its README: provenance, checksums), so
every test runs in a plain clone. The emoji data set is built by the tests (`emoji_data`) with `minimind-v data
emoji` from the committed sample of its npm packages (tests/fixtures/emoji/).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)   # tiny models: one thread is faster, and immune to a busy machine

ROOT = Path(__file__).resolve().parents[1]


# The original's fixtures (both generations), and the small SigLIP2 shape the tests build their encoders with.
FIXTURES = ROOT / "tests" / "fixtures"
REF = FIXTURES / "reference"
REF_0420 = FIXTURES / "reference_0420"
TINY_SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=4,
                   num_patches=256, vision_use_head=False)


@pytest.fixture(scope="session")
def emoji_data(tmp_path_factory) -> Path:
    """A folder with emoji_train.parquet (139 rows) and emoji_val.parquet (69 rows, all ten tasks), built by
    `minimind-v data emoji` from tests/fixtures/emoji/packages: real pictures and wording, no npm, no network."""
    from minimind_v.datatools.emoji_data import build
    from minimind_v.datatools.emoji_npm import check_packages
    out = tmp_path_factory.mktemp("emoji") / "data"
    build(check_packages(FIXTURES / "emoji" / "packages"), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from minimind_v.datatools import synth
    from minimind_v.tokenizer import train_tokenizer
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(synth.corpus(300, 0), vocab_size=400, out=out, show_progress=False)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    from minimind_v.datatools import synth
    out = tmp_path_factory.mktemp("synth")
    return synth.generate(out, n=64, seed=0, image_size=32, turns=2)


def make_tiny_model(tok, seed: int = 0, **overrides):
    from minimind_v.config import preset
    from minimind_v.model.vlm import MiniMindVLM
    torch.manual_seed(seed)
    cfg = preset("tiny", vocab_size=tok.vocab_size, image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                 bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, **overrides)
    return MiniMindVLM(cfg).eval()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    from minimind_v.formats.folder import save_model
    out = tmp_path_factory.mktemp("model")
    save_model(make_tiny_model(tiny_tokenizer), out, tiny_tokenizer)
    return out
