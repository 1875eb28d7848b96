# Source on the lent GPU box, from the repo root, after the vLLM pack is unpacked into /tmp/site
# (docs/engines.md, "vLLM on the GPU machine"): loopback and telemetry off, the pack on PYTHONPATH, the
# pack's versions checked against storagecarbon/engines/vllm_gpu.py VLLM_GPU_VERSIONS (one place), and
# storagecarbon's vLLM plugins (LMCache taps, stat logger) made discoverable to vLLM's own processes.
#   source benchmarks/gpu/box_env.sh || exit $?
test -d /tmp/site/vllm || { echo "no /tmp/site/vllm: carry the pack first"; return 9; }
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 LMCACHE_TRACK_USAGE=false \
  NCCL_NVLS_ENABLE=0 TOKENIZERS_PARALLELISM=false
python3 - <<'PY' || return 3
import sys, storagecarbon.engines.vllm_gpu as g, vllm, importlib.metadata as md
want = g.VLLM_GPU_VERSIONS
have = {"vllm": vllm.__version__, "lmcache": md.version("lmcache")}
print("pack versions", have, "expected", want)
sys.exit(0 if have == want else 3)
PY
# entry points (storagecarbon is on PYTHONPATH but not pip-installed here)
DI=/tmp/site/storagecarbon_box-0.0.dist-info
mkdir -p $DI
printf 'Metadata-Version: 2.1\nName: storagecarbon-box\nVersion: 0.0\n' > $DI/METADATA
printf '[vllm.general_plugins]\nstoragecarbon_lmcache_cpu = storagecarbon.engines.lmcache_cpu:register\n\n[vllm.stat_logger_plugins]\nstoragecarbon = storagecarbon.engines.stat_logger:StoragecarbonStatLogger\n' > $DI/entry_points.txt
