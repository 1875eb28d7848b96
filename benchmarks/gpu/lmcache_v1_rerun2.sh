#!/bin/bash
# Second call of the LMCache re-run on the V1 runner: the TP=2 instance of the matrix, then the served l8b-lmcache
# run again (its trace did not come back from the first call). Everything in one tarball:
#   bash benchmarks/gpu/lmcache_v1_rerun2.sh OUT
set -u
OUT=${1:?OUT}
cd "$(dirname "$0")/../.."
timeout 240 bash benchmarks/gpu/vllm_box.sh /tmp/mL2 --instances l70b80-lmcache --lanes "0,1" \
  --budget-s 400 > "$OUT/mL2.log" 2>&1
echo "mL2 rc=$? $(date +%T)"
source benchmarks/gpu/box_env.sh
timeout 140 python3 benchmarks/gpu/vllm_serve.py --out /tmp/sv --runs l8b-lmcache --lanes 0 \
  --timeout 115 > "$OUT/serve.log" 2>&1
echo "serve rc=$? $(date +%T)"
rm -rf /tmp/sv/*/lmcache-disk /tmp/sv/*/work/model; gzip -f /tmp/sv/*/trace.arrows /tmp/sv/*/log.txt
tar -czf "$OUT/sv.tar.gz" -C /tmp sv
ls -la "$OUT"
