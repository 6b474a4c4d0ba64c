"""Hub ids wherever a model, checkpoint, encoder, tokenizer or data file is named: `resolve(spec)` -> a local path.

    runs/sft/model                      a local path: always wins when it exists
    owner/name                          a Hugging Face repo (a model folder; for data, a dataset repo)
    owner/name:path/in/repo             one file inside a repo (e.g. jingyaogong/minimind-3v-pytorch:llm_768.pth)
    owner/name@v1.0:file.pth            `@revision` (a branch, tag or commit) after the repo part
    datasets/owner/name:file.parquet    a dataset repo, said explicitly (`--data` also tries a dataset repo first)
    modelscope://owner/name[:file]      the same through ModelScope (`pip install 'minimind-v[modelscope]'`)

Downloads go through `huggingface_hub` (its cache, progress bars, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE), read
from the environment at call time so a process can change them. A folder is a `snapshot_download` limited to
the files its kind needs (a model folder's weights, configs and tokenizer; never the repo's .pth files); a
file is an `hf_hub_download`, plus the `<stem>_config.json` beside a bare checkpoint when the repo has one (what
`convert` reads for a `.pth` with no --config). The files land in the cache and the returned path points into
it, so a second run, or any run with HF_HUB_OFFLINE=1, reads the same bytes without the network.

Every failure a user can meet is one line (`HubError`, exit code 2): no such repo or file, a gated or private
repo without a token, a revision that does not exist, no network (or offline) with nothing cached, a cut
download, a full disk. huggingface_hub writes each download to a temporary `.incomplete` file and renames it
when whole; after a failure we also remove any `.incomplete` of that repo the client left for resuming (older
clients keep them), so nothing half-written stays in the cache.

Where it is called: `resolve_cli_inputs`, by the command line right after parsing, for the inputs listed in
CLI_INPUTS (`add_revision_flag` gives those commands --revision); `resolve_fields` at the top of `train()` for
TrainConfig from Python; `VLM.load`; `push_export` / `push_folder` for `export --push-to-hub`.
"""
from __future__ import annotations

import argparse
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

INSTALL_MODELSCOPE = "pip install 'minimind-v[modelscope]' (or pip install modelscope)"

# What each kind of input downloads from a whole repo (fnmatch patterns; `*` also matches `/`, so sub-folders
# such as a bundled vision_encoder/ come along).
FOLDER_FILES = {
    "model": ["*.json", "*.safetensors", "*.bin", "*.jinja", "*.txt", "*.model", "*.onnx", "*.onnx.data",
              "*.onnx_data"],
    "encoder": ["*.json", "*.safetensors", "*.bin"],
    "tokenizer": ["tokenizer*", "special_tokens_map.json", "*.jinja", "vocab*", "merges.txt", "added_tokens.json"],
    "dataset": ["*.parquet"],          # a benchmark's published repo (eval --bench): all its parquet files
}
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".txt", ".pth", ".pt", ".bin", ".safetensors", ".png", ".jpg")
KINDS = ("model", "checkpoint", "encoder", "tokenizer", "data", "dataset")

# command -> {argparse dest: kind}: the inputs `resolve_cli_inputs` turns into local paths.
CLI_INPUTS = {
    "chat": {"model": "model"},
    "serve": {"model": "model"},
    "eval": {"model": "model", "data": "data"},
    "export": {"model": "model"},
    "merge": {"adapter": "model"},
    "convert": {"src": "checkpoint", "tokenizer": "tokenizer", "vision_encoder": "encoder"},
    "train": {"init_from": "checkpoint", "vision_encoder": "encoder", "tokenizer": "tokenizer", "data": "data",
              "eval_bench_data": "dataset"},
}
# command -> the input `--revision` applies to (the one model it reads; other ids say theirs with @REV)
REVISION_OF = {"chat": "model", "serve": "model", "eval": "model", "export": "model", "merge": "adapter",
               "convert": "src"}
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
SPEC = re.compile(rf"^(?:(?P<type>datasets|models)/)?(?P<repo>{NAME}/{NAME})(?:@(?P<rev>[^:@]+))?(?::(?P<file>.+))?$")


