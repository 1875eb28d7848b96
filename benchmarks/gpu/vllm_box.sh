#!/usr/bin/env bash
# On the lent GPU box, after the vLLM pack is unpacked into /tmp/site (see docs/engines.md, "vLLM on
# the GPU machine"): make storagecarbon's vLLM plugin discoverable by vLLM's own processes, then run
# benchmarks/gpu/vllm_matrix.py with the given arguments and pack DIR into $OUT.
#   bash benchmarks/gpu/vllm_box.sh DIR [vllm_matrix.py args...]
set -uo pipefail
cd "$(dirname "$0")/../.."
test -d /tmp/site/vllm || { echo "no /tmp/site/vllm: carry the pack first"; exit 9; }
DIR=${1:?usage: vllm_box.sh DIR [args]}; shift
# The pack's versions (one place: storagecarbon/engines/vllm_gpu.py VLLM_GPU_VERSIONS) must be what runs.
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 LMCACHE_TRACK_USAGE=false \
  NCCL_NVLS_ENABLE=0 TOKENIZERS_PARALLELISM=false
python3 - <<'PY'
import sys, storagecarbon.engines.vllm_gpu as g, vllm, importlib.metadata as md
want = g.VLLM_GPU_VERSIONS
have = {"vllm": vllm.__version__, "lmcache": md.version("lmcache")}
print("pack versions", have, "expected", want)
sys.exit(0 if have == want else 3)
PY
[ $? = 0 ] || exit 3
# entry point for vllm.general_plugins (storagecarbon is on PYTHONPATH but not pip-installed here)
DI=/tmp/site/storagecarbon_box-0.0.dist-info
mkdir -p $DI
printf 'Metadata-Version: 2.1\nName: storagecarbon-box\nVersion: 0.0\n' > $DI/METADATA
printf '[vllm.general_plugins]\nstoragecarbon_lmcache_cpu = storagecarbon.engines.lmcache_cpu:register\n' > $DI/entry_points.txt
mkdir -p "$DIR"
python3 benchmarks/gpu/vllm_matrix.py --out "$DIR" "$@"
rc=$?
tar -czf "$OUT/$(basename "$DIR").tar.gz" -C "$(dirname "$DIR")" "$(basename "$DIR")"
ls -la "$OUT"
exit $rc
