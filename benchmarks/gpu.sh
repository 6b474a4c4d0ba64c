#!/usr/bin/env bash
# One prepared GPU check (a lent H100 / H200, ~15 device-minutes per session): full-size training
# throughput in bf16 for both VLM stages (dense and MoE, ours against the original's way, batch 4 and
# 16), torch.compile on the dense SFT step, and generation (time to first token, decode tokens/s at
# batch 1 and 8). Every part runs under its own `timeout`, so the whole script ends in under 8 minutes
# even if a part hangs; the JSON lines land in $OUT (the device tool brings that folder back). It also
# times what a new sequence length costs the attention kernels (attention_shapes.py).
#
#   bash benchmarks/gpu.sh                    # on the GPU machine (uses python3 there, PYTHONPATH=.)
#   PARTS="attention train" bash benchmarks/gpu.sh   # some parts only (attention train compile generate smoke)
#   PARTS=smoke bash benchmarks/gpu.sh       # the CLI end to end on the GPU: quick demo, a packed SFT run with
#                                            # DataLoader workers and the encoder cache, eval, chat
#   DRY_RUN=1 bash benchmarks/gpu.sh          # here, on CPU: the tiny preset, one step, checks the plumbing
#
# Then copy the JSON lines into benchmarks/results/ and the numbers into docs/perf.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
LOG="$OUT/log.txt"

# The scripts tokenise with the reference MiniMind tokenizer in tests/fixtures/reference/tokenizer (it travels
# with the repository); TOKENIZER=DIR picks another one.
TOK=()
[ -n "${TOKENIZER:-}" ] && TOK=(--tokenizer "$TOKENIZER")

if [ "${DRY_RUN:-0}" = 1 ]; then
  DEV=(--device cpu --dtype fp32 --threads 1)
  PRESETS=(tiny)
  STEPS=(--warmup 1 --steps 1)
  BATCHES=(4)
  GEN=(--preset tiny --tokens 8 --repeats 1 --device cpu --dtype fp32 --threads 1)
  T_ATTN=60 T_TRAIN=300 T_COMPILE=300 T_GEN=120 T_SMOKE=300
  SMOKE_DEV=cpu
  ATTN=(--device cpu --lengths 2)
else
  DEV=(--device cuda --dtype bf16)
  PRESETS=(minimind-3v minimind-3v-moe)
  STEPS=(--warmup 3 --steps 10)
  BATCHES=(4 16)
  GEN=(--preset minimind-3v minimind-3v-moe --tokens 100 --repeats 3 --device cuda --dtype bf16)
  T_ATTN=40 T_TRAIN=150 T_COMPILE=180 T_GEN=90 T_SMOKE=150   # measured on an H200: 4 s, 73-105 s, >100 s, 43-73 s
  SMOKE_DEV=cuda
  ATTN=(--device cuda)
fi

{
  echo "== $(date -u +%FT%TZ) $(uname -a)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

PARTS=${PARTS:-attention train compile generate}   # smoke only when asked for
status=0
run() {   # run NAME SECONDS CMD...: log stderr, keep going when one part fails or times out
  local name=$1 secs=$2
  shift 2
  [[ " $PARTS " == *" $name "* ]] || return 0
  echo "== $name (limit ${secs}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$secs" "$@" 2>>"$LOG"
  local rc=$?
  echo "== $name: rc=$rc after $((SECONDS - t0))s" | tee -a "$LOG"
  [ $rc -eq 0 ] || status=1
}

run attention "$T_ATTN" "$PY" benchmarks/attention_shapes.py "${ATTN[@]}" --out "$OUT/attention.jsonl"
run train "$T_TRAIN" "$PY" benchmarks/train_throughput.py "${DEV[@]}" "${STEPS[@]}" "${TOK[@]}" \
    --stage vlm-sft vlm-pretrain --preset "${PRESETS[@]}" --batch-size "${BATCHES[@]}" \
    --modes original longest pack pack+cache --out "$OUT/train.jsonl"
run compile "$T_COMPILE" "$PY" benchmarks/train_throughput.py "${DEV[@]}" "${STEPS[@]}" "${TOK[@]}" \
    --stage vlm-sft --preset "${PRESETS[0]}" --batch-size "${BATCHES[-1]}" \
    --modes pack pack+compile --out "$OUT/train_compile.jsonl"
run generate "$T_GEN" "$PY" benchmarks/generate.py "${GEN[@]}" "${TOK[@]}" --out "$OUT/generate.jsonl"

smoke() {   # the user's commands on the device, each must exit 0
  local w=/tmp/mmv-smoke cli=("$PY" -m minimind_v.cli)
  rm -rf "$w" && mkdir -p "$w"
  "${cli[@]}" demo --quick --out "$w/demo" || return 1
  "${cli[@]}" train --stage vlm-sft --from "$w/demo/pretrain/model" --data "$w"/demo/data/sft*.parquet \
      --out "$w/sft" --device "$SMOKE_DEV" --padding pack --num-workers 2 --encoder-cache "$w/cache" \
      --max-steps 20 --batch-size 16 --no-progress || return 1
  "${cli[@]}" eval --model "$w/sft/model" --data "$w"/demo/heldout/*.parquet --device "$SMOKE_DEV" \
      --out "$OUT/smoke_eval.json" || return 1
  "${cli[@]}" chat --model "$w/demo/sft/model" --image "$w/demo/example.png" --device "$SMOKE_DEV" \
      --prompt "What colour is the circle?" --greedy --max-new-tokens 12 || return 1
  cp "$w/demo/summary.json" "$OUT/smoke_demo_summary.json"
  tail -n 3 "$w/sft/metrics.jsonl" > "$OUT/smoke_sft_metrics.jsonl"
}
run smoke "$T_SMOKE" bash -c "$(declare -f smoke); PY='$PY' OUT='$OUT' SMOKE_DEV='$SMOKE_DEV' smoke"

echo "== done: $(ls "$OUT")" | tee -a "$LOG"
exit $status
