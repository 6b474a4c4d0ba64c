"""Training recipes: end-to-end runs (data -> tokenizer -> stages -> evaluation) with measured results.

Each recipe is a dataclass of settings plus a `run_*` function, so that a shell script, a test (in a
`--quick` smoke mode) and a reader of the docs all see the same numbers. `emoji.py` trains on the
emoji benchmark in ../shared/data (docs/emoji.md).
"""
