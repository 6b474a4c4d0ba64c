"""The exported folder in the Hugging Face way: AutoProcessor + AutoModelForImageTextToText (the five lines
of the README), the image-text-to-text pipeline, batching, and save_pretrained round trips.

Every answer is compared with our own greedy generation (what `minimind-v chat --greedy` prints), token for
token. Tiny random models (tests/test_export.py's builder: 64 visual tokens per picture, weights large enough
that greedy replies vary with the input).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_export import picture, tiny_model, until_eos

from minimind_v import cli
from minimind_v.formats.convert_export import export
from minimind_v.data.chatml import render
from minimind_v.formats.folder import save_model
from minimind_v.model.generate import generate
from minimind_v.pipeline import VLM

NEW = 10


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from minimind_v.datatools.synth import corpus
    from minimind_v.tokenizer import train_tokenizer
    return train_tokenizer(corpus(200), vocab_size=320, out=tmp_path_factory.mktemp("tok"), show_progress=False)


@pytest.fixture(scope="module")
def folders(tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("hfproc")
    save_model(tiny_model(tok, seed=3), root / "ours", tok)
    export(root / "ours", root / "hf", to="hf", log=lambda m: None)
    return root / "ours", root / "hf"


def load(folder, **kw):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    return (AutoProcessor.from_pretrained(str(folder), trust_remote_code=True),
            AutoModelForImageTextToText.from_pretrained(str(folder), trust_remote_code=True, **kw).eval())


def hf_message(text, images=(), role="user"):
    return {"role": role, "content": [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": text}]}


def ours(vlm, messages, images):
    """Our greedy tokens (the chat's arithmetic) for messages in our `<image>` form."""
    ids = vlm.prompt_ids(messages, len(images))
    return generate(vlm.model, [ids], vlm.params(max_new_tokens=NEW), vlm.pixels(images))[0]


def five_lines(processor, model, messages):
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)
    new = until_eos(out[0, inputs["input_ids"].shape[1]:].tolist(), model.config.eos_token_id)
    return inputs, new


def test_five_lines_equal_chat_greedy(folders, tmp_path, capsys):
    ours_dir, hf = folders
    processor, model = load(hf)
    assert type(model).__name__ == "MiniMindVForCausalLM" and type(processor).__name__ == "MiniMindVProcessor"
    image = picture(11, size=(80, 50), mode="RGBA")
    image.save(tmp_path / "x.png")
    inputs, tokens = five_lines(processor, model, [hf_message("What is in the picture?", [image])])
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    assert int((inputs["input_ids"] == model.config.image_ids[0]).sum()) == 64
    vlm = VLM.load(ours_dir)
    expected = ours(vlm, [{"role": "user", "content": "What is in the picture?"}], [image])
    assert len(set(expected)) > 2 and tokens == expected
    assert cli.main(["chat", "--model", str(ours_dir), "--image", str(tmp_path / "x.png"), "--prompt",
                     "What is in the picture?", "--greedy", "--max-new-tokens", str(NEW)]) == 0
    assert capsys.readouterr().out.strip() == processor.decode(tokens, skip_special_tokens=True).strip()


def test_text_only_and_several_pictures(folders):
    ours_dir, hf = folders
    processor, model = load(hf)
    vlm = VLM.load(ours_dir)
    inputs, tokens = five_lines(processor, model, [hf_message("Tell me about shapes.")])
    assert "pixel_values" not in inputs
    assert tokens == ours(vlm, [{"role": "user", "content": "Tell me about shapes."}], [])
    pics = [picture(12), picture(13)]
    both, tokens = five_lines(processor, model, [hf_message("Which one is red?", pics)])
    assert tokens == ours(vlm, [{"role": "user", "content": "<image>\n<image>\nWhich one is red?"}], pics)
    swapped, _ = five_lines(processor, model, [hf_message("Which one is red?", pics[::-1])])
    with torch.no_grad():           # the order of the pictures is kept: the next-token scores change with it
        assert not torch.allclose(model(**both).logits[0, -1], model(**swapped).logits[0, -1])


