"""MiniMind-V: LLM + vision encoder + projector, and where image features are spliced in.

The prompt holds `image_token_len` copies of the image token id per picture. `splice` replaces exactly
those embeddings with the projected features, in order, in one vectorised `masked_scatter` (no Python
loop over the batch). Features are matched by position count, not by runs of placeholders, so two
images with no text between them (one run of 128 ids) still get their own 64 features each.

Rows without images never touch the encoder: the batch carries only the pictures that exist.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from .llm import KVCache, MiniMindLM
from .projector import Projector
from .size_guard import check_model_size
from .vision import VisionEncoder


@dataclass
class VLMOutput:
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    n_label_tokens: torch.Tensor | None = None


class MiniMindVLM(MiniMindLM):
    """The LLM (`model.*`, `lm_head`) plus `vision_proj.*` and `vision_encoder.*`: the original's names."""

    def __init__(self, cfg: ModelConfig, vision: bool = True, base_dir=None):
        check_model_size(cfg)                  # an absurd config.json is refused before any allocation
        super().__init__(cfg)
        self.vision_proj = Projector(cfg.vision.hidden_size, cfg.hidden_size, cfg.merge, cfg.projector_norm,
                                     places=cfg.image_token_len if cfg.visual_pos_embed else 0)
        self.vision_encoder = VisionEncoder(cfg.vision, base_dir) if vision else None
        self.vision_trainable = False
        self.vision_base = str(base_dir) if base_dir is not None else None   # where a relative encoder path is resolved
        if self.vision_encoder is not None:
            self.vision_encoder.requires_grad_(False)

    # ---- vision ----
    def set_vision_trainable(self, trainable: bool):
        """Freeze (default) or unfreeze the encoder as a whole module."""
        self.vision_trainable = trainable
        if self.vision_encoder is not None:
            self.vision_encoder.requires_grad_(trainable)
            self.vision_encoder.train(trainable and self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vision_encoder is not None and not self.vision_trainable:
            self.vision_encoder.eval()     # frozen encoder always in eval mode
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, P, 3pp) patches -> (N, image_token_len, hidden) visual tokens."""
        if self.vision_encoder is None:
            raise ValueError("this model has no vision encoder: it answers text only (give it no picture, or load a "
                             "folder with an encoder)")
        if self.vision_trainable and self.training:
            feats = self.vision_encoder(pixel_values)
        else:
            with torch.no_grad():
                feats = self.vision_encoder(pixel_values)
        return self.project(feats)

    def project(self, vision_features: torch.Tensor) -> torch.Tensor:
        """Encoder features (N, P, D) -> (N, image_token_len, hidden)."""
        w = self.vision_proj.mlp[0].weight
        return self.vision_proj(vision_features.to(w.dtype))

    def splice(self, input_ids: torch.Tensor, embeds: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Put visual tokens (N, L, H) into the image-token positions of embeds (B, T, H), in order."""
        mask = (input_ids == self.cfg.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, visual.to(embeds.dtype))

    def embed(self, input_ids, pixel_values=None, vision_features=None, visual_tokens=None, check=False):
        h = self.model.embed_tokens(input_ids)
        if visual_tokens is None:
            if vision_features is not None:
                visual_tokens = self.project(vision_features)
            elif pixel_values is not None and pixel_values.shape[0] > 0:
                visual_tokens = self.encode_images(pixel_values)
        if visual_tokens is not None:
            if check:
                n = int((input_ids == self.cfg.image_token_id).sum())
                if n != visual_tokens.shape[0] * visual_tokens.shape[1]:
                    raise ValueError(f"{n} image-token positions but {visual_tokens.shape[0]} image(s) x "
                                     f"{visual_tokens.shape[1]} tokens were given")
            h = self.splice(input_ids, h, visual_tokens)
        return h

    def forward(self, input_ids, labels=None, pixel_values=None, vision_features=None, visual_tokens=None,
                position_ids=None, seq_ids=None, key_mask=None, cache: KVCache | None = None,
                logits_to_keep: int = 0, check: bool = False, label_index=None) -> VLMOutput:
        h = self.embed(input_ids, pixel_values, vision_features, visual_tokens, check)
        hidden = self.decode(h, position_ids=position_ids, seq_ids=seq_ids, key_mask=key_mask, cache=cache)
        out = VLMOutput(hidden_states=hidden, aux_loss=self.aux_loss())
        if labels is not None:
            # Only labelled positions go through lm_head: the shift pairs hidden[t] with labels[t+1].
            if label_index is not None:
                # flat (B*T) positions t whose next label is set, found by the collator on the host: a
                # boolean mask here would make the device report its count to the host mid-step, and
                # indexing the flat tensors directly avoids copying a shifted, non-contiguous hidden
                flat = hidden.flatten(0, 1).index_select(0, label_index)
                tgt_sel, count = labels.flatten().index_select(0, label_index + 1), label_index.numel()
            else:
                tgt = labels[:, 1:]
                sel = tgt != -100
                flat, tgt_sel, count = hidden[:, :-1][sel], tgt[sel], int(sel.sum())   # indexing syncs anyway
            logits = self.lm_head(flat)
            out.loss = F.cross_entropy(logits.float(), tgt_sel, reduction="sum") / max(count, 1)
            out.n_label_tokens = count
        else:
            hk = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            out.logits = self.lm_head(hk)
        return out

    def num_parameters(self, include_vision: bool = False) -> int:
        seen, n = set(), 0
        for name, p in self.named_parameters():
            if not include_vision and name.startswith("vision_encoder."):
                continue
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n
