"""Processor of an exported MiniMind-V folder (remote code: `AutoProcessor`, `trust_remote_code=True`).

Copied verbatim into every folder written by `minimind-v export --to hf`; imports transformers and pixels.py.
It holds the tokenizer, the image processor and the chat template, so that the folder answers to the
usual five lines of a transformers vision-language model:

    processor = AutoProcessor.from_pretrained(DIR, trust_remote_code=True)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=64)

Why it is built so:
- The chat template renders ChatML exactly as `minimind_v.data.chatml.render_text` does (the text the
  model was trained on), and writes `<image>` where a message holds a picture, then a newline: a
  user turn [picture, question] becomes "<image>\\nquestion", the prompt `minimind-v chat` builds.
- `__call__` then turns every `<image>` into `image_seq_length` x `<|image_pad|>` (64 in the recipe) and
  checks that the pictures and the markers agree, so the model's splice (by position count, in order)
  gets one run of placeholders per picture. The image processor makes a fixed square grid, so every
  picture gets the same count; the count is the folder's `image_seq_length`, not guessed from pixels.
- Several texts are padded on the left (generation continues every row at its end); the model counts
  positions over real tokens only, so a padded row answers as it does alone.
- A text with pictures but no `<image>` marker gets one marker per picture in front, as `VLM.answer`
  does; a text-only conversation needs no pictures and returns no `pixel_values`.
- A picture given as a path, a URL (http(s), file:, data:) or base64 (a chat message's {"type": "image",
  "path" | "url" | "base64": ...}) is opened by pixels.open_picture as it is stored, mode and all, and
  handed to the image processor like a PIL image: transparency onto white, 16-bit greys scaled, the same pixels as the PIL
  image and as `minimind-v chat` (transformers' `load_image` converts to RGB first, which turns a
  transparent background black and clips 16-bit greys to white).
- What a person typed is text: a turn-shaping token string (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`,
  `<|image_pad|>`) inside a message's text is encoded as plain characters, as native chat and the server
  do, so nobody forges a turn; the template's own tokens stay control tokens.
- A keyword argument it does not use (`do_sample=False` from a pipeline, say) is warned about once and
  ignored, as transformers' own processors do.
"""
from __future__ import annotations

import re

import transformers
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .pixels import open_picture

logger = logging.get_logger(__name__)

IMAGE_MARKER = "<image>"
# the token strings that shape a conversation: typed by a person, they are text (see the docstring)
CONTROL_STRINGS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|image_pad|>")
_OPEN, _CLOSE = "\U000F0000", "\U000F0001"      # private-use marks around a typed control string
_TYPED = re.compile(_OPEN + r"(\d)" + _CLOSE)

