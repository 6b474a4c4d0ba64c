"""The built-in demo: train a VLM that really sees, from nothing, on a laptop CPU.

Steps (all local, nothing downloaded):
  1. draw the synthetic shapes set (datatools/synth.py): training pictures with captions and multi-turn
     questions, and a held-out evaluation split drawn with another seed;
  2. train a small byte-level BPE tokenizer on the data's text;
  3. warm up the tiny, from-scratch SigLIP2 encoder: every patch of a scene says what it shows (its
     colour, shape and column, or empty) and where it is (recipes/encoder_warmup.py: the stand-in for SigLIP's
     own pretraining), then save it as a SigLIP2 folder, the way a real encoder is given to the recipe;
  4. vlm-pretrain: captions that name every object with its place, in random order, training the
     projector and the LLM with the encoder frozen (as in the real recipe);
  5. vlm-sft: multi-turn questions about colour, shape, count and relative position;
  6. evaluate on the held-out split, again with every image blanked (the blind baseline), and print
     both next to the majority-answer baseline; write summary.json, loss.png and example answers.

The recipe: 48 px pictures cut into 16 px patches, so each cell of the scenes' 3 x 3 layout is one
patch and one visual token (no merge), each visual token with a learned place vector added after the
projector (`visual_pos_embed`); several questions per picture, so every encoded image pays for four
answers. What makes it hold over seeds (96.75-99.75% over six runs, every question type at least 89%:
docs/demo.md) is that each lookup is taught directly: the encoder is taught what each
patch shows, its object's column included, so every visual token is a clean key and the place is a
property of the object's own token, as its colour is;
captions and replies use the same words in the same order ("The circle is red.", "It is a red
circle."), so the lookups the questions need are the ones the captions trained; captions name objects
in random order, so an object's place must be read, not inferred from the order; and a position reply
says where both objects are before it compares them. 16 rows a step, 1000 caption + 1800 SFT steps.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import tiny_siglip


@dataclass
class DemoRecipe:
    n_train: int = 6000           # training pictures
    n_eval: int = 400             # held-out pictures (one question each)
    image_size: int = 48          # 3 x 3 patches of 16 px: one patch per layout cell
    patch_size: int = 16
    vocab_size: int = 512
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    enc_hidden: int = 128
    enc_layers: int = 2
    enc_heads: int = 4
    merge: int = 1
    warmup_pictures: int = 3000   # scenes for the encoder warm-up
    warmup_steps: int = 1000      # 300 left the shape features blurred enough that binding depended on the seed
    warmup_column: bool = True    # the warm-up also names each object's column: left/right 70-100% -> 89-100%
                                  # over six runs (docs/LOG.md, 2026-12-03)
    pretrain_steps: int = 1000
    sft_steps: int = 1800
    batch_size: int = 16          # rows per step in every stage (16 learns more per row than 32: docs/demo.md)
    lr: float = 2e-3
    sft_lr: float = 1.5e-3
    turns: int = 4
    visual_pos: bool = True       # a learned place vector per visual token (ModelConfig.visual_pos_embed)
    padding: str = "pack"         # several rows per sequence, attention kept within each row (no pad FLOPs)
    max_new_tokens: int = 40      # the longest reply (a position question's reasoning) is about 25 tokens
    train_encoder: bool = False   # the warmed-up encoder stays frozen in the VLM stages, as SigLIP does

    def model_overrides(self) -> dict:
        vision = tiny_siglip(self.enc_hidden, self.enc_layers, self.enc_heads, self.image_size, self.patch_size)
        return dict(merge=self.merge, hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
                    num_key_value_heads=self.kv_heads, vision=vision, max_position_embeddings=1024,
                    visual_pos_embed=self.visual_pos)


def idle_cores(interval: float = 0.5) -> float | None:
    """How many cores sat idle over the last `interval` seconds (from /proc/stat; None where it is absent).

    Measured now rather than read from the load average, which lags by a minute and would still count
    the `pip install` that `./run demo` has just finished."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)                     # idle + iowait, total (in clock ticks, all cores)
    try:
        i0, t0 = snap()
        time.sleep(interval)
        i1, t1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores * (i1 - i0) / max(1, t1 - t0)


