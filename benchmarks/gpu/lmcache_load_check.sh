#!/bin/bash
# Does LMCache load KV back under vLLM 0.26's default (V2 model runner, CUDA graphs)? On the lent 2-GPU box, pack
# unpacked and benchmarks/gpu/box_env.sh sourced:  bash benchmarks/gpu/lmcache_load_check.sh OUT
# 1. lmcache_probe.py (offline engine in one process, 8B shape, LMCache CPU + disk, 2 passes, prefix reset between)
#    three ways: V2 runner eager, V2 runner with CUDA graphs, V1 runner (VLLM_USE_V2_MODEL_RUNNER=0) with graphs.
# 2. the served run l8b-lmcache of vllm_serve.py twice side by side: V1 runner with graphs (GPU 0), and V2 runner
#    with --enforce-eager (GPU 1). Traces, load results and logs land in OUT (gzip'd).
set -u
OUT=${1:?OUT}
mkdir -p "$OUT/probe"
P=benchmarks/gpu/lmcache_probe.py
CUDA_VISIBLE_DEVICES=0 PROBE_GPU_UTIL=0.3 python3 $P "$OUT/probe/v2-eager.json" > "$OUT/probe/v2-eager.log" 2>&1 &
CUDA_VISIBLE_DEVICES=0 PROBE_GPU_UTIL=0.3 python3 $P "$OUT/probe/v2-graphs.json" --graphs > "$OUT/probe/v2-graphs.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 VLLM_USE_V2_MODEL_RUNNER=0 PROBE_GPU_UTIL=0.3 python3 $P "$OUT/probe/v1-graphs.json" --graphs \
  > "$OUT/probe/v1-graphs.log" 2>&1 &
wait
echo "probes done $(date +%T)"
S=benchmarks/gpu/vllm_serve.py
VLLM_USE_V2_MODEL_RUNNER=0 python3 $S --out /tmp/lc/v1 --runs l8b-lmcache --lanes 0 --tag -v1-graphs \
  --timeout 200 > "$OUT/serve-v1-graphs.log" 2>&1 &
python3 $S --out /tmp/lc/eager --runs l8b-lmcache --lanes 1 --port-base 8031 --tag -v2-eager \
  --serve-extra=--enforce-eager --timeout 200 > "$OUT/serve-v2-eager.log" 2>&1 &
wait
echo "serves done $(date +%T)"
for d in /tmp/lc/v1/l8b-lmcache-v1-graphs /tmp/lc/eager/l8b-lmcache-v2-eager; do
  n=$(basename $d); mkdir -p "$OUT/$n"
  cp $d/scenario.yaml $d/load.json "$OUT/$n/" 2>/dev/null
  gzip -c $d/trace.arrows > "$OUT/$n/trace.arrows.gz"; gzip -c $d/log.txt > "$OUT/$n/log.txt.gz"
done
cp /tmp/lc/v1/serve.json "$OUT/serve-v1.json"; cp /tmp/lc/eager/serve.json "$OUT/serve-eager.json"
gzip -f "$OUT"/probe/*.log
ls -la "$OUT" "$OUT/probe"
