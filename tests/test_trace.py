import json

import numpy as np
import pyarrow as pa
import pytest

from storagecarbon.errors import TraceError
from storagecarbon.trace import (HEADER_KEY, SCHEMA, DeviceEntry, TraceHeader, TraceWriter, make_channels, read_header,
                                 read_trace)


def _header():
    ch = make_channels([("ssd0", "bytes_written", "t"), ("ssd0", "resident_bytes", "t"), ("gpu0", "energy_j", "t")])
    return TraceHeader(source="measured", devices=[DeviceEntry("ssd0", "ssd", "virtio-disk-standin", capacity_bytes=1e9),
                                                   DeviceEntry("gpu0", "hbm", "h100-sxm5-80gb")], channels=ch)


def test_round_trip_samples_markers_footer(tmp_path):
    # GIVEN a trace with samples, markers and a footer
    p = tmp_path / "t.arrows"
    with TraceWriter(p, _header()) as w:
        w.marker(0.0, "phase_start", "prefill")
        for i in range(10):
            w.sample(i * 0.1, 0, i * 100.0)
            w.sample(i * 0.1, 2, i * 5.0)
        w.marker(1.0, "phase_end", "prefill")
        w.close({"requests": 3})
    # WHEN it is read back  THEN everything is there and it is complete
    t = read_trace(p)
    assert not t.truncated
    assert t.summary == {"requests": 3}
    assert t.header.devices[0].db_key == "virtio-disk-standin"
    ts, vs = t.series("ssd0", "bytes_written")
    assert list(vs) == [i * 100.0 for i in range(10)]
    assert [(m[1], m[2]) for m in t.markers] == [("phase_start", "prefill"), ("phase_end", "prefill")]


def test_gzipped_trace_reads_like_the_plain_one(tmp_path):
    # GIVEN a trace and its gzip'd copy (how committed results are stored)
    import gzip

    p = tmp_path / "t.arrows"
    with TraceWriter(p, _header()) as w:
        for i in range(5):
            w.sample(i * 0.1, 0, i * 100.0)
        w.close({"requests": 1})
    gz = tmp_path / "t.arrows.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    # THEN both read the same; a gzip stream that is not a trace is one clear error
    a, b = read_trace(p), read_trace(gz)
    assert list(b.series("ssd0", "bytes_written")[1]) == list(a.series("ssd0", "bytes_written")[1])
    assert b.summary == {"requests": 1} and not b.truncated
    bad = tmp_path / "bad.arrows.gz"
    bad.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(TraceError, match="not a storagecarbon trace"):
        read_trace(bad)


