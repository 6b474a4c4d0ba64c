"""Byte-level BPE tokenizer: training, loading, and the special tokens the chat format needs.

A tokenizer folder is the Hugging Face layout (`tokenizer.json` + `tokenizer_config.json` with a
ChatML chat template), so the original MiniMind tokenizer folder and ours load the same way, and
`transformers.AutoTokenizer` can read ours. At run time we use the fast `tokenizers` library directly:
offsets from it give exact label masks (see data/chatml.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer as _HFTokenizer

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>",
                  "</tool_call>", "<tool_response>", "</tool_response>", "<|object_ref_start|>",
                  "<|object_ref_end|>", "<|box_start|>", "<|image_pad|>"]   # <|image_pad|> = id 12, as the original

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def unicode_problem(text: str) -> str | None:
    """None for text that is valid Unicode, else what is wrong. A Python str can hold lone surrogates
    (JSON's "\\ud800", bytes decoded with surrogateescape) that no UTF-8 encoder and no tokenizer accept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate U+{ord(text[e.start]):04X} at character {e.start}"
    return None


class InvalidText(ValueError):
    """Text that is not valid Unicode (or not text at all) given to the tokenizer."""


def _encode(tok: _HFTokenizer, text):
    try:
        return tok.encode(text, add_special_tokens=False)
    except TypeError:       # the Rust side takes only valid str: say which text and why, in one line
        if not isinstance(text, str):
            raise InvalidText(f"expected text, got a {type(text).__name__}") from None
        raise InvalidText(f"the text is not valid Unicode: {unicode_problem(text)}") from None


class Tokenizer:
    """Thin wrapper over `tokenizers.Tokenizer` with the ids the model needs."""

    def __init__(self, tok: _HFTokenizer, path: str | None = None):
        self.tok = tok
        self.path = path
        self.pad_id = self._id("<|endoftext|>")
        self.bos_id = self._id("<|im_start|>")
        self.eos_id = self._id("<|im_end|>")
        self.image_id = self._id("<|image_pad|>")

    def _id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer has no {token!r} token; minimind-v needs it")
        return i

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        f = folder / "tokenizer.json" if folder.is_dir() else folder
        if not f.exists():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        try:
            tok = _HFTokenizer.from_file(str(f))
        except Exception as e:  # noqa: BLE001 - the Rust side raises a bare Exception for a bad file
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ValueError(f"{f} is not a readable tokenizer.json: {first}") from None
        return cls(tok, str(folder))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return _encode(self.tok, text).ids

    def encode_with_offsets(self, text: str):
        e = _encode(self.tok, text)
        return e.ids, e.offsets

    @property
    def control_strings(self) -> tuple[str, ...]:
        """The strings of the tokens that shape a conversation: `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`
        and `<|image_pad|>`. Typed by a person they could open, close or pad turns, so in written text they
        are plain characters. Other added tokens (`<think>`, `<tool_call>`...) mark up content inside a turn;
        the original's data uses them in replies, so they keep their meaning."""
        if getattr(self, "_control", None) is None:
            ids = (self.bos_id, self.eos_id, self.pad_id, self.image_id)
            self._control = tuple(dict.fromkeys(self.tok.id_to_token(i) for i in ids))
        return self._control

    @property
    def max_token_chars(self) -> int:
        """The most characters one token can stand for (its byte length bounds them): n tokens never spell
        more than n * max_token_chars characters, so a longer text is too long without tokenising it."""
        if getattr(self, "_max_chars", None) is None:
            vocab = self.tok.get_vocab()
            self._max_chars = max(len(self.tok.decode([i], skip_special_tokens=False).encode("utf-8"))
                                  for i in vocab.values()) if vocab else 1
            self._max_chars = max(1, self._max_chars)
        return self._max_chars

    def has_control_text(self, text: str) -> bool:
        return "<" in text and any(c in text for c in self.control_strings)

    def encode_written_with_offsets(self, text: str):
        """(ids, offsets) of text a person wrote: the `control_strings` in it are encoded as characters,
        everything else exactly as `encode_with_offsets` does."""
        if not self.has_control_text(text):
            return self.encode_with_offsets(text)
        import re
        ids, offsets, pos = [], [], 0
        for part in re.split("(" + "|".join(map(re.escape, self.control_strings)) + ")", text):
            if part:
                i, o = (self.encode_text_with_offsets(part) if part in self.control_strings
                        else self.encode_with_offsets(part))
                ids += i
                offsets += [(s + pos, e + pos) for s, e in o]
                pos += len(part)
        return ids, offsets

    def encode_text_with_offsets(self, text: str):
        """Like `encode_with_offsets`, but control-token strings in `text` are plain characters (for text a
        person wrote). A second tokenizer object with `encode_special_tokens` set does it, so the shared
        one is never toggled (that would race between server threads)."""
        if getattr(self, "_as_text", None) is None:
            t = _HFTokenizer.from_str(self.tok.to_str())
            t.encode_special_tokens = True
            self._as_text = t
        e = _encode(self._as_text, text)
        return e.ids, e.offsets

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        src = Path(self.path) if self.path else None
        if src is not None and src.is_dir() and (src / "tokenizer_config.json").exists():
            if src.resolve() != folder.resolve():
                for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                    if (src / name).exists():
                        (folder / name).write_bytes((src / name).read_bytes())
            return
        self.tok.save(str(folder / "tokenizer.json"))
        write_tokenizer_config(folder)


def write_tokenizer_config(folder: Path) -> None:
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
        "model_max_length": 32768, "clean_up_tokenization_spaces": False,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>",)],
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


MIN_VOCAB = len(SPECIAL_TOKENS) + 256      # the special tokens + one token per byte: a vocabulary can't be smaller
MAX_VOCAB = 1_000_000                       # far beyond any recipe (6,400); an embedding table of sane size


def check_vocab_size(vocab_size: int) -> None:
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size {vocab_size}: must be {MIN_VOCAB}-{MAX_VOCAB:,} ({len(SPECIAL_TOKENS)} "
                         f"special tokens + 256 byte tokens is the smallest byte-level BPE)")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6400, out: str | Path | None = None,
                    show_progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE with the special tokens first (ids 0..12) and save it to `out`."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    check_vocab_size(vocab_size)
    tok = _HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer)
    t = Tokenizer(tok)
    if out is not None:
        t.save(out)
        t.path = str(out)
    return t
