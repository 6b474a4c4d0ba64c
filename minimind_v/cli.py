"""`minimind-v <command>`: a thin command-line layer over the Python API.

    minimind-v demo                                  the built-in end-to-end demo (synthetic shapes)
    minimind-v train --stage STAGE --data F... --out DIR [--from DIR | --preset P --tokenizer DIR]
    minimind-v eval --model DIR --data FILE.parquet [--blind] [--out FILE.json]
    minimind-v eval --bench mmstar|pope|mme|scienceqa-img|ai2d --model DIR --data PATH   a standard benchmark
    minimind-v chat --model DIR [--image PATH] [--prompt TEXT]
    minimind-v serve --model DIR [--host H --port P]  OpenAI-compatible API + web chat page
    minimind-v tokenizer train --data F... --out DIR train a byte-level BPE tokenizer
    minimind-v data synth|check|convert|preview|stats|emoji  write, check, convert and inspect data sets
    minimind-v convert SRC DST [--to ours|reference|hf]  original MiniMind-V checkpoints <-> model folders
    minimind-v export --model DIR --to hf|reference OUT  a model folder for transformers or the original code
    minimind-v merge ADAPTER_DIR OUT                 fold a LoRA adapter (train --lora-rank) into a model folder
    minimind-v emoji train --data DIR --out RUN      the emoji recipe on real artwork (data: `data emoji`); `emoji probe RUN`

Run `minimind-v COMMAND --help` for every flag. Multi-GPU: `torchrun --nproc_per_node N -m minimind_v.cli train ...`.

Every command is one row of COMMANDS (name -> adder, help): `build_parser` registers them from it and
`--help` lists them from it, so a command cannot be registered without appearing there. An adder fills
the command's parser and sets `func`, the handler; only the command being run has its parser filled, so
a command's modules are imported only when it runs (`minimind-v --help` imports no torch). The `train` flags are generated from TrainConfig's fields (train/flags.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from .flagtypes import BIG, SEED, bounded


def _add_train(p):
    from .train.flags import add_train_arguments
    p.description = ("Train one stage. The stage picks what is trainable, the default lr and max length, and the "
                     "data reader; every other flag is shared. Each flag is a TrainConfig field.")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(a) -> int:
    from .train.flags import config_from_args
    from .train.loop import train
    summary = train(config_from_args(a))
    code = 143 if summary.get("stopped") else 0     # 143: stopped by a signal after a checkpoint; retry goes on
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun process leaves without interpreter finalization: after a clean run (process group
        # destroyed, everything written), gloo's worker threads still aborted it there in about one run in
        # seven on this machine ("terminate called without an active exception"), failing the whole job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _add_tokenizer(p):
    tsub = p.add_subparsers(dest="tok_cmd", required=True)
    t = tsub.add_parser("train", help="train from text/JSONL/parquet files",
                        description="Train a byte-level BPE with the chat special tokens (<|endoftext|>, "
                                    "<|im_start|>, <|im_end|>, <|image_pad|>) and a ChatML template; saved "
                                    "as a Hugging Face tokenizer folder.")
    t.add_argument("--data", nargs="+", required=True,
                   help=".txt (a line each), .jsonl ({'text'} or {'conversations'}) or .parquet files")
    t.add_argument("--vocab-size", type=int, default=6400, help="269-1,000,000 (default 6400)")
    t.add_argument("--out", required=True)
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder (written beside it first, swapped in when whole)")
    t.set_defaults(func=_cmd_tokenizer_train)


def _cmd_tokenizer_train(a) -> int:
    from .datatools.texts import TextStats, iter_texts
    from .outputs import check_output, staged_output
    from .tokenizer import check_vocab_size, train_tokenizer
    check_vocab_size(a.vocab_size)
    check_output(a.out, a.data, overwrite=a.overwrite, folder=True)
    stats = TextStats()
    with staged_output(a.out, a.data, overwrite=a.overwrite, folder=True) as stage:
        tok = train_tokenizer(iter_texts(a.data, stats), a.vocab_size, stage)
        if stats["chars"] == 0:
            raise ValueError(f"no text found in {', '.join(a.data)}" + (" (skipped: " + ", ".join(
                f"{k}={v}" for k, v in sorted(stats.skipped().items())) + ")" if stats.skipped() else ""))
    if stats.skipped():
        print("skipped (not trained on): " + ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped().items())),
              file=sys.stderr)
    if tok.vocab_size < a.vocab_size:
        print(f"warning: the text holds only enough merges for {tok.vocab_size} tokens, not {a.vocab_size}",
              file=sys.stderr)
    print(f"tokenizer with {tok.vocab_size} tokens written to {a.out} ({stats['texts']:,} texts, "
          f"{stats['chars']:,} characters)")
    return 0


def _add_data(p):
    from .datatools.check import add_check_command
    from .datatools.data_command import add_data_commands
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("synth", help="write the synthetic shapes data set as parquet",
                        description="Coloured shapes with captions (pretrain.parquet), multi-turn questions "
                                    "(sft.parquet) and one question per row with answer/type columns (eval.parquet).")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=bounded(int, 1, 10_000_000), default=2000, help="number of pictures")
    s.add_argument("--seed", type=bounded(int, 0, SEED), default=0, help="use another seed for a held-out split")
    s.add_argument("--image-size", type=bounded(int, 8, 4096), default=64)
    s.add_argument("--kind", default="all", choices=["all", "pretrain", "sft", "eval"])
    s.set_defaults(func=_cmd_synth)
    add_data_commands(dsub)       # convert, preview, stats
    add_check_command(dsub)


def _cmd_synth(a) -> int:
    from .datatools.synth import generate
    paths = generate(a.out, a.n, a.seed, a.image_size, a.kind, progress=True)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def _add_eval(p):
    p.description = ("Greedy replies are scored against the short `answer` column: case, punctuation "
                     "and quotes are normalised; a reply is correct when it contains the answer as "
                     "whole words; yes/no is decided by the reply's first word.")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--blind", action="store_true", help="replace every image by a blank one (baseline)")
    p.add_argument("--out", help="write the result as JSON (overall, per_type, n)")
    p.add_argument("--limit", type=bounded(int, 1, BIG), help="score only the first N rows")
    p.add_argument("--batch-size", type=bounded(int, 1, 4096), default=32)
    p.add_argument("--max-new-tokens", type=bounded(int, 1, 32768), default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bench", choices=["mmstar", "pope", "mme", "scienceqa-img", "ai2d"],
                   help="score a standard benchmark's published parquet file (or folder) as lmms-eval does: its "
                        "prompt, answer extraction and metric, its own max new tokens (docs/benchmarks.md)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(a) -> int:
    if a.bench:
        from .eval.bench import bench_command
        return bench_command(a)
    from .eval.evaluate import evaluate, format_table, load_eval_rows, majority_baseline
    from .outputs import check_output, staged_output
    from .pipeline import VLM
    if a.out:             # a results file may be replaced (a rerun), never an input
        check_output(a.out, [a.model, *a.data], overwrite=True)
    vlm = VLM.load(a.model, device=a.device)
    rows = load_eval_rows(a.data, a.limit)
    res = evaluate(vlm, rows, blind=a.blind, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens)
    if res["n"] == 0:
        raise ValueError(f"no row of {', '.join(a.data)} could be scored: " + ", ".join(
            f"{k}={v}" for k, v in sorted(res.get("skipped", {}).items())))
    maj = majority_baseline(res["predictions"])          # over exactly the rows scored
    print(format_table(res, majority=maj))
    print(f"n = {res['n']}" + ("  (blind: every image replaced by a blank one)" if a.blind else ""))
    if res.get("skipped"):
        print("skipped rows (not scored): " + ", ".join(f"{k}={v}" for k, v in sorted(res["skipped"].items())),
              file=sys.stderr)
    if a.out:
        out = {"overall": res["overall"], "per_type": res["per_type"], "n": res["n"], "blind": a.blind,
               "skipped": res.get("skipped", {}),
               "majority_baseline": maj, "predictions": res["predictions"]}
        with staged_output(a.out, [a.model, *a.data], overwrite=True) as stage:
            stage.write_text(json.dumps(out, indent=2))
    return 0


def _add_chat(p):
    p.description = ("With --prompt: answer once and exit. Without: an interactive chat; type /image PATH to "
                     "switch pictures, /noimage to drop it, /reset, /quit.")
    p.add_argument("--model", required=True)
    p.add_argument("--image", action="append", help="image file (repeat for several)")
    p.add_argument("--prompt")
    p.add_argument("--temperature", type=bounded(float, 0.0, 100.0), default=0.7)
    p.add_argument("--top-p", type=bounded(float, 0.0, 1.0), default=0.9)
    p.add_argument("--top-k", type=bounded(int, 0, 1_000_000), default=0)
    p.add_argument("--max-new-tokens", type=bounded(int, 1, 32768), default=256)
    p.add_argument("--seed", type=bounded(int, 0, SEED))
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="onnx: --model is a folder written by `export --to onnx`, run by onnxruntime without torch")
    p.set_defaults(func=_cmd_chat)


def _cmd_chat(a) -> int:
    from .chat import run_chat
    return run_chat(a)


def _add_demo(p):
    p.description = ("Draws a synthetic image set, trains a tokenizer and a tiny VLM through the stages on the CPU, "
                     "evaluates it on a held-out split (plus a blind baseline), and writes summary.json, loss.png "
                     "and a model folder.")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a one-minute smoke version (low accuracy)")
    p.add_argument("--seed", type=bounded(int, 0, SEED), default=0)
    p.add_argument("--threads", type=bounded(int, 0, 1024), default=0,
                   help="CPU threads (default 0: 2 when two cores are idle, else 1; OMP_NUM_THREADS also sets it)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a) -> int:
    from .recipes.demo import run_demo
    run_demo(a.out, quick=a.quick, seed=a.seed, threads=a.threads)
    return 0


def _add_convert(c) -> None:
    """`convert` (formats/convert_export.py, imported only when it runs)."""
    from .config import DTYPES, PRESETS
    c.description = ("Convert weights between the original MiniMind-V layouts and minimind-v model folders. SRC: an "
                     "original checkpoint (.pth/.bin/.safetensors), a Hugging Face MiniMind-V folder, or a "
                     "minimind-v folder. Loading is strict: missing, unexpected or mis-shaped tensors stop the "
                     "conversion and are named.")
    c.add_argument("src", help="checkpoint file (llm_768.pth, sft_vlm_768.pth, ...) or model folder")
    c.add_argument("dst", help="output model folder (or .pth file with --to reference, folder with --to hf)")
    c.add_argument("--to", default="ours", choices=["ours", "reference", "hf"],
                   help="ours: a minimind-v model folder (default); reference: the original's .pth state dict + "
                        "<stem>_config.json; hf: a transformers folder (same as `export --to hf`)")
    c.add_argument("--preset", choices=list(PRESETS),
                   help="model shape of a bare checkpoint: minimind-3v-0420 = the current upstream release (SigLIP "
                        "p32, no merge), minimind-3v-2603 = the March 2026 one (SigLIP2 p16 NaFlex); -moe variants; "
                        "the generation is also read from the checkpoint's projector keys")
    c.add_argument("--config", help="JSON config of a bare checkpoint, in the original's field names "
                                    "(default: <stem>_config.json next to it)")
    c.add_argument("--tokenizer", help="tokenizer folder to bundle (the original's model/ folder: tokenizer.json "
                                       "+ tokenizer_config.json)")
    c.add_argument("--vision-encoder", help="local encoder folder the model uses (0420: siglip2-base-p32-256-ve, "
                                            "March 2026: siglip2-base-p16-ve); without it the folder is text-only")
    c.add_argument("--bundle-encoder", action="store_true",
                   help="copy the encoder folder into DST/vision_encoder instead of pointing at it")
    c.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="weights of --to reference / hf outputs")
    c.add_argument("--seed", type=bounded(int, 0, SEED), default=0, help="seed of a freshly initialised projector (LLM-only input)")
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing DST (written beside it first, swapped in when whole); an input is "
                        "never overwritten")
    c.set_defaults(func=_cmd_convert)


def _add_export(e) -> None:
    """`export` (formats/convert_export.py, imported only when it runs)."""
    from .config import DTYPES
    e.description = ("--to hf writes a folder that AutoProcessor and AutoModelForImageTextToText (or "
                     "AutoModelForCausalLM) load with trust_remote_code=True, and pipeline('image-text-to-text') "
                     "uses: tokenizer, image processor, chat template, model card; --to reference writes the "
                     "original's .pth layout; --to onnx writes graphs that onnxruntime runs without torch (chat / "
                     "serve --runtime onnx); --to web a static folder whose page runs the model in a browser.")
    e.add_argument("--model", required=True, help="model folder to export")
    e.add_argument("--to", required=True, choices=["hf", "reference", "onnx", "web"],
                   help="hf: a transformers folder (remote code); reference: the original's .pth + config; onnx: "
                        "vision + decoder graphs for onnxruntime (no torch needed); web: a static folder whose page "
                        "runs the model in the browser (docs/onnx.md)")
    e.add_argument("out", help="output folder (hf, onnx, web) or .pth file (reference)")
    e.add_argument("--dtype", default="fp32", choices=list(DTYPES),
                   help="dtype of the written weights (onnx: fp32 or fp16; web: fp32)")
    e.add_argument("--quantize", choices=["int8"],
                   help="onnx / web: int8 weights (onnxruntime dynamic quantization)")
    e.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="onnx / web: torch's exporter (both give the same graphs; dynamo is the one torch keeps, "
                        "and much slower to export)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (written beside it first, swapped in when whole); the model "
                        "folder itself is never overwritten")
    e.add_argument("--push-to-hub", metavar="REPO",
                   help="then upload the output to the Hugging Face model repo REPO (owner/name, created if "
                        "missing), model card included; the token comes from HF_TOKEN (or `hf auth login`)")
    e.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    e.set_defaults(func=_cmd_export)


def _cmd_convert(a) -> int:
    from .config import torch_dtype
    from .formats.convert_export import convert
    convert(a.src, a.dst, a.to, preset_name=a.preset, config=a.config, tokenizer=a.tokenizer,
            vision_encoder=a.vision_encoder, bundle_encoder=a.bundle_encoder, dtype=torch_dtype(a.dtype), seed=a.seed,
            overwrite=a.overwrite)
    return 0


def _cmd_export(a) -> int:
    from .config import torch_dtype
    from .formats.convert_export import export
    export(a.model, a.out, a.to, torch_dtype(a.dtype), overwrite=a.overwrite, quantize=a.quantize,
           exporter=a.exporter)
    if a.push_to_hub:
        from .hub import push_export
        print(f"uploaded {a.out} to {push_export(a.out, a.push_to_hub, private=a.private)}")
    return 0


def _add_serve(p) -> None:
    from .serve.serve_command import add_serve_arguments
    add_serve_arguments(p)


def _add_merge(p) -> None:
    from .train.lora import add_merge_arguments
    add_merge_arguments(p)


def _add_emoji(p) -> None:
    from .recipes import emoji, emoji_probe
    sub = p.add_subparsers(dest="emoji_cmd", required=True)
    emoji.add_arguments(sub.add_parser("train", help="run the emoji recipe: tokenizer, caption stage, encoder "
                                                     "warm-up, vlm-pretrain, vlm-sft, evaluation"))
    emoji_probe.add_arguments(sub.add_parser("probe", help="where a finished emoji run's knowledge sits: encoder "
                                                           "probes next to the LLM's (one JSON line)"))


class Command(NamedTuple):
    add: Callable[[argparse.ArgumentParser], None]     # fills the command's parser and sets `func`
    help: str


COMMANDS: dict[str, Command] = {
    "demo": Command(_add_demo, "the built-in demo: synthetic shapes -> tokenizer -> tiny VLM -> eval -> chat"),
    "train": Command(_add_train, "train one stage (llm-pretrain, llm-sft, vlm-pretrain, vlm-sft)"),
    "eval": Command(_add_eval, "score a model's answers on a parquet file with an `answer` column, or on a "
                               "standard benchmark (--bench mmstar|pope|mme|scienceqa-img|ai2d)"),
    "chat": Command(_add_chat, "talk to a model about an image (streams tokens)"),
    "serve": Command(_add_serve, "serve a model: OpenAI-compatible chat API + web chat page"),
    "tokenizer": Command(_add_tokenizer, "train a byte-level BPE tokenizer"),
    "data": Command(_add_data, "data tools: synth, check, convert, preview, stats"),
    "convert": Command(_add_convert, "convert original MiniMind-V checkpoints / HF folders into model folders, "
                                     "or a model folder into the original .pth layout"),
    "export": Command(_add_export, "export a model folder for transformers (--to hf) or the original code "
                                   "(--to reference)"),
    "merge": Command(_add_merge, "fold a LoRA adapter into its base model: a plain model folder"),
    "emoji": Command(_add_emoji, "the emoji recipe on real artwork (train) and its probe (probe); data: "
                                 "`minimind-v data emoji`"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed. With `argv`, only the command it names gets its full parser
    (the others stay empty), so `minimind-v --help` and one command's run import only what that command
    needs; without it every command's parser is filled (tests, docs)."""
    from . import __version__
    from .hub import add_revision_flag
    usage = __doc__.split("\n\n")[1]
    parser = argparse.ArgumentParser(prog="minimind-v", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=usage + "\n\n" + __doc__.split("\n\n")[2])
    parser.add_argument("--version", action="version", version=f"minimind-v {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help)
        if chosen is None or chosen == name:
            cmd.add(p)
            add_revision_flag(name, p)      # --revision for the one model a command reads by Hub id (hub.py)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .cpu_pace import passive_openmp_default
    passive_openmp_default(argv)        # before anything imports torch (cpu_pace.py: a busy core costs less)
    args = build_parser(argv).parse_args(argv)
    try:
        from .hub import resolve_cli_inputs
        resolve_cli_inputs(args)                      # Hub ids among the inputs -> local paths (hub.py)
        return args.func(args) or 0
    except RuntimeError as e:
        if getattr(e, "exit_code", None) is None:     # e.g. train's NonFiniteLoss: 3
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, ValueError, KeyError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)        # bad input (ImageError, NoUsableData, ModelTooLarge...)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