def test_cut_short_trace_is_readable_and_marked_truncated(tmp_path):
    p = tmp_path / "t.arrows"
    w = TraceWriter(p, _header(), flush_s=0.0)
    for i in range(50):
        w.sample(float(i), 0, float(i))
    w.flush()
    size_ok = p.stat().st_size
    w.sample(51.0, 0, 51.0)
    w.flush()
    # simulate a kill in the middle of writing the last batch: chop its tail
    data = p.read_bytes()
    p.write_bytes(data[: size_ok + (len(data) - size_ok) // 2])
    t = read_trace(p)
    assert t.truncated
    assert len(t.t_s) == 50


def test_other_format_version_refused(tmp_path):
    p = tmp_path / "v2.arrows"
    hdr = json.loads(_header().to_json())
    hdr["format_version"] = 99
    with open(p, "wb") as f:
        with pa.ipc.new_stream(f, SCHEMA.with_metadata({HEADER_KEY: json.dumps(hdr).encode()})):
            pass
    with pytest.raises(TraceError, match="format version 99 is incompatible"):
        read_header(p)


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.arrows"
    p.write_text("hello")
    with pytest.raises(TraceError, match="not a storagecarbon trace"):
        read_trace(p)


def test_unknown_metric_rejected():
    with pytest.raises(ValueError):
        make_channels([("d", "bytes_writen", "x")])


def test_vectorised_samples(tmp_path):
    p = tmp_path / "v.arrows"
    with TraceWriter(p, _header()) as w:
        w.samples(np.arange(5.0), np.zeros(5, dtype=np.int32), np.arange(5.0) * 2)
    t = read_trace(p)
    assert t.value.tolist() == [0, 2, 4, 6, 8] and not t.truncated


def test_a_sparse_energy_counter_is_placed_as_the_power_readings_say(tmp_path):
    from storagecarbon.carbon.usage import aggregate, power_shape, spread

    # GIVEN a GPU whose energy counter is read at 0 and 30 s (6,000 J) and whose power reads 100 W for 20 s, then
    # 400 W for 10 s (the same 6,000 J), and a serving phase from 20 s on (cut after the fact, between two reads)
    h = TraceHeader(source="replayed", devices=[DeviceEntry("gpu0", "hbm", None)],
                    channels=make_channels([("gpu0", "energy_j", "nvml"), ("gpu0", "power_w", "nvml")]),
                    t0_unix=1.7e9)
    tp = np.arange(0.0, 31.0)
    with TraceWriter(tmp_path / "t.arrows", h, fsync=False) as w:
        w.samples(np.array([0.0, 30.0]), np.array([0, 0]), np.array([0.0, 6000.0]))
        w.samples(tp, np.ones(len(tp), dtype=np.int64), np.where(tp < 20, 100.0, 400.0))
        w.marker(20.0, "phase_start", "serving")
    # WHEN aggregated
    u = aggregate(tmp_path / "t.arrows", interval_s=10.0)
    # THEN the counter's 6,000 J are split as the power readings say: 2,000 J before 20 s and 4,000 J after
    # (spread evenly in time it would read 4,000 / 2,000), and the total is the counter's
    e = dict(zip(u.phases, u.by_phase["energy_j"][0]))
    assert e["other"] == pytest.approx(2000.0) and e["serving"] == pytest.approx(4000.0)
    assert u.by_interval["energy_j"][0][:3].tolist() == pytest.approx([1000.0, 1000.0, 4000.0])
    # AND where the shape has no weight (no power readings there) time is used
    seg, part = spread(np.array([0.0, 10.0]), np.array([10.0]), np.array([5.0]),
                       power_shape(np.array([20.0, 30.0]), np.array([1.0, 1.0])))
    assert part.tolist() == pytest.approx([5.0, 5.0])


def test_a_sparse_counter_is_spread_evenly_over_phases_and_intervals(tmp_path):
    from storagecarbon.carbon.usage import aggregate, spread

    # GIVEN an energy counter read every 5 s (0, 500, 1000 J), a gauge read at 0 and 5 s, and a phase from 2.5 s on
    h = TraceHeader(source="replayed", devices=[DeviceEntry("gpu0", "hbm", None)],
                    channels=make_channels([("gpu0", "energy_j", "nvml"), ("gpu0", "resident_bytes", "nvml")]),
                    t0_unix=1.7e9)
    with TraceWriter(tmp_path / "t.arrows", h, fsync=False) as w:
        w.samples(np.array([0.0, 0.0, 5.0, 5.0, 10.0, 10.0]), np.array([0, 1, 0, 1, 0, 1]),
                  np.array([0.0, 10.0, 500.0, 20.0, 1000.0, 20.0]))
        w.marker(2.5, "phase_start", "serving")
    # WHEN aggregated into 1-s intervals
    u = aggregate(tmp_path / "t.arrows", interval_s=1.0)
    # THEN the counter's increment is split at the phase start in proportion to time (250 J before, 750 J after) ...
    e = dict(zip(u.phases, u.by_phase["energy_j"][0]))
    assert e["serving"] == pytest.approx(750.0) and e["other"] == pytest.approx(250.0)
    assert u.by_interval["energy_j"][0][:10].tolist() == pytest.approx([100.0] * 10)
    # ... a gauge's held level exactly (10 B for 2.5 s, then 10 B for 2.5 s and 20 B for 5 s)
    r = dict(zip(u.phases, u.by_phase["resident_byte_s"][0]))
    assert r["other"] == pytest.approx(25.0) and r["serving"] == pytest.approx(25.0 + 100.0)
    # AND spread keeps the total whatever the cuts
    seg, part = spread(np.array([0.0, 1.0, 3.0]), np.array([2.0, 4.0]), np.array([-1.0, 0.5, 2.0, 2.0, 9.0]))
    assert seg.tolist() == [0, 1, 2, 3] and part.tolist() == pytest.approx([1.0, 3.0, 0.0, 2.0])
    # AND a byte count is split at whole bytes, so its parts add up to it exactly
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.05, 0.15, 200))
    d = rng.integers(0, 2**40, 199).astype(np.float64)
    seg, part = spread(t, d, np.sort(rng.uniform(t[0], t[-1], 37)))
    assert np.array_equal(part, np.round(part)) and part.sum() == d.sum()


def test_flushes_are_written_without_building_arrow_batches_and_read_back_the_same(tmp_path, monkeypatch):
    # GIVEN the writer's fast path for flushes (pyarrow's batch building costs ~170 µs of cold CPU a
    # flush in the recorder's thread), checked at import against pyarrow's own bytes for many row counts
    import storagecarbon.trace as trace_mod

    assert trace_mod._batch_message(), "pyarrow's IPC layout changed: the recorder's flushes lost their fast path"

    def write(p, fast):
        if not fast:
            monkeypatch.setattr(trace_mod, "_FAST", False)
        with TraceWriter(p, _header(), fsync=False) as w:
            for k in range(6):   # flushes of 1..70 rows, with markers (labels), one of a marker alone (pyarrow's path)
                if k in (2, 3):
                    w.marker(k, "phase_start", "x" * k)
                if k == 2:
                    w.marker(k + 0.5, "vllm_stats", '{"kv": "é"}')
                for i in range([1, 7, 64, 0, 70, 9][k]):
                    w.sample(k + i * 1e-3, i % 3, float(i * k))
                w.flush()
            w.close({"ok": True})
        monkeypatch.undo()
        return read_trace(p)

    # WHEN the same rows are written both ways  THEN the traces read back equal, complete
    a, b = write(tmp_path / "fast.arrows", True), write(tmp_path / "arrow.arrows", False)
    assert not a.truncated and a.summary == {"ok": True} == b.summary
    assert np.array_equal(a.t_s, b.t_s) and np.array_equal(a.channel, b.channel) and np.array_equal(a.value, b.value)
    assert a.markers == b.markers and len(a.t_s) == 1 + 7 + 64 + 70 + 9
