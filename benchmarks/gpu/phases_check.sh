#!/bin/bash
# The GPU paths after "one way to write phases" (Recorder.stop's finish callback, no trace rewrite): the offline
# matrix instance l8b-hbm (GPU 0) and the served l8b-lmcache run (GPU 1, V1 runner from serve_argv), side by side.
# On the lent 2-GPU box, pack unpacked:  bash benchmarks/gpu/phases_check.sh OUT
set -u
OUT=${1:?OUT}
cd "$(dirname "$0")/../.."
source benchmarks/gpu/box_env.sh || exit $?
timeout 200 python3 benchmarks/gpu/vllm_matrix.py --out /tmp/mP --instances l8b-hbm --lanes "0" --budget-s 190 \
  > "$OUT/mP.log" 2>&1 &
timeout 170 python3 benchmarks/gpu/vllm_serve.py --out /tmp/svP --runs l8b-lmcache --lanes 1 --port-base 8051 \
  --timeout 140 > "$OUT/svP.log" 2>&1 &
wait
rm -rf /tmp/svP/*/lmcache-disk /tmp/svP/*/work; gzip -f /tmp/svP/*/trace.arrows /tmp/svP/*/log.txt
tar -czf "$OUT/p.tar.gz" -C /tmp mP/traces mP/matrix.json mP/instances svP
ls -la "$OUT"
