"""The lmms-eval model `minimind_v`: any model folder this package loads, scored by lmms-eval's own tasks.

    pip install 'minimind-v[bench]'      (see docs/benchmarks.md for the install that keeps your torch)
    lmms-eval --model minimind_v --model_args pretrained=DIR_OR_HUB_ID --tasks mmstar,pope --batch_size 8

lmms-eval (0.7) finds plugin models through the Python entry-point group `lmms_eval.models`: each entry point
loads to a `ModelManifest`, or a callable returning one, that names the class by its dotted path. Our
pyproject.toml points the group at `manifest` below; lmms-eval then imports this module and reads
`MiniMindV`. The class is built on that first read (a module `__getattr__`), so importing this module needs no
lmms-eval and changes nothing: only lmms-eval itself, which has already been imported by then, asks for it.

`pretrained` is whatever `minimind-v chat --model` takes: our folders, Hugging Face folders (exported here or
the original's releases), a LoRA adapter folder (merged onto its base), or a hub id. `generate_until` batches
requests that share generation arguments through the package's batched KV-cache generation
(eval/bench.py's `generate_replies`, the same call `minimind-v eval --bench` makes), one or several pictures per
request, greedy unless a task asks for sampling; replies are cut at the task's `until` strings. The five
benchmarks of eval/bench.py are all `generate_until` tasks; `loglikelihood` (a continuation's log-probability
after the user turn, for lmms-eval's multiple-choice-by-likelihood tasks) is there too, one request at a time.
"""
from __future__ import annotations

import functools
import json

MODEL_ID = "minimind_v"


def manifest():
    """The entry point's payload: our model id and the dotted path of its (simple, prompt-string) class."""
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MiniMindV")


def __getattr__(name: str):
    if name == "MiniMindV":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve_model(spec: str) -> str:
    """A local folder as it is; a Hub id (owner/name) downloaded into the cache by hub.py."""
    from ..hub import resolve
    return str(resolve(spec, "model"))


def generation_args(gen: dict | None, default_max_new: int) -> tuple[list[str], int, float, dict]:
    """lmms-eval's generation arguments -> (stop strings, max new tokens, temperature, other sampling)."""
    gen = dict(gen or {})
    until = gen.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    max_new = int(gen.get("max_new_tokens") or default_max_new)
    temperature = float(gen.get("temperature") or 0.0) if gen.get("do_sample", True) else 0.0
    top_p = float(gen.get("top_p") or 1.0)
    return until, max_new, temperature, ({"top_p": top_p} if temperature > 0 and 0 < top_p < 1 else {})


@functools.lru_cache(maxsize=None)
def _model_class():
    from lmms_eval.api.model import lmms
    from PIL import Image
    from tqdm import tqdm

    from ..config import torch_dtype
    from ..image import to_rgb
    from ..pipeline import VLM
    from .bench import DEFAULT_MAX_NEW_TOKENS, generate_replies

    class MiniMindV(lmms):
        """lmms-eval's view of a MiniMind-V model: prompt strings + pictures in, replies out."""
        is_simple = True

        def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 8,
                     dtype: str = "fp32", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **kwargs) -> None:
            super().__init__()
            import torch
            unknown = sorted(k for k, v in kwargs.items() if v is not None and k != "max_batch_size")
            if unknown:                   # max_batch_size: lmms-eval's own, for "auto" batch sizes
                raise ValueError(f"minimind_v: unknown model_args {', '.join(unknown)} (known: pretrained, device, "
                                 f"batch_size, dtype, max_new_tokens)")
            if device in (None, "", "auto"):
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.vlm = VLM.load(_resolve_model(str(pretrained)), device=device, dtype=torch_dtype(str(dtype)))
            self.batch_size_per_gpu = 8 if str(batch_size).startswith("auto") else int(batch_size)   # auto, auto:N
            self.max_new_tokens = int(max_new_tokens)

        @property
        def batch_size(self) -> int:
            return self.batch_size_per_gpu

        def _pictures(self, visuals) -> list:
            out = []
            for v in visuals or []:
                if isinstance(v, list):
                    out += self._pictures(v)
                elif isinstance(v, Image.Image):
                    out.append(to_rgb(v))
                else:
                    raise ValueError(f"minimind_v takes pictures only; this task sent a {type(v).__name__} "
                                     f"(video and audio tasks are not supported)")
            return out

        def generate_until(self, requests) -> list[str]:
            args = [r.args for r in requests]
            groups = {}                   # requests with the same generation arguments share batches
            for i, a in enumerate(args):
                groups.setdefault(json.dumps(a[1], sort_keys=True, default=str), []).append(i)
            out = [""] * len(args)
            bar = tqdm(total=len(args), desc="minimind_v", disable=self.rank != 0)
            for idx in groups.values():
                until, max_new, temperature, sampling = generation_args(args[idx[0]][1], self.max_new_tokens)
                idx.sort(key=lambda i: -len(args[i][0]))     # similar lengths share a batch: less padding
                for s in range(0, len(idx), self.batch_size):
                    chunk = idx[s:s + self.batch_size]
                    prompts, pictures = [], []
                    for i in chunk:
                        context, _, to_visual, doc_id, task, split = args[i][:6]
                        prompts.append(context)
                        pictures.append(self._pictures(to_visual(self.task_dict[task][split][doc_id])))
                    replies = generate_replies(self.vlm, prompts, pictures, max_new, until, temperature, **sampling)
                    for i, r in zip(chunk, replies):
                        out[i] = r
                        self.cache_hook.add_partial("generate_until", (args[i][0], args[i][1]), r)
                    bar.update(len(chunk))
            bar.close()
            return out

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            """(log p(continuation | prompt + pictures), whether greedy decoding would produce it) per request:
            the prompt is the user turn under the chat template, the continuation the start of the reply."""
            import torch
            out = []
            for r in tqdm(requests, desc="minimind_v loglikelihood", disable=self.rank != 0):
                context, target, to_visual, doc_id, task, split = r.args[:6]
                doc = self.task_dict[task][split][doc_id]
                cont = target if isinstance(target, str) else target(doc)
                pics = self._pictures(to_visual(doc) if to_visual else [])
                prompt = self.vlm.prompt_ids([{"role": "user", "content": context}], len(pics))
                want = self.vlm.tok.encode(cont)
                ids = torch.tensor([prompt + want], device=self.vlm.device)
                with torch.no_grad():    # position t predicts token t + 1: the continuation's from len(prompt) - 1
                    logits = self.vlm.model(ids, visual_tokens=self.vlm.visual_tokens(pics)).logits[0].float()
                logits = logits[len(prompt) - 1:-1]
                tgt = torch.tensor(want, device=logits.device)
                logp = logits.log_softmax(-1).gather(-1, tgt[:, None]).sum()
                out.append((float(logp), bool((logits.argmax(-1) == tgt).all())))
                self.cache_hook.add_partial("loglikelihood", (context, cont), out[-1])
            return out

        def generate_until_multi_round(self, requests):
            raise NotImplementedError("minimind_v does not run multi-round tasks")

    MiniMindV.__module__ = __name__
    return MiniMindV
