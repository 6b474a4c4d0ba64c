"""ONNX export and the torch-free runtime: the same logits (1e-4, fp32) and the same greedy tokens as PyTorch.

Models: the demo's shape (random weights), the upstream tiny fixtures (dense and MoE with a random 768-wide
SigLIP2 so that their March projector has an encoder; 0420 with its SigLIP p32; the March NaFlex model of
reference_0420), on square and non-square pictures and text-only prompts, batched with left padding. The
decode loop is checked step by step: the runtime's logits at every generated token against one PyTorch
forward over the whole sequence (no cache). Also: the runtime where `import torch` raises, fp16 and int8,
the folder's version check, and the CLI.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REF
from PIL import Image

pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime (pip install 'minimind-v[onnx]')")

from minimind_v import cli  # noqa: E402
from minimind_v.config import preset  # noqa: E402
from minimind_v.formats.convert_export import convert  # noqa: E402
from minimind_v.formats.folder import save_model  # noqa: E402
from minimind_v.formats.load import load_model  # noqa: E402
from minimind_v.hf.pixels import packed_pixels  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402
from minimind_v.portable.onnx_export import export_onnx  # noqa: E402
from minimind_v.portable.runtime import OnnxVLM, RuntimeSetupError  # noqa: E402
from minimind_v.recipes.demo import DemoRecipe  # noqa: E402
from minimind_v.tokenizer import Tokenizer  # noqa: E402

R0420 = REF.parent / "reference_0420"
needs_fixtures = pytest.mark.skipif(not (REF.exists() and R0420.exists()), reason=f"{REF} is absent")
quiet = dict(log=lambda m: None)
N_NEW = 12


def pictures():
    """A square and two non-square pictures (coloured blocks, so encoders see structure)."""
    out = []
    for w, h in ((64, 64), (96, 40), (30, 120)):
        img = Image.new("RGB", (w, h), (230, 40, 40))
        img.paste((40, 90, 230), (w // 4, h // 5, w // 2, h // 2))
        img.paste((250, 250, 60), (w // 2, h // 2, w - 2, h - 3))
        out.append(img)
    return out


def demo_folder(path, tok_dir):
    tok = Tokenizer.load(tok_dir)
    torch.manual_seed(0)
    cfg = preset("tiny", **DemoRecipe().model_overrides(), vocab_size=tok.vocab_size, image_token_id=tok.image_id)
    model = MiniMindVLM(cfg).eval()
    model.reset_parameters(std=0.3)                 # varied greedy tokens, not one repeated id
    save_model(model, path, tok)
    return path


def wide_siglip2(path):
    """A random SigLIP2 as wide as the fixtures' projector expects (768), one thin layer."""
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    torch.manual_seed(1)
    Siglip2VisionModel(Siglip2VisionConfig(hidden_size=768, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, patch_size=16, num_patches=256,
                                           vision_use_head=False)).save_pretrained(str(path))
    return path


def march_folder(tmp_path):
    """Upstream's March 2026 tiny model: 0420's LLM + the e51dcf0 projector + the p16 NaFlex encoder."""
    from safetensors.torch import load_file
    sd = torch.load(str(R0420 / "tiny_0420.pth"), weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("vision_proj.")}
    sd.update(load_file(str(R0420 / "tiny_e51dcf0_vision_proj.safetensors")))
    torch.save(sd, str(tmp_path / "e51.pth"))
    shutil.copy(R0420 / "tiny_0420_config.json", tmp_path / "e51_config.json")
    convert(tmp_path / "e51.pth", tmp_path / "march", vision_encoder=str(R0420 / "tiny_siglip2_p16"),
            tokenizer=str(REF / "tokenizer"), **quiet)
    return tmp_path / "march"


def build(kind, tmp_path):
    if kind == "demo":
        return demo_folder(tmp_path / "demo", REF / "tokenizer")
    if kind in ("dense", "moe"):
        convert(REF / f"tiny_{kind}.safetensors", tmp_path / kind, config=str(REF / f"tiny_{kind}_config.json"),
                vision_encoder=str(wide_siglip2(tmp_path / "enc")), tokenizer=str(REF / "tokenizer"), **quiet)
        return tmp_path / kind
    if kind == "0420":
        convert(R0420 / "tiny_0420.pth", tmp_path / "g0420", vision_encoder=str(R0420 / "tiny_siglip_p32"),
                tokenizer=str(REF / "tokenizer"), **quiet)
        return tmp_path / "g0420"
    return march_folder(tmp_path)


