"""The continuous-batching engine driven step by step (no HTTP): rows that join late, prompts longer
than the shared cache (shift right), a cache that fills up (compaction, growth), cancelled rows, a
failing request among good ones. Every answer must equal what the model says alone (`VLM.stream`)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from minimind_v.pipeline import VLM
from minimind_v.serve.engine import Engine, Job, QueueFull, TextStream
from minimind_v.serve.testing import build_tiny_model


class CharTok:
    """Ids are code points; 0xFFFD marks a half character (as a byte-level decode would show it)."""

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def push_all(ts, text):
    return [ts.push(ord(ch)) for ch in text]


def test_text_stream_stop_strings_and_holding_back():
    ts = TextStream(CharTok(), ["END", "xy"])
    assert push_all(ts, "abE") == ["a", "b", ""]            # "E" could start "END": held back
    assert push_all(ts, "Nd") == ["", "ENd"]                # "ENd" is not a stop: released
    assert push_all(ts, "qEN") == ["q", "", ""]
    assert ts.push(ord("D")) == "" and ts.stopped and ts.text == "abENdq"
    ts = TextStream(CharTok(), ["xy"])
    assert push_all(ts, "ax") == ["a", ""] and ts.finish() == "x"     # the end releases what was held
    ts = TextStream(CharTok(), [])
    assert ts.push(0xFFFD) == "" and ts.push(ord("a")) == "\ufffda"    # half characters wait for the rest


def test_text_stream_equals_decoding_everything_each_time(tmp_path):
    """Incremental decoding (only the ids since the last whole character) gives what VLM.stream gives
    by decoding all ids at every step, also for multi-byte characters split across tokens."""
    import random

    from minimind_v.tokenizer import train_tokenizer
    tok = train_tokenizer(["héllo wörld ✓ 你好 emoji 🙂 café"] * 5, vocab_size=300, out=tmp_path,
                          show_progress=False)
    rng = random.Random(0)
    ids = [rng.randrange(tok.vocab_size) for _ in range(400)]
    shown, pieces = "", []
    for i in range(1, len(ids) + 1):              # the reference: VLM.stream's loop
        text = tok.decode(ids[:i])
        if not text.endswith("\ufffd") and len(text) > len(shown):
            pieces.append(text[len(shown):])
            shown = text
    ts = TextStream(tok)
    assert [p for p in (ts.push(i) for i in ids) if p] == pieces


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return VLM.load(build_tiny_model(tmp_path_factory.mktemp("engine") / "m"))


def make_job(vlm, text, images=(), n=12, events=None, reference=True, **sampling):
    msgs = [{"role": "user", "content": "<image>\n" * len(images) + text}]
    ev = events if events is not None else []
    job = Job(ids=vlm.prompt_ids(msgs, len(images)), pixels=vlm.pixels(list(images)),
              params=vlm.params(max_new_tokens=n, temperature=sampling.pop("temperature", 0.0), **sampling),
              emit=ev.append)
    job.want = reference and "".join(vlm.stream(msgs, list(images), temperature=job.params.temperature,
                                                max_new_tokens=n, seed=job.params.seed, top_p=job.params.top_p))
    job.events = ev
    return job


def text_of(job):
    return "".join(e[1] for e in job.events if e[0] == "delta")


def run(engine, limit=500):
    for _ in range(limit):
        if not engine.active and not engine.waiting:
            return
        engine.step()
    raise AssertionError("the engine did not finish")


def test_rows_join_late_shift_compact_grow_and_cancel(vlm):
    engine = Engine(vlm, max_batch=3, chunk=4)          # a tiny growth chunk: relayouts happen often
    img = Image.new("RGB", (30, 20), (200, 30, 60))
    a = make_job(vlm, "hi", n=16)
    long_b = make_job(vlm, "Describe the picture in detail, please, with every shape.", [img], n=6)
    c = make_job(vlm, "How many?", n=12)
    d = make_job(vlm, "Is it red?", n=14, temperature=0.9, seed=7, top_p=0.9)   # sampled, seeded
    e = make_job(vlm, "Is it blue?", n=10)
    engine.submit(a)
    for _ in range(3):
        engine.step()
    engine.submit(long_b)                 # longer than the shared cache so far: everything shifts right
    engine.step()
    assert engine.cache.starts[0] > 0 and engine.cache.starts[1] == 0
    engine.submit(c)                      # shorter: placed right-aligned, no shift
    engine.submit(d)
    engine.submit(e)
    engine.step()
    assert len(engine.active) == 3 and len(engine.waiting) == 2        # slots are the limit, the rest wait
    run(engine)
    for job in (a, long_b, c, d, e):
        assert text_of(job) == job.want, job.ids[:5]
        assert job.events[-1][0] == "done"
    assert all(v > 0 for v in engine.cache.moves.values()), engine.cache.moves    # every relayout path ran
    e2 = make_job(vlm, "Cancel me.", n=500, reference=False)
    engine.submit(e2)
    for _ in range(4):
        engine.step()
    engine.cancel(e2)
    engine.step()
    assert not engine.active and engine.counters["cancelled"] == 1
    assert engine.cache.rows == 0 and engine.cache.max_len == 0          # memory given back
    assert engine.counters["peak_batch"] == 3


@pytest.mark.parametrize("prefill_tokens", [4096, 60])
def test_jobs_admitted_together_are_prefilled_together(vlm, prefill_tokens):
    """Different lengths, with and without pictures, admitted at one step: left-padded into one prefill
    (or, with a small token budget, split into several); each answer still equals the model's alone."""
    engine = Engine(vlm, prefill_tokens=prefill_tokens)
    red, blue = Image.new("RGB", (30, 20), (220, 20, 20)), Image.new("RGB", (20, 30), (20, 20, 220))
    jobs = [make_job(vlm, "What colour?", [red], n=8), make_job(vlm, "hi", n=9),
            make_job(vlm, "Two pictures: which one is blue, the first or the second?", [red, blue], n=7),
            make_job(vlm, "Describe it.", [blue], n=10, temperature=0.8, seed=3)]
    for job in jobs:
        engine.submit(job)
    engine.step()
    assert len(engine.active) == 4 and not engine.waiting
    run(engine)
    for job in jobs:
        assert text_of(job) == job.want


