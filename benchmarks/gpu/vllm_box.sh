#!/usr/bin/env bash
# On the lent GPU box, after the vLLM pack is unpacked into /tmp/site (see docs/engines.md, "vLLM on
# the GPU machine"): set up the box (box_env.sh), run benchmarks/gpu/vllm_matrix.py with the given
# arguments and pack DIR into $OUT.
#   bash benchmarks/gpu/vllm_box.sh DIR [vllm_matrix.py args...]
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/box_env.sh || exit $?
DIR=${1:?usage: vllm_box.sh DIR [args]}; shift
mkdir -p "$DIR"
python3 benchmarks/gpu/vllm_matrix.py --out "$DIR" "$@"
rc=$?
# traces, settings, engine logs and raw results; not the LMCache disk tier or model folders (GBs)
(cd "$(dirname "$DIR")" && tar -czf "$OUT/$(basename "$DIR").tar.gz" --exclude='lmcache-disk' --exclude='model' \
  --exclude='*.arrows' --exclude='taps' "$(basename "$DIR")")
ls -la "$OUT"
exit $rc
