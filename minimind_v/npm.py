"""Fetching a pinned package from the npm registry with the ordinary `npm` client, into one cache folder.

Two parts of the project take files from npm packages: the emoji data set (its artwork and CLDR names,
datatools/emoji_npm.py) and the browser export (onnxruntime-web, portable/web.py). Both go through `pack`
here: `npm pack NAME@VERSION` resolves the exact version and checks the tarball against the registry's
integrity hash, and the registry, proxy and certificate settings a user already has for npm apply
unchanged. The cache is ~/.cache/minimind-v/npm, or MINIMIND_V_NPM_CACHE.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path


class NpmError(ValueError):
    """npm missing or failing: one line for the user (the caller may add what to do instead)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MINIMIND_V_NPM_CACHE") or Path.home() / ".cache" / "minimind-v" / "npm")


def reason(proc: subprocess.CompletedProcess) -> str:
    """npm's own one-line account of a failure: the code and summary of its --json error object, else the
    first 'npm error' lines of stderr."""
    try:
        err = json.loads(proc.stdout)["error"]
        return f"{err.get('code', '')} {err.get('summary', '')}".strip()
    except (ValueError, LookupError, TypeError, AttributeError):
        pass
    lines = [ln.replace("npm error", "").strip() for ln in proc.stderr.splitlines() if ln.startswith("npm error")]
    return " ".join(ln for ln in lines[:2] if ln) or f"exit code {proc.returncode}"


def pack(spec: str, dest: Path, missing: str = "install Node.js/npm (e.g. `apt install npm`)") -> Path:
    """`npm pack SPEC` into DEST (no install scripts run); the tarball's path. `missing`: what to tell a user
    who has no npm."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(f"`npm` was not found on PATH; {missing}")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(dest)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise NpmError(f"`npm pack {spec}` failed (is the npm registry reachable?): {reason(proc)}")
    try:
        filename = json.loads(proc.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        raise NpmError(f"`npm pack {spec}` gave no file name; its output was: {proc.stdout[:200]!r}") from None
    if not (dest / filename).is_file():
        raise NpmError(f"`npm pack {spec}` reported {filename} but wrote no such file in {dest}")
    return dest / filename
