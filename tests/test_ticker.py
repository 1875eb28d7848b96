"""The recorder's native ticker (record/ticker.c): counter files read in C on every tick, the Python thread woken only
when its own sources are due or a marker arrives; the trace is the same as the Python sampler's."""

import os
import time

import pytest

from storagecarbon.carbon.usage import aggregate
from storagecarbon.record import ticker
from storagecarbon.record.recorder import Recorder, emit_marker
from storagecarbon.record.sensors.base import Probe, SensorBase
from storagecarbon.record.sensors.diskstats import DiskstatsSensor
from storagecarbon.trace import DeviceEntry, read_trace

pytestmark = pytest.mark.skipif(not ticker.available()[0], reason=f"native ticker: {ticker.available()[1]}")

# /sys/class/block/<disk>/stat: reads, merged, sectors read, ms, writes, merged, sectors written, ms, in flight,
# io_ticks, time in queue (then discards and flushes)
STAT = "{r} 0 {sr} 10 {w} 0 {sw} 20 0 {busy} 30 0 0 0 0 0 0\n"


def _disk(tmp_path, sr=0, sw=0, busy=0):
    (tmp_path / "block" / "vdz").mkdir(parents=True, exist_ok=True)
    stat = tmp_path / "block" / "vdz" / "stat"
    stat.write_text(STAT.format(r=1, sr=sr, w=1, sw=sw, busy=busy))
    (tmp_path / "diskstats").write_text(" 252 0 vdz " + STAT.format(r=1, sr=sr, w=1, sw=sw, busy=busy))
    return stat


def _write(stat, sr=0, sw=0, busy=0):
    with open(stat, "r+") as fh:   # in place, as the kernel's file reads: the open descriptor sees it
        fh.write(STAT.format(r=1, sr=sr, w=1, sw=sw, busy=busy))
        fh.truncate()


def test_the_ticker_keeps_ticks_that_changed_and_wakes_on_a_growing_file(tmp_path):
    # GIVEN a counter file and a marker file watched by a 20-Hz ticker
    stat = _disk(tmp_path)
    marker = tmp_path / "m"
    marker.write_text("")
    fd = os.open(stat, os.O_RDONLY)
    r, w = os.pipe()
    tk = ticker.Ticker([fd], 0.05, 10.0, marker_path=str(marker), wake_fd=w)
    try:
        tk.start(time.monotonic() + 0.05)
        time.sleep(0.3)
        # WHEN the counters move once and the marker file grows once
        _write(stat, sw=800)
        with open(marker, "a") as fh:
            fh.write("x\n")
        time.sleep(0.3)
        slots, last = tk.drain()
        tk.stop()
        st = tk.stats()
    finally:
        tk.close()
        os.close(fd)
    # THEN the ring has the first tick and the change only (the rest read as before), with the tick before the
    # change, and the pipe got a byte for the marker file (and one when the ticker first saw it)
    assert len(slots) == 2 and st["kept"] == 2 and st["ticks"] >= 5
    (t1, tp1, f1), (t2, tp2, f2) = slots
    assert tp1 == -1 and f1[0][6] == 0 and f2[0][6] == 800
    assert t1 < tp2 < t2 <= last and 0.02 < t2 - tp2 < 0.25   # one period, more if the machine is busy
    assert os.read(r, 16) == b"mm"
    assert st["read_errors"] == 0 and st["marker_wakes"] == 2 and tk.cpu_s() > 0


def _record(tmp_path, name, native, steps):
    stat = _disk(tmp_path)
    ds = DiskstatsSensor({"ssd0": ["vdz"]}, path=tmp_path / "diskstats", sys_dir=tmp_path / "block")
    mk = tmp_path / f"{name}.jsonl"
    rec = Recorder(tmp_path / f"{name}.arrows", {"devices": [DeviceEntry("ssd0", "ssd", "test ssd")]}, [ds], hz=20,
                   markers_file=mk, native=native, fsync=False)
    rec.start()
    for pause, sw, busy, marker in steps:
        time.sleep(pause)
        if sw is not None:
            _write(stat, sw=sw, busy=busy)
        if marker:
            emit_marker(*marker, path=mk)
    time.sleep(0.3)
    st = rec.stop()
    return st, read_trace(tmp_path / f"{name}.arrows")


