"""The package's shape, checked from source with `ast` (nothing is imported or run):

(a) no import cycle among the modules of minimind_v;
(b) minimind_v.model (the core) imports nothing from the layers built on it;
(c) the packages above it point down too (NOT_BELOW): what training reads (data/) knows nothing of the
    offline tools (datatools/) or of training; training knows nothing of the recipes built on it; no
    module but the entry point imports the CLI;
(d) nothing edits sys.path: the package is installed (editable, by ./run), tests and benchmarks import it.

What counts as an import: every `import` / `from ... import` anywhere in a module, inside functions too. A
function-level import breaks no cycle in the design (only its timing), so it is an edge like any other.
Importing `a.b.c` also runs the `__init__` of `a` and `a.b`, so those are edges too, except packages that
already enclose the importer (they are mid-import by then). One kind is left out on purpose: the imports
inside a package `__init__`'s module-level `__getattr__` (PEP 562). That hook is the package's public face
for `minimind_v.load_model`-style access, runs only when such a name is looked up, and points down at the
modules it re-exports; counting it would make every module "import" everything through its parent package.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minimind_v"
CORE = "minimind_v.model"
ABOVE_CORE = ("formats", "data", "train", "serve", "eval", "recipes", "datatools")
# package -> the packages it must not import (each a layer above it, or beside it on purpose).
NOT_BELOW = {
    "data": ("datatools", "train", "recipes", "serve", "eval", "formats", "pipeline", "chat", "cli"),
    "datatools": ("train", "recipes", "serve", "eval", "pipeline", "chat", "cli"),
    "formats": ("data", "datatools", "train", "recipes", "serve", "eval", "cli"),
    "train": ("datatools", "recipes", "serve", "chat", "cli"),      # eval: a benchmark score during training
    "eval": ("datatools", "train", "recipes", "serve", "cli"),
    "serve": ("datatools", "train", "recipes", "eval", "cli"),
    "recipes": ("serve", "cli"),
    "portable": ("datatools", "train", "recipes", "serve", "eval", "pipeline", "chat", "cli"),
    # a leaf: Hub ids -> local paths; what reads those paths calls it, never the reverse
    "hub": ("model", "data", "datatools", "formats", "train", "eval", "serve", "recipes", "portable", "pipeline",
            "chat", "cli"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def lazy_getattr_nodes(tree: ast.Module, path: Path) -> set[int]:
    """ids of the nodes inside a package __init__'s module-level `def __getattr__` (see the docstring)."""
    if path.name != "__init__.py":
        return set()
    return {id(n) for top in tree.body if isinstance(top, ast.FunctionDef) and top.name == "__getattr__"
            for n in ast.walk(top)}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The minimind_v modules `name` imports (resolved relative imports, submodules named in `from` lists)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = lazy_getattr_nodes(tree, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else target)
    edges = set()
    for target in found:
        if not (target == "minimind_v" or target.startswith("minimind_v.")):
            continue
        while target not in known and "." in target:     # `import minimind_v.x.attr` style: the module part
            target = target.rpartition(".")[0]
        parts = target.split(".")
        for i in range(1, len(parts) + 1):               # the target and the packages around it
            mod = ".".join(parts[:i])
            if mod in known and mod != name and not (name + ".").startswith(mod + "."):
                edges.add(mod)
    return edges


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (iterative DFS, colours white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start] = 1
        path = [start]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_graph_sees_the_package():
    graph = import_graph()
    assert "minimind_v.model.vlm" in graph and "minimind_v.formats.load" in graph
    assert "minimind_v.model.vlm" in graph["minimind_v.formats.load"]
    assert "minimind_v.formats" not in graph["minimind_v.formats.load"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_model_is_the_core():
    graph = import_graph()
    above = tuple(f"minimind_v.{p}" for p in ABOVE_CORE)
    bad = {name: sorted(t for t in targets if t == above or t.startswith(above))
           for name, targets in graph.items()
           if name == CORE or name.startswith(CORE + ".")}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"minimind_v.model imports layers built on it: {bad}"


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """module -> the modules it imports against NOT_BELOW."""
    bad = {}
    for package, forbidden in NOT_BELOW.items():
        prefix = f"minimind_v.{package}"
        above = tuple(f"minimind_v.{p}" for p in forbidden)
        for name, targets in graph.items():
            if name == prefix or name.startswith(prefix + "."):
                hits = sorted(t for t in targets if t in above or t.startswith(tuple(a + "." for a in above)))
                if hits:
                    bad[name] = hits
    return bad


def test_layers_point_down():
    bad = upward_imports(import_graph())
    assert not bad, f"imports that point up a layer: {bad}"


def test_upward_imports_finds_one():
    graph = {"minimind_v.data.chatml": {"minimind_v.datatools.check", "minimind_v.image"},
             "minimind_v.datatools.check": {"minimind_v.data.parquet"},
             "minimind_v.database": {"minimind_v.cli"}}     # a name sharing the prefix is another package
    assert upward_imports(graph) == {"minimind_v.data.chatml": ["minimind_v.datatools.check"]}


def is_shim(name: str, path: Path) -> bool:
    """A module whose body only re-exports: imports (and `__all__`), nothing of its own. A package's
    `__init__` may gather names from its own submodules (its public face); importing from anywhere else
    makes it a shim too."""
    tree = ast.parse(path.read_text(), str(path))
    body = [n for n in tree.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))          # the docstring
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
            and not (isinstance(n, ast.Assign) and [getattr(t, "id", "") for t in n.targets] == ["__all__"])]
    if not body or not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body):
        return False
    if path.name == "__init__.py":
        return not all(isinstance(n, ast.ImportFrom) and n.level == 1 for n in body)
    return True


