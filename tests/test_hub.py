"""Hub ids on the command line (minimind_v/hub.py), with the real huggingface_hub client against a stand-in Hub on
127.0.0.1 (tests/hub_server.py, reached through HF_ENDPOINT): a model folder chats, an original `.pth` converts, a
dataset parquet trains, all by id; the same ids work again offline from the cache; a cut download leaves nothing
half-written and a retry succeeds; every failure is one line; `export --push-to-hub` uploads. Every test has its
own HF_HOME, and a socket guard refuses any address but 127.0.0.1, so no test reaches the network.
"""
from __future__ import annotations

import errno
import hashlib
import json
import socket
import sys
import types
from pathlib import Path

import pytest
from conftest import REF
from hub_server import FakeHub

from minimind_v import cli
from minimind_v.hub import HubError, HubRef, parse, resolve


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    real_connect = socket.socket.connect

    def local_only(sock, address):                               # no test reaches the network
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"tests stay on 127.0.0.1, not {address[0]}")
        return real_connect(sock, address)
    monkeypatch.setattr(socket.socket, "connect", local_only)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def half_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".incomplete")]


def one_line_error(capsys, argv) -> str:
    """The command fails with exit code 2 and one `error:` line, no traceback (huggingface_hub's own retry
    warnings may come before it)."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in err.splitlines()) == 1, err
    return err.splitlines()[-1]


# ------------------------------------------------------------------------------------------------ syntax

def test_spec_syntax():
    assert parse("owner/name") == HubRef("owner/name", None, None, None)
    assert parse("owner/name@v1.0:sub/llm_768.pth") == HubRef("owner/name", None, "sub/llm_768.pth", "v1.0")
    assert parse("datasets/owner/my_data:sft.parquet") == HubRef("owner/my_data", "dataset", "sft.parquet", None)
    assert parse("modelscope://owner/name:f.pth") == HubRef("owner/name", None, "f.pth", None, "modelscope")
    for local in ("runs/demo/model", "./owner/name", "/abs/path", "~/m", "../x/y", "data/train.parquet",
                  "model", "owner/.."):
        assert parse(local) is None, local
    assert str(parse("datasets/o/n@dev:a.parquet")) == "datasets/o/n@dev:a.parquet"


def test_a_local_path_wins(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    hub.add("owner/name", {"config.json": b"{}"})
    assert resolve("owner/name") == Path("owner/name")
    assert hub.log == []
    assert resolve("nothing/here.pth") == Path("nothing/here.pth")      # not an id: the caller says it is missing


# ------------------------------------------------------------------------------------------------ downloads

def test_chat_with_a_model_folder_by_id_then_offline(hub, tiny_model_dir, capsys, monkeypatch):
    hub.add("tester/tiny-vlm", folder_files(tiny_model_dir))
    args = ["--prompt", "What colour is it?", "--greedy", "--max-new-tokens", "6"]
    assert cli.main(["chat", "--model", str(tiny_model_dir), *args]) == 0
    local = capsys.readouterr().out
    assert cli.main(["chat", "--model", "tester/tiny-vlm", *args]) == 0
    assert capsys.readouterr().out == local
    assert ("GET", "/api/models/tester/tiny-vlm/revision/main") in hub.log
    snap = next((Path(hub_home()) / "hub").glob("models--tester--tiny-vlm/snapshots/*"))
    assert folder_files(snap) == folder_files(tiny_model_dir)

    hub.stop()                                         # no server at all: the cache alone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["chat", "--model", "tester/tiny-vlm", *args]) == 0
    assert capsys.readouterr().out == local


def hub_home() -> str:
    import os
    return os.environ["HF_HOME"]


def test_convert_a_pth_by_repo_and_file_then_offline(hub, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    cfg = (REF / "tiny_dense_config.json").read_bytes()
    hub.add("tester/minimind-pytorch", {"tiny_dense.pth": (REF / "tiny_dense.pth").read_bytes(),
                                        "tiny_dense_config.json": cfg, "other_768.pth": b"not wanted"})
    assert cli.main(["convert", str(REF / "tiny_dense.pth"), str(tmp_path / "local"),
                     "--config", str(REF / "tiny_dense_config.json")]) == 0
    # no --config: the repo's tiny_dense_config.json beside the file comes along
    assert cli.main(["convert", "tester/minimind-pytorch:tiny_dense.pth", str(tmp_path / "hub")]) == 0
    want = load_file(str(tmp_path / "local" / "model.safetensors"))
    got = load_file(str(tmp_path / "hub" / "model.safetensors"))
    assert want.keys() == got.keys() and all(want[k].equal(got[k]) for k in want)
    assert not any("other_768" in p for _, p in hub.log)            # only the named file (and its config)

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["convert", "tester/minimind-pytorch:tiny_dense.pth", str(tmp_path / "offline")]) == 0
    assert load_file(str(tmp_path / "offline" / "model.safetensors")).keys() == want.keys()


def test_train_one_step_on_a_dataset_file_by_id_then_offline(hub, tiny_model_dir, synth_data, tmp_path,
                                                               monkeypatch):
    data = Path(synth_data["sft"]).read_bytes()
    hub.add("tester/shapes", {"sft.parquet": data, "huge.parquet": b"never fetched"}, repo_type="dataset")
    common = ["--stage", "vlm-sft", "--from", str(tiny_model_dir), "--max-steps", "1", "--batch-size", "2",
              "--no-progress", "--no-plot"]
    assert cli.main(["train", "--data", "datasets/tester/shapes:sft.parquet", "--out", str(tmp_path / "a"),
                     *common]) == 0
    assert (tmp_path / "a" / "model" / "config.json").exists()
    assert ("HEAD", "/datasets/tester/shapes/resolve/main/sft.parquet") in hub.log
    assert not any("huge" in p for _, p in hub.log)

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")        # and without datasets/: --data tries a dataset repo first
    assert cli.main(["train", "--data", "tester/shapes:sft.parquet", "--out", str(tmp_path / "b"), *common]) == 0
    assert (tmp_path / "b" / "model" / "config.json").exists()


def test_revision_pins_a_tag(hub):
    sha = hub.add("tester/tagged", {"a.pth": b"one"}, tags=("v1",))
    path = resolve("tester/tagged@v1:a.pth", "checkpoint")
    assert path.read_bytes() == b"one" and sha in str(path)
    assert resolve("tester/tagged:a.pth", "checkpoint", revision=sha) == path
    with pytest.raises(HubError, match="names revision 'v1' but --revision says 'v2'"):
        resolve("tester/tagged@v1:a.pth", revision="v2")


def test_a_cut_download_leaves_nothing_and_the_retry_succeeds(hub, tmp_path, capsys):
    blob = hashlib.sha256(b"weights").digest() * 8192                # 256 KiB
    hub.add("tester/cut", {"big.pth": blob})
    hub.cut["big.pth"] = 100                                         # every try is cut halfway
    err = one_line_error(capsys, ["convert", "tester/cut:big.pth", str(tmp_path / "out"), "--preset", "tiny"])
    assert "cut off" in err and "run the command again" in err
    cache = Path(hub_home())
    assert half_files(cache) == []
    assert not [p for p in cache.rglob("big.pth")]                   # no entry points at a partial blob
    assert not [p for p in (cache / "hub" / "models--tester--cut" / "blobs").iterdir()]
    assert not (tmp_path / "out").exists()                           # nothing in the output folder either
    assert sum(1 for m, p in hub.log if m == "GET" and p.endswith("big.pth")) >= 1   # (huggingface_hub >= 1
                                                                     # resumes 5 times first)

    hub.cut["big.pth"] = 0
    path = resolve("tester/cut:big.pth", "checkpoint")
    assert path.read_bytes() == blob and half_files(cache) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(hub, tmp_path, capsys, monkeypatch):
    import huggingface_hub.file_download as fd
    hub.add("tester/full", {"big.pth": b"x" * 4096})

    def disk_full(url, temp_file, **kw):                           # the disk fills after the first bytes
        temp_file.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fd, "http_get", disk_full)
    err = one_line_error(capsys, ["convert", "tester/full:big.pth", str(tmp_path / "out"), "--preset", "tiny"])
    assert "disk is full" in err and "HF_HOME" in err
    assert half_files(Path(hub_home())) == [] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ errors

def test_each_failure_is_one_clear_line(hub, tmp_path, capsys, monkeypatch, tiny_model_dir):
    hub.add("tester/model", {"config.json": b"{}", "a.pth": b"1"})
    hub.add("tester/gated", folder_files(tiny_model_dir), token="right-token")
    chat = ["--prompt", "hi", "--max-new-tokens", "1"]

    assert "not a local path, and no repository models/tester/nope" in one_line_error(
        capsys, ["chat", "--model", "tester/nope", *chat])
    assert "has no revision 'v9'" in one_line_error(capsys, ["chat", "--model", "tester/model@v9", *chat])
    assert "has no file 'b.pth'" in one_line_error(capsys, ["convert", "tester/model:b.pth", str(tmp_path / "o")])
    err = one_line_error(capsys, ["train", "--stage", "vlm-sft", "--data", "tester/model:x.parquet", "--out",
                                  str(tmp_path / "r")])
    assert "has no file 'x.parquet'" in err
    assert "nor datasets" not in err                # the model repo exists: its missing file is the message
    assert "(nor datasets/tester/nope)" in one_line_error(
        capsys, ["train", "--stage", "vlm-sft", "--data", "tester/nope:x.parquet", "--out", str(tmp_path / "r")])
    assert "name the data file" in one_line_error(
        capsys, ["eval", "--model", str(tiny_model_dir), "--data", "tester/model"])

    err = one_line_error(capsys, ["chat", "--model", "tester/gated", *chat])
    assert "is gated" in err and "HF_TOKEN" in err
    monkeypatch.setenv("HF_TOKEN", "wrong-token")
    assert "has no access" in one_line_error(capsys, ["chat", "--model", "tester/gated", *chat])
    monkeypatch.setenv("HF_TOKEN", "right-token")
    assert cli.main(["chat", "--model", "tester/gated", *chat]) == 0
    monkeypatch.delenv("HF_TOKEN")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not in the local cache and HF_HUB_OFFLINE is set" in one_line_error(
        capsys, ["chat", "--model", "tester/model", *chat])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.stop()                                      # the Hub unreachable, nothing cached
    assert "cannot reach" in one_line_error(capsys, ["chat", "--model", "tester/model", *chat])
    assert half_files(tmp_path) == []


def test_modelscope_ids(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "modelscope", None)             # not installed
    with pytest.raises(HubError, match=r"pip install 'minimind-v\[modelscope\]'"):
        resolve("modelscope://owner/name")
    calls = []

    def snapshot_download(repo_id, **kw):                            # the call ModelScope's client gets
        calls.append((repo_id, kw))
        (tmp_path / "ms" / "llm_768.pth").parent.mkdir(exist_ok=True)
        (tmp_path / "ms" / "llm_768.pth").write_bytes(b"w")
        return str(tmp_path / "ms")
    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    assert resolve("modelscope://owner/name@v2:llm_768.pth", "checkpoint") == tmp_path / "ms" / "llm_768.pth"
    assert calls == [("owner/name", dict(revision="v2", allow_patterns=["llm_768.pth", "llm_768_config.json"],
                                         repo_type="model"))]
    with pytest.raises(HubError, match="ModelScope has no file 'x.pth'"):
        resolve("modelscope://owner/name:x.pth", "checkpoint")


# ------------------------------------------------------------------------------------------------ upload

def test_export_push_to_hub_uploads_the_folder_with_its_card(hub, tiny_model_dir, tmp_path, monkeypatch):
    """In its own process (huggingface_hub < 1 builds the commit URL from the HF_ENDPOINT it saw at import)."""
    import os
    import subprocess
    monkeypatch.setenv("HF_TOKEN", "writer")
    p = subprocess.run([sys.executable, "-m", "minimind_v.cli", "export", "--model", str(tiny_model_dir), "--to", "hf",
                        str(tmp_path / "exported"), "--push-to-hub", "tester/exported", "--private"],
                       env=dict(os.environ, OMP_NUM_THREADS="1", HTTPS_PROXY="http://127.0.0.1:9",
                                HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "uploaded" in p.stdout
    repo = hub.repos[("model", "tester/exported")]
    assert repo.private
    exported = folder_files(tmp_path / "exported")
    assert "README.md" in repo.files and repo.files == exported
    got = resolve("tester/exported")                    # and it comes back by id (private: the token reads it)
    assert folder_files(got) == {k: v for k, v in exported.items()
                                 if k.endswith((".json", ".safetensors", ".jinja", ".txt"))}
    assert json.loads(repo.files["config.json"])["model_type"]


def test_push_to_hub_refuses_a_bad_id_offline(hub, tmp_path, monkeypatch):
    from minimind_v.hub import push_folder
    with pytest.raises(HubError, match="give a repo id"):
        push_folder(tmp_path, "not-an-id")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push_folder(tmp_path, "tester/x")


def test_command_line_inputs_serve_name_and_revision(hub, tiny_model_dir):
    import argparse

    from minimind_v.hub import resolve_cli_inputs
    sha = hub.add("tester/tiny-vlm", folder_files(tiny_model_dir), tags=("v1",))
    hub.add("tester/enc", {"config.json": b"{}"})
    args = argparse.Namespace(command="serve", model="tester/tiny-vlm", name=None, revision="v1")
    resolve_cli_inputs(args)
    assert args.name == "tester/tiny-vlm"                      # the id clients send, not a cache folder's name
    assert Path(args.model).is_dir() and Path(args.model).name == sha and args.hub_ids == {"model": "tester/tiny-vlm"}
    # --revision is the main input's; another id keeps its own (here: main, which has no tag v1)
    args = argparse.Namespace(command="convert", src="tester/tiny-vlm", vision_encoder="tester/enc", tokenizer=None,
                              revision="v1")
    resolve_cli_inputs(args)
    assert Path(args.src).name == sha and Path(args.vision_encoder, "config.json").read_bytes() == b"{}"


def test_local_inputs_are_left_as_typed(hub, tiny_model_dir, tmp_path, monkeypatch):
    import argparse

    from minimind_v.hub import resolve_cli_inputs
    monkeypatch.chdir(tiny_model_dir.parent)
    args = argparse.Namespace(command="serve", model=f"./{tiny_model_dir.name}", name=None)
    resolve_cli_inputs(args)
    assert (args.model, args.name, args.hub_ids) == (f"./{tiny_model_dir.name}", None, {})
    args = argparse.Namespace(command="train", init_from=None, vision_encoder=None, tokenizer=None,
                              data=["no/such.parquet", str(tmp_path)])
    resolve_cli_inputs(args)
    assert args.data == ["no/such.parquet", str(tmp_path)] and hub.log == []


def test_python_api_loads_by_id(hub, tiny_model_dir):
    from minimind_v.pipeline import VLM
    hub.add("tester/tiny-vlm", folder_files(tiny_model_dir))
    vlm = VLM.load("tester/tiny-vlm")
    local = VLM.load(tiny_model_dir)
    assert vlm.name == "tester/tiny-vlm" and local.name == tiny_model_dir.name
    assert vlm.answer("hi", [], max_new_tokens=4, temperature=0) == local.answer("hi", [], max_new_tokens=4,
                                                                                 temperature=0)


def test_the_command_in_its_own_process(hub, tmp_path):
    """`minimind-v` as a user runs it: HF_ENDPOINT and HF_HOME set before the process starts (a proxy that goes
    nowhere for any other host), then the same id with HF_HUB_OFFLINE=1 and the server gone."""
    import os
    import subprocess
    hub.add("tester/minimind-pytorch", {"tiny_dense.pth": (REF / "tiny_dense.pth").read_bytes(),
                                        "tiny_dense_config.json": (REF / "tiny_dense_config.json").read_bytes()})
    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1", OMP_NUM_THREADS="1")

    def run(out, **extra):
        return subprocess.run([sys.executable, "-m", "minimind_v.cli", "convert",
                               "tester/minimind-pytorch:tiny_dense.pth", str(tmp_path / out)],
                              env=dict(env, **extra), capture_output=True, text=True, timeout=300)
    p = run("online")
    assert p.returncode == 0, p.stderr[-2000:]
    hub.stop()
    p = run("offline", HF_HUB_OFFLINE="1")
    assert p.returncode == 0, p.stderr[-2000:]
    from safetensors.torch import load_file
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("online", "offline"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    p = run("gone")                                 # online again, no server, but cached: the cache answers
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_benchmark_repo_brings_its_parquet_files(hub, tiny_model_dir):
    import argparse

    from minimind_v.hub import resolve_cli_inputs
    hub.add("bench/MMStar", {"README.md": b"card", "mmstar.parquet": b"p", "data/val-0.parquet": b"q"},
            repo_type="dataset")
    args = argparse.Namespace(command="eval", model=str(tiny_model_dir), data=["bench/MMStar"], bench="mmstar",
                              revision=None)
    resolve_cli_inputs(args)
    assert folder_files(Path(args.data[0])) == {"mmstar.parquet": b"p", "data/val-0.parquet": b"q"}
    args = argparse.Namespace(command="eval", model=str(tiny_model_dir), data=["bench/MMStar"], bench=None,
                              revision=None)
    with pytest.raises(HubError, match="name the data file"):   # plain eval scores one file's rows
        resolve_cli_inputs(args)


def test_train_config_fields_resolve(hub, synth_data, tmp_path):
    from minimind_v.hub import CLI_INPUTS, resolve_fields
    from minimind_v.train.config import TrainConfig
    hub.add("tester/shapes", {"sft.parquet": Path(synth_data["sft"]).read_bytes()}, repo_type="dataset")
    cfg = TrainConfig(stage="vlm-sft", data=["tester/shapes:sft.parquet", str(synth_data["sft"])],
                      out=str(tmp_path / "run"))
    got = resolve_fields(cfg, CLI_INPUTS["train"])
    assert Path(got.data[0]).read_bytes() == Path(synth_data["sft"]).read_bytes()
    assert got.data[1] == str(synth_data["sft"]) and got.out == cfg.out
    assert resolve_fields(got, CLI_INPUTS["train"]) is got            # nothing left to resolve


def test_train_from_python_takes_ids(hub, tiny_model_dir, synth_data, tmp_path):
    from minimind_v.train.config import TrainConfig
    from minimind_v.train.loop import train
    hub.add("tester/tiny-vlm", folder_files(tiny_model_dir))
    hub.add("tester/shapes", {"sft.parquet": Path(synth_data["sft"]).read_bytes()}, repo_type="dataset")
    summary = train(TrainConfig(stage="vlm-sft", data=["datasets/tester/shapes:sft.parquet"], out=str(tmp_path / "r"),
                                init_from="tester/tiny-vlm", max_steps=1, batch_size=2, progress=False, plot=False))
    assert summary["steps"] == 1 and (tmp_path / "r" / "model" / "config.json").exists()


def test_train_from_an_original_checkpoint_file_by_id(hub, tmp_path, capsys):
    """`train --from owner/name:llm.pth`: the file (and its <stem>_config.json) from the Hub, the tokenizer from
    another id; without --tokenizer, one line says a checkpoint file holds none."""
    hub.add("tester/minimind-pytorch", {"tiny_dense.pth": (REF / "tiny_dense.pth").read_bytes(),
                                        "tiny_dense_config.json": (REF / "tiny_dense_config.json").read_bytes()})
    hub.add("tester/minimind", {f: (REF / "tokenizer" / f).read_bytes()
                                for f in ("tokenizer.json", "tokenizer_config.json")})
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"text": f"The circle number {i} is red and round."}) + "\n"
                            for i in range(8)))
    common = ["train", "--stage", "llm-pretrain", "--data", str(data),
              "--from", "tester/minimind-pytorch:tiny_dense.pth",
              "--max-steps", "1", "--batch-size", "2", "--max-length", "32", "--no-progress", "--no-plot"]
    assert "holds no tokenizer" in one_line_error(capsys, [*common, "--out", str(tmp_path / "a")])
    assert cli.main([*common, "--out", str(tmp_path / "b"), "--tokenizer", "tester/minimind"]) == 0
    from minimind_v.formats.load import load_model
    model = load_model(tmp_path / "b" / "model")
    assert model.cfg.hidden_size == 64 and model.cfg.num_hidden_layers == 2
