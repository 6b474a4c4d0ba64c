"""Training checkpoints: everything needed to continue a run exactly, written atomically.

RUN/checkpoints/step-00000120/ holds

    model.safetensors   every weight of the model (as in a model folder; the tied lm_head is stored once)
    optim.pt            optimizer + grad-scaler state: tensors and plain containers only, read back with
                        torch.load(weights_only=True)
    state.json          step, epoch, rows consumed, world size, global batch, skipped-row counts, the run's
                        config, the RNG state of every rank (Python, NumPy, torch, CUDA) and the SHA-256 of
                        the two files above

Writing is atomic: the folder is built as `step-00000120.tmp-<pid>`, every file is flushed and fsynced,
then the folder is renamed into place and the parent folder fsynced. A kill at any moment leaves either
the complete new checkpoint or none, and the previous ones are untouched; only after the rename are
checkpoints beyond the newest `keep_last` deleted. `verify` re-hashes the files, so a truncated or
corrupt checkpoint (a copy cut short, a bad disk) is detected; `latest_valid` skips it with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"
FILES = ("model.safetensors", "optim.pt")


# ---------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_file(path)
    except OSError:           # some file systems refuse fsync on a directory; the rename still happened
        pass


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_of(ck: Path) -> int:
    return int(Path(ck).name[len(PREFIX):])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders, oldest first (temporary and set-aside folders excluded)."""
    ckdir = checkpoint_dir(run_dir)
    if not ckdir.is_dir():
        return []
    found = [p for p in ckdir.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


# ---------------------------------------------------------------- RNG
def rng_state() -> dict:
    """This process's generator states as JSON-ready lists."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": [py[0], list(py[1]), py[2]],
          "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
          "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        states = [torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ---------------------------------------------------------------- write
def _clean_leftovers(ckdir: Path) -> None:
    """Remove folders a killed save left behind (`.tmp-<pid>`, `.old-<pid>`); only rank 0 ever writes here."""
    for p in ckdir.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(run_dir: str | Path, step: int, model, optimizer, scaler, state: dict,
                    keep_last: int = 2, rng: list[dict] | None = None) -> Path:
    """Write RUN/checkpoints/step-NNNNNNNN atomically; `rng` holds each rank's `rng_state()` (default:
    this process's only). Returns the checkpoint folder."""
    from ..formats.folder import absent_ok  # tied lm_head, a pretrained encoder's own folder

    ckdir = checkpoint_dir(run_dir)
    ckdir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(ckdir)
    final = ckdir / f"{PREFIX}{step:08d}"
    tmp = ckdir / f"{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()

    skip = absent_ok(model)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt", "step": str(step)})
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None},
               tmp / "optim.pt")
    files = {}
    for name in FILES:
        _fsync_file(tmp / name)
        files[name] = _sha256(tmp / name)
    meta = dict(state, step=step, rng=rng if rng is not None else [rng_state()], files=files)
    with open(tmp / "state.json", "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)

    old = None
    if final.exists():                            # the same step saved again (e.g. a signal at a save step)
        old = ckdir / f"{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(ckdir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if keep_last > 0:
        for stale in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


# ---------------------------------------------------------------- read
def verify(ck: str | Path) -> str | None:
    """None when the checkpoint is complete and every checksum matches, else the reason it is not."""
    ck = Path(ck)
    try:
        meta = json.loads((ck / "state.json").read_text())
    except (OSError, ValueError) as e:
        return f"state.json unreadable ({e})"
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or set(files) != set(FILES):
        return "state.json lists no checksums"
    for name, digest in files.items():
        if not (ck / name).is_file():
            return f"{name} missing"
        if _sha256(ck / name) != digest:
            return f"{name} does not match its checksum (truncated or corrupt)"
    return None


def latest_valid(run_dir: str | Path, warn=print) -> Path | None:
    """The newest checkpoint of a run that passes `verify`; broken ones are skipped with a warning."""
    for ck in reversed(list_checkpoints(run_dir)):
        why = verify(ck)
        if why is None:
            return ck
        warn(f"warning: skipping checkpoint {ck}: {why}")
    return None


def resolve_resume(resume: str | None, run_dir: str | Path, warn=print) -> Path | None:
    """`--resume` -> a checkpoint folder to load, or None to start afresh.

    "auto": the newest valid checkpoint in `run_dir`, or None when there is none (so the same command
    works before and after a crash). A run folder: its newest valid checkpoint (an error if none).
    A checkpoint folder: itself, which must verify.
    """
    if not resume:
        return None
    if resume == "auto":
        return latest_valid(run_dir, warn)
    p = Path(resume)
    if not p.exists():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint or run folder")
    if (p / "state.json").exists():
        why = verify(p)
        if why is not None:
            raise ValueError(f"checkpoint {p} is not usable: {why}")
        return p
    found = latest_valid(p, warn)
    if found is None:
        raise FileNotFoundError(f"--resume {resume}: no valid checkpoint in {checkpoint_dir(p)}")
    return found


def set_aside_newer(run_dir: str | Path, step: int) -> list[Path]:
    """Move checkpoints newer than `step` (an abandoned continuation, or broken ones) into
    RUN/checkpoints/abandoned/, so that a later `--resume auto` cannot pick them. Returns their new paths."""
    moved = []
    for ck in list_checkpoints(run_dir):
        if step_of(ck) > step:
            dst_dir = checkpoint_dir(run_dir) / "abandoned"
            dst_dir.mkdir(exist_ok=True)
            dst = dst_dir / ck.name
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(ck, dst)
            moved.append(dst)
    return moved


def load_checkpoint(ck: str | Path, model, optimizer, scaler, map_location="cpu", verified: bool = False) -> dict:
    """Load weights (strictly), optimizer and scaler state; returns state.json as a dict. The checksums are
    checked first unless the caller has just done so (`verified`, as `resolve_resume` does)."""
    from ..formats.folder import strict_load
    ck = Path(ck)
    why = None if verified else verify(ck)
    if why is not None:
        raise ValueError(f"checkpoint {ck} is not usable: {why}")
    strict_load(model, load_file(str(ck / "model.safetensors")), source=str(ck / "model.safetensors"))
    opt = torch.load(ck / "optim.pt", map_location=map_location, weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    return json.loads((ck / "state.json").read_text())
