"""`minimind-v export --to onnx`: a model folder -> two ONNX graphs and the settings that drive them.

    OUT/vision.onnx         the generation's pixels -> the visual tokens after the projector (N, L, hidden)
    OUT/decoder.onnx        token ids + visual tokens + KV cache -> logits and the new cache
    OUT/tokenizer.json      the tokenizer (and tokenizer_config.json with the chat template)
    OUT/minimind_v_onnx.json  shapes, ids, pixel settings, generation defaults, dtype, format version

Why the graphs are written as wrappers (DecoderGraph, NaflexVision, SquareVision) over the model's own modules rather
than by exporting `MiniMindVLM.forward`: the PyTorch path chooses its attention kernel, its mask and its
cache layout at run time (SDPA flags, a preallocated cache written in place, MoE experts run on the rows
routed to them, the NaFlex position grid resized per picture); none of that is a static graph. The
wrappers use the same parameters and compute the same numbers in ops that trace to plain ONNX:

* decoder: one graph for the first step and every later one. Inputs `input_ids` (B, T), `visual` (N, L, H)
  (at least one row; zeros when the prompt holds no picture), `attention_mask` (B, past + T, 1 for a real
  token), `position_ids` (B, T), and `past_key_i` / `past_value_i` (B, kv, past, head_dim) per layer (past
  may be 0). Outputs `logits` (B, T, vocab) and `present_key_i` / `present_value_i` = past and the new keys
  concatenated. A query at absolute index past+i sees key j when j <= past+i and the key is real (and
  always itself, as the PyTorch mask does). Visual tokens replace the embeddings where `<|image_pad|>`
  stands, in order: row k of the flattened visual tokens goes to the k-th image position.
  The MoE feed-forward runs every expert on every token and weights them by the router's (normalised) top-k
  weights, zero elsewhere: the same sum as the routed PyTorch path, in a graph with no data-dependent shapes.
  RoPE is the model's own cos/sin table (a constant of `max_context` rows), indexed by `position_ids`.
* vision, March generation (SigLIP2): inputs `pixel_values` (N, P, 3pp), `pixel_attention_mask` (N, P) and
  `spatial_shapes` (N, 2). The position grid is resized to each picture's grid with the weights of a
  separable antialiased bilinear resize (what transformers computes), written as one matmul, so the graph
  keeps a dynamic batch; padded patches are hidden from attention. Square pictures pass the full grid.
* vision, 0420 generation (SigLIP v1): input `pixel_values` (N, P, 3pp) square-grid patches, folded back into
  the (N, 3, H, W) picture the Conv2d patch embedding takes.

Two exporters write the same graphs: the TorchScript one (`dynamo=False`, opset 17; the default, a few seconds
for the tiny models) and the torch.export-based one (`exporter="dynamo"`, opset 18; about twenty times slower
to export here, and the one torch keeps: it reports the TorchScript exporter as deprecated since 2.9). Both
give dynamic batch and lengths and the same logits (tests/test_onnx.py checks each).

Every fp32 export is checked before it is put in place (`verify`): onnxruntime runs the written graphs on a
random picture and a short prompt, first step and one cached step, and the visual tokens and logits must be
within 1e-3 of PyTorch's, or the export stops with one line saying by how much (a model variant the
wrappers do not cover fails here, not later in a user's app). tests/test_onnx.py holds them to 1e-4 and to
the same greedy tokens for the demo model and the upstream fixtures.
`--dtype fp16` casts the weights and the graphs' float inputs/outputs to fp16; `--quantize int8` runs
onnxruntime's dynamic quantization (int8 weights for MatMul/Gather, activations quantized on the fly).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from .runtime import FORMAT, SETTINGS, VERSION

OPSET = 17


class ExportError(ValueError):
    """A model whose parts cannot be exported (one line, shown by the CLI as `error: ...`)."""


# ---------------------------------------------------------------- the decoder graph

def _rms(norm, x):
    xf = x.float()
    return norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).type_as(x)


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class DecoderGraph(nn.Module):
    """(input_ids, visual, attention_mask, position_ids, *past) -> (logits, *present); see the module doc."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        cfg = model.cfg
        self.n_layers, self.n_heads, self.n_kv, self.hd = (cfg.num_hidden_layers, cfg.num_attention_heads,
                                                           cfg.num_key_value_heads, cfg.head_dim)
        self.image_id = cfg.image_token_id

    def attention(self, attn, x, cos, sin, bias, past_k, past_v):
        b, t, _ = x.shape
        q = _rms(attn.q_norm, attn.q_proj(x).view(b, t, self.n_heads, self.hd)).transpose(1, 2)
        k = _rms(attn.k_norm, attn.k_proj(x).view(b, t, self.n_kv, self.hd)).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        k_all, v_all = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        rep = self.n_heads // self.n_kv
        s = k_all.shape[2]
        # query head h reads kv head h // rep (repeat_interleave order)
        kr = k_all[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_heads, s, self.hd)
        vr = v_all[:, :, None].expand(b, self.n_kv, rep, s, self.hd).reshape(b, self.n_heads, s, self.hd)
        scores = torch.matmul(q, kr.transpose(2, 3)) * (1.0 / math.sqrt(self.hd)) + bias
        out = torch.matmul(torch.softmax(scores.float(), -1).to(q.dtype), vr)
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.hd)), k_all, v_all

    @staticmethod
    def ffn(mlp, x):
        if not hasattr(mlp, "experts"):
            return mlp(x)
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(mlp.gate(flat).float(), -1)
        top_w, top_i = probs.topk(mlp.k, dim=-1)
        if mlp.norm_topk:
            top_w = top_w / (top_w.sum(-1, keepdim=True) + 1e-20)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_w).to(flat.dtype)      # (N, E), 0 if not chosen
        out = torch.zeros_like(flat)
        for e, expert in enumerate(mlp.experts):
            out = out + expert(flat) * weights[:, e:e + 1]
        return out.view(x.shape)

    def forward(self, input_ids, visual, attention_mask, position_ids, *past):
        m = self.m
        b, t = input_ids.shape
        h = m.model.embed_tokens(input_ids)
        # splice: the k-th <|image_pad|> position takes row k of the flattened visual tokens
        is_img = input_ids == self.image_id
        flat = visual.reshape(-1, visual.shape[-1]).to(h.dtype)
        idx = (torch.cumsum(is_img.reshape(-1).long(), 0) - 1).clamp(min=0)
        idx = torch.minimum(idx, torch.full_like(idx, 0) + (flat.shape[0] - 1))
        h = torch.where(is_img.reshape(-1, 1), flat.index_select(0, idx), h.reshape(-1, h.shape[-1])).view(b, t, -1)
        cos = m.rope_cos[position_ids][:, None].to(h.dtype)
        sin = m.rope_sin[position_ids][:, None].to(h.dtype)
        s = attention_mask.shape[1]
        offset = s - t
        q_abs = torch.arange(t, device=h.device)[:, None] + offset
        k_abs = torch.arange(s, device=h.device)[None, :]
        seen = (k_abs <= q_abs)[None, None] & (attention_mask[:, None, None, :] > 0)
        seen = seen | (k_abs == q_abs)[None, None]
        bias = torch.where(seen, torch.zeros((), dtype=h.dtype),
                           torch.full((), torch.finfo(h.dtype).min, dtype=h.dtype))
        present = []
        for i, layer in enumerate(m.model.layers):
            a, k_all, v_all = self.attention(layer.self_attn, layer.input_layernorm(h), cos, sin, bias,
                                             past[2 * i], past[2 * i + 1])
            h = h + a
            h = h + self.ffn(layer.mlp, layer.post_attention_layernorm(h))
            present += [k_all, v_all]
        return (m.lm_head(m.model.norm(h)), *present)


