"""FLOP counts for the MFU estimate, and a measured peak to divide by.

Only useful work is counted (padding is not), so MFU drops when a step wastes time on padding, on a
text-only row's dummy image or on logits nobody trains on. Multiply-add = 2 FLOPs.

LLM forward, per real token:
    linear layers   2 * N_matmul            N_matmul = every Linear weight in the blocks (MoE: the top_k
                                            active experts plus the router)
    attention       2 * 2 * L * d * T_ctx   QK^T and AV, T_ctx = the causal context of that token; summed
                                            over a row of length T this is 4 * L * d * T^2 / 2, so a batch
                                            needs sum(T_i^2) (the collator counts it: `Batch.sum_sq_len`)
    lm_head         2 * d * V               only at labelled positions (all a training step needs)
Projector forward, per image: 2 * (merge*D_enc * d + d * d) * image_token_len.

Backward: the activation gradient costs one forward and the weight gradient one more, but only for the
weights that train. The projector is trained in both VLM stages, so activation gradients flow through
every LLM layer down to the image embeddings:
    LLM training = forward * (2 + trainable_fraction)     (3x when every LLM weight trains, ~2.1x in
                                                            VLM-pretrain where only layer 0 does)
    projector    = 3 x forward
Encoder (counted separately, `encoder`): forward per image = 2 * N_enc_matmul * patches + attention
(4 * layers * patches^2 * width); times 3 when the encoder is trained.

Peak = the best matmul FLOP/s measured on this machine in the training dtype (`measure_peak`), not a
datasheet number, so CPU MFU reads as "fraction of what a large GEMM reaches here".
"""
from __future__ import annotations

import time

import torch


def llm_matmul_params(cfg) -> int:
    """Weights multiplied per token in the decoder blocks (MoE: active experts + router)."""
    d, hd = cfg.hidden_size, cfg.head_dim
    attn = d * hd * (cfg.num_attention_heads * 2 + cfg.num_key_value_heads * 2)
    if cfg.use_moe:
        ffn = 3 * d * cfg.moe_intermediate_size * cfg.num_experts_per_tok + d * cfg.num_experts
    else:
        ffn = 3 * d * cfg.intermediate_size
    return cfg.num_hidden_layers * (attn + ffn)


def encoder_flops_per_image(cfg) -> float:
    """Forward FLOPs of the SigLIP2 encoder for one image (patch embedding + blocks)."""
    s = cfg.vision.siglip or {}
    d = s.get("hidden_size", cfg.vision.hidden_size)
    inter = s.get("intermediate_size", 4 * d)
    layers = s.get("num_hidden_layers", 12)
    p = cfg.vision.num_patches
    per_tok = layers * (4 * d * d + 2 * d * inter) + 3 * cfg.vision.patch_size ** 2 * d
    return 2.0 * p * per_tok + 4.0 * layers * p * p * d


def projector_flops_per_image(cfg) -> float:
    d = cfg.hidden_size
    return 2.0 * (cfg.vision.hidden_size * cfg.merge * d + d * d) * cfg.image_token_len


def flops_breakdown(cfg, n_tokens: int, n_label_tokens: int, sum_sq_len: float, n_images: int,
                    trainable_fraction: float = 1.0, encoder_trained: bool = False,
                    head_trained: bool = True) -> dict:
    """FLOPs of one training step by part: llm, lm_head, projector (all with backward), encoder.

    n_tokens: real (non-pad) tokens; n_label_tokens: positions with a label after the shift;
    sum_sq_len: sum of squared row lengths; n_images: real images (not a text row's dummy);
    trainable_fraction: share of LLM block weights that train (1.0 in SFT, 1/8 for layer 0 of 8);
    head_trained: whether lm_head (tied to the embedding) trains (not in VLM-pretrain)."""
    bwd = 1.0 + trainable_fraction
    body = 2.0 * llm_matmul_params(cfg) * n_tokens + 2.0 * cfg.num_hidden_layers * cfg.hidden_size * sum_sq_len
    head = 2.0 * cfg.hidden_size * cfg.vocab_size * n_label_tokens
    head_bwd = 2.0 if head_trained else 1.0
    return {
        "llm": body * (1 + bwd),
        "lm_head": head * (1 + head_bwd),
        "projector": 3.0 * projector_flops_per_image(cfg) * n_images,
        "encoder": encoder_flops_per_image(cfg) * n_images * (3 if encoder_trained else 1),
    }


def trainable_fraction(model) -> float:
    """Share of the LLM block weights (`model.layers.*`) with requires_grad."""
    total = train = 0
    for name, p in model.named_parameters():
        if name.startswith("model.layers."):
            total += p.numel()
            train += p.numel() if p.requires_grad else 0
    return train / total if total else 0.0


def measure_peak(device, dtype=torch.float32, n: int = 1024, seconds: float = 0.3, repeats: int = 1) -> float:
    """Matmul FLOP/s on `device` in `dtype`: a square n x n GEMM repeated for ~`seconds`, best of
    `repeats` tries (the best is the least disturbed by other work on a shared machine)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = 0.0
    for _ in range(repeats):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        sync()
        best = max(best, 2.0 * n ** 3 * reps / (time.perf_counter() - t0))
    return best
