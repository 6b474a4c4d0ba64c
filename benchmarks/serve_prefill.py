"""Time to first token in the serving engine, with and without its picture cache, at full size.

    python benchmarks/serve_prefill.py                 # minimind-3v, random weights, 2 threads
    python benchmarks/serve_prefill.py --threads 1 --asks 6

A chat client resends the picture with every turn of a conversation. The engine (`serve/engine.py`)
keeps the visual tokens of the last `--image-cache` pictures, so only a conversation's first turn runs
the encoder. This submits, one request at a time, `--asks` questions about each of two pictures
(random full-size model, SigLIP2-B/16-shaped encoder, 256 x 256 pictures, 64 visual tokens + 32 text
tokens) and times submit -> first token (the prefill step), once with the cache (64) and once without
(0). One JSON line per setting: first_ms (the two first asks), repeat_ms (median of the others).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # see docs/perf.md "The environment"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from train_throughput import emit, load_tokenizer, machine_info, model_vocab, random_image  # noqa: E402

from minimind_v.config import preset  # noqa: E402
from minimind_v.model.generate import SamplingParams  # noqa: E402
from minimind_v.hf.pixels import packed_pixels  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402
from minimind_v.serve.engine import Engine, Job  # noqa: E402


class _Served:
    """What the engine needs of a `pipeline.VLM`: the model and the tokenizer."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="minimind-3v")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--asks", type=int, default=4, help="questions per picture (at least 2)")
    ap.add_argument("--tokenizer")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    a = ap.parse_args()
    if a.asks < 2:
        ap.error("--asks must be at least 2: the first question about a picture is not a repeat")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = load_tokenizer(a.tokenizer)
    cfg = preset(a.preset, vocab_size=model_vocab(tok), image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                 bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    served = _Served(MiniMindVLM(cfg).eval(), tok)
    rng = random.Random(0)
    pictures = [torch.from_numpy(packed_pixels(Image.open(io.BytesIO(random_image(rng, 256))), cfg.vision))[None] for _ in range(2)]
    info = machine_info(torch.device("cpu"))
    for cache in (64, 0):
        engine = Engine(served, image_cache=cache)
        times = []
        for i in range(2 * a.asks):
            ids = ([tok.bos_id] + [cfg.image_token_id] * cfg.image_token_len
                   + [rng.randrange(100, cfg.vocab_size) for _ in range(32)])
            job = Job(ids=ids, pixels=pictures[i % 2], params=SamplingParams(max_new_tokens=1, temperature=0.0),
                      emit=lambda event: None)
            t0 = time.perf_counter()
            engine.submit(job)
            engine.step()                       # admission: prefill + the first token
            times.append(time.perf_counter() - t0)
            while engine.active or engine.waiting:
                engine.step()
        line = json.dumps({"preset": a.preset, "image_cache": cache, "threads": a.threads,
                           "first_ms": [round(t * 1e3, 1) for t in times[:2]],
                           "repeat_ms": round(statistics.median(times[2:]) * 1e3, 1),
                           "images_encoded": engine.counters["images_encoded"], "requests": len(times),
                           "machine": info})
        emit(line, a.out)


if __name__ == "__main__":
    main()
