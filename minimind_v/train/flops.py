"""FLOP counts for the MFU estimate, and a measured peak to divide by.

Per token of the LLM, forward (multiply-add = 2 FLOPs):
    linear layers   2 * N_matmul            N_matmul = every Linear weight in the blocks (MoE: the
                                            active experts only = top_k of them, plus the router)
    attention       2 * 2 * L * T_ctx * d   QK^T and AV over the causal context (T_ctx ~ T/2 on average)
    lm_head         2 * d * V               only at labelled positions in training (that is all we compute)
Training = 3 x forward (backward costs twice the forward) for the LLM. The encoder forward is counted
separately: 2 * N_encoder_matmul * patches per image (+ its attention), times 3 when it is trained.
Peak = matmul FLOP/s measured on this machine in the training dtype (`measure_peak`).
"""
from __future__ import annotations

import time

import torch


def llm_matmul_params(cfg) -> int:
    d, hd = cfg.hidden_size, cfg.head_dim
    attn = d * hd * (cfg.num_attention_heads * 2 + cfg.num_key_value_heads * 2)
    if cfg.use_moe:
        ffn = 3 * d * cfg.moe_intermediate_size * cfg.num_experts_per_tok + d * cfg.num_experts
    else:
        ffn = 3 * d * cfg.intermediate_size
    return cfg.num_hidden_layers * (attn + ffn)


def encoder_flops_per_image(cfg) -> float:
    s = cfg.vision.siglip or {}
    d = s.get("hidden_size", cfg.vision.hidden_size)
    inter = s.get("intermediate_size", 4 * d)
    layers = s.get("num_hidden_layers", 12)
    p = cfg.vision.num_patches
    per_tok = layers * (4 * d * d + 2 * d * inter) + 3 * cfg.vision.patch_size ** 2 * d
    return 2.0 * p * per_tok + 4.0 * layers * p * p * d


def train_flops(cfg, n_tokens: int, n_label_tokens: int, mean_len: float, n_images: int,
                encoder_trained: bool = False) -> float:
    """FLOPs of one training step over `n_tokens` real tokens."""
    fwd = 2.0 * llm_matmul_params(cfg) * n_tokens
    fwd += 4.0 * cfg.num_hidden_layers * (mean_len / 2) * cfg.hidden_size * n_tokens
    fwd += 2.0 * cfg.hidden_size * cfg.vocab_size * n_label_tokens
    proj = 2.0 * (cfg.vision.hidden_size * cfg.merge * cfg.hidden_size + cfg.hidden_size ** 2) * \
        cfg.image_token_len * n_images
    enc = encoder_flops_per_image(cfg) * n_images * (3 if encoder_trained else 1)
    return 3 * (fwd + proj) + enc


def measure_peak(device, dtype=torch.float32, n: int = 1024, seconds: float = 0.3) -> float:
    """Matmul FLOP/s on `device` in `dtype` (a square n x n GEMM repeated for ~`seconds`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0)