def check_parity(model, rt, prompts, pix=None, atol=1e-4, varied=False):
    """Prefill logits, then greedy decoding: the runtime's per-step logits against a no-cache PyTorch forward
    over each finished sequence, and the tokens against model/generate.py's."""
    from minimind_v.model.generate import SamplingParams, generate
    eos = rt.tok.eos_id
    visual_pt = visual_rt = None
    if pix is not None:
        with torch.no_grad():
            visual_pt = model.encode_images(pix)
        visual_rt = rt.encode_packed(pix.numpy())
        np.testing.assert_allclose(visual_rt, visual_pt.numpy(), atol=atol, rtol=0)
    want = generate(model, prompts, SamplingParams(max_new_tokens=N_NEW, stop_ids=(eos,)), pix)
    steps = []
    rt_forward = rt.forward

    def spy(*a):
        logits, past = rt_forward(*a)
        steps.append(logits[:, -1].copy())
        return logits, past
    rt.forward = spy
    got = rt.generate(prompts, rt.params(max_new_tokens=N_NEW), visual_rt)
    del rt.forward
    assert got == want
    if varied:
        assert any(len(set(g)) > 1 for g in got)         # a real sequence, not one repeated id
    # every row's logits at every step it took, against the full forward without a cache
    k = 0
    for i, p in enumerate(prompts):
        seq = p + got[i]
        n_img = p.count(model.cfg.image_token_id) // model.cfg.image_token_len
        vis = None
        if n_img:
            vis = visual_pt[k:k + n_img]
            k += n_img
        with torch.no_grad():
            full = model(torch.tensor([seq]), visual_tokens=vis).logits[0]
        for s in range(len(got[i]) + (1 if len(got[i]) < N_NEW else 0)):
            if s >= len(steps):
                break
            np.testing.assert_allclose(steps[s][i], full[len(p) - 1 + s].numpy(), atol=atol, rtol=0,
                                       err_msg=f"row {i} step {s}")


@pytest.mark.parametrize("kind", ["demo", pytest.param("dense", marks=needs_fixtures),
                                  pytest.param("moe", marks=needs_fixtures), pytest.param("0420", marks=needs_fixtures),
                                  pytest.param("march", marks=needs_fixtures)])
def test_onnx_matches_pytorch(kind, tmp_path):
    parity(kind, tmp_path, "torchscript")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["demo", "moe", "0420", "march"])
def test_dynamo_exporter_matches_pytorch(kind, tmp_path):
    """The torch.export-based exporter (the one torch keeps) gives the same graphs: same checks."""
    parity(kind, tmp_path, "dynamo")


def parity(kind, tmp_path, exporter):
    src = build(kind, tmp_path)
    model = load_model(src)
    export_onnx(src, tmp_path / "onnx", exporter=exporter, **quiet)
    rt = OnnxVLM.load(tmp_path / "onnx", threads=1)
    assert (rt.vision is not None) and rt.settings["pixels"]["resize"] == model.cfg.vision.resize
    if kind == "march":
        assert model.cfg.vision.resize == "naflex"
    pics = pictures()
    q = [{"role": "user", "content": "<image>\nWhat is in the picture?"}]
    for img in pics:                                   # square and non-square, one at a time
        pix = torch.from_numpy(packed_pixels(img, model.cfg.vision))[None]
        with torch.no_grad():                          # the runtime's own pixels (hf/pixels.encoder_inputs)
            np.testing.assert_allclose(rt.visual_tokens([img]), model.encode_images(pix).numpy(), atol=1e-4, rtol=0)
        check_parity(model, rt, [rt.prompt_ids(q, 1)], pix, varied=kind == "demo")
    # a batch: two pictures of different shapes, one prompt each, left-padded against a text-only one
    pix = torch.stack([torch.from_numpy(packed_pixels(im, model.cfg.vision)) for im in pics[1:]])
    prompts = [rt.prompt_ids([{"role": "user", "content": "<image>\nDescribe it in detail please."}], 1),
               rt.prompt_ids([{"role": "user", "content": "<image>\nColour?"}], 1)]
    check_parity(model, rt, prompts, pix)
    text = [rt.prompt_ids([{"role": "user", "content": "Tell me a story about a red circle."}], 0),
            rt.prompt_ids([{"role": "user", "content": "Hi"}], 0)]
    check_parity(model, rt, text)


