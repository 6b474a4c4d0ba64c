#!/usr/bin/env bash
# recipes/emoji.sh DATA_DIR OUT_DIR [flags]: the emoji recipe, the flags of `minimind-v emoji train` (data: `minimind-v data emoji`).
# It runs the recipe module itself, not the `minimind-v` command, so OpenMP keeps its own wait policy (a short spin):
# `minimind-v` sets OMP_WAIT_POLICY=PASSIVE (minimind_v/cpu_pace.py), which on this 1.5M-parameter model's
# microsecond-long operations makes two threads about 3x slower (docs/emoji.md). A value you set is passed on.
[ "$#" -ge 2 ] || { echo "usage: $0 DATA_DIR OUT_DIR [flags of minimind-v emoji train]" >&2; exit 2; }; PYTHONHASHSEED=${PYTHONHASHSEED:-0} exec "${PYTHON:-python}" -m minimind_v.recipes.emoji --data "$1" --out "$2" "${@:3}"
