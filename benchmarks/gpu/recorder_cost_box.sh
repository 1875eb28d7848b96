#!/bin/bash
# Recorder cost on the GPU box (issue 13: at most 200 µs of CPU per sample, default sensors, 10 Hz), after the vLLM
# pack is unpacked into /tmp/site. Everything comes back in one tarball:
#   bash .vllm/vsetup.sh && bash benchmarks/gpu/recorder_cost_box.sh $OUT
# 1. each NVML query's cost (benchmarks/gpu/nvml_cost.py);
# 2. the per-sensor breakdown with no engine (benchmarks/recorder_breakdown.py, NVML at its default cadence);
# 3. `storagecarbon record --hz 10 -- loadgen -- vllm serve` (Llama-3-8B shape, dummy weights), with and without
#    LMCache (benchmarks/gpu/vllm_serve.py): the recorder's own `sample_cpu_s_mean` in each trace's footer.
set -u
OUT=${1:?OUT}
cd "$(dirname "$0")/../.."
source benchmarks/gpu/box_env.sh || exit $?
mkdir -p /tmp/rc
if [ -z "${SKIP_NVML_COST:-}" ]; then
  python3 benchmarks/gpu/nvml_cost.py --n 20 --out /tmp/rc/nvml_cost.json > /tmp/rc/nvml_cost.txt 2>&1
  echo "nvml_cost rc=$? $(date +%T)"
fi
python3 benchmarks/recorder_wake_cost.py --burners 2 --n 50 > /tmp/rc/wake.txt 2>&1
for b in 2 8; do
  python3 benchmarks/recorder_breakdown.py --seconds 20 --burners $b >> /tmp/rc/breakdown.txt 2>&1
done
echo "breakdown rc=$? $(date +%T)"
timeout 330 python3 benchmarks/gpu/vllm_serve.py --out /tmp/rc/sv --runs l8b-lmcache,l8b-native --lanes 0 --hz 10 \
  --timeout 160 > /tmp/rc/serve.log 2>&1
echo "serve rc=$? $(date +%T)"
# the same LMCache run with the footer's per-source CPU (STORAGECARBON_RECORDER_PROFILE=1; it adds two clock reads per read)
if [ -z "${SKIP_PROFILE_RUN:-}" ]; then
  STORAGECARBON_RECORDER_PROFILE=1 timeout 150 python3 benchmarks/gpu/vllm_serve.py --out /tmp/rc/svp --runs l8b-lmcache \
    --lanes 0 --hz 10 --timeout 140 > /tmp/rc/serve_profile.log 2>&1
  echo "profiled serve rc=$? $(date +%T)"
fi
rm -rf /tmp/rc/sv*/*/lmcache-disk /tmp/rc/sv*/*/work/model; gzip -f /tmp/rc/sv*/*/trace.arrows /tmp/rc/sv*/*/log.txt
python3 benchmarks/gpu/recorder_cost_table.py /tmp/rc/sv*/*/trace.arrows.gz > /tmp/rc/table.txt 2>&1; cat /tmp/rc/table.txt
tar -czf "$OUT/rc.tar.gz" -C /tmp rc
cat /tmp/rc/wake.txt /tmp/rc/breakdown.txt
ls -la "$OUT"