def test_fp16_int8_and_version_check(tmp_path):
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    model = load_model(src)
    fp32 = export_onnx(src, tmp_path / "fp32", **quiet)
    int8 = export_onnx(src, tmp_path / "int8", quantize="int8", **quiet)
    fp16 = export_onnx(src, tmp_path / "fp16", dtype="fp16", **quiet)
    size = {p.name: sum(f.stat().st_size for f in p.glob("*.onnx")) for p in (fp32, int8, fp16)}
    assert size["int8"] < 0.5 * size["fp32"] and size["fp16"] < 0.6 * size["fp32"]
    ids = OnnxVLM.load(fp32).prompt_ids([{"role": "user", "content": "Tell me about shapes."}], 0)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].numpy()
    for folder, tol in ((int8, 0.5), (fp16, 0.05)):
        rt = OnnxVLM.load(folder, threads=1)
        logits, _ = rt.forward(np.array([ids]), np.zeros((1, model.cfg.image_token_len, model.cfg.hidden_size),
                                                           rt.float), np.ones((1, len(ids))),
                               np.arange(len(ids))[None], rt.empty_cache(1))
        got = logits[0, -1].astype(np.float32)
        assert np.abs(got - want).max() < tol * np.abs(want).max(), folder.name
        assert np.corrcoef(got, want)[0, 1] > 0.99, folder.name
    # a folder from another version of the export: one clear line
    s = json.loads((fp32 / "minimind_v_onnx.json").read_text())
    s["version"] = 99
    (fp32 / "minimind_v_onnx.json").write_text(json.dumps(s))
    with pytest.raises(RuntimeSetupError, match="another version of the ONNX export"):
        OnnxVLM.load(fp32)
    with pytest.raises(RuntimeSetupError, match="not an ONNX export"):
        OnnxVLM.load(src)


