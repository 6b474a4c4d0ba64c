"""Fetch the npm packages the emoji data set is built from, pinned and checked, into a cache folder.

The pictures and names come from three published npm packages (`PACKAGES`): the Noto and Twemoji
artwork of emoji-datasource-google / -twitter 16.0.0 and the CLDR names, groups and keywords of
emojibase-data 17.0.0. They are fetched with the ordinary `npm` client (`npm pack NAME@VERSION`: npm
resolves the exact version and checks the tarball against the registry's integrity hash), then checked
again here against the sha512 written below, so a changed tarball can never slip into the data. Each
tarball is unpacked to CACHE/packages/NAME/ (the layout of a node_modules folder), which is also what
`--packages DIR` points at when the packages are already on disk (tests use a small sample of it).

The npm client itself is driven by minimind_v/npm.py (shared with the browser export).
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tarfile
from pathlib import Path

from ..npm import NpmError, cache_dir, pack

# name -> (version, sha512 integrity of the registry tarball, as npm reports it)
PACKAGES: dict[str, tuple[str, str]] = {
    "emoji-datasource-google": ("16.0.0", "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="),
    "emoji-datasource-twitter": ("16.0.0", "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="),
    "emojibase-data": ("17.0.0", "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA=="),
}
DEFAULT_CACHE = cache_dir()


NO_NPM = ("install Node.js/npm (e.g. `apt install npm`) or pass --packages DIR with the three packages "
          "already unpacked")


class PackageError(NpmError):
    """npm missing, the registry unreachable, a tarball that fails its check, a package folder that is not
    the pinned version: the CLI prints it as one line and exits 2."""


def integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def check_packages(folder: Path) -> dict[str, Path]:
    """FOLDER/NAME for each package, after checking that each is there at its pinned version
    (package.json). A missing or different package is one clear line (PackageError)."""
    out = {}
    for name, (version, _) in PACKAGES.items():
        meta = folder / name / "package.json"
        if not meta.is_file():
            raise PackageError(f"{folder / name} is not an unpacked npm package (no package.json); "
                             f"expected {name}@{version}")
        found = json.loads(meta.read_text(encoding="utf-8")).get("version")
        if found != version:
            raise PackageError(f"{folder / name} is {name}@{found}; this data set is built from {name}@{version}")
        out[name] = folder / name
    return out


def _unpack(tgz: Path, dest: Path, progress: bool) -> None:
    """Unpack an npm tarball (its files under package/) into dest, atomically (a temp folder, then rename)."""
    from tqdm import tqdm
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tgz, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/")]
        for m in tqdm(members, desc=f"unpack {tgz.name}", unit="file", disable=not progress, leave=False, mininterval=1.0):
            target = tmp / m.name[len("package/"):]
            if ".." in Path(m.name).parts:
                raise PackageError(f"{tgz} holds an unsafe path {m.name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def fetch_packages(cache: Path = DEFAULT_CACHE, progress: bool = True) -> dict[str, Path]:
    """The three packages unpacked under CACHE/packages/, fetched with `npm pack` when not there yet; every
    tarball is checked against its pinned sha512 before it is unpacked."""
    cache = Path(cache).expanduser()
    root = cache / "packages"
    for name, (version, want) in PACKAGES.items():
        meta = root / name / "package.json"
        if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("version") == version:
            if progress:
                print(f"{name}@{version}: in the cache ({root / name})")
            continue
        cache.mkdir(parents=True, exist_ok=True)
        tgz = cache / f"{name}-{version}.tgz"
        if not tgz.is_file() or integrity(tgz) != want:
            if progress:
                print(f"{name}@{version}: npm pack ...", flush=True)
            try:
                tgz = pack(f"{name}@{version}", cache, NO_NPM)
            except NpmError as e:
                raise PackageError(str(e)) from None
        got = integrity(tgz)
        if got != want:
            tgz.unlink(missing_ok=True)
            raise PackageError(f"{name}@{version} from npm has integrity {got}, expected {want}; "
                             "the tarball was removed, nothing was built")
        _unpack(tgz, root / name, progress)
        if progress:
            print(f"{name}@{version}: unpacked to {root / name}")
    return check_packages(root)
