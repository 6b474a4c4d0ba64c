"""`minimind-v data check FILE...`: find every row that training would skip, without training.

Each row goes through the checks the training readers apply (data/parquet.py, data/text.py): the
conversation parses and alternates user/assistant with a non-empty reply, there is one non-null image
per `<image>` marker, every image decodes within the training limits (pixel limit read from the header
before any decoding, smallest side, aspect ratio), and, with `--tokenizer`, the row fits `--max-length`
without cutting an image's placeholder tokens. A problem is reported with its file, row and kind (the
same kind names training counts). Notes are things training handles without skipping the row (an image
in CMYK, palette+transparency, LA, 16-bit or 1-bit mode, converted to RGB; a row group so large that
random access is slow).

Exit code: 0 no problem, 1 at least one problem row, 2 a file that cannot be read or bad arguments.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..data.chatml import BadRow, render
from ..data.text import validate_text_row
from ..flagtypes import bounded
from ..outputs import check_output, staged_output
from ..image import DEFAULT_MAX_PIXELS, TRAIN_MAX_ASPECT, TRAIN_MIN_SIDE, ImageError, image_header

UNUSUAL_MODES = {"CMYK", "P", "PA", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F", "1", "RGBa", "YCbCr", "HSV",
                 "LAB"}
BIG_ROW_GROUP_BYTES = 256 << 20


@dataclass
class Problem:
    file: str
    row: int            # row number in the file (0-based); -1 for the whole file
    kind: str
    msg: str


@dataclass
class Report:
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    unreadable: list[Problem] = field(default_factory=list)     # files that could not be opened at all

    def by_kind(self, items: list[Problem]) -> dict[str, list[Problem]]:
        out = defaultdict(list)
        for p in items:
            out[p.kind].append(p)
        return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0])))

    def exit_code(self) -> int:
        return 2 if self.unreadable else (1 if self.problems else 0)

    def to_json(self) -> dict:
        return {"rows": self.rows, "problem_rows": len({(p.file, p.row) for p in self.problems}),
                "problems_by_kind": {k: len(v) for k, v in self.by_kind(self.problems).items()},
                "notes_by_kind": {k: len(v) for k, v in self.by_kind(self.notes).items()},
                "problems": [p.__dict__ for p in self.problems], "notes": [p.__dict__ for p in self.notes],
                "unreadable": [p.__dict__ for p in self.unreadable]}


@dataclass
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = TRAIN_MIN_SIDE
    max_aspect: float = TRAIN_MAX_ASPECT
    max_length: int = 768
    image_token_len: int = 64


# ---------------------------------------------------------------- one row
def _image_mode_note(data: bytes) -> str | None:
    """The image's mode when training will convert it (header only, no pixel decoding)."""
    with image_header(data) as img:
        mode = img.mode
        if mode == "P" and "transparency" in img.info:
            mode = "P+transparency"
    return mode if mode.split("+")[0] in UNUSUAL_MODES else None


def check_conversation(msgs: list[dict], n_images: int, tok, limits: Limits) -> None:
    """Length check (needs a tokenizer): raises BadRow("too_long") like training would."""
    if tok is None:
        return
    r = render(msgs, tok, limits.image_token_len, limits.max_length)
    if r.n_images < n_images:
        # training keeps such a row with the later images cut off; still worth knowing, but not a skip
        raise _Note("images_cut", f"only {r.n_images} of {n_images} image(s) fit in {limits.max_length} tokens")


class _Note(Exception):
    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


