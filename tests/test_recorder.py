"""Recorder and record_command: real child processes, markers, timeouts, signals, crash safety."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from storagecarbon.record.recorder import Recorder, emit_marker, record_command
from storagecarbon.record.sensors import ProcIOSensor, ProcTree, ReplaySensor
from storagecarbon.record.sensors.base import Probe, SensorBase
from storagecarbon.trace import DeviceEntry, read_trace
from storagecarbon.carbon.usage import aggregate

PY = sys.executable


def _alive(pid: int) -> bool:
    """Running (not a zombie, not gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_record_command_writer_child(tmp_path):
    # GIVEN a child that writes 5 MB with fsync inside a phase it marks itself
    script = tmp_path / "w.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from storagecarbon.record.recorder import emit_marker
        time.sleep(0.3)
        emit_marker("phase_start", "write")
        with open({str(tmp_path / 'out.bin')!r}, "wb") as f:
            for _ in range(5):
                f.write(os.urandom(1_000_000)); time.sleep(0.1)
            f.flush(); os.fsync(f.fileno())
        emit_marker("phase_end", "write")
        time.sleep(0.3)
    """))
    out = tmp_path / "t.arrows"
    # WHEN it is recorded at 10 Hz
    t0 = time.monotonic()
    rc = record_command([PY, str(script)], out, hz=10, cwd=tmp_path)
    wall = time.monotonic() - t0
    assert rc == 0
    t = read_trace(out)
    # THEN the trace is complete, measured, and the child's bytes are on the mapped disk device
    assert not t.truncated and t.source == "measured"
    disk = next(d for d in t.header.devices if d.tier in ("ssd", "hdd"))
    _, written = t.series(disk.id, "app_bytes_written")
    assert written[-1] - written[0] >= 5_000_000
    assert t.series("host", "cpu_time_s")[1][-1] > 0
    assert t.series("dram", "resident_bytes")[1].max() > 5e6
    # the child's markers are there with their own timestamps, in order, inside the run
    ev = [(e, n) for _, e, n in t.markers]
    assert ("phase_start", "write") in ev and ("phase_end", "write") in ev
    ts = {(e, n): tt for tt, e, n in t.markers}
    assert 0.2 < ts[("phase_start", "write")] < ts[("phase_end", "write")] < wall
    # ~10 Hz: tick count in a loose range around duration x 10
    stats = t.summary["recorder"]
    assert 0.5 * wall * 10 <= stats["ticks"] <= 1.5 * wall * 10 + 2
    assert stats["sample_cpu_s_mean"] > 0 and stats["sample_cpu_s_max"] >= stats["sample_cpu_s_mean"]
    assert t.summary["exit_code"] == 0 and t.summary["timed_out"] is False
    assert t.header.sensors["procio"]["available"] and t.header.sensors["memory"]["available"]
    assert "nvml" in t.header.sensors and "rapl" in t.header.sensors  # with reasons when unavailable
    # AND usage aggregates it, with the write phase holding the bytes
    u = aggregate(out)
    assert "write" in u.phases and not u.truncated
    i = u.devices.index(disk.id)
    assert u.by_phase["app_bytes_written"][i].sum() >= 5_000_000
    assert u.by_phase["app_bytes_written"][i][u.phases.index("write")] >= 3_000_000  # most, not all: intervals take the phase at their start


def test_record_command_timeout_kills_the_whole_group(tmp_path):
    # GIVEN a command that starts a grandchild ignoring SIGTERM, then sleeps
    pids = tmp_path / "pids.json"
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, subprocess, sys, time
        g = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pids)!r}, "w").write(json.dumps([os.getpid(), g.pid]))
        time.sleep(60)
    """))
    out = tmp_path / "t.arrows"
    t0 = time.monotonic()
    rc = record_command([PY, str(script)], out, hz=10, timeout_s=1.0, grace_s=0.5)
    # THEN exit code 124, fast, and nobody of the group is left running
    assert rc == 124
    assert time.monotonic() - t0 < 8
    for pid in json.loads(pids.read_text()):
        assert not _alive(pid), f"pid {pid} survived"
    t = read_trace(out)
    assert not t.truncated and t.summary["timed_out"] is True and t.summary["exit_code"] == 124
    assert any(e == "command_timeout" for _, e, _ in t.markers)


