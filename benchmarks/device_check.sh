#!/usr/bin/env bash
# One run on a GPU machine gives every GPU number: the CUDA tests (pytest -m gpu,
# inference and training), then the performance benchmarks on the device, each
# within its own time limit, so the whole script stays under 8 minutes.
#
#   bash benchmarks/device_check.sh [--dry-run] [--out DIR]
#
# --dry-run runs the same steps on the CPU with the quick benchmark set (what CI
# and a machine without a GPU can check). Numbers go to DIR (default
# benchmarks/results/device_check): tests.txt, perf_<device>.json, engine_<device>.md,
# summary.txt (every RATIO / PEAK_RSS_MB / SECONDS line, plus the GPU's name).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry=0
out=benchmarks/results/device_check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
mkdir -p "$out"
start=$(date +%s)
if [ "$dry" = 1 ]; then
  device=cpu
  perf_args=(--quick)
  engine_args=(--quick --repeats 1)
else
  device=cuda
  perf_args=(--compile)
  engine_args=(--repeats 3 --budget 20)
  "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "[device_check] no CUDA device visible to torch; use --dry-run on a CPU machine" >&2; exit 6; }
fi
"$py" - <<'EOF' > "$out/summary.txt"
import platform, torch
print(f"MACHINE {platform.node()} torch {torch.__version__} cuda {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name} {p.total_memory / 2**30:.1f} GiB bf16={torch.cuda.is_bf16_supported()}")
EOF
status=0
step() {  # step NAME LIMIT_S LOG CMD...: run CMD with its output in LOG, note its status and time
  local name=$1 limit=$2 log=$3; shift 3
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  echo "STEP $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
  [ $rc -eq 0 ] || status=1
}
# without a GPU the gpu tests are collected and skipped, which still checks that they import
step tests 150 "$out/tests.txt" "$py" -m pytest -q -m gpu Testing/test_gpu.py Testing/test_training_device.py \
  -p no:cacheprovider -o addopts=""
tail -3 "$out/tests.txt" | tee -a "$out/summary.txt"
step perf 240 "$out/perf.txt" "$py" benchmarks/bench_perf.py --device "$device" "${perf_args[@]}" \
  --out "$out/perf_$device.json"
grep -E '^(RATIO|PEAK_RSS_MB|SECONDS|MAXDIFF|SSMOE_)' "$out/perf.txt" | tee -a "$out/summary.txt"
step engine 60 "$out/engine.txt" "$py" benchmarks/bench_engine.py --device "$device" "${engine_args[@]}" \
  --out "$out/engine_$device.md"
echo "TOTAL $(( $(date +%s) - start )) s status=$status" | tee -a "$out/summary.txt"
exit $status
