"""The `minimind-v data ...` commands: convert other formats to our parquet, preview a data set as a
picture grid, and print data set statistics.

`add_data_commands(sub)` registers `convert` (modes `llava`, `captions`, `hf`), `preview` and `stats` on
the subparsers object of the `data` group; each parser sets `func`, a handler that takes the parsed
arguments and returns an exit code. The main CLI calls it; `main(argv)` builds a parser with only
these commands, so that `python -m minimind_v.datatools.data_command stats FILE` works on its own.

Exit codes: 0 done; 1 nothing was written (every row rejected); 2 bad arguments or unreadable input.
"""
from __future__ import annotations

import argparse
import sys

from ..flagtypes import BIG, SEED, bounded

EXAMPLES = """examples:
  minimind-v data convert llava llava_instruct.json --images coco/ --out data/llava.parquet --max-side 512
  minimind-v data convert captions photos/ --captions photos/captions.csv --out data/photos.parquet --val-fraction 0.05
  minimind-v data convert hf train-00000-of-00002.parquet --question-column query --answer-column response --out data/vqa.parquet
  minimind-v data preview data/photos_train.parquet --out grid.png --n 16 --random
  minimind-v data stats data/*.parquet --tokenizer tokenizer/ --max-length 768 --png lengths.png"""


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="OUT.parquet",
                   help="output file; with --shard-rows it becomes OUT-00000.parquet, ...; with --val-fraction "
                        "OUT_train.parquet and OUT_val.parquet")
    g.add_argument("--max-side", type=bounded(int, 1, 65536), default=None, metavar="N",
                   help="shrink images whose longer side exceeds N pixels (aspect ratio kept); default: keep sizes")
    g.add_argument("--format", dest="image_format", choices=("keep", "jpeg", "png"), default="keep",
                   help="how images are stored: 'keep' the original bytes (re-encoded in the same format only "
                        "when resized), or re-encode all as 'jpeg' or 'png' (default: keep)")
    g.add_argument("--quality", type=bounded(int, 1, 100), default=90, help="JPEG quality, 1-100 (default: 90)")
    g.add_argument("--shard-rows", type=bounded(int, 1, BIG), default=None, metavar="N",
                   help="write files of at most N rows each (default: one file)")
    g.add_argument("--val-fraction", type=bounded(float, 0.0, 0.99), default=0.0, metavar="F",
                   help="put this share of the converted pictures (chosen by --seed), with all their rows, "
                        "into a validation file; rows sharing a picture never straddle train and val")
    g.add_argument("--seed", type=bounded(int, 0, SEED), default=0,
                   help="seed for the train/val split and for picking caption prompts (default: 0)")
    g.add_argument("--dedupe", action="store_true",
                   help="drop rows whose image is identical (same pixels) to an earlier row's; without it "
                        "such rows are kept and only counted")
    g.add_argument("--allow-outside", action="store_true",
                   help="also read pictures whose path leads outside the image folder (absolute paths, ../); "
                        "without it such rows are rejected as outside_folder, without opening anything")
    g.add_argument("--report", default=None, metavar="FILE.json",
                   help="also write the conversion report (counts, every rejected row) as JSON")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (each written beside it first, then renamed); an input "
                        "is never overwritten")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert LLaVA JSON, a captioned image folder or a Hugging Face parquet "
                                       "export into minimind-v parquet",
                       description="Convert other data formats into minimind-v parquet. Rows that cannot be "
                                   "converted are listed with their position and the reason at the end.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_subparsers(dest="mode", required=True, metavar="{llava,captions,hf}")

    q = modes.add_parser("llava", help="LLaVA-style JSON + image folder",
                         description="LLaVA JSON: a list of {\"image\": path or [paths], \"conversations\": "
                                     "[{\"from\": \"human\"|\"gpt\", \"value\": ...}]}. <image> markers are kept; a "
                                     "row with images but no marker gets \"<image>\\n\" before its first human turn. "
                                     "JSON Lines (.jsonl) with one sample per line also works.")
    q.add_argument("json", help="the LLaVA JSON (or .jsonl) file")
    q.add_argument("--images", required=True, metavar="DIR",
                   help="folder the 'image' paths are relative to; a path leading outside it (absolute, ../) is a "
                        "bad row unless --allow-outside")
    q.add_argument("--keep-column", action="append", default=[], metavar="KEY",
                   help="copy this field of each sample into an extra string column (repeatable), e.g. id")
    add_output_options(q)
    q.set_defaults(func=run_convert)

    q = modes.add_parser("captions", help="image folder + captions.jsonl or CSV (pretrain captions)",
                         description="A folder of images with captions, as captions.jsonl ({\"file\", \"caption\"} "
                                     "or {\"image\", \"text\"} per line) or a CSV of file name, caption (header "
                                     "optional). Each row becomes user \"<image>\\n\" + a prompt such as "
                                     "\"Describe this image.\" (picked by --seed), assistant = the caption.")
    q.add_argument("folder", help="the image folder (file names in the captions are relative to it)")
    q.add_argument("--captions", default=None, metavar="FILE",
                   help="captions .jsonl or .csv (default: captions.jsonl or captions.csv in the folder)")
    add_output_options(q)
    q.set_defaults(func=run_convert)

    q = modes.add_parser("hf", help="Hugging Face `datasets` parquet export(s)",
                         description="Parquet written by Hugging Face `datasets`, whose image column is a struct "
                                     "{bytes, path}. Without mapping flags the columns image, conversations, "
                                     "question/answer or caption/text are used when present.")
    q.add_argument("files", nargs="+", help="one or more parquet files (e.g. all shards of a split)")
    q.add_argument("--image-column", default=None, metavar="COL",
                   help="image column (struct {bytes, path}, binary, or a list of them); default: auto-detect")
    q.add_argument("--conversations-column", default=None, metavar="COL",
                   help="column of conversations (JSON string or list of {from, value} / {role, content})")
    q.add_argument("--question-column", default=None, metavar="COL",
                   help="column of questions; with --answer-column builds one-turn conversations")
    q.add_argument("--answer-column", default=None, metavar="COL", help="column of answers")
    q.add_argument("--caption-column", default=None, metavar="COL",
                   help="column of captions (prompt picked by --seed, as for caption folders)")
    q.add_argument("--keep-column", action="append", default=[], metavar="COL",
                   help="copy this column into the output as a string column (repeatable)")
    q.add_argument("--images", default=None, metavar="DIR",
                   help="folder for image paths when a cell has no bytes (default: the parquet's folder)")
    add_output_options(q)
    q.set_defaults(func=run_convert)