# ---------------------------------------------------------------- the vision graphs

def resize_weights(spatial_shapes: torch.Tensor, length: int, grid: int) -> torch.Tensor:
    """(N, length, grid*grid) weights that resize a grid x grid position table to each picture's (h, w) grid
    (separable antialiased bilinear, align_corners=False), rows in raster order; padding rows take (0, 0)."""
    sizes = spatial_shapes.float()[:, None]                                   # (N, 1, 2)
    pos = torch.arange(length, dtype=torch.float32)[None, :, None]          # (1, L, 1)
    row = torch.floor(pos / sizes[..., 1:])
    where = torch.cat([row, pos - row * sizes[..., 1:]], -1)                  # (N, L, 2) row, column
    where = where * (pos < sizes[..., :1] * sizes[..., 1:]).float()
    scale = grid / sizes                                                      # (N, 1, 2)
    support = scale.clamp(min=1.0)
    centre = (where + 0.5) * scale - 0.5
    src = torch.arange(grid, dtype=torch.float32)
    w = (1 - (src - centre[..., None]).abs() / support[..., None]).clamp(min=0)   # (N, L, 2, grid)
    w = w / w.sum(-1, keepdim=True)
    return (w[:, :, 0, :, None] * w[:, :, 1, None, :]).reshape(w.shape[0], length, grid * grid)