def test_record_command_exit_codes(tmp_path):
    assert record_command([PY, "-c", "import sys; sys.exit(3)"], tmp_path / "a.arrows", hz=20) == 3
    assert record_command([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                          tmp_path / "b.arrows", hz=20) == 128 + 9
    rc = record_command(["/nonexistent/command-xyz"], tmp_path / "c.arrows", hz=20)
    assert rc == 127
    t = read_trace(tmp_path / "c.arrows")  # the trace is closed even when the command cannot start
    assert not t.truncated and "cannot start" in t.summary["error"]


def test_record_command_forwards_sigterm_to_the_group(tmp_path):
    # GIVEN record_command running in its own process, recording a child that reports SIGTERM
    got = tmp_path / "got"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import signal, sys, time
        def h(s, f):
            open({str(got)!r}, "w").write(str(s)); sys.exit(7)
        signal.signal(signal.SIGTERM, h)
        print("ready", flush=True)
        time.sleep(30)
    """))
    driver = (f"import sys; from storagecarbon.record.recorder import record_command; "
              f"sys.exit(record_command([{PY!r}, {str(child)!r}], {str(tmp_path / 't.arrows')!r}, hz=10))")
    p = subprocess.Popen([PY, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        # WHEN the recorder gets SIGTERM
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    # THEN the child got it, exited 7, and the recorder closed the trace and returned 7
    assert got.read_text() == str(int(signal.SIGTERM))
    assert rc == 7
    t = read_trace(tmp_path / "t.arrows")
    assert not t.truncated and t.summary["forwarded_signal"] == int(signal.SIGTERM)


CRASH = """
import sys, time
from storagecarbon.record.recorder import Recorder
from storagecarbon.record.sensors import MemorySensor, ProcIOSensor, ProcTree
from storagecarbon.trace import DeviceEntry
import os
tree = ProcTree(os.getpid())
devs = [DeviceEntry("host", "host", None), DeviceEntry("dram", "dram", None), DeviceEntry("ssd0", "ssd", None)]
rec = Recorder(sys.argv[1], {"devices": devs}, [ProcIOSensor(tree, disk_device="ssd0"), MemorySensor(tree)],
               hz=10, markers_file=sys.argv[2])
rec.start()
print("started", flush=True)
while True:
    time.sleep(1)
"""


def test_kill_9_loses_at_most_the_last_second(tmp_path):
    # GIVEN a recorder in a subprocess, with a marker written by another process
    out, markers = tmp_path / "crash.arrows", tmp_path / "m.jsonl"
    markers.touch()
    p = subprocess.Popen([PY, "-c", CRASH, str(out), str(markers)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "started"
        t_start = time.monotonic()
        emit_marker("phase_start", "steady", path=markers)
        time.sleep(2.5 - (time.monotonic() - t_start))
        # WHEN it is killed with SIGKILL after ~2.5 s
        p.kill()
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    # THEN the trace reads back, truncated, with >= 1 s of samples and the marker
    t = read_trace(out)
    assert t.truncated
    assert len(t.t_s) > 0 and t.t_s.max() - t.t_s.min() >= 1.0
    assert ("phase_start", "steady") in [(e, n) for _, e, n in t.markers]
    u = aggregate(out)
    assert u.truncated and u.samples == len(t.t_s) and u.duration_s >= 1.0
    assert u.by_phase["resident_byte_s"][u.devices.index("dram")].sum() > 0


class _Clock:
    """An injectable sample clock: the recorder's thread is left out and the test makes each tick."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _manual(rec: Recorder, clock: _Clock) -> Recorder:
    rec._run = lambda: None   # no sampling thread: ticks come from _tick
    rec.start()
    return rec


def _tick(rec: Recorder, clock: _Clock, n: int = 1, dt: float = 0.05) -> None:
    for _ in range(n):
        clock.t += dt
        rec.sample_now()


class _Boom(SensorBase):
    name = "boom"

    def __init__(self):
        self.calls = 0

    def probe(self):
        return Probe(True, "explodes on read")

    def channels(self):
        return [("host", "power_w", self.name)]

    def read(self):
        self.calls += 1
        raise OSError("device went away")


class _Slow(SensorBase):
    name = "slow"

    def probe(self):
        return Probe(True, "")

    def channels(self):
        return [("host", "utilization", self.name)]

    def read(self):
        time.sleep(0.25)
        return [("host", "utilization", 0.5)]


def test_failing_sensor_is_recorded_once_and_sampling_goes_on(tmp_path):
    boom = _Boom()
    rep = ReplaySensor([(0.0, "host", "cpu_time_s", 1.0)])
    p = tmp_path / "t.arrows"
    clock = _Clock()
    rec = _manual(Recorder(p, {"devices": [DeviceEntry("host", "host", None)]}, [boom, rep], hz=20, fsync=False,
                           clock=clock), clock)
    _tick(rec, clock, 5)
    rec.stop()
    t = read_trace(p)
    err = t.summary["recorder"]["sensor_errors"]["boom"]
    assert err["count"] == boom.calls == 7 and "device went away" in err["first"]   # start, 5 ticks, stop
    # the other sensor kept sampling: a constant reading, written first and last (rows in between held back)
    assert len(t.series("host", "cpu_time_s")[0]) == 2 and rec.stats()["rows_held_back"] >= 2
    assert len(t.series("host", "power_w")[0]) == 0             # no made-up zeros
    assert rec.stats()["ticks"] >= 3


def test_late_ticks_are_skipped_not_burst(tmp_path):
    # GIVEN a sensor that takes 0.25 s per read at 10 Hz
    p = tmp_path / "t.arrows"
    with Recorder(p, {"devices": [DeviceEntry("host", "host", None)]}, [_Slow()], hz=10, fsync=False):
        time.sleep(1.2)
    t = read_trace(p)
    st = t.summary["recorder"]
    # THEN ticks follow the sensor (~4/s, not 10/s in bursts) and the missed deadlines are counted
    assert 3 <= st["ticks"] <= 8
    assert st["overruns"] >= 4
    ts = t.series("host", "utilization")[0]
    assert (ts[1:] - ts[:-1]).min() > 0.2


def test_duplicate_channels_first_sensor_wins(tmp_path):
    a = ReplaySensor([(0.0, "ssd0", "app_bytes_written", 10.0)])
    b = ReplaySensor([(0.0, "ssd0", "app_bytes_written", 99.0)])
    b.name = "replay2"
    p = tmp_path / "t.arrows"
    clock = _Clock()
    rec = _manual(Recorder(p, {"devices": [DeviceEntry("ssd0", "ssd", None)]}, [a, b], hz=20, fsync=False,
                           clock=clock), clock)
    _tick(rec, clock, 2)
    rec.stop()
    t = read_trace(p)
    assert [c.sensor for c in t.header.channels] == ["replay"]
    assert set(t.series("ssd0", "app_bytes_written")[1]) == {10.0}
    assert "kept from replay" in t.header.sensors["replay2"]["dropped_channels"][0]


def test_live_replay_of_two_gpus_through_the_recorder(tmp_path):
    # GIVEN 1 s of two GPUs' energy counters replayed at x5 through a 50 Hz recorder
    rows = [(k * 0.05, f"gpu{g}", "energy_j", 1000.0 * g + 10.0 * k * (g + 1)) for g in range(2) for k in range(21)]
    s = ReplaySensor(rows, speed=5.0)
    p = tmp_path / "t.arrows"
    with Recorder(p, {}, [s], hz=50, fsync=False):
        while not s.finished:
            time.sleep(0.02)
        time.sleep(0.05)
    u = aggregate(p)
    # THEN each GPU's energy is its counter's rise over the recording (first to last value)
    assert [d for d in u.devices] == ["gpu0", "gpu1"]
    for i in range(2):
        assert u.by_phase["energy_j"][i].sum() == pytest.approx(200.0 * (i + 1))


def test_recorder_markers_in_process_and_from_file(tmp_path):
    m = tmp_path / "m.jsonl"
    p = tmp_path / "t.arrows"
    tree = ProcTree(os.getpid())
    clock = _Clock()
    rec = _manual(Recorder(p, {"devices": [DeviceEntry("host", "host", None)]}, [ProcIOSensor(tree)], hz=20,
                           markers_file=m, fsync=False, clock=clock), clock)
    rec.marker("phase_start", "a")
    with open(m, "a") as fh:  # a partial line is held until it is complete
        fh.write('{"t_unix": %f, "event": "request_end", "label": "17"}\n{"t_unix": ' % time.time())
    _tick(rec, clock)
    with open(m, "a") as fh:
        fh.write('%f, "event": "phase_end", "label": "a:b"}\nnot json\n' % time.time())
    _tick(rec, clock)
    rec.stop()
    t = read_trace(p)
    assert [(e, n) for _, e, n in t.markers] == [("phase_start", "a"), ("request_end", "17"), ("phase_end", "a:b")]
    assert t.summary["recorder"]["bad_marker_lines"] == 1
    assert emit_marker("x", path=str(tmp_path / "other.jsonl")) and (tmp_path / "other.jsonl").read_text().count("\n") == 1


def test_record_command_with_the_cpu_lmcache_scenario(tmp_path, root):
    # GIVEN the measured CPU scenario (as the dict pipeline.py passes) and a child that plays
    # LMCache: it writes a tap file and two KV chunk files into the relative local_disk path
    from storagecarbon.scenario import load_scenario

    scn = load_scenario(root / "scenarios" / "tiny_cpu_lmcache.yaml").model_dump(mode="json")
    child = tmp_path / "lmc.py"
    child.write_text(textwrap.dedent("""
        import json, os, time
        d = os.path.abspath("lmcache-disk"); os.makedirs(d, exist_ok=True)
        for i in range(2):
            open(os.path.join(d, f"chunk{i}.pt"), "wb").write(b"k" * 393216)
        tap = {"pid": os.getpid(), "time_unix": time.time(), "disk_path": d, "chunk_size": 64,
               "counters": {"cpu_bytes_written": 786432, "cpu_bytes_read": 786432, "disk_bytes_written": 786432,
                            "disk_bytes_read": 0, "remote_bytes_written": 0, "remote_bytes_read": 0,
                            "bytes_d2h": 786432, "bytes_h2d": 786432, "stored_tokens": 1536, "hit_tokens": 1536}}
        p = os.path.join(os.environ["STORAGECARBON_TAP_DIR"], f"lmcache-{os.getpid()}.json")
        open(p + ".tmp", "w").write(json.dumps(tap)); os.replace(p + ".tmp", p)
        time.sleep(1.5)
    """))
    out = tmp_path / "t.arrows"
    assert record_command([PY, str(child)], out, scenario=scn, hz=10, cwd=tmp_path) == 0
    t = read_trace(out)
    # THEN the disk tier is the scenario's stand-in record on the virtual disk
    ssd = t.header.device("ssd0")
    assert ssd.db_key == "virtio-disk-standin" and ssd.stand_in and "stand-in" in ssd.note
    assert t.header.device("dram").db_key == "ddr4-rdimm-per-gb" and t.header.device("dram").count == 24
    assert t.header.scenario["name"] == "tiny_cpu_lmcache"
    # the LMCache taps own the tiers' app bytes; the process counters yield them
    owners = {(c.device, c.metric): c.sensor for c in t.header.channels}
    assert owners[("ssd0", "app_bytes_written")] == "lmcache_tap"
    assert owners[("dram", "app_bytes_read")] == "lmcache_tap"
    assert owners[("ssd0", "resident_bytes")] == "lmcache_tap"
    assert owners[("dram", "resident_bytes")] == "memory"
    assert t.series("ssd0", "app_bytes_written")[1][-1] == 786432
    assert t.series("ssd0", "resident_bytes")[1][-1] == 786432  # du of the LMCache disk dir
    u = aggregate(out)
    assert u.has[("ssd0", "resident_byte_s")] and u.by_phase["resident_byte_s"][u.devices.index("ssd0")].sum() > 0


class _Seq(SensorBase):
    """Readings from a list, one per read: a counter and a gauge."""
    name = "seq"

    def __init__(self, values):
        self.values = list(values)

    def probe(self):
        return Probe(True, "")

    def channels(self):
        return [("ssd0", "bytes_read", self.name), ("ssd0", "resident_bytes", self.name)]

    def read(self):
        c, g = self.values.pop(0)
        return [("ssd0", "bytes_read", c), ("ssd0", "resident_bytes", g)]


def _record_seq(tmp_path, name, values, hold_s, marker_at=None):
    from storagecarbon.trace import DeviceEntry as D

    now = [0.0]
    rec = Recorder(tmp_path / name, {"devices": [D("ssd0", "ssd", None)]}, [_Seq(values)], hz=10, fsync=False,
                   clock=lambda: now[0], hold_s=hold_s)
    rec._run = lambda: None          # ticks driven here, on the injected clock (no thread, no sleeps)
    rec.start()                      # the first tick at t = 0
    for k in range(1, len(values) - 1):
        now[0] = k * 0.1
        if k == marker_at:
            rec.marker("phase_start", "decode")
        rec.sample_now()
    now[0] = (len(values) - 1) * 0.1
    rec.stop()                       # the final tick
    return read_trace(tmp_path / name), aggregate(tmp_path / name, interval_s=0.1)


def test_unchanged_readings_are_held_back_without_changing_usage(tmp_path):
    # GIVEN a counter and a gauge that stay put for long runs, one tick every 0.1 s
    vals = [(0, 5)] * 4 + [(100, 5)] * 3 + [(100, 7)] * 14 + [(250, 7)] * 2
    # WHEN recorded with the default hold (1 s) and with every reading written
    held, u_held = _record_seq(tmp_path, "h.arrows", vals, 1.0, marker_at=10)
    full, u_full = _record_seq(tmp_path, "f.arrows", vals, 0.0, marker_at=10)
    # THEN fewer rows, each run of equal readings keeps its first and last row (and one a second at most apart) ...
    t_full, _ = full.series("ssd0", "resident_bytes")
    t_held, v_held = held.series("ssd0", "resident_bytes")
    assert len(t_full) == len(vals) and len(t_held) < len(vals) / 2
    assert max(t_held[1:] - t_held[:-1]) <= 1.0 + 1e-9
    assert list(v_held[:3]) == [5, 5, 7] and t_held[1] == pytest.approx(0.6)   # 5 from 0.0 to 0.6, then 7
    # ... and every usage figure, per phase too (the marker at 1.0 s splits the gauge's run), is unchanged
    assert u_held.phases == u_full.phases and len(u_full.phases) == 2
    for q in ("bytes_read", "resident_byte_s"):
        assert u_full.by_phase[q].sum() > 0
        assert u_held.by_phase[q].ravel().tolist() == pytest.approx(u_full.by_phase[q].ravel().tolist(), rel=1e-12), q
        assert u_held.by_interval[q].sum() == pytest.approx(u_full.by_interval[q].sum(), rel=1e-12), q
    assert held.summary["recorder"]["rows_held_back"] > 0


class _SameSeq(_Seq):
    """The same readings, but an unchanged reading returns the very list of the last read (sensors/base.py)."""

    def __init__(self, values):
        super().__init__(values)
        self._last = None

    def read(self):
        rows = super().read()
        if rows == self._last:
            return self._last
        self._last = rows
        return rows


def test_a_sensor_that_answers_its_last_list_is_held_in_one_step_with_the_same_trace(tmp_path, monkeypatch):
    # GIVEN the readings of the test above, from a sensor that answers its last list when nothing changed
    vals = [(0, 5)] * 4 + [(100, 5)] * 3 + [(100, 7)] * 14 + [(250, 7)] * 2
    plain, _ = _record_seq(tmp_path, "p.arrows", vals, 1.0, marker_at=10)
    expanded = []
    orig = Recorder._expand_same
    monkeypatch.setattr(Recorder, "_expand_same", lambda self: expanded.append(dict(self._same_t)) or orig(self))
    monkeypatch.setattr(sys.modules[__name__], "_Seq", _SameSeq)
    same, _ = _record_seq(tmp_path, "s.arrows", vals, 1.0, marker_at=10)
    # THEN the recorder took the one-step path, and wrote exactly the rows (times, values) the row-by-row path wrote
    assert expanded and all(expanded)
    assert same.summary["recorder"]["rows_held_back"] == plain.summary["recorder"]["rows_held_back"] > 0
    assert same.t_s.tolist() == plain.t_s.tolist() and same.value.tolist() == plain.value.tolist()
    assert same.channel.tolist() == plain.channel.tolist()


def test_finish_adds_what_only_the_end_knows_before_the_trace_closes(tmp_path):
    # GIVEN a recording with a live marker, and a finish callback deriving a phase from it
    seen = {}

    def finish(end):
        seen["markers"] = [m[1:] for m in end.markers]
        start = next(t for t, ev, _ in end.markers if ev == "window_start")
        return {"markers": [(start, "phase_start", "decode"), (end.t_end, "phase_end", "decode")],
                "summary": {"latency": {"ttft_ms": {"p50": 7.0}}}, "notes": ["derived at the end"]}

    vals = [(0, 5)] * 6
    from storagecarbon.trace import DeviceEntry as D

    p = tmp_path / "t.arrows"
    rec = Recorder(p, {"devices": [D("ssd0", "ssd", None)]}, [_Seq(vals)], hz=10, fsync=False)
    rec.start()
    rec.marker("window_start", "pass1")
    rec.sample_now()
    rec.stop({"engine": "x"}, finish=finish)
    # THEN the callback saw the live markers, and its phase, footer fields and notes are in the trace as written
    t = read_trace(p)
    assert seen["markers"] == [("window_start", "pass1")]
    assert [m[1:] for m in t.markers if m[1].startswith("phase")] == [("phase_start", "decode"), ("phase_end", "decode")]
    assert t.summary["latency"]["ttft_ms"]["p50"] == 7.0 and t.summary["engine"] == "x"
    u = aggregate(p)
    assert "decode" in u.phases and "derived at the end" in u.header.notes
    # a failing callback costs nothing that was recorded
    p2 = tmp_path / "t2.arrows"
    rec = Recorder(p2, {"devices": [D("ssd0", "ssd", None)]}, [_Seq(vals)], hz=10, fsync=False)
    rec.start()
    rec.stop(finish=lambda end: 1 / 0)
    t2 = read_trace(p2)
    assert "ZeroDivisionError" in t2.summary["finish_error"] and not t2.truncated and len(t2.t_s) > 0


class _Fresh(SensorBase):
    """A counter read only when refreshed: a source read at a lower rate (NVML's energy counter)."""
    name = "fresh"

    def __init__(self):
        self.refreshes = 0
        self.value = 0.0

    def probe(self):
        return Probe(True, "")

    def channels(self):
        return [("gpu0", "energy_j", self.name)]

    def refresh(self):
        self.refreshes += 1

    def read(self):
        self.value += 1.0
        return [("gpu0", "energy_j", self.value)]


def test_a_live_phase_marker_makes_the_next_tick_read_every_source(tmp_path):
    from storagecarbon.trace import DeviceEntry as D

    # GIVEN a recorder on an injected clock with a sensor that reads some sources less often
    clock, s = _Clock(), _Fresh()
    rec = _manual(Recorder(tmp_path / "t.arrows", {"devices": [D("gpu0", "hbm", None)]}, [s], hz=10, fsync=False,
                           clock=clock), clock)
    assert s.refreshes == 1                        # the first sample reads everything
    _tick(rec, clock, 10, dt=0.1)
    assert s.refreshes == 1
    # WHEN a phase starts (a live marker), and per-request markers arrive
    rec.marker("phase_start", "serving")
    _tick(rec, clock, 1, dt=0.1)
    # THEN the next tick refreshed every sensor; per-request markers do not
    assert s.refreshes == 2
    rec.marker("request_end", "r1")
    _tick(rec, clock, 3, dt=0.1)
    assert s.refreshes == 2
    # AND the stat-logger plugin's data lines do not, and a burst of phase markers refreshes at most every 0.2 s
    rec.marker("vllm_stats", "{}")
    _tick(rec, clock, 1, dt=0.1)
    assert s.refreshes == 2
    rec.marker("phase_end", "serving")
    _tick(rec, clock, 1, dt=0.1)
    assert s.refreshes == 3
    rec.marker("phase_start", "shutdown")
    _tick(rec, clock, 1, dt=0.1)
    assert s.refreshes == 3                        # 0.1 s after the last refresh: waits
    _tick(rec, clock, 1, dt=0.1)
    assert s.refreshes == 4
    st = rec.stop()                                # and the final sample reads everything
    assert s.refreshes == 5 and st["refreshes"] == 5


class _Paced(_Fresh):
    """A sensor that says when it has something new (``next_read_s``, monotonic s)."""
    name = "paced"

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.next_read_s = float("inf")

    def refresh(self):
        super().refresh()
        self.next_read_s = float("-inf")

    def read(self):
        self.reads += 1
        self.next_read_s = float("inf")   # nothing new until refreshed
        return super().read()


def test_a_sensor_with_nothing_due_is_not_called_until_refreshed(tmp_path):
    from storagecarbon.trace import DeviceEntry as D

    # GIVEN a sensor that has nothing new until it is refreshed
    clock, s = _Clock(), _Paced()
    rec = _manual(Recorder(tmp_path / "t.arrows", {"devices": [D("gpu0", "hbm", None)]}, [s], hz=10, fsync=False,
                           clock=clock), clock)
    assert s.reads == 1                            # the first sample reads every source
    # WHEN the recorder ticks for 2 s
    _tick(rec, clock, 20, dt=0.1)
    # THEN it was never called; a live phase marker gets it read on the next tick, and the final sample too
    assert s.reads == 1
    rec.marker("phase_start", "serving")
    _tick(rec, clock, 2, dt=0.1)
    assert s.reads == 2
    rec.stop()
    assert s.reads == 3


def test_the_footer_has_the_sampling_threads_own_cpu_and_a_stop_is_prompt(tmp_path):
    # GIVEN a recorder sampling nothing at 20 Hz for half a second
    rec = Recorder(tmp_path / "t.arrows", {"devices": []}, [], hz=20, fsync=False)
    rec.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    st = rec.stop()
    # THEN stopping waits for at most one tick, and the footer has the thread's whole CPU (sleeps included) and
    # the sampling CPU per second of the run
    assert time.monotonic() - t0 < 0.3
    assert st["thread_ticks"] >= 5 and st["thread_cpu_s"] > 0 and st["thread_cpu_s_per_tick"] > 0
    assert len(st["sample_cpu_us_per_s"]) == 1 and st["sample_cpu_us_per_s"][0] > 0
    assert read_trace(tmp_path / "t.arrows").summary["recorder"]["thread_ticks"] == st["thread_ticks"]