def choose_threads(requested: int = 0) -> tuple[int, str]:
    """Threads for the demo's tiny matrices: 2 when two cores are free, else 1.

    More than two barely help a model this small, and two threads on a machine where one core is busy
    are several times slower than one (OpenMP threads wait for each other at every operation), so the
    demo takes a second thread only when a second core is really idle. `--threads` or OMP_NUM_THREADS
    override the choice."""
    if requested > 0:
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    free = idle_cores()
    if free is None:
        return 1, "CPU load unknown"
    return (2 if free >= 1.6 else 1), f"{free:.1f} idle cores"


QUICK = DemoRecipe(n_train=600, n_eval=80, warmup_pictures=300, warmup_steps=20, pretrain_steps=20, sft_steps=40,
                   layers=2)


# Seconds per 32 rows on this project's 2-core reference machine, for the ETA printed at the start:
# (caption rows, SFT rows) by thread count, measured 2026-12-02 with the per-patch warm-up recipe (two threads
# on a quiet machine: 489 s in all; one thread with the other core busy: 715 s); the rest (data, warm-up,
# evaluation) is about 20 s. An estimate: the printed tqdm bars give the real pace.
STEP_SECONDS = {1: (0.254, 0.636), 2: (0.216, 0.403)}


def eta_minutes(r: "DemoRecipe", threads: int) -> float:
    cap, sft = STEP_SECONDS[min(max(threads, 1), 2)]          # per step of 32 rows
    return (20 + (r.pretrain_steps * cap + r.sft_steps * sft) * r.batch_size / 32) / 60


def run_demo(out: str | Path = "runs/demo", quick: bool = False, seed: int = 0,
             recipe: DemoRecipe | None = None, examples: int = 4, threads: int = 0) -> dict:
    """Run the demo; `threads` 0 picks 1 or 2 by how many cores are idle now (`choose_threads`)."""
    import torch

    before = torch.get_num_threads()
    n, why = choose_threads(threads)
    torch.set_num_threads(n)
    try:
        return _run_demo(out, quick, seed, recipe, examples, n, why)
    finally:
        torch.set_num_threads(before)