def test_no_shim_modules():
    shims = [name for name, path in modules().items() if is_shim(name, path)]
    assert not shims, f"modules that only re-export (import the real module instead): {shims}"


def test_is_shim_finds_one(tmp_path):
    (tmp_path / "old.py").write_text('"""Old path."""\nfrom .new import thing  # noqa: F401\n')
    (tmp_path / "real.py").write_text('from .new import thing\n\n\ndef use():\n    return thing\n')
    (tmp_path / "__init__.py").write_text('from .new import thing\n__all__ = ["thing"]\n')
    assert is_shim("p.old", tmp_path / "old.py")
    assert not is_shim("p.real", tmp_path / "real.py")
    assert not is_shim("p", tmp_path / "__init__.py")       # a package gathering its own submodules' names


def sys_path_edits(path: Path) -> list[int]:
    """Lines that touch sys.path (insert/append/assign) or add a site dir."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "addsitedir":
            lines.append(node.lineno)
    return lines


def test_no_sys_path_edits():
    found = {}
    for folder in ("minimind_v", "benchmarks", "tests", "tools"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            lines = sys_path_edits(p)
            if lines:
                found[str(p.relative_to(ROOT))] = lines
    assert not found, f"sys.path edited (install the package instead): {found}"


PICTURE_FUNCTIONS = {"to_rgb", "naflex_size", "patchify", "normalise", "normalised", "packed_pixels",
                     "encoder_inputs", "image_to_patches"}


def test_picture_code_has_one_home():
    """Turning a picture into encoder input is written once, in minimind_v/hf/pixels.py (the exported folder
    ships that same file; tests/test_hf_processor.py compares them)."""
    home = PACKAGE / "hf" / "pixels.py"
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == home:
            continue
        tree = ast.parse(path.read_text(), str(path))
        defs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} & PICTURE_FUNCTIONS
        if defs:
            found[str(path.relative_to(ROOT))] = sorted(defs)
    assert not found, f"picture code outside hf/pixels.py: {found}"
    pixels_imports = {n.module or "" for n in ast.walk(ast.parse(home.read_text())) if isinstance(n, ast.ImportFrom)}
    assert pixels_imports <= {"__future__", "PIL"}, f"hf/pixels.py must stay numpy + PIL only: {pixels_imports}"


def test_no_function_over_100_lines():
    long = {f"{path.relative_to(ROOT)}:{n.name}": n.end_lineno - n.lineno + 1
            for path in sorted(PACKAGE.rglob("*.py"))
            for n in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 100}
    assert not long, f"functions over 100 lines (split them into their steps): {long}"


def test_training_loop_reads_in_one_sitting():
    assert len((PACKAGE / "train" / "loop.py").read_text().splitlines()) < 400