def test_processor_ids_equal_our_renderer(folders, tok):
    _, hf = folders
    processor, _ = load(hf)
    pic = picture(14)
    conv = [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "<image>\nWhat colour?"}, {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "And the shape?"}]
    hf_conv = [{"role": "system", "content": [{"type": "text", "text": "You are helpful."}]},
               hf_message("What colour?", [pic]), {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
               hf_message("And the shape?")]
    want = render(conv, tok, 64, add_generation_prompt=True).ids
    got = processor.apply_chat_template(hf_conv, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(got["input_ids"][0] if isinstance(got["input_ids"][0], list) else got["input_ids"]) == want
    # plain strings with <image> markers: render the text, then the processor with the pictures
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    got = processor(text=text, images=[pic])
    assert list(got["input_ids"][0]) == want
    with pytest.raises(ValueError, match="marker"):
        processor(text="<image>\nhi", images=[pic, pic])
    with pytest.raises(ValueError, match="text 0 has 2"):
        processor(text=["<image><image>a", "b"], images=[[pic], [pic]])
    with pytest.raises(ValueError, match="truncation"):
        processor(text="<image>hi", images=[pic], truncation=True)


def test_batched_generation_equals_each_alone(folders):
    _, hf = folders
    processor, model = load(hf)
    convs = [[hf_message("What shape is it?", [picture(15)])],
             [hf_message("How many shapes are there in this picture, and which colours do they have?",
                         [picture(16), picture(17)])],
             [hf_message("Say something.")]]
    alone = [five_lines(processor, model, c)[1] for c in convs]
    batch = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                          return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any() and (batch["attention_mask"][:, -1] == 1).all()   # left
    out = model.generate(**batch, max_new_tokens=NEW, do_sample=False)
    together = [until_eos(row[batch["input_ids"].shape[1]:].tolist(), model.config.eos_token_id) for row in out]
    assert together == alone and len({tuple(a) for a in alone}) == 3


def test_pipeline_with_image_and_path(folders, tmp_path):
    from transformers import pipeline
    _, hf = folders
    processor, model = load(hf)
    image = picture(18)
    image.save(tmp_path / "p.png")
    _, tokens = five_lines(processor, model, [hf_message("What is it?", [image])])
    want = processor.decode(tokens, skip_special_tokens=True)
    pipe = pipeline("image-text-to-text", model=str(hf), trust_remote_code=True)
    for item in ({"type": "image", "image": image}, {"type": "image", "path": str(tmp_path / "p.png")}):
        messages = [{"role": "user", "content": [item, {"type": "text", "text": "What is it?"}]}]
        out = pipe(text=messages, max_new_tokens=NEW, return_full_text=False)
        assert out[0]["generated_text"] == want


def test_save_pretrained_round_trip_and_no_warnings(folders, tmp_path, recwarn, caplog):
    import logging
    _, hf = folders
    caplog.set_level(logging.WARNING)
    processor, model = load(hf)
    processor.save_pretrained(str(tmp_path / "again"))
    model.save_pretrained(str(tmp_path / "again"))
    p2, m2 = load(tmp_path / "again")
    msgs = [hf_message("Describe it.", [picture(19)])]
    a, ta = five_lines(processor, model, msgs)
    b, tb = five_lines(p2, m2, msgs)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert ta == tb
    with torch.no_grad():
        assert torch.equal(model(**a).logits, m2(**b).logits)
    user_warnings = [w for w in recwarn.list if not issubclass(w.category, (ResourceWarning, DeprecationWarning))]
    assert not user_warnings, [str(w.message) for w in user_warnings]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    assert not logged, logged


def test_bf16_folder_loads_as_bf16_and_answers(folders, tmp_path):
    ours_dir, _ = folders
    export(ours_dir, tmp_path / "bf16", to="hf", dtype=torch.bfloat16, log=lambda m: None)
    processor, model = load(tmp_path / "bf16", dtype="auto")    # transformers 4.x loads fp32 unless asked
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        inputs, tokens = five_lines(processor, model, [hf_message("What is it?", [picture(20)])])
    assert model.dtype == torch.bfloat16 and len(tokens) > 0
    card = (tmp_path / "bf16" / "README.md").read_text()
    assert "AutoModelForImageTextToText" in card and "image-text-to-text" in card


def test_exported_pixel_code_is_the_package_file_and_gives_the_same_pixels(folders):
    """The exported folder carries minimind_v/hf/pixels.py byte for byte, and its image processor returns
    exactly the pixels chat feeds the model (square and aspect-kept pictures, RGBA and grey)."""
    import numpy as np
    from PIL import Image

    import minimind_v.hf.pixels as pixels
    from minimind_v.hf.image_processing_minimind_v import MiniMindVImageProcessor
    ours_dir, hf = folders
    assert (hf / "pixels.py").read_bytes() == Path(pixels.__file__).read_bytes()
    vlm = VLM.load(ours_dir)
    proc = MiniMindVImageProcessor.from_pretrained(str(hf))
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (40, 70, 3), np.uint8)),
            Image.fromarray(rng.integers(0, 256, (33, 33, 4), np.uint8), "RGBA"),
            Image.fromarray(rng.integers(0, 256, (50, 20), np.uint8), "L")]
    got = proc(images=pics, return_tensors="pt")["pixel_values"]
    assert torch.equal(got, vlm.pixels(pics))