TORCH_BLOCKER = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, NoTorch())
"""


def test_runtime_runs_where_torch_cannot_be_imported(tmp_path):
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    export_onnx(src, tmp_path / "onnx", **quiet)
    vlm_pix = torch.from_numpy(packed_pixels(pictures()[0], load_model(src).cfg.vision))
    np.save(tmp_path / "pix.npy", vlm_pix.numpy()[None])
    pictures()[0].save(tmp_path / "pic.png")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TORCH_BLOCKER)
    code = textwrap.dedent(f"""
        import sys, numpy as np
        try:
            import torch
            print("torch imported"); sys.exit(1)
        except ImportError:
            pass
        from minimind_v.portable.runtime import OnnxVLM
        rt = OnnxVLM.load({str(tmp_path / 'onnx')!r}, threads=1)
        vis = rt.encode_packed(np.load({str(tmp_path / 'pix.npy')!r}))
        ids = rt.prompt_ids([{{"role": "user", "content": "<image>\\nWhat?"}}], 1)
        out = rt.generate([ids], rt.params(max_new_tokens=6), vis)
        print("tokens", out[0])
        from PIL import Image
        print("answer", repr(rt.answer("What?", images=[Image.open({str(tmp_path / 'pic.png')!r})],
                                       temperature=0, max_new_tokens=6)))
        print("torch loaded:", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "torch loaded: False" in res.stdout
    model = load_model(src)
    rt = OnnxVLM.load(tmp_path / "onnx", threads=1)
    from minimind_v.model.generate import SamplingParams, generate
    ids = rt.prompt_ids([{"role": "user", "content": "<image>\nWhat?"}], 1)
    want = generate(model, [ids], SamplingParams(max_new_tokens=6, stop_ids=(rt.tok.eos_id,)), vlm_pix[None])
    assert f"tokens {want[0]}" in res.stdout
    assert f"answer {rt.tok.decode(want[0])!r}" in res.stdout
    # the command line too: `minimind-v chat --runtime onnx` never imports torch
    res = subprocess.run([sys.executable, "-m", "minimind_v.cli", "chat", "--runtime", "onnx", "--model",
                          str(tmp_path / "onnx"), "--image", str(tmp_path / "pic.png"), "--prompt", "What?", "--greedy",
                          "--max-new-tokens", "6"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout == rt.tok.decode(want[0]) + "\n"


def test_export_cli_and_errors(tmp_path, capsys):
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    assert cli.main(["export", "--model", str(src), "--to", "onnx", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "decoder.onnx").exists() and (tmp_path / "o" / "vision.onnx").exists()
    assert cli.main(["export", "--model", str(src), "--to", "onnx", "--dtype", "bf16", str(tmp_path / "b")]) == 2
    assert "fp32 or fp16" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    # chat --runtime onnx answers like chat on the PyTorch model, token for token (greedy)
    pictures()[1].save(tmp_path / "pic.png")
    args = ["chat", "--prompt", "What is there?", "--image", str(tmp_path / "pic.png"), "--greedy",
            "--max-new-tokens", "12"]
    capsys.readouterr()
    assert cli.main(args + ["--model", str(src)]) == 0
    want = capsys.readouterr().out
    assert cli.main(args + ["--model", str(tmp_path / "o"), "--runtime", "onnx"]) == 0
    assert capsys.readouterr().out == want and len(want.strip()) > 3
    assert cli.main(args + ["--model", str(src), "--runtime", "onnx"]) == 2      # not an ONNX folder: one line
    err = capsys.readouterr().err
    assert "not an ONNX export" in err and len(err.strip().splitlines()) == 1


def test_serve_runtime_onnx_answers_like_the_model(tmp_path):
    """`serve --runtime onnx`: the same API over the ONNX folder; answers equal the PyTorch model's (greedy),
    streamed or not, and two clients at once are both served (one after the other)."""
    import base64
    import io
    import threading

    import httpx
    from helpers import LiveServer

    from minimind_v.pipeline import VLM
    from minimind_v.serve.app import create_app
    from minimind_v.serve.onnx_engine import OnnxEngine, OnnxServed
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    export_onnx(src, tmp_path / "onnx", **quiet)
    vlm = VLM.load(src)
    served = OnnxServed(OnnxVLM.load(tmp_path / "onnx", threads=1))
    img = pictures()[1]
    buf = io.BytesIO()
    img.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What colour?"}]}]
    want = vlm.answer("What colour?", images=[img], temperature=0, max_new_tokens=N_NEW)
    want_text = vlm.answer("Hello there", temperature=0, max_new_tokens=N_NEW)
    body = {"model": served.name, "messages": msgs, "temperature": 0, "max_tokens": N_NEW}
    with LiveServer(create_app(served, engine=OnnxEngine(served))) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=60).json()
        assert r["choices"][0]["message"]["content"] == want
        assert r["usage"]["completion_tokens"] == N_NEW or r["choices"][0]["finish_reason"] == "stop"
        pieces = []
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60) as s:
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        pieces.append(delta)
        assert "".join(pieces) == want and len(pieces) > 1
        got = {}

        def ask(k, b):
            got[k] = httpx.post(srv.url + "/v1/chat/completions", json=b, timeout=60).json()
        text_body = {**body, "messages": [{"role": "user", "content": "Hello there"}]}
        threads = [threading.Thread(target=ask, args=(0, body)), threading.Thread(target=ask, args=(1, text_body))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got[0]["choices"][0]["message"]["content"] == want
        assert got[1]["choices"][0]["message"]["content"] == want_text
        health = httpx.get(srv.url + "/health", timeout=10).json()
        assert health["requests"] == 4 and health["images_cached"] >= 2


def test_visual_token_cache_with_more_pictures_than_it_keeps(tmp_path):
    """A batch with more distinct pictures than the cache holds (an eval batch), and a repeated one: every row
    gets its own picture's tokens."""
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    rt = OnnxVLM.load(export_onnx(src, tmp_path / "onnx", **quiet), threads=1)
    rt.VISUAL_CACHE = 2
    pics = pictures()
    batch = [pics[0], pics[1], pics[2], pics[0]]
    got = rt.visual_tokens(batch)
    want = np.stack([rt.encode(rt.pixel_inputs([p]))[0] for p in batch])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert len(rt._visual) == 2
    assert not np.allclose(got[0], got[1])


def test_lora_adapter_exports_merged(tmp_path):
    """An adapter folder is merged on the way: the ONNX logits equal the adapter model's (and not the base's)."""
    from peft import get_peft_model

    from minimind_v.train.lora import lora_config, save_adapter
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    base = load_model(src)
    peft = get_peft_model(base, lora_config(4, None, 0.0, "all", False))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)                      # a LoRA update that changes the answers
    adapter = save_adapter(peft, tmp_path / "adapter", Tokenizer.load(src), src)
    export_onnx(adapter, tmp_path / "onnx", **quiet)
    rt = OnnxVLM.load(tmp_path / "onnx", threads=1)
    ids = rt.prompt_ids([{"role": "user", "content": "Tell me about shapes."}], 0)
    adapted, plain = load_model(adapter), load_model(src)
    with torch.no_grad():
        want = adapted(torch.tensor([ids])).logits[0].numpy()
        other = plain(torch.tensor([ids])).logits[0].numpy()
    c = rt.cfg
    got, _ = rt.forward(np.array([ids]), np.zeros((1, c["image_token_len"], c["hidden_size"]), np.float32),
                        np.ones((1, len(ids))), np.arange(len(ids))[None], rt.empty_cache(1))
    np.testing.assert_allclose(got[0], want, atol=1e-4, rtol=0)
    assert np.abs(got[0] - other).max() > 1e-2


def test_clear_errors(tmp_path):
    """No tokenizer, an unexportable rope scaling, onnxruntime missing: one line each, naming the problem."""
    from minimind_v.portable.onnx_export import ExportError
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    bare = tmp_path / "bare"
    shutil.copytree(src, bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="no tokenizer.json"):
        export_onnx(bare, tmp_path / "o1", **quiet)
    odd = tmp_path / "odd"
    shutil.copytree(src, odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="rope_scaling type 'dynamic' cannot be exported"):
        export_onnx(odd, tmp_path / "o2", **quiet)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    export_onnx(src, tmp_path / "onnx", **quiet)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TORCH_BLOCKER.replace('"torch"', '"onnxruntime"')
                                                        .replace('"torch.', '"onnxruntime.'))
    code = f"from minimind_v import cli; raise SystemExit(cli.main(['chat', '--model', {str(tmp_path / 'onnx')!r}, " \
           f"'--runtime', 'onnx', '--prompt', 'hi']))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == ("error: the ONNX runtime needs onnxruntime: pip install 'minimind-v[onnx]' "
                                  "(or pip install onnxruntime)")


