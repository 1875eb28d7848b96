"""Coverage-guided fuzzing (atheris / libFuzzer) of the parsers where coverage pays: the YAML-based
scenario parser and the trace reader, whose validation has many branches that random mutation
rarely reaches. Seeds: the shipped scenarios and tests/corpus. Every input is bounded by
libFuzzer's ``-timeout``; a crash is copied into tests/corpus/<kind>/ and fails the test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

atheris = pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris); hypothesis fuzzing still runs")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = {"scenario": 12000, "trace": 12000}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_atheris(kind, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    seeds = [HERE / "corpus" / kind]
    if kind == "scenario":
        seeds.append(ROOT / "scenarios")
    art = tmp_path / "crash"
    art.mkdir()
    cmd = [sys.executable, str(HERE / "atheris_fuzz.py"), kind, f"-runs={RUNS[kind]}", "-max_total_time=25",
           "-timeout=5", "-rss_limit_mb=4096", "-max_len=65536", "-seed=1", f"-artifact_prefix={art}/",
           str(new)] + [str(s) for s in seeds]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    crashes = [f for f in art.iterdir() if f.is_file()]
    for f in crashes:
        shutil.copyfile(f, HERE / "corpus" / kind / f"found-{f.name}")
    assert p.returncode == 0 and not crashes, f"atheris found a crash (kept in tests/corpus/{kind}/):\n{p.stderr[-4000:]}"
    assert "Done" in p.stderr, p.stderr[-2000:]