def test_finish_reasons_and_usage(vlm):
    engine = Engine(vlm)
    probe = make_job(vlm, "What colour?", n=6)
    run_one(engine, probe)
    assert probe.events[-1] == ("done", "length", len(probe.ids), 6)
    ids = _generated_ids(vlm, probe)          # make the 3rd generated id a stop id: 2 tokens, then "stop"
    job = make_job(vlm, "What colour?", n=6)
    job.params.stop_ids = (vlm.tok.eos_id, ids[2])
    run_one(engine, job)
    assert job.events[-1] == ("done", "stop", len(job.ids), 2)


def _generated_ids(vlm, job):
    from minimind_v.model.generate import generate
    return generate(vlm.model, [job.ids], vlm.params(max_new_tokens=6), None)[0]


def run_one(engine, job):
    engine.submit(job)
    run(engine)


def test_a_failing_request_does_not_hurt_the_others(vlm):
    engine = Engine(vlm)
    good = make_job(vlm, "What colour?", n=8)
    bad = make_job(vlm, "What colour?", n=8)
    bad.ids = bad.ids + [vlm.model.cfg.vocab_size + 5]         # an id outside the embedding table
    engine.submit(good)
    engine.submit(bad)
    run(engine)
    assert bad.events[-1][0] == "error" and engine.counters["errors"] == 1
    assert text_of(good) == good.want


def test_queue_limit(vlm):
    engine = Engine(vlm, max_queue=2)
    engine.submit(make_job(vlm, "a", n=2))
    engine.submit(make_job(vlm, "b", n=2))
    with pytest.raises(QueueFull):
        engine.submit(make_job(vlm, "c", n=2))
    run(engine)
    engine.submit(make_job(vlm, "d", n=2))     # room again once the queue drained


@pytest.mark.parametrize("image_cache", [64, 0])
def test_a_picture_asked_about_again_skips_the_encoder(vlm, image_cache):
    """Chat clients resend the picture with every turn: its visual tokens come from the engine's cache
    (the encoder runs once), the answers stay what the model says alone, and 0 turns the cache off."""
    engine = Engine(vlm, image_cache=image_cache)
    red, blue = Image.new("RGB", (30, 20), (220, 20, 20)), Image.new("RGB", (20, 30), (20, 20, 220))
    calls = []
    encoder = vlm.model.vision_encoder
    hook = encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        first = make_job(vlm, "What colour?", [red], n=6)
        engine.submit(first)
        run(engine)
        again = [make_job(vlm, "Is it red?", [red], n=6), make_job(vlm, "Which is blue?", [blue, red], n=6)]
        for job in again:
            engine.submit(job)
        run(engine)
    finally:
        hook.remove()
    for job in [first, *again]:
        assert text_of(job) == job.want
    if image_cache:
        assert calls == [1, 1]                      # red once, then blue alone; red came from the cache
        assert engine.counters["images_encoded"] == 2 and engine.counters["images_cached"] == 2
    else:
        # nothing kept between prefills; within one prefill a picture sent twice is still encoded once
        assert calls == [1, 2] and engine.counters["images_encoded"] == 3 and not engine.visual


def test_image_cache_keeps_the_most_recent_pictures(vlm):
    engine = Engine(vlm, image_cache=2)
    pics = [vlm.pixels([Image.new("RGB", (8, 8), (40 * i, 0, 0))]) for i in range(3)]
    for p in pics:
        engine._visual_tokens(p)
    engine._visual_tokens(pics[1])                  # used again: now the most recent
    engine._visual_tokens(torch.cat([pics[2], pics[0]]))
    assert engine.counters["images_encoded"] == 4    # pics[0] had been evicted (the least recently used)
    assert len(engine.visual) == 2