def test_hf_folder_exports_too(tmp_path):
    """A Hugging Face folder (`export --to hf`) exports to ONNX like the folder it came from."""
    from minimind_v.formats.convert_export import export
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    export(src, tmp_path / "hf", "hf", log=lambda m: None)
    rt = OnnxVLM.load(export_onnx(tmp_path / "hf", tmp_path / "onnx", **quiet), threads=1)
    model = load_model(src)
    img = pictures()[2]
    pix = torch.from_numpy(packed_pixels(img, model.cfg.vision))[None]
    check_parity(model, rt, [rt.prompt_ids([{"role": "user", "content": "<image>\nWhat?"}], 1)], pix, varied=True)


def test_a_part_that_cannot_be_exported_is_one_line(tmp_path, monkeypatch, capsys):
    """Whatever the exporter meets inside a graph, the command says which graph in one line."""
    from minimind_v.portable import onnx_export
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")

    def broken(self, *a):
        raise RuntimeError("Unsupported: an operator the exporter has no rule for\nmore detail")
    monkeypatch.setattr(onnx_export.NaflexVision, "forward", broken)
    assert cli.main(["export", "--model", str(src), "--to", "onnx", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the vision graph could not be exported with the torchscript exporter "
                          "(RuntimeError: Unsupported: an operator the exporter has no rule for")
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


def test_a_wrong_graph_is_caught_before_it_is_written(tmp_path, monkeypatch):
    """The export checks the written graphs against PyTorch: a decoder graph that computes something else
    (here: q/k norms scaled by 1.5; then no rotary positions at all) stops the export with one line,
    and nothing is left behind."""
    from minimind_v.portable import onnx_export
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    rms = onnx_export._rms
    monkeypatch.setattr(onnx_export, "_rms", lambda norm, x: rms(norm, x) * 1.5)
    with pytest.raises(onnx_export.ExportError, match="disagree with PyTorch by"):
        export_onnx(src, tmp_path / "o", **quiet)
    monkeypatch.setattr(onnx_export, "_rms", rms)
    monkeypatch.setattr(onnx_export, "_rope", lambda x, cos, sin: x)
    with pytest.raises(onnx_export.ExportError, match=r"lost inputs \['position_ids'\]"):
        export_onnx(src, tmp_path / "o", **quiet)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