class NaflexVision(nn.Module):
    """SigLIP2 (pixel_values, pixel_attention_mask, spatial_shapes) -> projected visual tokens."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        enc = model.vision_encoder.encoder
        self.enc = enc
        self.grid = enc.embeddings.position_embedding_size

    def forward(self, pixel_values, pixel_attention_mask, spatial_shapes):
        enc = self.enc
        emb = enc.embeddings
        dtype = emb.patch_embedding.weight.dtype
        h = emb.patch_embedding(pixel_values.to(dtype))
        table = emb.position_embedding.weight.float()                            # (grid*grid, D)
        w = resize_weights(spatial_shapes, pixel_values.shape[1], self.grid)
        h = h + torch.matmul(w, table).to(dtype)
        bias = torch.where(pixel_attention_mask[:, None, None, :] > 0, torch.zeros((), dtype=dtype),
                           torch.full((), torch.finfo(dtype).min, dtype=dtype))
        for layer in enc.encoder.layers:
            out = layer(h, bias)
            h = out[0] if isinstance(out, tuple) else out
        feats = enc.post_layernorm(h)
        return self.m.project(feats)


class SquareVision(nn.Module):
    """SigLIP v1 square-grid patches (N, P, 3pp) -> projected visual tokens."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        self.p = model.cfg.vision.patch_size

    def forward(self, pixel_values):
        n, count, _ = pixel_values.shape
        g = math.isqrt(self.m.cfg.vision.num_patches)
        picture = pixel_values.reshape(n, g, g, self.p, self.p, 3).permute(0, 5, 1, 3, 2, 4).reshape(
            n, 3, g * self.p, g * self.p)
        enc = self.m.vision_encoder.encoder
        feats = enc(pixel_values=picture.to(next(enc.parameters()).dtype)).last_hidden_state
        return self.m.project(feats)


def _eager_attention(encoder) -> None:
    """Plain matmul/softmax attention in the encoder: it traces to basic ONNX ops and takes an additive mask."""
    if hasattr(encoder, "set_attn_implementation"):
        try:
            encoder.set_attn_implementation("eager")
            return
        except (ValueError, AttributeError, TypeError):
            pass
    encoder.config._attn_implementation = "eager"


# ---------------------------------------------------------------- settings

def settings_of(model, dtype: str, quantize: str | None, max_context: int) -> dict:
    cfg, v = model.cfg, model.cfg.vision
    has_vision = model.vision_encoder is not None
    return {
        "format": FORMAT, "version": VERSION, "dtype": dtype, "quantize": quantize,
        "files": {"decoder": "decoder.onnx", "vision": "vision.onnx" if has_vision else None},
        "model": {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                  "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
                  "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size, "image_token_id": cfg.image_token_id,
                  "image_token_len": cfg.image_token_len, "pad_token_id": cfg.pad_token_id,
                  "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "max_context": max_context,
                  "use_moe": cfg.use_moe},
        "pixels": {"encoder_class": v.encoder_class, "resize": v.resize, "resample": v.resample,
                   "image_size": v.image_size, "patch_size": v.patch_size, "num_patches": v.num_patches,
                   "image_mean": v.image_mean, "image_std": v.image_std},
        "chat": {"template": "chatml", "im_start": "<|im_start|>", "im_end": "<|im_end|>",
                 "image_marker": "<image>", "image_pad": "<|image_pad|>", "stop": ["<|im_end|>"]},
        "generation": {"temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_new_tokens": 256},
    }


