"""The Python API: load a model folder and talk to it about pictures.

    from minimind_v import VLM
    from minimind_v.image import open_image_file       # the guarded opener: size checked before decoding
    vlm = VLM.load("runs/demo/model")
    print(vlm.answer("What colour is the circle?", images=[open_image_file("x.png")]))
    for piece in vlm.stream([{"role": "user", "content": "<image>\\nDescribe it."}], images=[img]):
        print(piece, end="")

Messages use `<image>` markers like the training data; a prompt without a marker but with images gets
the markers prepended. The CLI's `chat`, `eval` and `serve` are thin layers over this class.

One door for pictures: `pixels` (hf/pixels.py, the same code the exported folder and the ONNX runtime run)
then `visual_tokens` (the encoder and projector, for every new picture in one call). `stream` (chat),
`answer_batch` (eval) and the server (which batches pixels from `pixels` in its engine) all enter there.
A conversation sends its pictures again with every turn; `visual_tokens` keeps the tokens of the last few
pictures (keyed by their pixels), so the encoder runs once per picture, not once per turn.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from .data.chatml import prompt_ids
from .formats.load import load_model
from .model.generate import SamplingParams, generate, generate_stream
from .hf.pixels import pixel_batch, to_rgb
from .model.visual_cache import VisualTokenCache
from .textstream import TextStream
from .tokenizer import Tokenizer


class VLM:
    VISUAL_CACHE = 16      # pictures whose visual tokens are kept between turns

    def __init__(self, model, tokenizer: Tokenizer, name: str = "minimind-v"):
        self.model, self.tok, self.name = model, tokenizer, name
        self._visual = VisualTokenCache(self.VISUAL_CACHE)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "VLM":
        """A model folder, or a Hub id of one (`owner/name[@rev]`, downloaded once into the cache: hub.py)."""
        from .hub import parse, resolve
        ref = None if Path(folder).exists() else parse(str(folder))
        folder = resolve(folder, "model")
        return cls(load_model(folder, device, dtype), Tokenizer.load(folder), ref.repo_id if ref else folder.name)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def params(self, **kw) -> SamplingParams:
        p = SamplingParams(**kw)
        p.stop_ids = (self.tok.eos_id,)
        return p

    def prompt_ids(self, messages: list[dict], n_images: int) -> list[int]:
        return prompt_ids(messages, n_images, self.tok, self.model.cfg.image_token_len)

    def pixels(self, images: list[Image.Image] | None):
        if not images:
            return None
        return torch.from_numpy(pixel_batch(images, self.model.cfg.vision)).to(self.device)

    def visual_tokens(self, images: list[Image.Image] | None) -> torch.Tensor | None:
        """(n_images, image_token_len, hidden) for the pictures, encoding only those not seen lately."""
        if not images:
            return None
        rgb = [to_rgb(im) for im in images]
        keys = [hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest() for im in rgb]

        def encode(idx):                          # every new picture in one encoder call
            with torch.no_grad():
                return self.model.encode_images(self.pixels([rgb[i] for i in idx]))
        return self._visual.get(keys, encode)

    def stream(self, messages: list[dict], images: list[Image.Image] | None = None, **sampling) -> Iterator[str]:
        """Yield text pieces as they are generated (whole UTF-8 characters only)."""
        ids = self.prompt_ids(messages, len(images or []))
        params = self.params(**sampling)
        text = TextStream(self.tok)
        for nxt in generate_stream(self.model, [ids], params, visual_tokens=self.visual_tokens(images)):
            v = int(nxt[0])
            if v < 0 or v == self.tok.eos_id:
                break
            piece = text.push(v)
            if piece:
                yield piece
        rest = text.finish()
        if rest:
            yield rest

    def answer(self, prompt: str, images: list[Image.Image] | None = None, **sampling) -> str:
        return "".join(self.stream([{"role": "user", "content": prompt}], images, **sampling))

    def answer_batch(self, conversations: list[list[dict]], images: list[list[Image.Image]],
                     **sampling) -> list[str]:
        """Greedy/sampled replies for many prompts at once (batched decoding)."""
        prompts = [self.prompt_ids(c, len(im)) for c, im in zip(conversations, images)]
        flat = [im for ims in images for im in ims]
        outs = generate(self.model, prompts, self.params(**sampling), visual_tokens=self.visual_tokens(flat))
        return [self.tok.decode(o) for o in outs]
