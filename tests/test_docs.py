"""The documentation speaks of the project, not of how its work was organised, and the README stays a guide.

Every line of README.md, docs/, the package (code, docstrings, the chat page), the tests, benchmarks and
tools is read and checked against the patterns below: references to a tracker ("issue #15", "#16", "the
issue's targets"), labels of working periods or numbered runs ("session 4", "the fifth round", "run 10b",
"work period"), and words about who or what wrote the code. Earlier measurements belong in docs/LOG.md under their date, which
needs none of these. The patterns are narrow on purpose where a word has an ordinary meaning: "filed
under" (an emoji question), "an interactive session" (chat), an ONNX Runtime session, "User-Agent" and
Python's `round()` pass.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
TEXT_SUFFIXES = {".py", ".md", ".html", ".js", ".css", ".txt", ".json", ".jinja", ".toml", ".cfg"}

FORBIDDEN = {
    "an issue or the issue tracker": r"\bissues?\b",
    "a tracker number (#12)": r"(?<![\w&/'\"])#\d+\b",
    "a working session": r"\bsessions?[- ]?\d+\b|\b(this|that|another|previous|earlier|later|next|both|other|"
                         r"whole|same) sessions?('s)?\b|\bsessions' ",
    "a numbered round of work": r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(st|nd|rd|th))"
                                r"[- ]rounds?\b|\bround \d+\b",
    "a run label (run 10b, runs 8-11)": r"\bruns? \d+[a-z]?\b(?!\s*(steps?|epochs?|times|x\b|threads?|processes|"
                                       r"seeds?|%|s\b|seconds|minutes))",
    "a work period": r"\bwork(ing)?[- ]periods?\b|\bperiod \d+\b",
    "something filed": r"\bfiled (by|in|as|against|on)\b",
    "who wrote it": r"\b(claude|anthropic|chatgpt|copilot|codex|integrator|ai (agent|assistant)|coding agent|"
                    r"language model wrote|written by an? (ai|llm|model|agent|assistant|helper))\b",
}


def files() -> list[Path]:
    """README.md, docs/ and the package; and the tests, benchmarks and tools beside them (not their recorded
    results or fixtures, which are data, nor this file, which has to name what it looks for)."""
    out = [ROOT / "README.md"]
    for folder in ("docs", "minimind_v", "tests", "benchmarks", "tools"):
        out += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                      and not {"results", "fixtures"} & set(p.relative_to(ROOT).parts))
    return [p for p in out if p != Path(__file__).resolve()]


# in a style sheet or a page's script, "#666" is a colour, not a tracker number
WEB_SUFFIXES = {".html", ".js", ".css"}


def findings(lines, patterns=FORBIDDEN, suffix=".md"):
    """(line number, what, the line) for every line that matches a pattern, case-insensitive."""
    compiled = {what: re.compile(p, re.IGNORECASE) for what, p in patterns.items()
                if not (suffix in WEB_SUFFIXES and what.startswith("a tracker number"))}
    return [(n, what, line.strip()) for n, line in enumerate(lines, 1)
            for what, rx in compiled.items() if rx.search(line)]


@pytest.mark.parametrize("text, hit", [
    ("Measured in session 4 of the work.", "a working session"),
    ("in this session's fresh venv", "a working session"),
    ("the issue's targets", "an issue or the issue tracker"),
    ("README rewritten (#16, item 5)", "a tracker number (#12)"),
    ("Seventh round (2026-12-03): how left/right fails", "a numbered round of work"),
    ("Result (run 10b, before the table)", "a run label (run 10b, runs 8-11)"),
    ("What made the difference (runs 8-11 below)", "a run label (run 10b, runs 8-11)"),
    ("in the second work period", "a work period"),
    ("This was filed by a session.", "something filed"),
    ("The code was written by an AI assistant.", "who wrote it"),
])
def test_patterns_catch_what_they_are_for(text, hit):
    assert hit in {what for _, what, _ in findings([text])}


@pytest.mark.parametrize("text", [
    "This emoji is filed under which category?",
    "one question (--prompt) or an interactive session, streaming the reply",
    "self.decoder = session(s['files']['decoder'])  # an ONNX Runtime session",
    'headers={"User-Agent": "minimind-v-serve"}',
    "steps = max(1, round(epochs * per_epoch))",
    "color: #4670b4;",
    "The demo runs 2 threads when two cores are idle; runs 3 times.",
    "six runs (seeds 0-2 x one and two threads)",
])
def test_patterns_let_ordinary_words_pass(text):
    assert findings([text]) == []


def test_colours_in_web_files_are_not_tracker_numbers():
    assert findings(["#status { color: #666; }"], suffix=".css") == []
    assert findings(["see #666 for the report"], suffix=".md") != []


def test_no_line_names_an_issue_or_a_work_period():
    bad = []
    for path in files():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, what, line in findings(lines, suffix=path.suffix):
            bad.append(f"{path.relative_to(ROOT)}:{n}: {what}: {line[:120]}")
    assert not bad, "\n".join(bad)


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    text = "\n".join(lines)
    for command in ("./run demo", "./run test"):
        assert command in text
    hashes = re.findall(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", text)
    assert not hashes, f"commit hashes in the README ({hashes}): provenance belongs in docs/"


def test_readme_python_imports_give_what_they_name():
    """Every `from minimind_v... import X` line of the README's Python examples, run in a fresh interpreter
    (import order matters: `from minimind_v import train` once gave the subpackage, not the function),
    binds a class or a function, never a module."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if re.match(r"(from|import) minimind_v\b", ln)]
    assert lines, "the README shows no Python use of minimind_v"
    names = [n.strip().split(" as ")[-1] for ln in lines if ln.startswith("from")
             for n in ln.split(" import ", 1)[1].split(",")]
    code = "\n".join(lines) + "\nimport types\n" + "".join(
        f"assert not isinstance({n}, types.ModuleType), {n!r}\n" for n in names)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_layout_names_every_module():
    """docs/layout.md is the file map: one line per module of the package, none that is gone."""
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\s+([\w/]+(?:\.py|/))\s", text, re.M))
    folders = {n for n in named if n.endswith("/")}
    package = ROOT / "minimind_v"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if m not in named and not any(m.startswith(f) for f in folders))
    gone = sorted(n for n in named - folders if n != "__init__.py" and n not in modules)
    assert not missing, f"add a line to docs/layout.md for: {missing}"
    assert not gone, f"docs/layout.md names modules that do not exist: {gone}"