# ---------------------------------------------------------------- export

def _names(n_layers: int, kind: str) -> list[str]:
    return [f"{kind}_{w}_{i}" for i in range(n_layers) for w in ("key", "value")]


EXPORTERS = ("torchscript", "dynamo")
OPSETS = {"torchscript": OPSET, "dynamo": 18}      # the torch.export-based exporter writes opset 18 and up


def _dynamic_shapes(module, inputs, dynamic, limit: int):
    """dynamic_axes (input name -> {axis: name}) -> the dynamo exporter's dynamic_shapes, one entry per
    forward argument (the decoder's cache tensors as one tuple, its *past)."""
    from torch.export import Dim
    dims = {"batch": Dim("batch", max=4096), "length": Dim("length", max=limit), "past": Dim("past", max=limit),
            "images": Dim("images", max=4096), "total": Dim.AUTO}
    shapes = [{axis: dims[name] for axis, name in dynamic.get(n, {}).items()} for n in inputs]
    if isinstance(module, DecoderGraph):
        return (*shapes[:4], tuple(shapes[4:]))
    return tuple(shapes)


def _export(module, args, path: Path, inputs, outputs, dynamic, exporter: str = "torchscript",
            limit: int = 4096) -> None:
    try:
        _run_exporter(module, args, path, inputs, outputs, dynamic, exporter, limit)
    except Exception as e:  # noqa: BLE001 - whatever the exporter meets, the user gets one line naming the part
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"the {path.stem} graph could not be exported with the {exporter} exporter "
                          f"({type(e).__name__}: {first})") from e


def _run_exporter(module, args, path, inputs, outputs, dynamic, exporter, limit) -> None:
    with warnings.catch_warnings():
        # the legacy exporter announces its own deprecation (once per call); nothing else is silenced
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        if exporter == "dynamo":
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamo=True,
                              dynamic_shapes=_dynamic_shapes(module, inputs, dynamic, limit),
                              opset_version=OPSETS["dynamo"], external_data=False)
        else:
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def export_decoder(model, path: Path, dtype: torch.dtype, exporter: str = "torchscript") -> None:
    cfg = model.cfg
    graph = DecoderGraph(model).eval()
    b, t, past = 2, 5, 3
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    ids[:, 1] = cfg.image_token_id
    visual = torch.zeros(1, cfg.image_token_len, cfg.hidden_size, dtype=dtype)
    mask = torch.ones(b, past + t, dtype=torch.long)
    pos = torch.arange(past, past + t)[None].expand(b, t).contiguous()
    kv = [torch.zeros(b, cfg.num_key_value_heads, past, cfg.head_dim, dtype=dtype)
          for _ in range(2 * cfg.num_hidden_layers)]
    ins = ["input_ids", "visual", "attention_mask", "position_ids"] + _names(cfg.num_hidden_layers, "past")
    outs = ["logits"] + _names(cfg.num_hidden_layers, "present")
    dyn = {"input_ids": {0: "batch", 1: "length"}, "visual": {0: "images"},
           "attention_mask": {0: "batch", 1: "total"}, "position_ids": {0: "batch", 1: "length"},
           "logits": {0: "batch", 1: "length"}}
    for n in _names(cfg.num_hidden_layers, "past"):
        dyn[n] = {0: "batch", 2: "past"}
    for n in _names(cfg.num_hidden_layers, "present"):
        dyn[n] = {0: "batch", 2: "total"}
    with torch.no_grad():
        _export(graph, (ids, visual, mask, pos, *kv), path, ins, outs, dyn, exporter, model.rope_cos.shape[0])


