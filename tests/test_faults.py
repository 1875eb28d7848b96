"""Hostile inputs and faults while recording: every case ends in a clear error with nothing lost.

Inputs (files a user is handed): YAML alias bombs, recursive aliases, duplicate keys, booleans or
strings in numeric fields, sizes past their bounds, scenario names with path tricks, bad device_db
files, intensity CSVs and traces. Faults while recording: the command crashes or is killed,
SIGINT/SIGTERM to ``record``, a full disk (ENOSPC on a tiny tmpfs; EFBIG through RLIMIT_FSIZE; an
injected ENOSPC writer), a sensor failing mid-run (NVML error, a /proc file vanishing, a counter
reset or wrap), and wall-clock jumps. ``kill -9`` of the recorder is in test_recorder.py.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from storagecarbon.cli import main
from storagecarbon.errors import StoragecarbonError, TraceWriteError, ValidationError
from storagecarbon.record.recorder import Recorder, record_command
from storagecarbon.scenario import parse_scenario
from storagecarbon.record.sensors.base import Probe, SensorBase
from storagecarbon.record.sensors.diskstats import DiskstatsSensor
from storagecarbon.record.sensors.nvml import FULL_RATE, NvmlSensor
from storagecarbon.trace import DeviceEntry, read_trace
from storagecarbon.carbon.usage import aggregate

PY = sys.executable
HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ROOT = HERE.parent
TINY = (ROOT / "scenarios" / "tiny_cpu_lmcache.yaml").read_text()
OFFLOAD = ROOT / "scenarios" / "llama70b_offload.yaml"


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


# =================================================================================== inputs
def test_alias_bomb_is_refused_at_once(capsys):
    # GIVEN a scenario whose aliases expand to 9^10 nodes (the "billion laughs")
    t0 = time.monotonic()
    # WHEN it is profiled  THEN a one-line error, at once, naming file, line and the bound
    rc = main(["profile", str(CORPUS / "scenario" / "expect-error-alias-bomb.yaml"), "--mode", "modeled"])
    assert rc == 2 and time.monotonic() - t0 < 5
    e = _err(capsys)
    assert "expect-error-alias-bomb.yaml:" in e and "more than 200,000 nodes" in e and "alias bombs" in e


def test_recursive_alias_and_duplicate_keys_are_clear_errors(capsys):
    assert main(["scenario", "check", str(CORPUS / "scenario" / "expect-error-recursive-alias.yaml")]) == 2
    assert "recursive alias" in _err(capsys)
    assert main(["scenario", "check", str(CORPUS / "scenario" / "expect-error-duplicate-key.yaml")]) == 2
    e = _err(capsys)
    assert "passes: duplicate key (first given on line" in e


@pytest.mark.parametrize("field, value, says", [
    ("requests: 16", "requests: yes", "workload.requests: must be a whole number"),
    ("requests: 16", "requests: '16'", "workload.requests: must be a whole number"),
    ("count: 24", "count: 24.0", "hardware.dram.count: must be a whole number"),
    ("sample_hz: 10", "sample_hz: on", "engine.sample_hz: must be a number"),
    ("mean: 1572", "mean: 1e5", "YAML 1.1 reads 1e9 as text: write 1.0e9"),
    ("mean: 1572", "mean: .inf", "must be a finite number"),
])
def test_numbers_are_strict(field, value, says):
    with pytest.raises(ValidationError) as ei:
        parse_scenario(TINY.replace(field, value), "s.yaml")
    assert says in str(ei.value) and str(ei.value).startswith("s.yaml:")


@pytest.mark.parametrize("field, value, says", [
    ("requests: 16", "requests: 1000000000000", "workload.requests: 1,000,000,000,000 is too large: the bound is 1,000,000"),
    ("requests: 16", "duration_s: 3000000\n  arrival_rate_rps: 0.01", "31 days"),
    ("mean: 1572", "mean: 10000000.0", "workload.prompt_tokens.mean: 10,000,000 is too large: the bound is 1,048,576"),
    ("sample_hz: 10", "sample_hz: 5000", "engine.sample_hz: 5,000 is too large"),
    ("allocation: max", "allocation: max\n  draws: 5000000", "carbon.draws: 5,000,000 is too large"),
])
def test_size_bounds_name_field_bound_and_why(field, value, says):
    # GIVEN a size past its bound  WHEN the scenario is read  THEN file:line, field, bound and reason; nothing allocated
    with pytest.raises(ValidationError) as ei:
        parse_scenario(TINY.replace(field, value), "s.yaml")
    msg = str(ei.value)
    assert says in msg and "(" in msg and msg.startswith("s.yaml:")


def test_requests_times_passes_is_bounded():
    text = TINY.replace("requests: 16", "requests: 20000").replace("passes: 2", "passes: 100")
    with pytest.raises(ValidationError, match=r"s.yaml:\d+: workload: requests x passes .*2,000,000 is too large"):
        parse_scenario(text, "s.yaml")


def test_sweep_product_bound_is_checked_before_expanding(db):
    from storagecarbon.plan.sweep import load_sweep

    t0 = time.monotonic()
    with pytest.raises(ValidationError) as ei:
        load_sweep(CORPUS / "sweep" / "expect-error-huge-product.yaml", db)
    assert "1,474,560 is too large: the bound is 200,000" in str(ei.value) and time.monotonic() - t0 < 2


def test_scenario_name_cannot_place_output_outside_reports(tmp_path, monkeypatch, capsys):
    # GIVEN a scenario named ../../../tmp/escaped, profiled from a fresh directory without --out
    monkeypatch.chdir(tmp_path)
    scn = tmp_path / "s.yaml"
    scn.write_text(OFFLOAD.read_text().replace("name: llama70b_offload", "name: ../../escaped/x")
                   .replace("requests: 512", "requests: 8"))
    rc = main(["profile", str(scn), "--json", "--draws", "200"])
    assert rc == 0
    # THEN the report is written inside reports/, under a sanitised name, and nothing outside
    assert (tmp_path / "reports" / "escaped_x" / "report.json").exists()
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "s.yaml"]


def test_default_report_dir_never_replaces_other_files(tmp_path, monkeypatch, capsys):
    # GIVEN reports/<name>/ already holding someone's files that are not a report
    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "reports" / "llama70b_offload" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    # WHEN profile would write there by default  THEN it refuses, and the files stay
    assert main(["profile", str(OFFLOAD), "--json"]) == 2
    assert "is not a storagecarbon report directory" in _err(capsys) and keep.read_text() == "mine"


def test_bad_device_db_given_with_db(tmp_path, capsys):
    for name in ("expect-error-bool-capacity.yaml", "expect-error-alias-bomb.yaml", "expect-error-duplicate-key.yaml"):
        d = tmp_path / name
        d.mkdir()
        shutil.copyfile(CORPUS / "device" / name, d / "gpus.yaml")
        assert main(["devices", "list", "--db", str(d)]) == 2
        e = _err(capsys)
        assert f"{d / 'gpus.yaml'}:" in e, e


def test_bad_intensity_csv_names_file_and_line(tmp_path):
    from storagecarbon.carbon.grid import load_intensity_csv

    p = tmp_path / "i.csv"
    p.write_text("timestamp,gco2e_per_kwh\n2024-01-01T00:00Z,100\n2024-01-01T01:00Z,yes\n")
    with pytest.raises(ValidationError, match=r"i.csv:3: gco2e_per_kwh: not a number \('yes'\)"):
        load_intensity_csv(p)
    p.write_bytes(b"timestamp,gco2e_per_kwh\n" + b"2024,1\n" * 1_000_001)
    with pytest.raises(ValidationError, match="more than 1,000,000 rows"):
        load_intensity_csv(p)


def test_trace_claiming_gigabytes_is_refused_or_read_as_cut_short(capsys):
    # a batch whose length field claims ~2 GB: never allocated; reads as cut short there
    t = read_trace(CORPUS / "trace" / "claims-2gb-metadata.arrows")
    assert t.truncated
    # a header whose channel id would size per-channel arrays at 2^31: refused, one line
    assert main(["report", str(CORPUS / "trace" / "expect-error-huge-channel-id.arrows")]) == 2
    assert "channels[0].id: not a channel number" in _err(capsys)


def test_bit_flipped_trace_never_crashes(tmp_path):
    good = (CORPUS / "trace" / "valid-seed.arrows").read_bytes()
    rng = np.random.default_rng(5)
    p = tmp_path / "t.arrows"
    outcomes = set()
    for i in range(300):
        b = bytearray(good)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        p.write_bytes(bytes(b))
        try:
            read_trace(p)
            aggregate(p)
            outcomes.add("read")
        except StoragecarbonError:
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}  # flips in payload bytes read; structural ones are refused


# ============================================================================ recording faults
def test_crashing_command_is_reported_as_failed(tmp_path, capsys):
    # GIVEN a command that raises an exception after a while
    out = tmp_path / "t.arrows"
    rc = main(["record", "--out", str(out), "--hz", "20", "--", PY, "-c", "import time; time.sleep(0.3); 1/0"])
    # THEN its exit code is passed on, the trace is closed, and both CLI and report say it failed and how
    assert rc == 1
    assert "the recorded command failed: exit code 1" in _err(capsys)
    t = read_trace(out)
    assert not t.truncated and t.summary["command_status"] == "failed: exit code 1"
    assert main(["report", str(out), "--json", "--draws", "200"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert any("the recorded command failed: exit code 1" in w for w in rep["warnings"])


def test_killed_command_says_which_signal(tmp_path):
    out = tmp_path / "t.arrows"
    rc = record_command([PY, "-c", "import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGSEGV)"],
                        out, hz=20)
    assert rc == 128 + signal.SIGSEGV
    t = read_trace(out)
    assert not t.truncated and t.summary["command_status"] == "failed: killed by signal 11 (SIGSEGV)"


def test_sigint_to_record_is_forwarded_and_the_trace_closed(tmp_path):
    # GIVEN `storagecarbon record` running a child that reports the signal it gets
    got, out = tmp_path / "got", tmp_path / "t.arrows"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import signal, sys, time
        def h(s, f):
            open({str(got)!r}, "w").write(str(s)); sys.exit(5)
        signal.signal(signal.SIGINT, h)
        print("ready", flush=True)
        time.sleep(30)
    """))
    p = subprocess.Popen([PY, "-m", "storagecarbon", "record", "--out", str(out), "--", PY, str(child)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert p.stdout.readline().strip() == "ready"
        # WHEN the recorder gets SIGINT (Ctrl-C)
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    # THEN the child got it, and the trace is closed with a footer that says so
    assert got.read_text() == str(int(signal.SIGINT)) and rc == 5
    t = read_trace(out)
    assert not t.truncated and t.summary["forwarded_signal"] == int(signal.SIGINT)
    assert "after the recorder forwarded SIGINT" in t.summary["command_status"]


RECORD_FILLING = [PY, "-m", "storagecarbon", "record", "--hz", "200", "--hold-s", "0", "--out", "{out}", "--",
                  PY, "-c", "import time; time.sleep(4); print('command finished')"]


def _check_full_disk_outcome(rc: int, stderr: str, trace: Path, errname: str) -> None:
    assert rc == 4, stderr
    err = " ".join(stderr.split())
    assert f"({errname}) while writing" in err and "recording stopped" in err
    assert "stay readable" in err and "the command went on and exited with 0" in err
    t = read_trace(trace)                       # what was written reads back, marked truncated
    assert t.truncated and len(t.t_s) > 0
    aggregate(trace)


def test_disk_full_enospc_on_a_tiny_tmpfs(tmp_path):
    """Real ENOSPC: `record` writes its trace to a 48 KiB tmpfs mounted in a private mount namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private tmpfs (the EFBIG and injected-ENOSPC tests still run)")
    mnt, keep = tmp_path / "mnt", tmp_path / "kept.arrows"
    mnt.mkdir()
    cmd = " ".join(shlex.quote(a.replace("{out}", str(mnt / "t.arrows"))) for a in RECORD_FILLING)
    script = (f"mount -t tmpfs -o size=48k tmpfs {shlex.quote(str(mnt))} || exit 99; {cmd}; rc=$?; "
              f"cp {shlex.quote(str(mnt / 't.arrows'))} {shlex.quote(str(keep))}; exit $rc")
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode == 99 or "unshare failed" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()[:200]})")
    assert "command finished" in p.stdout  # the command is an observed workload: it is not stopped
    _check_full_disk_outcome(p.returncode, p.stderr, keep, "ENOSPC")


def test_file_too_large_efbig_through_rlimit_fsize(tmp_path):
    """The fallback where no tmpfs can be mounted: RLIMIT_FSIZE makes writes past 40 kB fail with EFBIG."""
    out = tmp_path / "t.arrows"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    cmd = [a.replace("{out}", str(out)) for a in RECORD_FILLING]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, preexec_fn=limit, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"})
    assert "command finished" in p.stdout
    _check_full_disk_outcome(p.returncode, p.stderr, out, "EFBIG")


class _FillingFile:
    """A file that accepts ``room`` bytes, then fails every write with ENOSPC (as a full disk does)."""

    def __init__(self, path, mode, room):
        self._f = open(path, mode)
        self.room = room

    def write(self, b):
        if len(b) > self.room:
            self._f.write(bytes(b)[: self.room])
            self.room = 0
            self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    @property
    def closed(self):
        return self._f.closed


class _Counter(SensorBase):
    name = "counter"

    def __init__(self):
        self.n = 0

    def probe(self):
        return Probe(True, "")

    def channels(self):
        return [("host", "cpu_time_s", self.name), ("host", "power_w", self.name)]

    def read(self):
        self.n += 1
        return [("host", "cpu_time_s", float(self.n)), ("host", "power_w", 100.0)]


def test_injected_enospc_stops_recording_cleanly(tmp_path):
    # GIVEN a recorder whose disk fills after 6 kB of trace
    p = tmp_path / "t.arrows"
    rec = Recorder(p, {"devices": [DeviceEntry("host", "host", None)]}, [_Counter()], hz=100, flush_s=0.05,
                   fsync=False, opener=lambda path, mode: _FillingFile(path, mode, 6000))
    rec.start()
    time.sleep(1.0)
    # THEN sampling has stopped by itself, stop() raises the clear error, and the file reads back
    assert rec.write_error is not None
    with pytest.raises(TraceWriteError, match=r"No space left on device \(ENOSPC\) while writing samples"):
        rec.stop()
    t = read_trace(p)
    assert t.truncated and len(t.t_s) > 0 and p.stat().st_size <= 6000
    assert np.all(np.diff(t.series("host", "cpu_time_s")[1]) > 0)


# ---------------------------------------------------------------------------- sensor failures
class _Flaky(SensorBase):
    """Reads fine, fails for ticks [fail_from, fail_to), then reads again."""

    name = "flaky"

    def __init__(self, fail_from=3, fail_to=8):
        self.n, self.fail_from, self.fail_to = 0, fail_from, fail_to

    def probe(self):
        return Probe(True, "")

    def channels(self):
        return [("gpu0", "energy_j", self.name)]

    def read(self):
        self.n += 1
        if self.fail_from <= self.n < self.fail_to:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return [("gpu0", "energy_j", 10.0 * self.n)]


def _run(path, sensors, seconds=0.8, hz=20, **kw):
    devs = [DeviceEntry("gpu0", "hbm", None), DeviceEntry("host", "host", None), DeviceEntry("ssd0", "ssd", None)]
    with Recorder(path, {"devices": devs}, sensors, hz=hz, fsync=False, **kw):
        time.sleep(seconds)
    return read_trace(path)


def test_failing_sensor_leaves_a_labelled_gap_and_others_go_on(tmp_path):
    p = tmp_path / "t.arrows"
    t = _run(p, [_Flaky(), _Counter()])
    # THEN one labelled gap in gpu0.energy_j, closed when it read again; no zeros written
    gaps = t.gaps
    assert len(gaps) == 1 and gaps[0]["channel"] == "gpu0.energy_j" and "GPU_IS_LOST" in gaps[0]["reason"]
    assert gaps[0]["end_t_s"] > gaps[0]["start_t_s"]
    ts, vs = t.series("gpu0", "energy_j")
    assert (vs > 0).all() and not ((ts > gaps[0]["start_t_s"]) & (ts < gaps[0]["end_t_s"])).any()
    # the other sensor sampled straight through the gap
    th, _ = t.series("host", "cpu_time_s")
    assert ((th > gaps[0]["start_t_s"]) & (th < gaps[0]["end_t_s"])).sum() >= 3
    assert t.summary["recorder"]["gaps"][0]["channel"] == "gpu0.energy_j"
    # AND the counter's total spans the gap; the report says there was one
    u = aggregate(p)
    assert u.by_phase["energy_j"][u.devices.index("gpu0")].sum() == pytest.approx(vs[-1] - vs[0])
    assert any(n.startswith("gap in gpu0.energy_j") for n in u.notes)


def test_gap_still_open_at_the_end_is_closed_and_labelled(tmp_path):
    t = _run(tmp_path / "t.arrows", [_Flaky(fail_from=3, fail_to=10**9), _Counter()], seconds=0.5)
    assert len(t.gaps) == 1 and t.gaps[0]["end_t_s"] is not None
    assert any(e == "gap_end" and "still failing" in n for _, e, n in t.markers)


class _FakeNvml:
    """pynvml stand-in: energy reads, power fails for a while (one channel of one GPU)."""

    NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1

    def __init__(self):
        self.calls = 0

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.calls += 1
        return 1000.0 * self.calls

    def nvmlDeviceGetPowerUsage(self, h):
        if 4 <= self.calls < 10:
            raise RuntimeError("NVML_ERROR_UNKNOWN")
        return 250_000


def test_nvml_error_on_one_metric_is_a_gap_in_that_channel_only(tmp_path):
    nv = NvmlSensor(pcie=False, every_s=FULL_RATE)
    nv._nv, nv._handles, nv._names = _FakeNvml(), [("gpu0", object())], {"gpu0": "fake"}
    nv._metrics = {"gpu0": ["energy_j", "power_w"]}
    nv.probe = lambda: Probe(True, "fake NVML")
    t = _run(tmp_path / "t.arrows", [nv])
    assert [g["channel"] for g in t.gaps] == ["gpu0.power_w"] and "NVML_ERROR_UNKNOWN" in t.gaps[0]["reason"]
    e_t, e_v = t.series("gpu0", "energy_j")
    assert len(e_t) >= 12 and np.all(np.diff(e_v) > 0)     # energy read on every tick
    assert (t.series("gpu0", "power_w")[1] == 250.0).all()  # never a zero


DISK = "   8       0 sda {r} 0 {sr} 0 {w} 0 {sw} 0 0 {ticks} 0 0 0 0 0 0 0\n"


def test_proc_file_vanishing_and_counter_reset_and_wrap(tmp_path):
    # GIVEN a diskstats file that vanishes for a while, then comes back with its counters reset
    f = tmp_path / "diskstats"
    f.write_text(DISK.format(r=1, sr=1000, w=1, sw=2000, ticks=2**32 - 50))
    ds = DiskstatsSensor({"ssd0": "sda"}, path=f)
    devs = [DeviceEntry("ssd0", "ssd", None)]
    rec = Recorder(tmp_path / "t.arrows", {"devices": devs}, [ds], hz=20, fsync=False)
    rec.start()
    time.sleep(0.25)
    f.write_text(DISK.format(r=2, sr=1100, w=2, sw=2100, ticks=30))   # io_ticks wraps (32 bit)
    time.sleep(0.25)
    f.unlink()                                                        # /proc file vanishes
    time.sleep(0.3)
    f.write_text(DISK.format(r=1, sr=10, w=1, sw=20, ticks=5))        # back, counters reset
    time.sleep(0.3)
    rec.stop()
    t = read_trace(tmp_path / "t.arrows")
    # THEN a labelled gap while it was gone, a labelled reset, no decrease, no zero
    assert {g["channel"] for g in t.gaps} == {"ssd0.bytes_read", "ssd0.bytes_written", "ssd0.busy_s"}
    assert all("FileNotFoundError" in g["reason"] for g in t.gaps)
    resets = [(x, n) for x, e, n in t.markers if e == "counter_reset"]
    assert resets and all("counter reset" in n for _, n in resets)
    gap_end = max(g["end_t_s"] for g in t.gaps)
    assert all(x >= gap_end for x, _ in resets)                       # the earlier wrap was unfolded, not a reset
    for m in ("bytes_read", "bytes_written", "busy_s"):
        v = t.series("ssd0", m)[1]
        assert np.all(np.diff(v) >= 0) and (v > 0).all()
    busy = t.series("ssd0", "busy_s")[1]
    assert busy[-1] == pytest.approx((2**32 - 50 + 80 + 5) / 1000.0)
    assert any("counter reset" in n for n in aggregate(tmp_path / "t.arrows").notes)


def test_wall_clock_jumps_keep_sample_times_monotonic(tmp_path):
    # GIVEN a wall clock that jumps back an hour, then forward two, during the recording
    jumps = {"offset": 0.0}

    def wall():
        return time.time() + jumps["offset"]

    p = tmp_path / "t.arrows"
    devs = [DeviceEntry("host", "host", None)]
    t_start = time.time()
    rec = Recorder(p, {"devices": devs}, [_Counter()], hz=50, fsync=False, wall_clock=wall)
    rec.start()
    time.sleep(0.2)
    rec.marker("phase_start", "a")
    jumps["offset"] = -3600.0
    time.sleep(0.2)
    rec.marker("phase_end", "a")
    rec.marker("phase_start", "b", t_unix=wall())   # a wall-clock stamp taken after the jump
    jumps["offset"] = 7200.0
    time.sleep(0.2)
    rec.marker("phase_end", "b")
    rec.stop()
    t = read_trace(p)
    # THEN samples never go back or leap, markers sit between them, and t0 is the wall-clock start
    ts, _ = t.series("host", "cpu_time_s")
    assert np.all(np.diff(ts) > 0) and ts[-1] < 2.0
    mk = {(e, n): x for x, e, n in t.markers}
    assert 0.15 < mk[("phase_start", "a")] < mk[("phase_end", "a")] <= mk[("phase_start", "b")] < mk[("phase_end", "b")] < 2.0
    assert abs(t.header.t0_unix - t_start) < 1.0
    assert "monotonic" in t.summary["recorder"]["clock"]


def test_a_pipe_given_as_a_file_never_hangs(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["report", str(fifo)]) == 2 and "not a regular file" in _err(capsys)
    assert main(["scenario", "check", str(fifo)]) == 2 and "not a regular file" in _err(capsys)