def check_parquet_row(row: dict, tok, limits: Limits) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(problems, notes) of one parquet row, each a list of (kind, message). The verdict comes from
    `prepare_row`, the very function the training reader calls, so check and training cannot disagree."""
    from ..data.parquet import prepare_row
    notes = []
    try:
        r, pics, images = prepare_row(row, tok, limits.image_token_len, limits.max_length, limits.max_pixels,
                                      limits.min_side, limits.max_aspect)
    except (BadRow, ImageError) as e:
        return [(e.kind, str(e))], notes      # one problem per row: training skips the row at the first one
    for k, data in enumerate(images[:len(pics)]):
        mode = _image_mode_note(data)
        if mode:
            notes.append(("converted_mode", f"image {k}: {mode} converted to RGB"))
    if r is not None and r.n_images < len(images):
        # training keeps such a row with the later images cut off; still worth knowing, but not a skip
        notes.append(("images_cut", f"only {r.n_images} of {len(images)} image(s) fit in {limits.max_length} tokens"))
    return [], notes


def check_jsonl_row(obj: dict, tok, limits: Limits) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    try:
        msgs = validate_text_row(obj)                     # the training reader's own checks
        if msgs is not None:
            check_conversation(msgs, 0, tok, limits)
    except BadRow as e:
        return [(e.kind, str(e))], []
    return [], []


# ---------------------------------------------------------------- files
def _check_parquet(f: str, tok, limits: Limits, report: Report, progress) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..data.parquet import ParquetRows
    meta = pq.ParquetFile(f).metadata
    names = set(pq.read_schema(f).names)
    if "conversations" not in names:
        report.problems.append(Problem(f, -1, "missing_column", "no `conversations` column"))
        return
    for g in range(meta.num_row_groups):
        size = meta.row_group(g).total_byte_size
        if size > BIG_ROW_GROUP_BYTES:
            report.notes.append(Problem(f, -1, "big_row_group",
                                        f"row group {g} holds {size / 2**20:.0f} MiB: each random read loads it "
                                        f"whole; rewrite the file with smaller row groups (e.g. 512 rows)"))
    rows = ParquetRows(f, ["conversations", "image_bytes"])
    for i in range(len(rows)):
        try:
            row = rows[i]
        except (OSError, pa.ArrowException) as e:
            report.problems.append(Problem(f, i, "unreadable_row", str(e)))
            continue
        problems, notes = check_parquet_row(row, tok, limits)
        report.problems += [Problem(f, i, k, m) for k, m in problems]
        report.notes += [Problem(f, i, k, m) for k, m in notes]
        report.rows += 1
        progress(1)


def _check_jsonl(f: str, tok, limits: Limits, report: Report, progress) -> None:
    from ..data.text import JsonlRows
    rows = JsonlRows(f)
    for i in range(len(rows)):
        try:
            obj = rows[i]
        except BadRow as e:
            report.problems.append(Problem(f, i, e.kind, str(e)))
        else:
            problems, _ = check_jsonl_row(obj, tok, limits)
            report.problems += [Problem(f, i, k, m) for k, m in problems]
        report.rows += 1
        progress(1)


def check_files(files, tokenizer=None, limits: Limits | None = None, progress: bool = False) -> Report:
    """Check parquet / JSONL files; `tokenizer` (a Tokenizer or folder) enables the length check."""
    from ..tokenizer import Tokenizer
    limits = limits or Limits()
    tok = Tokenizer.load(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    report = Report()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(unit="row", desc="checking", file=sys.stderr)
    tick = bar.update if bar is not None else (lambda n: None)
    for f in map(str, files):
        try:
            if f.endswith(".parquet"):
                _check_parquet(f, tok, limits, report, tick)
            elif f.endswith((".jsonl", ".json")):
                _check_jsonl(f, tok, limits, report, tick)
            else:
                report.unreadable.append(Problem(f, -1, "unknown_format", "not .parquet, .jsonl or .json"))
        except Exception as e:  # noqa: BLE001 - any failure to open a file is reported, then the next file
            report.unreadable.append(Problem(f, -1, "unreadable_file", f"{type(e).__name__}: {e}"))
    if bar is not None:
        bar.close()
    return report


# ---------------------------------------------------------------- output
def _rows_text(items: list[Problem], limit: int = 12) -> str:
    rows = [f"{Path(p.file).name}:{p.row}" if p.row >= 0 else Path(p.file).name for p in items]
    return ", ".join(rows[:limit]) + (f" ... (+{len(rows) - limit})" if len(rows) > limit else "")


def format_report(rep: Report, files, tokenizer_given: bool, list_all: bool = True) -> str:
    lines = [f"checked {rep.rows} row(s) in {len(list(files))} file(s): "
             f"{len({(p.file, p.row) for p in rep.problems})} row(s) with problems"]
    for p in rep.unreadable:
        lines.append(f"  cannot read {p.file}: {p.msg}")
    if rep.problems:
        lines.append("problems (rows training skips), by kind:")
        for kind, items in rep.by_kind(rep.problems).items():
            lines.append(f"  {kind:<18} {len(items):>7}   {_rows_text(items)}")
    if rep.notes:
        lines.append("notes (rows kept):")
        for kind, items in rep.by_kind(rep.notes).items():
            lines.append(f"  {kind:<18} {len(items):>7}   {_rows_text(items)}")
    if not tokenizer_given:
        lines.append("(row length not checked: give --tokenizer to find rows too long for --max-length)")
    if list_all and rep.problems:
        lines.append("every problem:")
        for p in rep.problems:
            lines.append(f"  {p.file}:{p.row}\t{p.kind}\t{p.msg}")
    return "\n".join(lines)


def model_image_token_len(folder) -> int:
    """Tokens per picture of the model in `folder` (its config.json, or that file itself), as training would
    use them."""
    from ..config import ModelConfig
    f = Path(folder) if Path(folder).is_file() else Path(folder) / "config.json"
    if not f.exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    try:
        raw = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    if isinstance(raw.get("image_token_len"), int):
        return raw["image_token_len"]
    return ModelConfig.from_dict(raw).image_token_len


def run_check(args) -> int:
    for f in args.files:
        if not Path(f).exists():
            print(f"error: {f} does not exist", file=sys.stderr)
            return 2
    if args.json:               # a report may be replaced (a rerun), never a data file it reads
        try:
            check_output(args.json, [*args.files, args.model, args.tokenizer], overwrite=True)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    tokenizer, tokens = args.tokenizer, args.image_token_len
    try:
        if args.model:
            tokenizer = tokenizer or (args.model if Path(args.model).is_dir() else None)
            tokens = tokens or model_image_token_len(args.model)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: --model {args.model}: {e}", file=sys.stderr)
        return 2
    if tokens is None:
        tokens = 64
        print("note: assuming 64 tokens per picture (the full-size recipe); give --model DIR (or "
              "--image-token-len N) to use your model's own number", file=sys.stderr)
    limits = Limits(max_pixels=args.max_pixels, min_side=args.min_side, max_aspect=args.max_aspect,
                    max_length=args.max_length, image_token_len=tokens)
    try:
        rep = check_files(args.files, tokenizer, limits, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:       # a bad tokenizer folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(rep, args.files, tokenizer is not None, list_all=not args.summary))
    if args.json:
        with staged_output(args.json, [*args.files, args.model, args.tokenizer], overwrite=True) as stage:
            stage.write_text(json.dumps(rep.to_json(), indent=2))
    return rep.exit_code()


def add_check_command(sub) -> None:
    """Register `check` on the subparsers of the `minimind-v data` group."""
    p = sub.add_parser("check", help="scan parquet/JSONL files for rows training would skip (no training)",
                       description=__doc__.split("\n\n")[1].replace("\n", " "),
                       epilog="exit code: 0 no problem, 1 problem rows found, 2 unreadable file or bad arguments")
    p.add_argument("files", nargs="+", help="parquet or JSONL files")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder: also find rows too long for --max-length")
    p.add_argument("--max-length", type=bounded(int, 8, 1 << 20), default=768, help="tokens per row, as in training (default: 768)")
    p.add_argument("--model", metavar="DIR", help="model folder (or its config.json): its tokens per picture and "
                                               "its tokenizer (the length check), as training with --from DIR "
                                               "uses them")
    p.add_argument("--image-token-len", type=bounded(int, 1, 65536),
                   help="tokens per picture (default: the --model's, else 64, which is said)")
    p.add_argument("--max-pixels", type=bounded(int, 1, 10 ** 10), default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images over this many pixels (default: {DEFAULT_MAX_PIXELS})")
    p.add_argument("--min-side", type=bounded(int, 1, 65536), default=TRAIN_MIN_SIDE,
                   help=f"refuse images with a side under N pixels (default: {TRAIN_MIN_SIDE})")
    p.add_argument("--max-aspect", type=bounded(float, 1.0, 1e6), default=TRAIN_MAX_ASPECT,
                   help=f"refuse images whose long side exceeds N x the short one (default: {TRAIN_MAX_ASPECT:g})")
    p.add_argument("--json", metavar="FILE.json", help="also write the full report as JSON")
    p.add_argument("--summary", action="store_true", help="print counts by kind only, not every row")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_check)