class HubError(RuntimeError):
    """A download that cannot be done, said in one line (the command line prints it and exits with 2)."""
    exit_code = 2


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    repo_type: str | None          # "model", "dataset", or None: not said (data tries a dataset repo first)
    filename: str | None
    revision: str | None
    source: str = "hf"             # "hf" or "modelscope"

    def __str__(self) -> str:
        t = {"dataset": "datasets/", "model": ""}.get(self.repo_type or "model", "")
        rev = f"@{self.revision}" if self.revision else ""
        f = f":{self.filename}" if self.filename else ""
        return ("modelscope://" if self.source == "modelscope" else "") + f"{t}{self.repo_id}{rev}{f}"


def parse(spec: str) -> HubRef | None:
    """`spec` as a Hub reference, or None when it reads as a local path (absolute, ./, ../, ~, or not of the
    owner/name shape)."""
    source = "hf"
    if spec.startswith("modelscope://"):
        source, spec = "modelscope", spec[len("modelscope://"):]
    elif spec.startswith("hf://"):
        spec = spec[len("hf://"):]
    elif spec.startswith(("/", "./", "../", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", spec):
        return None
    m = SPEC.match(spec)
    if not m or m["repo"].split("/")[1] in (".", ".."):
        if source == "modelscope":
            raise HubError(f"modelscope://{spec}: not a repo id; write modelscope://owner/name[@revision][:file]")
        return None
    if not m["file"] and not m["type"] and source == "hf" and spec.lower().endswith(LOCAL_SUFFIXES):
        return None                        # data/train.parquet: a missing local file, not a repo
    repo_type = {"datasets": "dataset", "models": "model"}.get(m["type"] or "")
    return HubRef(m["repo"], repo_type, m["file"], m["rev"], source)


def resolve(spec: str | os.PathLike, kind: str = "model", revision: str | None = None) -> Path:
    """A local path for `spec`: itself when it exists locally, else the file or folder downloaded (or found in
    the cache) for a Hub id. `kind` (KINDS) picks which files a whole repo contributes; `revision` applies when
    the spec names none. A spec that is neither a local path nor a Hub id comes back unchanged, for the
    caller's own "does not exist" message."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    spec = os.fspath(spec)
    if Path(spec).expanduser().exists():
        return Path(spec).expanduser()
    ref = parse(spec)
    if ref is None:
        return Path(spec)
    if revision and ref.revision and revision != ref.revision:
        raise HubError(f"{spec}: names revision {ref.revision!r} but --revision says {revision!r}")
    if revision and not ref.revision:
        ref = HubRef(ref.repo_id, ref.repo_type, ref.filename, revision, ref.source)
    if kind == "data" and ref.filename is None:
        raise HubError(f"{spec}: name the data file inside the repo, e.g. {ref.repo_id}:train.parquet "
                       f"(a data set repo can hold many large files)")
    if ref.source == "modelscope":
        return _modelscope(ref, kind)
    if ref.repo_type is None:
        if kind in ("data", "dataset"):    # --data owner/name:file: a dataset repo, else a model repo
            try:
                return _download(HubRef(ref.repo_id, "dataset", ref.filename, ref.revision), kind)
            except HubError as e:
                if not getattr(e, "repo_missing", False):
                    raise
            return _download(HubRef(ref.repo_id, "model", ref.filename, ref.revision), kind,
                             also_tried="datasets/" + ref.repo_id)
        return _download(HubRef(ref.repo_id, "model", ref.filename, ref.revision), kind, bare=True)
    return _download(ref, kind)


def resolve_many(specs, kind: str = "data", revision: str | None = None) -> list[str]:
    return [str(resolve(s, kind, revision)) for s in specs]


def resolve_fields(obj, fields: dict[str, str]):
    """A dataclass (TrainConfig: `resolve_fields(cfg, CLI_INPUTS["train"])`) with the Hub ids among the named
    fields ({field: kind}) replaced by local paths; local paths stay as they are. The Python API's door, as
    `resolve_cli_inputs` is the command line's."""
    import dataclasses

    def local(value):
        if not isinstance(value, str) or Path(value).expanduser().exists() or parse(value) is None:
            return value
        return str(resolve(value, kind))
    changes = {}
    for name, kind in fields.items():
        value = getattr(obj, name, None)
        if isinstance(value, (list, tuple)):
            value, new = list(value), [local(v) for v in value]
        else:
            new = local(value)
        if new != value:
            changes[name] = new
    return dataclasses.replace(obj, **changes) if changes else obj


def add_revision_flag(command: str, parser: argparse.ArgumentParser) -> None:
    """`--revision REV` on the commands of REVISION_OF."""
    if command in REVISION_OF:
        parser.add_argument("--revision", metavar="REV",
                            help=f"branch, tag or commit of the Hub repo --{REVISION_OF[command]} names (same as "
                                 f"owner/name@REV; default: main). Any input may be a Hub id: see docs/hub.md"
                            .replace("--src", "SRC").replace("--adapter", "ADAPTER"))


def resolve_cli_inputs(args: argparse.Namespace) -> None:
    """Replace the Hub ids among a parsed command's inputs (CLI_INPUTS) by local paths, in place. Keeps what
    was typed in `args.hub_ids` ({dest: spec}) for messages and names (e.g. the served model's name)."""
    typed = {}
    command = getattr(args, "command", None)

    def local(value: str, kind: str, revision: str | None) -> str:
        if Path(value).expanduser().exists() or parse(value) is None:
            return value                    # a local path (or the caller's own "missing" message): untouched
        typed.setdefault(dest, []).append(value)
        return str(resolve(value, kind, revision))

    for dest, kind in CLI_INPUTS.get(command, {}).items():
        value = getattr(args, dest, None)
        revision = getattr(args, "revision", None) if REVISION_OF.get(command) == dest else None
        if command == "eval" and dest == "data" and getattr(args, "bench", None):
            kind = "dataset"                # a benchmark's data: a file, or a whole repo's parquet files
        if isinstance(value, str):
            setattr(args, dest, local(value, kind, revision))
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            setattr(args, dest, [local(v, kind, revision) for v in value])
    typed = {k: v[0] if isinstance(getattr(args, k), str) else v for k, v in typed.items()}
    args.hub_ids = typed
    if args.command == "serve" and "model" in typed and getattr(args, "name", None) is None:
        args.name = parse(typed["model"]).repo_id         # the id clients send: owner/name, not a cache folder


# ------------------------------------------------------------------------------------------------ downloads

def _settings() -> dict:
    """The environment as huggingface_hub documents it, read now (its own constants are read at import)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or (str(Path(env["HF_HOME"]) / "hub") if env.get("HF_HOME") else None)
    return dict(endpoint=env.get("HF_ENDPOINT") or None, token=env.get("HF_TOKEN") or None, cache_dir=cache,
                local_files_only=env.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"))


def _import_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("Hub ids need the huggingface_hub package: pip install huggingface_hub") from None
    return huggingface_hub


def _download(ref: HubRef, kind: str, also_tried: str | None = None, bare: bool = False) -> Path:
    """`bare`: the spec said nothing that marks it as a Hub id (no datasets/, no :file), so it may be a
    mistyped local path: the error says both."""
    hub = _import_hub()
    s = _settings()
    try:
        if ref.filename is not None:
            path = Path(hub.hf_hub_download(ref.repo_id, ref.filename, repo_type=ref.repo_type,
                                            revision=ref.revision, **s))
            if kind == "checkpoint":
                _sibling_config(hub, ref, s)
            return path
        patterns = FOLDER_FILES["model" if kind == "checkpoint" else kind]
        return Path(hub.snapshot_download(ref.repo_id, repo_type=ref.repo_type, revision=ref.revision,
                                          allow_patterns=patterns, **s))
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - every huggingface_hub / network / disk failure becomes one line
        _drop_incomplete(hub, ref, s["cache_dir"])
        err = HubError(explain(e, ref, s, also_tried, bare and ref.filename is None))
        err.repo_missing = _is(e, "RepositoryNotFoundError") and not _is(e, "GatedRepoError")
        raise err from None


def _sibling_config(hub, ref: HubRef, s: dict) -> None:
    """`<stem>_config.json` beside a checkpoint file in the repo, when there is one (a missing one is normal)."""
    stem, _, _ = ref.filename.rpartition(".")
    try:
        hub.hf_hub_download(ref.repo_id, f"{stem}_config.json", repo_type=ref.repo_type, revision=ref.revision, **s)
    except Exception as e:  # noqa: BLE001
        if not (_is(e, "EntryNotFoundError") or _is(e, "LocalEntryNotFoundError")):
            raise


def _drop_incomplete(hub, ref: HubRef, cache_dir: str | None) -> None:
    """Remove partial downloads of this repo from the cache (huggingface_hub >= 1 already does; older clients
    keep `blobs/*.incomplete` to resume)."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name
        root = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=ref.repo_id,
                                                                             repo_type=ref.repo_type or "model")
        for p in (root / "blobs").glob("*.incomplete"):
            p.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - cleaning up must never hide the real error
        pass


def _is(e: BaseException, *names: str) -> bool:
    return any(c.__name__ in names for c in type(e).__mro__)


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def explain(e: BaseException, ref: HubRef, s: dict, also_tried: str | None = None, bare: bool = False) -> str:
    """One line for a failed download: what is wrong and what to do."""
    where = s["endpoint"] or "https://huggingface.co"
    rev = ref.revision or "main"
    what = f"{ref}"
    for c in _chain(e):
        if isinstance(c, OSError) and c.errno == errno.ENOSPC:
            cache = s["cache_dir"] or "the Hugging Face cache (~/.cache/huggingface/hub)"
            return (f"{what}: the disk is full (writing to {cache}); nothing was kept. Free space, or set HF_HOME to "
                    f"a folder on a larger disk")
    if _is(e, "GatedRepoError"):
        return (f"{what}: {ref.repo_id} is gated. Accept its terms on its page at {where}, then set HF_TOKEN to a "
                f"token of that account" + (" (the token given has no access)" if s["token"] else ""))
    if _is(e, "RepositoryNotFoundError"):
        tried = f" (nor {also_tried})" if also_tried else ""
        hint = ("check the name; if it is private, the token in HF_TOKEN has no access" if s["token"] else
                "check the name; if it is private, set HF_TOKEN to a token that can read it")
        local = "not a local path, and " if bare else ""
        return f"{what}: {local}no repository {ref.repo_type or 'model'}s/{ref.repo_id}{tried} on {where}: {hint}"
    if _is(e, "RevisionNotFoundError"):
        return f"{what}: {ref.repo_id} has no revision '{rev}' (a branch, tag or commit)"
    if _is(e, "LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        if s["local_files_only"]:
            return (f"{what}: not in the local cache and HF_HUB_OFFLINE is set; run it once with the network "
                    f"(HF_HUB_OFFLINE unset) to download it")
        return (f"{what}: cannot reach {where} and it is not in the local cache: check the network (or "
                f"HF_ENDPOINT / the proxy settings), or give a local path")
    if _is(e, "EntryNotFoundError", "RemoteEntryNotFoundError"):
        return f"{what}: {ref.repo_id} has no file '{ref.filename}' at revision '{rev}'"
    if _is(e, "HFValidationError"):
        return f"{what}: not a valid repo id ({str(e).splitlines()[0]})"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "Consistency check failed" in str(e) or any(
            _is(c, "RemoteProtocolError", "ReadTimeout", "ConnectionError", "ChunkedEncodingError",
                "IncompleteRead", "ReadError") for c in _chain(e)):
        return (f"{what}: the download was cut off ({text}); nothing half-written was kept, run the command again "
                f"to retry")
    if _is(e, "ConnectError", "ConnectTimeout", "TimeoutException", "ProxyError") or isinstance(e, ConnectionError):
        return f"{what}: cannot reach {where} ({text}): check the network, or HF_ENDPOINT"
    if _is(e, "HfHubHTTPError"):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"{what}: {where} refused access ({status}); set HF_TOKEN to a token that can read "
                    f"{ref.repo_id}")
        return f"{what}: {where} answered {status or 'an error'}; try again later"
    if isinstance(e, OSError):
        return f"{what}: {text}"
    raise e


# ------------------------------------------------------------------------------------------------ ModelScope

def _modelscope(ref: HubRef, kind: str) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise HubError(f"{ref}: ModelScope ids need the modelscope package: {INSTALL_MODELSCOPE}") from None
    patterns = [ref.filename] if ref.filename else FOLDER_FILES["model" if kind == "checkpoint" else kind]
    if ref.filename and kind == "checkpoint":
        patterns.append(ref.filename.rpartition(".")[0] + "_config.json")
    kw = dict(revision=ref.revision, allow_patterns=patterns, repo_type=ref.repo_type or "model")
    if os.environ.get("MODELSCOPE_CACHE"):
        kw["cache_dir"] = os.environ["MODELSCOPE_CACHE"]
    try:
        folder = Path(snapshot_download(ref.repo_id, **kw))
    except Exception as e:  # noqa: BLE001 - ModelScope's errors, one line each
        raise HubError(f"{ref}: ModelScope download failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                       ) from None
    path = folder / ref.filename if ref.filename else folder
    if not path.exists():
        raise HubError(f"{ref}: ModelScope has no file '{ref.filename}' in {ref.repo_id}")
    return path


# ------------------------------------------------------------------------------------------------ upload

def push_export(out: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload what `export` wrote: a folder (hf, onnx, web: with its model card) as it is; a reference `.pth`
    with its `<stem>_config.json` and `<stem>_vision_encoder/` when present. Returns the commit's URL."""
    out = Path(out)
    if out.is_dir():
        return push_folder(out, repo_id, private)
    stem = out.name.rpartition(".")[0]
    return push_folder(out.parent, repo_id, private, files=[out.name, f"{stem}_config.json",
                                                            f"{stem}_vision_encoder/*"])


def push_folder(folder: str | Path, repo_id: str, private: bool = False, files: list[str] | None = None,
                message: str = "Upload model exported by minimind-v") -> str:
    """Upload `folder` (or only the `files` patterns inside it) to the model repo `repo_id`, creating it if
    needed; the token is HF_TOKEN (or the stored login). Returns the commit's URL."""
    hub = _import_hub()
    s = _settings()
    ref = HubRef(repo_id, "model", None, None)
    if s["local_files_only"]:
        raise HubError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to upload")
    if parse(repo_id) is None or ":" in repo_id or "@" in repo_id:
        raise HubError(f"--push-to-hub {repo_id}: give a repo id, owner/name")
    api = hub.HfApi(endpoint=s["endpoint"], token=s["token"])
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 allow_patterns=files, commit_message=message)
    except Exception as e:  # noqa: BLE001
        if _is(e, "HfHubHTTPError") and getattr(getattr(e, "response", None), "status_code", None) in (401, 403):
            raise HubError(f"--push-to-hub {repo_id}: not allowed ({e.response.status_code}); set HF_TOKEN to a "
                           f"token with write access") from None
        raise HubError(explain(e, ref, s).replace(f"{ref}:", f"--push-to-hub {repo_id}:", 1)) from None
    return str(getattr(info, "commit_url", info))