def test_the_native_sampler_records_what_the_python_sampler_does(tmp_path):
    # GIVEN one disk whose counters move three times, inside a marked phase
    steps = [(0.3, None, 0, ("phase_start", "io")), (0.3, 2048, 5, None), (0.4, 4096, 9, None),
             (0.3, 4096, 9, ("phase_end", "io")), (0.3, 8192, 12, None)]
    # WHEN it is recorded by the native ticker and by the Python sampler
    st_n, t_n = _record(tmp_path, "native", None, steps)
    st_p, t_p = _record(tmp_path, "python", False, steps)
    # THEN each says which sampler ran, the native one woke its Python thread a few times only
    assert st_n["sampler"] == "native" and st_p["sampler"] == "python"
    assert st_n["native"]["python_wakes"] < st_n["ticks"] / 4 and st_n["native"]["read_errors"] == 0
    assert st_n["ticks"] >= 20 and st_n["thread_cpu_s_per_tick"] > 0
    assert st_n["sample_cpu_s_mean"] * st_n["ticks"] >= st_n["native"]["cpu_s"]
    # and both traces have the same readings, each change within a tick or so of the other, and the same bytes
    # and busy time in the phase
    for t in (t_n, t_p):
        assert not t.gaps and [e for _, e, _ in t.markers] == ["phase_start", "phase_end"]
    for metric in ("bytes_written", "busy_s"):
        (tn, vn), (tp, vp) = t_n.series("ssd0", metric), t_p.series("ssd0", metric)
        steps_n = [(t, v) for t, v, v0 in zip(tn[1:], vn[1:], vn[:-1]) if v != v0]
        steps_p = [(t, v) for t, v, v0 in zip(tp[1:], vp[1:], vp[:-1]) if v != v0]
        assert [v for _, v in steps_n] == [v for _, v in steps_p] and len(steps_n) == 3
        assert all(abs(a - b) < 0.3 for (a, _), (b, _) in zip(steps_n, steps_p))
    u_n, u_p = aggregate(tmp_path / "native.arrows"), aggregate(tmp_path / "python.arrows")
    i = u_n.devices.index("ssd0")
    assert u_n.by_phase["bytes_written"][i].sum() == u_p.by_phase["bytes_written"][i].sum() == 8192 * 512
    ph_n, ph_p = u_n.phases.index("io"), u_p.phases.index("io")
    assert u_n.by_phase["bytes_written"][i, ph_n] == u_p.by_phase["bytes_written"][i, ph_p] == 4096 * 512


class _Fifo(SensorBase):
    """A per-tick counter whose ticker file cannot be read (a directory), read in Python instead."""

    name = "fifo"

    def __init__(self, path):
        self.path, self.n, self.fd = path, 0, None

    def probe(self):
        return Probe(True)

    def channels(self):
        return [("ssd0", "bytes_read", self.name)]

    def ticker_files(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        return [self.fd]

    def rows_from_ticker(self, nums):
        return [("ssd0", "bytes_read", float(nums[0][0]))]

    def read(self):
        self.n += 1
        return [("ssd0", "bytes_read", float(self.n))]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def test_a_counter_file_the_ticker_cannot_read_hands_the_sampling_back_to_python(tmp_path):
    # GIVEN a sensor whose ticker file is a directory (pread fails)
    d = tmp_path / "d"
    d.mkdir()
    rec = Recorder(tmp_path / "t.arrows", {"devices": [DeviceEntry("ssd0", "ssd", "test ssd")]}, [_Fifo(d)], hz=20,
                   fsync=False)
    rec.start()
    time.sleep(1.5)
    t0 = time.monotonic()
    st = rec.stop()
    # THEN the recording goes on in Python at 20 Hz, says why, and stops promptly
    assert time.monotonic() - t0 < 0.3
    assert st["sampler"] == "native" and "stopped" in st["sampler_note"] and "fifo" in st["sampler_note"]
    t = read_trace(tmp_path / "t.arrows")
    _, v = t.series("ssd0", "bytes_read")
    assert v[-1] >= 15 and not t.gaps


def test_a_stop_is_prompt_and_the_footer_counts_both_threads(tmp_path):
    stat = _disk(tmp_path)
    ds = DiskstatsSensor({"ssd0": ["vdz"]}, path=tmp_path / "diskstats", sys_dir=tmp_path / "block")
    rec = Recorder(tmp_path / "t.arrows", {"devices": []}, [ds], hz=10, fsync=False)
    rec.start()
    time.sleep(1.2)
    _write(stat, sw=64)
    time.sleep(0.3)
    t0 = time.monotonic()
    st = rec.stop()
    assert time.monotonic() - t0 < 0.3
    n = st["native"]
    assert st["thread_ticks"] >= n["ticks"] >= 10
    assert st["thread_cpu_s"] == pytest.approx(n["cpu_s"] + n["python_thread_cpu_s"])
    assert sum(st["sample_cpu_us_per_s"]) == pytest.approx((n["cpu_s"] + n["python_cpu_s"]) * 1e6, rel=0.05, abs=50)
    assert read_trace(tmp_path / "t.arrows").series("ssd0", "bytes_written")[1][-1] == 64 * 512


def test_a_disk_gone_keeps_the_descriptors_lent_to_the_ticker_open_until_close(tmp_path, monkeypatch):
    # GIVEN a disk sensor whose stat file's descriptor is lent to the ticker
    _disk(tmp_path)
    ds = DiskstatsSensor({"ssd0": ["vdz"]}, path=tmp_path / "diskstats", sys_dir=tmp_path / "block")
    (fd,) = ds.ticker_files()
    # WHEN a direct read finds the disk gone (the pread fails)
    import storagecarbon.record.sensors.diskstats as dmod

    real = os.pread
    monkeypatch.setattr(dmod.os, "pread", lambda f, n, o: (_ for _ in ()).throw(OSError(19, "No such device"))
                        if f == fd else real(f, n, o))
    ds.read()
    monkeypatch.undo()
    # THEN the descriptor stays open (a new open() cannot reuse its number while the ticker may read it) until close
    os.fstat(fd)
    assert ds.ticker_files() is None
    ds.close()
    with pytest.raises(OSError):
        os.fstat(fd)
