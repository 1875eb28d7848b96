"""The README's main job and the CLI contract, run as a user would."""

import json
import subprocess
import sys

import pytest

PY = [sys.executable, "-m", "storagecarbon"]


def run(*args, cwd=None):
    return subprocess.run([*PY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def offload_report(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    p = run("profile", str(root / "scenarios/llama70b_offload.yaml"), "--out", str(out), "--json", cwd=root)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), out


def test_profile_json_has_the_documented_fields(offload_report):
    r, out = offload_report
    assert r["mode"] == "modeled"
    for key in ("scenario", "mode", "requests", "tokens", "duration_s", "totals", "per_1k_tokens_gco2e", "tiers",
                "phases", "latency", "sources"):
        assert key in r, key
    for k in ("embodied_gco2e", "operational_gco2e", "total_gco2e"):
        b = r["totals"][k]
        assert b["p5"] <= b["p50"] <= b["p95"]
    tiers = {t["tier"]: t for t in r["tiers"]}
    for tier in ("hbm", "dram", "ssd"):
        e = tiers[tier]["embodied_gco2e"]
        assert 0 < e["p5"] <= e["p50"] <= e["p95"], tier
        assert {"tier", "devices", "bytes_read", "bytes_written", "operational_gco2e"} <= set(tiers[tier])
    assert set(r["phases"]) >= {"prefill", "decode"}
    assert r["latency"]["ttft_ms"]["p50"] > 0 and r["latency"]["tpot_ms"]["p50"] > 0
    assert "h100-sxm5-80gb" in r["sources"]
    assert r["tokens"]["generated"] > 0 and r["requests"] == 512
    for f in ("report.json", "trace.arrows", "intervals.parquet", "device_phase.parquet"):
        assert (out / f).exists(), f


def test_parquet_intervals_sum_to_central_totals(offload_report):
    import pyarrow.parquet as pq

    r, out = offload_report
    t = pq.read_table(out / "intervals.parquet").to_pydict()
    dp = pq.read_table(out / "device_phase.parquet").to_pydict()
    assert sum(t["embodied_gco2e"]) == pytest.approx(sum(dp["embodied_gco2e_best"]), rel=1e-6)
    assert sum(t["operational_gco2e"]) == pytest.approx(sum(dp["operational_gco2e_best"]), rel=1e-6)


def test_report_reattributes_with_another_region(offload_report):
    r, out = offload_report
    p = run("report", str(out / "trace.arrows"), "--region", "fr", "--json")
    assert p.returncode == 0, p.stderr
    fr = json.loads(p.stdout)
    # same usage, cleaner grid: operational falls, embodied is unchanged
    assert fr["totals"]["operational_gco2e"]["p50"] < r["totals"]["operational_gco2e"]["p50"] / 3
    assert fr["totals"]["embodied_gco2e"]["p50"] == pytest.approx(r["totals"]["embodied_gco2e"]["p50"], rel=0.02)
    assert fr["assumptions"]["region"] == "fr"


def test_terminal_report_says_modeled(root, tmp_path):
    p = run("profile", str(root / "scenarios/llama70b_old_gpus.yaml"), "--out", str(tmp_path), cwd=root)
    assert p.returncode == 0, p.stderr
    assert "MODELED" in p.stdout and "Per tier" in p.stdout and "per 1k generated" in p.stdout


@pytest.mark.parametrize("args,needle", [
    (("devices", "show", "h100-sxm-80gb"), "closest known: h100-sxm5-80gb"),
    (("report", "/nonexistent/trace.arrows"), "does not exist"),
    (("profile", "/nonexistent.yaml"), "does not exist"),
    (("profile", "scenarios/llama70b_offload.yaml", "--region", "atlantis", "--out", "/tmp/sc-x"), "unknown grid region"),
    (("report", "x.arrows", "--out-dir", "y"), "No such option: --out-dir"),   # a usage error, not a traceback
])
def test_errors_are_one_line_and_nonzero(root, args, needle):
    p = run(*args, cwd=root)
    assert p.returncode != 0
    assert needle in p.stderr.replace("\n", " ")
    assert "Traceback" not in p.stderr


def test_devices_list_json_and_check(root):
    p = run("devices", "list", "--json")
    assert p.returncode == 0
    devs = json.loads(p.stdout)
    assert len(devs) >= 30 and all(d.get("embodied_kgco2e") is None or d["embodied_kgco2e"]["source"] for d in devs)
    g = run("devices", "list", "--kind", "gpu", "--json")
    assert {d["kind"] for d in json.loads(g.stdout)} == {"gpu"}
    c = run("devices", "check")
    assert c.returncode == 0 and "device_db OK" in c.stdout


@pytest.mark.parametrize("cmd", [[], ["profile"], ["report"], ["record"], ["devices"], ["devices", "list"], ["env"],
                                 ["scenario", "check"]])
def test_help_is_useful(cmd):
    p = run(*cmd, "--help")
    assert p.returncode == 0 and "Usage" in p.stdout and len(p.stdout) > 200


def test_env_json_lists_sensors_with_reasons():
    p = run("env", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert {"nvml", "diskstats", "procio", "memory", "rapl"} <= set(info["sensors"])
    for st in info["sensors"].values():
        assert isinstance(st["available"], bool) and st["reason"]
    assert info["engines"]["model"]["available"] is True


def test_record_any_command_then_report(tmp_path):
    trace = tmp_path / "t.arrows"
    blob = tmp_path / "blob"
    code = f"import os; f=open({str(blob)!r},'wb'); f.write(os.urandom(3_000_000)); f.flush(); os.fsync(f.fileno())"
    p = run("record", "--out", str(trace), "--", sys.executable, "-c", code)
    assert p.returncode == 0, p.stderr
    r = json.loads(run("report", str(trace), "--json").stdout)
    assert r["mode"] == "measured"
    disk = [t for t in r["tiers"] if t["tier"] == "ssd"]
    assert disk and disk[0]["app_bytes_written"] >= 3_000_000
    # the command's exit code passes through
    p = run("record", "--out", str(tmp_path / "u.arrows"), "--", sys.executable, "-c", "raise SystemExit(3)")
    assert p.returncode == 3
