"""Scoring rules and the eval / chat entry points."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from minimind_v.eval.evaluate import majority_baseline
from minimind_v.eval.score import is_correct, normalize


def test_scoring_rules():
    assert normalize("It’s “Grinning”  Face!") == "it's grinning face"
    assert is_correct("It has a medium-light skin tone.", "medium-light")
    assert not is_correct("It has a medium skin tone... light", "medium-light")
    assert is_correct("The circle is red.", "red") and not is_correct("It is reddish.", "red")
    assert is_correct("Yes, it is a cat.", "yes") and not is_correct("It is yes-ish. No.", "yes")
    assert not is_correct("No, it is not. Yes.", "yes")
    assert is_correct("B) a cat", "b") and is_correct("(c)", "c") and not is_correct("A) b", "b")
    assert is_correct("That is the grinning face’s smile", "grinning face's")
    assert not is_correct("", "red")


def test_the_last_competing_answer_named_is_the_reply_s_answer():
    sides = ["left", "right"]
    reasoned = "The red circle is on the left and the blue square is on the right, so it is to the left."
    assert is_correct(reasoned, "left", sides) and not is_correct(reasoned, "right", sides)
    assert not is_correct("It is to the left or to the right.", "left", sides)     # hedging: the last word counts
    assert is_correct("It is to the left or to the right.", "left")                # no competitors given: any mention
    kinds = ["person", "person in a role or job"]
    assert not is_correct("It is a person in a role or job.", "person", kinds)     # inside a longer answer
    assert is_correct("It is a person in a role or job.", "person in a role or job", kinds)
    assert is_correct("A person in a role or job? No: a person.", "person", kinds)


def test_majority_baseline_per_type():
    rows = [{"type": "a", "answer": "x"}, {"type": "a", "answer": "X."}, {"type": "a", "answer": "y"},
            {"type": "b", "answer": "z"}]
    m = majority_baseline(rows)
    assert m["per_type"] == {"a": 2 / 3, "b": 1.0} and m["overall"] == 3 / 4


def test_chat_prompt_streams_the_greedy_answer(tiny_model_dir, tmp_path):
    from PIL import Image
    from minimind_v.pipeline import VLM
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "red.png")
    vlm = VLM.load(tiny_model_dir)
    want = vlm.answer("What colour?", [Image.open(tmp_path / "red.png").convert("RGB")],
                      temperature=0, max_new_tokens=8)
    out = subprocess.run([sys.executable, "-m", "minimind_v.cli", "chat", "--model", str(tiny_model_dir),
                          "--image", str(tmp_path / "red.png"), "--prompt", "What colour?", "--greedy",
                          "--max-new-tokens", "8"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want.strip()


def test_interactive_chat_switches_images_and_keeps_history(tiny_model_dir, tmp_path):
    from argparse import Namespace
    from PIL import Image
    from minimind_v.chat import run_chat
    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "blue.png")
    a = Namespace(model=str(tiny_model_dir), image=None, prompt=None, temperature=0.7, top_p=0.9, top_k=0,
                  max_new_tokens=4, seed=1, greedy=True, device="cpu")
    stdin = io.StringIO(f"hello\n/image {tmp_path / 'blue.png'}\nwhat is it?\n/image /no/such.png\n/reset\nbye\n/quit\n")
    stdout = io.StringIO()
    assert run_chat(a, stdin, stdout) == 0
    text = stdout.getvalue()
    assert text.count("model> ") == 3
    assert "will go with your next question" in text and "cannot open /no/such.png" in text
    assert "(conversation cleared)" in text


def test_eval_cli_writes_json(tiny_model_dir, synth_data, tmp_path):
    out = subprocess.run([sys.executable, "-m", "minimind_v.cli", "eval", "--model", str(tiny_model_dir),
                          "--data", str(synth_data["eval"]), "--limit", "12", "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["n"] == 12 and set(r["per_type"]) <= {"colour", "shape", "count", "position"}
    assert 0.0 <= r["overall"] <= 1.0 and "overall" in out.stdout
