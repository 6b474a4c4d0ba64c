"""Training recipes: end-to-end runs (data -> tokenizer -> stages -> evaluation) with measured results.

Each recipe is a dataclass of settings plus a `run_*` function, so that a shell script, a test (in a
`--quick` smoke mode) and a reader of the docs all see the same numbers. The package assumes no place on
disk: a recipe that reads a data set takes its folder as an argument (the CLI or script passes it).

    demo.py            the built-in demo (`minimind-v demo`): synthetic shapes, everything made here
    emoji.py           the emoji benchmark on real artwork (`recipes/emoji.sh DATA_DIR OUT`, docs/emoji.md)
    encoder_warmup.py  warming up a from-scratch encoder before the VLM stages, for both recipes
"""
