"""Training checkpoints: everything needed to continue a run exactly, written atomically.

RUN/checkpoints/step-000120/ holds `model.safetensors` (trainable and frozen weights as in a model
folder), `optim.pt` (optimizer + scaler state, tensors only, read with weights_only=True) and
`state.json` (step, epoch, rows consumed, world size, RNG states, config, and a SHA-256 of each file).
A checkpoint is written to `step-000120.tmp-<pid>`, each file flushed and fsynced, then the folder is
renamed into place, so a kill during a save leaves the previous checkpoint intact. `latest_valid`
skips folders whose files are missing or whose checksums do not match.
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _rng_to_json(st: dict) -> dict:
    py = st["python"]
    np_st = st["numpy"]
    out = {"python": [py[0], list(py[1]), py[2]],
           "numpy": [np_st[0], np_st[1].tolist(), int(np_st[2]), int(np_st[3]), float(np_st[4])],
           "torch": st["torch"].tolist()}
    if "cuda" in st:
        out["cuda"] = [s.tolist() for s in st["cuda"]]
    return out


def set_rng_state(js: dict) -> None:
    py = js["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = js["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(js["torch"], dtype=torch.uint8))
    if "cuda" in js and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in js["cuda"]])


def save_checkpoint(run_dir: str | Path, step: int, model, optimizer, scaler, state: dict,
                    keep_last: int = 2) -> Path:
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"{PREFIX}{step:08d}"
    tmp = ckdir / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    from ..model.folder import absent_ok          # tied lm_head, a pretrained encoder's weights
    skip = absent_ok(model)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    save_file(sd, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None},
               tmp / "optim.pt")
    files = {}
    for name in ("model.safetensors", "optim.pt"):
        _fsync(tmp / name)
        files[name] = _sha256(tmp / name)
    meta = dict(state, step=step, rng=_rng_to_json(rng_state()), files=files)
    (tmp / "state.json").write_text(json.dumps(meta))
    _fsync(tmp / "state.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(ckdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.exists():
        return []
    return sorted(p for p in ckdir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and ".tmp" not in p.name)


def verify(ck: Path) -> str | None:
    """None if the checkpoint is complete and its checksums match, else the reason."""
    try:
        meta = json.loads((ck / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"state.json unreadable: {e}"
    for name, digest in meta.get("files", {}).items():
        if not (ck / name).exists():
            return f"{name} missing"
        if _sha256(ck / name) != digest:
            return f"{name} checksum mismatch (truncated or corrupt)"
    return None


def latest_valid(run_dir: str | Path, warn=print) -> Path | None:
    for ck in reversed(list_checkpoints(run_dir)):
        why = verify(ck)
        if why is None:
            return ck
        warn(f"skipping checkpoint {ck}: {why}")
    return None


def load_checkpoint(ck: str | Path, model, optimizer, scaler, map_location="cpu") -> dict:
    ck = Path(ck)
    why = verify(ck)
    if why is not None:
        raise ValueError(f"checkpoint {ck} is not valid: {why}")
    from ..model.folder import strict_load
    strict_load(model, load_file(str(ck / "model.safetensors")), source=str(ck))
    opt = torch.load(ck / "optim.pt", map_location=map_location, weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    return json.loads((ck / "state.json").read_text())
