#!/bin/bash
# Recorder cost during a long serving window on the GPU box (issue 13), after the vLLM pack is unpacked into /tmp/site:
#   bash .vllm/vsetup.sh && bash benchmarks/gpu/recorder_cost_serving.sh $OUT
# `storagecarbon record --hz 10 -- loadgen -- vllm serve` (Llama-3-8B shape, dummy weights) with LMCache and with vLLM's
# native CPU offload, 2 passes of 96 requests x 256 tokens out, 16 at a time: a serving window of tens of seconds, so
# the cost in it (footer `recorder.sample_cpu_us_per_s`) is not the server's start-up. Table: recorder_cost_table.py.
set -u
OUT=${1:?OUT}
cd "$(dirname "$0")/../.."
source benchmarks/gpu/box_env.sh || exit $?
mkdir -p /tmp/rs
(command -v cc gcc; python3 -m storagecarbon.record.ticker) 2>&1 | tee /tmp/rs/ticker.txt
# RUNS=l8b-lmcache STORAGECARBON_RECORDER_PROFILE=1 ...: one run, with the footer's per-source CPU before, during and
# after the load (recorder.profile_by_part)
timeout 500 python3 benchmarks/gpu/vllm_serve.py --out /tmp/rs/sv --runs ${RUNS:-l8b-lmcache,l8b-native} --lanes 0 --hz 10 \
  --requests 96 --output 256 --concurrency 16 --timeout 240 > /tmp/rs/serve.log 2>&1
echo "serve rc=$? $(date +%T)"
rm -rf /tmp/rs/sv/*/lmcache-disk /tmp/rs/sv/*/work/model; gzip -f /tmp/rs/sv/*/trace.arrows /tmp/rs/sv/*/log.txt
python3 benchmarks/gpu/recorder_cost_table.py /tmp/rs/sv/*/trace.arrows.gz > /tmp/rs/table.txt 2>&1
python3 benchmarks/recorder_wake_cost.py --burners 0 --n 30 > /tmp/rs/wake_idle.txt 2>&1
tar -czf "$OUT/rs.tar.gz" -C /tmp rs
cat /tmp/rs/serve.log | tail -4; cat /tmp/rs/table.txt /tmp/rs/wake_idle.txt