# ChatML; content is a string (which may hold <image> markers) or a list of {"type": "image" | "text"} items
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _flat_images(images) -> list:
    """None, one picture, a list of pictures, or one list per text -> one flat list, in order."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    flat = []
    for im in images:
        if isinstance(im, (list, tuple)):
            flat.extend(im)
        elif im is not None:
            flat.append(im)
    # a local path, URL or base64 (as a chat message's {"type": "image", "path": ...} hands it over): opened here
    return [open_picture(im) if isinstance(im, str) else im for im in flat]


def _escape_text(text):
    """Typed control strings -> private-use marks (undone by `__call__`, which encodes them as text)."""
    if not isinstance(text, str) or "<|" not in text:
        return text
    for k, c in enumerate(CONTROL_STRINGS):
        text = text.replace(c, f"{_OPEN}{k}{_CLOSE}")
    return text


def _unescape_text(text: str) -> str:
    return _TYPED.sub(lambda m: CONTROL_STRINGS[int(m[1])], text) if _OPEN in text else text


def _escape_conversation(conv):
    """A copy of one conversation (list of messages) or a batch of them with every typed text escaped."""
    if isinstance(conv, (list, tuple)) and conv and isinstance(conv[0], (list, tuple)):
        return [_escape_conversation(c) for c in conv]
    out = []
    for m in conv:
        if not isinstance(m, dict):
            out.append(m)
            continue
        m = dict(m)
        c = m.get("content")
        if isinstance(c, str):
            m["content"] = _escape_text(c)
        elif isinstance(c, (list, tuple)):
            m["content"] = [dict(item, text=_escape_text(item["text"]))
                            if isinstance(item, dict) and isinstance(item.get("text"), str) else item
                            for item in c]
        out.append(m)
    return out


class MiniMindVProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]
    if int(transformers.__version__.split(".")[0]) < 5:   # 4.x loads the parts by these names; 5.x by the folder
        image_processor_class = "AutoImageProcessor"       # (and warns that naming them is deprecated)
        tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_seq_length: int = 64,
                 image_token: str = "<|image_pad|>", **kwargs):
        self.image_seq_length = int(image_seq_length)
        self.image_token = image_token
        self._warned = set()           # unknown keyword arguments already warned about
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    def expand(self, texts: list[str], n_images: int) -> list[str]:
        """`<image>` -> image_seq_length x image_token, after checking markers against pictures."""
        markers = sum(t.count(IMAGE_MARKER) for t in texts)
        if markers == 0 and n_images and len(texts) == 1:
            texts = [(IMAGE_MARKER + "\n") * n_images + texts[0]]
            markers = n_images
        if markers != n_images:
            raise ValueError(f"{markers} {IMAGE_MARKER} marker(s) in the text but {n_images} picture(s) given; "
                             f"each picture needs one marker (the chat template writes them)")
        pads = self.image_token * self.image_seq_length
        return [t.replace(IMAGE_MARKER, pads) for t in texts]

    def __call__(self, images=None, text=None, return_tensors=None, padding=True, padding_side="left",
                 **kwargs) -> BatchFeature:
        if text is None:
            raise ValueError("give text (a prompt, or a conversation through apply_chat_template)")
        texts = [text] if isinstance(text, str) else list(text)
        flat = _flat_images(images)
        per_text = (isinstance(images, (list, tuple)) and len(images) == len(texts) > 1
                    and all(isinstance(im, (list, tuple)) or im is None for im in images))
        if per_text:          # one list of pictures per text (what apply_chat_template hands over): check each
            for i, (t, ims) in enumerate(zip(texts, images)):
                if t.count(IMAGE_MARKER) != len(ims or []):
                    raise ValueError(f"text {i} has {t.count(IMAGE_MARKER)} {IMAGE_MARKER} marker(s) but "
                                     f"{len(ims or [])} picture(s)")
        texts = self.expand(texts, len(flat))
        kwargs.pop("add_special_tokens", None)     # the template writes every special token itself
        if kwargs.pop("truncation", None):
            raise ValueError("truncation could cut a picture's placeholder run; shorten the conversation instead")
        tok_kw = {k: kwargs.pop(k) for k in ("max_length", "return_attention_mask") if k in kwargs}
        unknown = sorted(k for k, v in kwargs.items() if v is not None)     # (videos=None, audio=None: fine)
        for k in unknown:
            if k not in self._warned:
                self._warned.add(k)
                logger.warning(f"Keyword argument `{k}` is not a valid argument for MiniMindVProcessor and "
                               f"will be ignored.")
        if any(_OPEN in t for t in texts):      # typed control strings (apply_chat_template marked them)
            data = self._encode_typed(texts, padding, padding_side, return_tensors, tok_kw)
        else:
            data = dict(self.tokenizer(texts, padding=padding, padding_side=padding_side, add_special_tokens=False,
                                       return_token_type_ids=False, return_tensors=return_tensors, **tok_kw))
        if flat:
            data["pixel_values"] = self.image_processor(images=flat, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _encode_typed(self, texts, padding, padding_side, return_tensors, tok_kw) -> dict:
        """Token ids of texts holding marked control strings: each marked string encoded as plain
        characters (`split_special_tokens`), every other piece as usual; then padded like `__call__`."""
        rows = []
        for t in texts:
            ids = []
            for k, piece in enumerate(_TYPED.split(t)):
                if k % 2:        # the index of a typed control string
                    ids += self.tokenizer(CONTROL_STRINGS[int(piece)], add_special_tokens=False,
                                          split_special_tokens=True)["input_ids"]
                elif piece:
                    ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
            rows.append(ids)
        return dict(self.tokenizer.pad({"input_ids": rows}, padding=padding, padding_side=padding_side,
                                       return_tensors=return_tensors, **tok_kw))

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """transformers' rendering, with the control strings people typed kept as text (module docstring)."""
        out = super().apply_chat_template(_escape_conversation(conversation), chat_template, **kwargs)
        if isinstance(out, str):
            return _unescape_text(out)
        if isinstance(out, list) and out and all(isinstance(o, str) for o in out):
            return [_unescape_text(o) for o in out]
        return out

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]
