"""`minimind-v chat`: one question (--prompt) or an interactive session, streaming the reply.

Interactive commands: `/image PATH` switches (or adds) the picture for the next question, `/noimage`
drops it, `/reset` clears the conversation, `/quit` leaves. The picture is attached to the next user
turn after it is chosen; the whole conversation is re-sent each turn, so the model sees earlier turns.
"""
from __future__ import annotations

import sys

from PIL import Image


def _sampling(a) -> dict:
    if a.greedy:
        return dict(temperature=0.0, max_new_tokens=a.max_new_tokens)
    return dict(temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed,
                max_new_tokens=a.max_new_tokens)


def _open(path: str) -> Image.Image:
    from .image import open_image_file
    return open_image_file(path)          # ImageError (a ValueError) names the file and the problem


def read_line(stdin) -> str:
    """One typed line. Bytes that are not UTF-8 come through as lone surrogates (never an exception from
    the terminal's decoder), so the caller can say so and ask again."""
    buf = getattr(stdin, "buffer", None)
    if buf is not None:
        return buf.readline().decode("utf-8", errors="surrogateescape")
    return stdin.readline()


def run_chat(a, stdin=None, stdout=None) -> int:
    from .tokenizer import unicode_problem
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if a.prompt is not None and unicode_problem(a.prompt):
        raise ValueError(f"--prompt is not valid text ({unicode_problem(a.prompt)}); was it typed in another "
                         f"encoding than UTF-8?")
    images = [_open(p) for p in (a.image or [])]      # a bad picture is named before the model loads
    if getattr(a, "runtime", "torch") == "onnx":          # an `export --to onnx` folder, on onnxruntime
        from .portable.runtime import OnnxVLM
        vlm = OnnxVLM.load(a.model)
    else:
        from .pipeline import VLM
        vlm = VLM.load(a.model, device=a.device)
    if a.prompt is not None:
        for piece in vlm.stream([{"role": "user", "content": a.prompt}], images, **_sampling(a)):
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        return 0
    history: list[dict] = []
    all_images: list[Image.Image] = []
    pending = images
    stdout.write(f"minimind-v chat with {a.model} ({'image: ' + ', '.join(a.image) if a.image else 'no image'}). "
                 "Commands: /image PATH, /noimage, /reset, /quit\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = read_line(stdin)
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if unicode_problem(line):
            stdout.write("(that line is not valid UTF-8 text; type it again)\n")
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history, all_images, pending = [], [], []
            stdout.write("(conversation cleared)\n")
            continue
        if line == "/noimage":
            pending = []
            stdout.write("(no image for the next question)\n")
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            try:
                pending = [_open(path)]
                stdout.write(f"(image {path} will go with your next question)\n")
            except ValueError as e:           # ImageError: not a picture, truncated, too large...
                stdout.write(f"(cannot open {path}: {e})\n")
            continue
        content = "<image>\n" * len(pending) + line
        history.append({"role": "user", "content": content})
        all_images += pending
        pending = []
        stdout.write("model> ")
        reply = []
        for piece in vlm.stream(history, all_images, **_sampling(a)):
            reply.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})
    return 0
