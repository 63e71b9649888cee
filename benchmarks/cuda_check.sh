#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU (the project's CI has none):
#   1. tests/test_stats.py, whose test_cuda_agrees_with_cpu compares the pass on "cuda" with "cpu";
#   2. the largest error against float64 of distances and kurtosis, on "cuda" and on "cpu";
#   3. the streaming pass of 8 GPT-2-small models (bf16, 2 GB): read only vs pass on "cpu" and on "cuda",
#      the same files, alternating in one run (benchmarks/throughput.py --device cpu,cuda);
#   4. the test suite with the default device ("auto" = the GPU there), where the packages allow.
# Writes its logs under ${OUT:-./cuda-check-out}. Usage: PY=python3 bash benchmarks/cuda_check.sh
set -u
PY=${PY:-python3}
OUT=${OUT:-./cuda-check-out}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( ${BUDGET_S:-900} - ($(date +%s) - start) - 15 )); }  # seconds the suite may still use
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc; uptime
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
echo "== 1. tests/test_stats.py"
timeout 150 $PY -m pytest -q -p no:cacheprovider -rfEs tests/test_stats.py 2>&1 | tail -15 | tee "$OUT/stats_tests.txt"
echo "== 2. error against float64"
for d in cpu cuda; do
  echo -n "$d: "; timeout 120 $PY benchmarks/throughput.py --accuracy --device $d 2>&1 | tail -1
done | tee "$OUT/accuracy.txt"
echo "== 3. pass on cpu vs cuda"
timeout "${THROUGHPUT_S:-300}" $PY benchmarks/throughput.py --device cpu,cuda --no-naive --repeats "${REPEATS:-2}" \
  2>"$OUT/throughput.log" | tee "$OUT/throughput.md"
echo "== 4. the suite on the GPU"
timeout "$(left)" $PY -m pytest -p no:cacheprovider -q -rfE -n "${WORKERS:-12}" --dist loadgroup \
  --ignore tests/test_browser.py --ignore tests/test_app.py --junitxml "$OUT/junit.xml" 2>&1 \
  | tee "$OUT/suite_full.txt" | tail -60
