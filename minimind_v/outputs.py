"""The one rule for every command that writes: nothing the user owns is overwritten by surprise, no output
lands on or inside one of its own inputs, and nothing half-written is left behind.

    check_output(out, inputs, overwrite=False, folder=False)   refuse before any work starts
    with staged_output(out, inputs, ...) as stage:             write into `stage` (a file or folder beside
        ...                                                    `out`); on success it replaces `out`
                                                               atomically, on any error it is removed

The rules, in order:

1. an output equal to an input, inside an input folder, or (when it would be replaced) holding an input
   inside it, is refused: a conversion never eats its own source;
2. an output that exists is refused unless `overwrite` (the `--overwrite` flag); an empty folder counts
   as free for a folder output (a user who made it first loses nothing);
3. the writer writes into a stage beside the output (same folder, so the final rename never crosses a
   file system): a file is `os.replace`d over the output (atomic); a folder is swapped in two renames
   (old out of the way, stage in) and the old one is deleted only after the new one is in place.

Everything raises `OutputRefused`, a ValueError: the CLI prints it as one line and exits 2. Standard
library only, so every layer (data tools, formats, training, recipes) may call it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

OVERWRITE_HINT = "choose a new output or pass --overwrite"


class OutputRefused(ValueError):
    """An output that would overwrite something of the user's, or one of the command's own inputs."""


def _resolved(p) -> Path:
    return Path(os.path.abspath(Path(p).expanduser())).resolve()


def overlap(out, inputs: Iterable, *, replacing: bool = True) -> str | None:
    """Why `out` may not be written given `inputs` (None when it may). `replacing`: `out` itself would be
    removed or replaced, so an input inside it is lost too."""
    r = _resolved(out)
    for inp in inputs:
        if inp is None or inp == "":
            continue
        i = _resolved(inp)
        if r == i:
            return f"the output {out} is the input {inp}"
        if i in r.parents:
            return f"the output {out} lies inside the input {inp}"
        if replacing and r in i.parents:
            return f"the input {inp} lies inside the output {out}"
    return None


def check_output(out, inputs: Iterable = (), *, overwrite: bool = False, folder: bool = False,
                 flag: str = "--overwrite") -> Path:
    """Refuse `out` before any work starts (see the module docstring); returns it as a Path."""
    out = Path(out)
    inputs = [p for p in inputs if p is not None]
    busy = out.is_symlink() or (out.exists() and not (folder and out.is_dir() and not any(out.iterdir())))
    why = overlap(out, inputs, replacing=busy)
    if why:
        raise OutputRefused(f"{why}; write the output somewhere else (an input is never overwritten)")
    if busy:
        if not overwrite:
            what = "folder" if out.is_dir() else "file"
            raise OutputRefused(f"{out} already exists (a {what}); "
                                f"{OVERWRITE_HINT.replace('--overwrite', flag)} to replace it")
        if folder and not out.is_dir():
            raise OutputRefused(f"{out} is a file, the output is a folder; remove it or choose another name")
        if not folder and out.is_dir():
            raise OutputRefused(f"{out} is a folder, the output is a file; choose another name")
    return out


def _stage_path(out: Path, folder: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".partial{out.suffix}", dir=out.parent)
    os.close(fd)
    return Path(name)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def commit(stage: Path, out: Path, folder: bool) -> None:
    """Put the finished `stage` in place of `out` (see rule 3)."""
    if not folder:
        os.replace(stage, out)                  # atomic: readers see the old file or the new one
        return
    if not (out.exists() or out.is_symlink()):
        stage.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        old.rename(out)                         # put the user's folder back
        raise
    _remove(old)


@contextlib.contextmanager
def staged_output(out, inputs: Iterable = (), *, overwrite: bool = False, folder: bool = False,
                  flag: str = "--overwrite") -> Iterator[Path]:
    """Check `out`, yield a stage beside it (an empty file or folder), and on success put the stage in its
    place; on any error (or Ctrl-C) the stage is removed and `out` is as it was."""
    out = check_output(out, inputs, overwrite=overwrite, folder=folder, flag=flag)
    stage = _stage_path(out, folder)
    try:
        yield stage
        commit(stage, out, folder)
    except BaseException:
        _remove(stage)
        raise


@contextlib.contextmanager
def staged_outputs(outs: dict, inputs: Iterable = (), *, overwrite: bool = False,
                   flag: str = "--overwrite") -> Iterator[dict]:
    """Several outputs written together ({key: (path, folder)}): all checked first, each staged; they are
    put in place only when every one is written, so a failure leaves none of them changed."""
    checked = {k: (check_output(p, inputs, overwrite=overwrite, folder=f, flag=flag), f)
               for k, (p, f) in outs.items()}
    stages = {}
    try:
        for k, (p, f) in checked.items():
            stages[k] = _stage_path(p, f)
        yield dict(stages)
        for k, (p, f) in checked.items():
            if stages[k].is_dir() and f and not any(stages[k].iterdir()):
                _remove(stages.pop(k))          # an optional folder output the writer did not use
                continue
            commit(stages.pop(k), p, f)
    except BaseException:
        for s in stages.values():
            _remove(s)
        raise