def _run_demo(out, quick, seed, recipe, examples, threads, why) -> dict:
    import torch

    from ..datatools import synth
    from ..eval.evaluate import evaluate, format_table, load_eval_rows, majority_baseline, show_examples
    from ..model.vision import VisionEncoder
    from ..pipeline import VLM
    from ..tokenizer import train_tokenizer
    from ..train.loop import TrainConfig, train
    from ..train.metrics import plot_stages
    from .encoder_warmup import warm_up_encoder

    r = recipe or (QUICK if quick else DemoRecipe())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(seed)
    say = lambda msg: print(f"[demo {time.time() - t0:5.0f}s] {msg}", flush=True)  # noqa: E731

    say(f"{threads} thread{'s' if threads > 1 else ''} ({why}); expected wall clock about "
        f"{eta_minutes(r, threads):.0f} min (as measured on a 2-core machine with this many threads)")
    say(f"1/6 drawing {r.n_train} training and {r.n_eval} held-out pictures ({r.image_size}px)")
    train_paths = synth.generate(out / "data", r.n_train, seed=seed, image_size=r.image_size,
                                 kind="all", turns=r.turns, progress=True)
    eval_path = synth.generate(out / "heldout", r.n_eval, seed=seed + 1000, image_size=r.image_size,
                               kind="eval")["eval"]

    say("2/6 training the tokenizer")
    tok_dir = out / "tokenizer"
    train_tokenizer(synth.corpus(2000, seed), r.vocab_size, tok_dir, show_progress=False)

    overrides = r.model_overrides()
    say(f"3/6 encoder warm-up: what each patch of {r.warmup_pictures} scenes shows, and where it is")
    encoder = VisionEncoder(overrides["vision"])
    pics, cells = synth.cell_scenes(r.warmup_pictures, seed=seed + 2000, image_size=r.image_size,
                                    column=r.warmup_column)
    warm = warm_up_encoder(encoder, pics, cells, steps=r.warmup_steps, batch_size=r.batch_size, seed=seed)
    seen = "colour, shape and column" if r.warmup_column else "colour and shape"
    say(f"    objects seen right ({seen}) in {warm['accuracy']:.0%} of the last batch's patches, place in "
        f"{warm['position_accuracy']:.0%}")
    encoder.encoder.save_pretrained(str(out / "encoder"))

    common = dict(unfreeze_vision=r.train_encoder, trainable="all", seed=seed, log_every=20, num_workers=0,
                  padding=r.padding)
    say(f"4/6 vlm-pretrain: captions, {r.pretrain_steps} steps")
    train(TrainConfig(stage="vlm-pretrain", data=[str(train_paths["pretrain"])], out=str(out / "pretrain"),
                      tokenizer=str(tok_dir), preset="tiny", model_overrides=overrides,
                      vision_encoder=str(out / "encoder"), max_steps=r.pretrain_steps, lr=r.lr,
                      batch_size=r.batch_size, warmup_steps=20, **common))
    say(f"5/6 vlm-sft: questions, {r.sft_steps} steps")
    train(TrainConfig(stage="vlm-sft", data=[str(train_paths["sft"])], out=str(out / "sft"),
                      init_from=str(out / "pretrain" / "model"), max_steps=r.sft_steps, lr=r.sft_lr,
                      batch_size=r.batch_size, **common))
    model_dir = out / "sft" / "model"

    say("6/6 evaluating on the held-out split (and blind)")
    vlm = VLM.load(model_dir)
    rows = load_eval_rows([eval_path])
    res = evaluate(vlm, rows, max_new_tokens=r.max_new_tokens, progress=False)
    blind = evaluate(vlm, rows, blind=True, max_new_tokens=r.max_new_tokens, progress=False)
    maj = majority_baseline(rows)
    wall = time.time() - t0

    plot_stages(out, [("pretrain", r.pretrain_steps), ("sft", r.sft_steps)],
                title="demo training loss (vlm-pretrain, then vlm-sft)")

    summary = {"overall": res["overall"], "per_type": res["per_type"], "blind": blind["overall"],
               "blind_per_type": blind["per_type"], "majority_baseline": maj["overall"],
               "majority_per_type": maj["per_type"], "n_eval": res["n"], "wall_clock_s": round(wall, 1),
               "parameters": vlm.model.num_parameters(include_vision=True), "model": str(model_dir.resolve()),
               "encoder_warmup": warm, "recipe": asdict(r), "quick": quick, "threads": threads,
               "seed": seed, "versions": library_versions()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print(format_table(res, blind, maj))
    print(f"\nheld-out questions: {res['n']}   wall clock: {wall:.0f} s   parameters: {summary['parameters']:,}")
    print("blind = every picture replaced by a blank one; majority = always the most frequent answer per type\n")
    show_examples(rows, res["predictions"], examples)
    print(f"\nmodel folder: {model_dir}\nloss curve:   {out / 'loss.png'}\nsummary:      {out / 'summary.json'}")
    print(f"chat with it: minimind-v chat --model {model_dir} --image {out}/example.png "
          f"--prompt \"What colour is the circle?\" --greedy")
    _save_example(row_for_example(rows), out / "example.png")
    return summary


def library_versions() -> dict:
    """The versions a result came from (a demo's numbers move with the arithmetic underneath)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "numpy", "pillow", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def row_for_example(rows):
    for row in rows:
        if "circle" in row["conversations"]:
            return row
    return rows[0]


def _save_example(row, path: Path) -> None:
    path.write_bytes(row["image_bytes"])
