"""The parity fixtures are what the original code wrote: tests/fixtures/README.md lists every file with its size and
sha256, and these tests hold the files to that list (a re-saved or edited fixture would otherwise silently move what
"parity" means). They also check the few re-packaged files against the files they were made from, and the 0420
build's own manifest against the bytes.
"""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from conftest import FIXTURES, REF, REF_0420

ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|")


def listed() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in (FIXTURES / "README.md").read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), m.group(3))
    return rows


def test_every_parity_fixture_is_listed_with_its_size_and_sha256():
    rows = listed()
    present = sorted(p.relative_to(FIXTURES).as_posix() for d in (REF, REF_0420) for p in d.rglob("*") if p.is_file())
    assert len(present) > 30
    assert sorted(rows) == present, "tests/fixtures/README.md and the files differ"
    wrong = [name for name, (size, sha) in rows.items()
             if (FIXTURES / name).stat().st_size != size
             or hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() != sha]
    assert not wrong, f"fixtures whose bytes changed: {wrong}"


def test_the_0420_build_manifest_matches_the_bytes():
    files = json.loads((REF_0420 / "manifest_0420.json").read_text())["files"]
    assert len(files) == 25                 # every file but the manifest itself
    for name, want in files.items():
        if name == "README.md":             # a note was added to that README after the build
            continue
        data = (REF_0420 / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (want["bytes"], want["sha256"]), name


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_repackaged_reference_files_match_their_sources(kind):
    from safetensors.torch import load_file
    configs = json.loads((REF / "tiny_configs.json").read_text())[kind]
    assert json.loads((REF / f"tiny_{kind}_config.json").read_text()) == configs["reported_by_config_object"]
    sd = load_file(str(REF / f"tiny_{kind}.safetensors"))
    shapes = {k: v["shape"] for k, v in configs["state_dict"].items()}
    assert {k: list(t.shape) for k, t in sd.items()} == {k: s for k, s in shapes.items() if k != "lm_head.weight"}
    if kind == "dense":                     # the .pth is the same weights as the original's trainer saves them
        pth = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
        assert set(pth) == set(sd) | {"lm_head.weight"}
        assert all(torch.equal(pth[k], sd[k]) for k in sd)
        assert torch.equal(pth["lm_head.weight"], sd["model.embed_tokens.weight"])
