#!/usr/bin/env bash
# recipes/emoji.sh DATA_DIR OUT_DIR [flags]: `minimind-v emoji train --data DATA_DIR --out OUT_DIR [flags]` (data: `minimind-v data emoji`).
[ "$#" -ge 2 ] || { echo "usage: $0 DATA_DIR OUT_DIR [flags of minimind-v emoji train]" >&2; exit 2; }; PYTHONHASHSEED=${PYTHONHASHSEED:-0} exec "${PYTHON:-python}" -m minimind_v.cli emoji train --data "$1" --out "$2" "${@:3}"
