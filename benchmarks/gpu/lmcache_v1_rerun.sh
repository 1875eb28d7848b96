#!/bin/bash
# The LMCache instances of the matrix again, now on vLLM's V1 GPU model runner (vllm_gpu.v1_runner_reason: the V2
# runner with CUDA graphs skips LMCache's loads), and the served l8b-lmcache run. On the lent 2-GPU box, pack
# unpacked:  bash benchmarks/gpu/lmcache_v1_rerun.sh OUT
set -u
OUT=${1:?OUT}
cd "$(dirname "$0")/../.."
timeout 230 bash benchmarks/gpu/vllm_box.sh /tmp/mL --instances l8b-lmcache,l70b40-lmcache --lanes "0;1" \
  --budget-s 215 > "$OUT/mL.log" 2>&1
echo "mL rc=$? $(date +%T)"
timeout 190 bash benchmarks/gpu/vllm_box.sh /tmp/mL2 --instances l70b80-lmcache --lanes "0,1" \
  --budget-s 175 > "$OUT/mL2.log" 2>&1
echo "mL2 rc=$? $(date +%T)"
source benchmarks/gpu/box_env.sh
timeout 140 python3 benchmarks/gpu/vllm_serve.py --out /tmp/sv --runs l8b-lmcache --lanes 0 \
  --timeout 115 > "$OUT/serve.log" 2>&1
echo "serve rc=$? $(date +%T)"
for d in /tmp/sv/l*; do
  n=$(basename $d); mkdir -p "$OUT/serve/$n"
  cp $d/scenario.yaml $d/load.json "$OUT/serve/$n/" 2>/dev/null
  gzip -c $d/trace.arrows > "$OUT/serve/$n/trace.arrows.gz"; gzip -c $d/log.txt > "$OUT/serve/$n/log.txt.gz"
done
cp /tmp/sv/serve.json "$OUT/serve/" 2>/dev/null
ls -la "$OUT" "$OUT/serve"