def add_data_commands(sub) -> None:
    """Register `convert`, `preview`, `stats` and `emoji` on the subparsers of the `minimind-v data` group."""
    from .emoji_data import add_emoji_parser
    add_convert_parser(sub)
    add_emoji_parser(sub)

    p = sub.add_parser("preview", help="draw a grid of images with their first question and answer",
                       description="Draw the first (or random) N rows of a parquet file as a PNG grid: each "
                                   "picture with its first question and answer underneath.")
    p.add_argument("file", nargs="+", help="parquet file(s)")
    p.add_argument("--out", required=True, metavar="GRID.png", help="PNG file to write")
    p.add_argument("--n", type=int, default=16, help="how many rows to show (default: 16)")
    p.add_argument("--random", action="store_true", help="random rows instead of the first ones")
    p.add_argument("--seed", type=bounded(int, 0, SEED), default=0, help="seed for --random (default: 0)")
    p.add_argument("--thumb", type=int, default=224,
                   help="picture size in pixels per cell, 16-1024 (default: 224)")
    p.add_argument("--cols", type=int, default=None, help="grid columns (default: about sqrt(N))")
    p.add_argument("--overwrite", action="store_true", help="replace an existing GRID.png (never an input)")
    p.set_defaults(func=run_preview)

    p = sub.add_parser("stats", help="row, image and token-length statistics of parquet files",
                       description="Count text-only / one-image / multi-image rows, summarise image sizes and, "
                                   "with --tokenizer, token lengths per row (each image counts as "
                                   "--image-token-len tokens).")
    p.add_argument("files", nargs="+", help="parquet file(s)")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer folder (with tokenizer.json)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="count rows longer than N tokens (needs --tokenizer)")
    p.add_argument("--image-token-len", type=int, default=64, metavar="N",
                   help="tokens per image in a row's length (default: 64)")
    p.add_argument("--png", default=None, metavar="FILE.png", help="also draw a histogram of token lengths")
    p.add_argument("--json", default=None, metavar="FILE.json", help="also write the statistics as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --png / --json file (never an input)")
    p.set_defaults(func=run_stats)


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_convert(args) -> int:
    from .convert import convert_captions, convert_hf, convert_llava
    opts = dict(max_side=args.max_side, image_format=args.image_format, quality=args.quality,
                shard_rows=args.shard_rows, val_fraction=args.val_fraction, seed=args.seed,
                dedupe=args.dedupe, progress=not args.no_progress, report_json=args.report,
                overwrite=args.overwrite, allow_outside=args.allow_outside)
    try:
        if args.mode == "llava":
            res = convert_llava(args.json, args.images, args.out, keep_columns=args.keep_column, **opts)
        elif args.mode == "captions":
            res = convert_captions(args.folder, args.out, captions=args.captions, **opts)
        else:
            res = convert_hf(args.files, args.out, image_column=args.image_column,
                             conversations_column=args.conversations_column,
                             question_column=args.question_column, answer_column=args.answer_column,
                             caption_column=args.caption_column, keep_columns=args.keep_column,
                             images_dir=args.images, **opts)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    if res.rows_written == 0:
        print("error: no rows were written", file=sys.stderr)
        return 1
    return 0


def run_preview(args) -> int:
    from .preview import preview
    files = args.file[0] if len(args.file) == 1 else args.file
    try:
        w, h = preview(files, args.out, n=args.n, random=args.random, seed=args.seed, thumb=args.thumb,
                       cols=args.cols, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    print(f"wrote {args.out} ({w}x{h})")
    return 0


def run_stats(args) -> int:
    import json

    from .stats import stats
    if args.max_length is not None and args.tokenizer is None:
        return fail("--max-length needs --tokenizer")
    from ..outputs import check_output, staged_output
    try:
        inputs = [*args.files, args.tokenizer]
        for out in (args.png, args.json):
            if out is not None:
                check_output(out, inputs, overwrite=args.overwrite)
        s = stats(args.files, tokenizer=args.tokenizer, max_length=args.max_length, png=args.png,
                  image_token_len=args.image_token_len, overwrite=args.overwrite)
        if args.json:
            with staged_output(args.json, inputs, overwrite=args.overwrite) as stage:
                stage.write_text(json.dumps(s, indent=2), encoding="utf-8")
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind-v data", description="Data tools: convert, preview, stats.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{convert,preview,stats,emoji}")
    add_data_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