def export_vision(model, path: Path, dtype: torch.dtype, exporter: str = "torchscript") -> None:
    v = model.cfg.vision
    _eager_attention(model.vision_encoder.encoder)
    n, count, width = 2, v.num_patches, 3 * v.patch_size ** 2
    pix = torch.randn(n, count, width, dtype=dtype)
    if v.encoder_class == "siglip":
        graph, args, ins = SquareVision(model), (pix,), ["pixel_values"]
        dyn = {"pixel_values": {0: "images"}, "visual": {0: "images"}}
    else:
        g = math.isqrt(count)
        shapes = torch.tensor([[g, g], [max(1, g // 2), g]])
        mask = (torch.arange(count)[None] < shapes.prod(-1)[:, None]).long()
        graph, args = NaflexVision(model), (pix, mask, shapes)
        ins = ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
        dyn = {k: {0: "images"} for k in ins + ["visual"]}
    with torch.no_grad():
        _export(graph.eval(), args, path, ins, ["visual"], dyn, exporter)


def verify(model, folder: Path, tol: float = 1e-3) -> float:
    """Largest |onnxruntime - PyTorch| over visual tokens and logits of a fixed check (see the module doc);
    raises ExportError above `tol`."""
    import numpy as np
    import onnxruntime as ort
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    n_img = 1 if model.vision_encoder is not None else 0
    ids = torch.randint(13, cfg.vocab_size, (1, 6), generator=g)
    if n_img:
        ids = torch.cat([ids[:, :2], torch.full((1, cfg.image_token_len), cfg.image_token_id), ids[:, 2:]], 1)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    worst = 0.0
    with torch.no_grad():
        visual = torch.zeros(1, cfg.image_token_len, cfg.hidden_size)
        if n_img:
            v = cfg.vision
            side = math.isqrt(v.num_patches)
            pix = torch.rand(1, v.num_patches, 3 * v.patch_size ** 2, generator=g) * 2 - 1     # a full grid
            packed = pix
            if v.resize == "naflex":                     # the package's NaFlex layout: one more row, the grid
                grid = torch.zeros(1, 1, pix.shape[2])
                grid[0, 0, :2] = side
                packed = torch.cat([pix, grid], 1)
            visual = model.encode_images(packed)
            vs = ort.InferenceSession(str(folder / "vision.onnx"), opts, providers=["CPUExecutionProvider"])
            feed = {"pixel_values": pix.numpy()}
            if v.encoder_class != "siglip":
                feed.update(pixel_attention_mask=np.ones((1, v.num_patches), np.int64),
                            spatial_shapes=np.array([[side, side]], np.int64))
            got = vs.run(["visual"], feed)[0]
            worst = max(worst, float(np.abs(got - visual.numpy()).max()))
        want = model(ids, visual_tokens=visual if n_img else None).logits[0].numpy()
    dec = ort.InferenceSession(str(folder / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    expected = ["input_ids", "visual", "attention_mask", "position_ids"] + _names(cfg.num_hidden_layers, "past")
    found = [i.name for i in dec.get_inputs()]
    if found != expected:
        missing = [n for n in expected if n not in found]
        raise ExportError(f"the exported decoder graph lost inputs {missing}: this model is not exported correctly")
    t = ids.shape[1]
    empty = np.zeros((1, cfg.num_key_value_heads, 0, cfg.head_dim), np.float32)
    feed = {"input_ids": ids[:, :-1].numpy(), "visual": visual.numpy(), "attention_mask": np.ones((1, t - 1), np.int64),
            "position_ids": np.arange(t - 1)[None]}
    feed.update({n: empty for n in _names(cfg.num_hidden_layers, "past")})
    out = dec.run(None, feed)
    worst = max(worst, float(np.abs(out[0][0] - want[:-1]).max()))
    feed = {"input_ids": ids[:, -1:].numpy(), "visual": visual.numpy(), "attention_mask": np.ones((1, t), np.int64),
            "position_ids": np.array([[t - 1]])}
    feed.update(dict(zip(_names(cfg.num_hidden_layers, "past"), out[1:])))
    worst = max(worst, float(np.abs(dec.run(["logits"], feed)[0][0, -1] - want[-1]).max()))
    if worst > tol:
        raise ExportError(f"the exported graphs disagree with PyTorch by {worst:.2e} (more than {tol:g}) on the "
                          f"check prompt: this model is not exported correctly")
    return worst


def check_exportable(model) -> None:
    cfg = model.cfg
    if cfg.rope_scaling and cfg.rope_scaling.get("type") not in (None, "yarn"):
        raise ExportError(f"rope_scaling type {cfg.rope_scaling.get('type')!r} cannot be exported")
    if model.vision_encoder is not None and cfg.vision.encoder_class == "siglip2":
        enc = model.vision_encoder.encoder
        if math.isqrt(enc.config.num_patches) ** 2 != enc.config.num_patches:
            raise ExportError(f"the encoder's {enc.config.num_patches} positions are not a square grid")


def quantize_int8(folder: Path, names: list[str], log=print) -> None:
    """onnxruntime's dynamic quantization, in place: int8 weights, activations quantized per call."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    class SkipAdvice(logging.Filter):
        """quantize_dynamic logs advice to run its pre-processing (shape inference and graph optimisation for
        static quantization) on every call; the graphs here already carry their shapes, and this one line of
        advice is all that is held back."""
        def filter(self, record):
            return "consider to run pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    quiet = SkipAdvice()
    root.addFilter(quiet)
    try:
        for name in names:
            src = folder / name
            tmp = folder / (name + ".int8")
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
            tmp.replace(src)
            log(f"  {name}: int8 weights ({src.stat().st_size / 1e6:.1f} MB)")
    finally:
        root.removeFilter(quiet)


def export_onnx(src: str | Path, dst: str | Path, dtype: str = "fp32", quantize: str | None = None,
                max_context: int | None = None, exporter: str = "torchscript", overwrite: bool = False,
                log=print) -> Path:
    """Model folder (ours, HF, LoRA adapter: merged on load) -> ONNX folder; see the module doc."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("the ONNX export needs onnx and onnxruntime: pip install 'minimind-v[onnx]'") from None
    from ..formats.adapter import base_chain
    from ..formats.load import load_model
    from ..outputs import check_output, staged_output
    from ..tokenizer import Tokenizer

    if dtype not in ("fp32", "fp16"):
        raise ExportError(f"--dtype {dtype} is not an ONNX export dtype: use fp32 or fp16")
    if exporter not in EXPORTERS:
        raise ExportError(f"--exporter {exporter}: choose one of {', '.join(EXPORTERS)}")
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize {quantize}: only int8 is supported")
    if quantize and dtype != "fp32":
        raise ExportError("--quantize int8 starts from fp32 weights: leave --dtype at fp32")
    src, dst = Path(src), Path(dst)
    inputs = [src, *base_chain(src)]
    check_output(dst, inputs, overwrite=overwrite, folder=True)          # refused before anything is loaded
    model = load_model(src, vision=True, log=lambda m: None)
    tok_dir = src
    if not (tok_dir / "tokenizer.json").exists() and (src / "adapter_config.json").exists():
        from ..formats.adapter import base_of
        tok_dir = Path(base_of(src))
    if not (tok_dir / "tokenizer.json").exists():
        raise ExportError(f"{src} has no tokenizer.json: the ONNX folder needs the model's tokenizer")
    tok = Tokenizer.load(tok_dir)
    check_exportable(model)
    tdtype = torch.float16 if dtype == "fp16" else torch.float32
    model = model.to(tdtype).eval()
    n = max_context or min(model.cfg.max_position_embeddings, 4096)
    model._ensure_rope(n)
    n = min(n, model.rope_cos.shape[0])
    with staged_output(dst, inputs, overwrite=overwrite, folder=True) as stage:
        log(f"exporting {src} to ONNX ({dtype}{', int8' if quantize else ''}, context {n}, {exporter} exporter)")
        export_decoder(model, stage / "decoder.onnx", tdtype, exporter)
        log(f"  decoder.onnx ({(stage / 'decoder.onnx').stat().st_size / 1e6:.1f} MB)")
        names = ["decoder.onnx"]
        if model.vision_encoder is not None:
            export_vision(model, stage / "vision.onnx", tdtype, exporter)
            names.append("vision.onnx")
            log(f"  vision.onnx ({(stage / 'vision.onnx').stat().st_size / 1e6:.1f} MB)")
        else:
            log("  no vision encoder in this folder: text-only export")
        if dtype == "fp32":
            log(f"  checked against PyTorch: largest difference {verify(model, stage):.1e}")
        if quantize:
            quantize_int8(stage, names, log)
        tok.save(stage)
        settings = settings_of(model, dtype, quantize, n)
        settings["exporter"] = {"name": exporter, "opset": OPSETS[exporter], "torch": torch.__version__}
        (stage / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    log(f"ONNX folder written to {dst}")
    return dst
