#!/usr/bin/env bash
# Runs the whole GPU matrix (scenarios/gpu/*.yaml) measured, in one call.
#
#   benchmarks/gpu/run_matrix.sh OUT_DIR [run_matrix.py options, e.g. --only l8b_none]
#
# On the lent H100 (device tool), call it with the pydantic wheels carried in .whl/ (see
# benchmarks/gpu/results/*/README.md for the exact command): the machine has torch, transformers,
# accelerate and pynvml but not pydantic, so the wheels matching its Python are installed into
# /tmp/site first. The results are packed into OUT_DIR.tar.gz as well (one file to bring back).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:?usage: run_matrix.sh OUT_DIR [options]}
shift
PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  [ -d .whl ] || { echo "pydantic missing and no .whl/ folder of wheels" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    --find-links .whl pydantic pydantic-core typing-inspection annotated-types typing-extensions
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
rc=0
"$PY" benchmarks/gpu/run_matrix.py --out "$OUT_DIR" "$@" || rc=$?
tar -czf "$OUT_DIR.tar.gz" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")"
exit $rc
