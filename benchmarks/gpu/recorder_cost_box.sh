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
for b in 2 8; do
  python3 benchmarks/recorder_breakdown.py --seconds 20 --burners $b >> /tmp/rc/breakdown.txt 2>&1
done
echo "breakdown rc=$? $(date +%T)"
timeout 420 python3 benchmarks/gpu/vllm_serve.py --out /tmp/rc/sv --runs l8b-lmcache,l8b-native --lanes 0 --hz 10 \
  --timeout 190 > /tmp/rc/serve.log 2>&1
echo "serve rc=$? $(date +%T)"
rm -rf /tmp/rc/sv/*/lmcache-disk /tmp/rc/sv/*/work/model; gzip -f /tmp/rc/sv/*/trace.arrows /tmp/rc/sv/*/log.txt
tar -czf "$OUT/rc.tar.gz" -C /tmp rc
cat /tmp/rc/breakdown.txt
ls -la "$OUT"
