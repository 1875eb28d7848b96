"""Property-based fuzzing of every parser of a file a user can be handed: scenario, device record
(``--db``), sweep, raw YAML, intensity CSV and trace.

Per run: 10,600 generated inputs in total (``EXAMPLES`` hypothesis examples x ``PER_EXAMPLE``
inputs each), every input under a time bound (``BOUND_S``); the only exception any parser may raise
is the project's own ``StoragecarbonError``. Each hypothesis example draws a seed for a plain
``random.Random`` that drives ``PER_EXAMPLE`` mutations (hypothesis's own per-choice bookkeeping
would cost more than the parsers; a failing seed reproduces, and the input itself is kept). An
input that breaks a parser is saved in
``tests/corpus/<kind>/`` (``fuzz_targets.keep``) and replayed by ``test_fuzz_corpus.py`` on every
later run. Inputs are mutations of the shipped, valid files (so most of them get deep into
validation) plus hostile values: booleans and strings in numeric fields, huge and non-finite
numbers, anchors and aliases, path tricks, wrong types, cut, bit-flipped and spliced traces, traces
whose header or rows are absurd.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_targets as ft  # noqa: E402

from storagecarbon.trace import (END, HEADER_KEY, MARKER, SCHEMA, DeviceEntry, TraceHeader,  # noqa: E402
                                 TraceWriter, make_channels)

ROOT = ft.ROOT
PER_EXAMPLE = 10
EXAMPLES = {"scenario": 300, "yaml": 150, "device": 150, "sweep": 150, "trace_bytes": 160, "trace_content": 100,
            "csv": 50}
BOUND_S = 2.0   # per input (the slowest valid input takes ~10 ms here)
assert sum(EXAMPLES.values()) * PER_EXAMPLE >= 10_000


def fuzz(kind: str, n: int):
    """Decorator: hypothesis draws a seeded generator; the test makes PER_EXAMPLE inputs from it."""

    def deco(make):
        @settings(max_examples=n, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.integers(0, 2**64 - 1))
        def test(seed):
            rnd = random.Random(seed)
            for _ in range(PER_EXAMPLE):
                data = make(rnd)
                t0 = time.monotonic()
                ft.run(kind, data)
                took = time.monotonic() - t0
                if took > BOUND_S:
                    ft.keep(kind, data)
                    raise AssertionError(f"{kind} input took {took:.1f} s (> {BOUND_S} s); kept in tests/corpus/{kind}/")

        test.__name__ = make.__name__
        return test

    return deco


# ------------------------------------------------------------------------------ hostile values
HOSTILE_WORDS = ["yes", "no", "on", "off", "~", "null", "1e9", "0x1F", "0o17", "1_000", ".inf", "-.inf", ".nan",
                 "../../etc/passwd", "..", "/", "a/../../b", "\x00", "2024-13-45", "12:30:00", "", " ", "NaN",
                 "h100-sxm5-80gb", "world", "prefill", "ddr5-rdimm-64gb", "<<", "&a", "*a", "!!python/object"]
HOSTILE_NUMBERS = [0, 1, -1, 2**31, 2**63, 2**70, -(2**70), 10**9, 10**12, 10**30, 1_000_001, 100_001, 0.0, -0.0,
                   1e-300, 1e300, 0.5, 1.0000001, float("inf"), float("-inf"), float("nan"), True, False, None]


def scalar(rnd: random.Random):
    k = rnd.randrange(5)
    if k == 0:
        return rnd.choice(HOSTILE_NUMBERS)
    if k == 1:
        return rnd.choice(HOSTILE_WORDS)
    if k == 2:
        return rnd.randint(-(2**40), 2**40) if rnd.random() < 0.5 else rnd.uniform(-1e6, 1e6)
    if k == 3:
        return "".join(rnd.choice("abc-_./\\ 0:\u00e9\u2028") for _ in range(rnd.randrange(8)))
    return rnd.choice([[], {}, [1, "x"], {"a": 1}, {"mean": -1}])


def _paths(d, prefix=()):
    out = [prefix]
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, prefix + (i,))
    return out


def _get(d, path):
    for p in path:
        d = d[p]
    return d


def _copy(d):
    if isinstance(d, dict):
        return {k: _copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_copy(v) for v in d]
    return d


def mutate(base, rnd: random.Random, max_mutations: int = 3):
    """A copy of ``base`` with 1..max_mutations edits: replace a node, delete a key, add a key."""
    d = _copy(base)
    for _ in range(rnd.randint(1, max_mutations)):
        paths = [p for p in _paths(d) if p]
        if not paths:
            break
        path = rnd.choice(paths)
        parent = _get(d, path[:-1])
        action = rnd.choice(["replace", "replace", "replace", "delete", "add"])
        if action == "replace":
            parent[path[-1]] = scalar(rnd)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rnd.choice(["extra", "count", "mean", "path", "name", "device"])] = scalar(rnd)
    return d


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(d) -> str:
    return yaml.dump(d, Dumper=_Dumper, allow_unicode=True, sort_keys=False)


YAML_TOKENS = ["a: ", "b: ", "- ", "&x ", "*x ", "&y ", "*y ", "[", "]", "{", "}", ", ", "\n", "  ", "    ", "1", "yes",
               "'s'", '"\\x00"', "<<: ", "!!str ", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ",
               "!!python/object:os.system ", "? ", ": ", "---\n", "...\n", "%YAML 1.1\n", "~", ".inf", "0o17",
               "2024-13-01", "1e400", "\t", "#c\n", "|\n  x\n", ">\n", "&a [*a, *a, *a]\n", "x: &b [*b]\n",
               "requests: ", "workload:\n", "\u2028", "\ufeff", "!<tag:x> ", "a: 1\na: 2\n"]


def text_edit(text: str, rnd: random.Random) -> str:
    i = rnd.randint(0, len(text))
    return text[:i] + "".join(rnd.choice(YAML_TOKENS) for _ in range(rnd.randint(1, 4))) + text[i + rnd.randint(0, 3):]


# ------------------------------------------------------------------------------------ scenario
SCENARIOS = [yaml.safe_load((ROOT / "scenarios" / n).read_text())
             for n in ("llama70b_offload.yaml", "tiny_cpu_lmcache.yaml", "llama70b_old_gpus.yaml")]


@fuzz("scenario", EXAMPLES["scenario"])
def test_fuzz_scenario(rnd):
    text = to_yaml(mutate(rnd.choice(SCENARIOS), rnd))
    return text_edit(text, rnd) if rnd.random() < 0.15 else text


@fuzz("yaml", EXAMPLES["yaml"])
def test_fuzz_raw_yaml(rnd):
    if rnd.random() < 0.8:
        return "".join(rnd.choice(YAML_TOKENS) for _ in range(rnd.randint(0, 40)))
    return "".join(chr(rnd.randrange(1, 0x3000)) for _ in range(rnd.randint(0, 60)))


# -------------------------------------------------------------------------------- device record
_DB = ROOT / "tests" / "data" / "device_db"  # the frozen copy (tests/conftest.py)
_GPUS = yaml.safe_load((_DB / "gpus.yaml").read_text())["devices"]
_STORAGE = yaml.safe_load((_DB / "storage.yaml").read_text())["devices"]
_GRID = yaml.safe_load((_DB / "grid.yaml").read_text())
DEVICE_FILES = [{"devices": _GPUS[:2]}, {"devices": _STORAGE[:2]},
                {"regions": _GRID.get("regions", [])[:2], "pue": _GRID.get("pue", [])[:1]}]


@fuzz("device", EXAMPLES["device"])
def test_fuzz_device_records(rnd):
    text = to_yaml(mutate(rnd.choice(DEVICE_FILES), rnd))
    return text_edit(text, rnd) if rnd.random() < 0.1 else text


# ---------------------------------------------------------------------------------------- sweep
_SWEEP = yaml.safe_load((ROOT / "scenarios" / "sweeps" / "llama70b_sweep.yaml").read_text())
_SWEEP["intensity_series"] = [{**_SWEEP["intensity_series"][0], "file": "grid/ok.csv"}]


@fuzz("sweep", EXAMPLES["sweep"])
def test_fuzz_sweep(rnd):
    d = mutate(_SWEEP, rnd)
    if rnd.random() < 0.1:  # a sweep whose axes multiply out past the bounds
        d["max_num_seqs"] = list(range(1, rnd.choice([50, 500, 5000])))
    return to_yaml(d)


# ------------------------------------------------------------------------------- intensity CSV
@fuzz("csv", EXAMPLES["csv"])
def test_fuzz_intensity_csv(rnd):
    if rnd.random() < 0.3:
        return rnd.randbytes(rnd.randrange(200))
    rows = "".join(f"{rnd.choice(['2024-01-01T00:00Z', '', 'x'])},{scalar(rnd)}\n" for _ in range(rnd.randrange(20)))
    head = rnd.choice(["timestamp,gco2e_per_kwh\n", "gco2e_per_kwh\n", "a,b\n", "", '"x\n'])
    return (head + rows).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------- trace
def _valid_trace() -> bytes:
    p = ft.workdir() / "seed.arrows"
    ch = make_channels([("gpu0", "energy_j", "t"), ("gpu0", "power_w", "t"), ("ssd0", "bytes_written", "t"),
                        ("workload", "generated_tokens", "t")])
    hdr = TraceHeader("measured", [DeviceEntry("gpu0", "hbm", "h100-sxm5-80gb"), DeviceEntry("ssd0", "ssd", None)], ch)
    w = TraceWriter(p, hdr, fsync=False, flush_s=3600)
    w.marker(0.0, "phase_start", "prefill")
    for i in range(6):
        for c in range(4):
            w.sample(i * 0.5, c, float(i * 10 + c))
        if i % 2 == 1:
            w.flush()   # three record batches, then the footer's
        if i == 3:
            w.marker(1.5, "gap_start", "gpu0.power_w (nvml: boom)")
    w.marker(2.5, "phase_end", "prefill")
    w.close({"requests": 2})
    return p.read_bytes()


SEED_TRACE = _valid_trace()


@fuzz("trace", EXAMPLES["trace_bytes"])
def test_fuzz_trace_bytes(rnd):
    b = bytearray(SEED_TRACE)
    for _ in range(rnd.randint(1, 3)):
        if not b:
            break
        op = rnd.choice(["cut", "flip", "flip", "set", "splice", "int32"])
        i = rnd.randrange(len(b))
        if op == "cut":
            b = b[:i]
        elif op == "flip":
            b[i] ^= 1 << rnd.randrange(8)
        elif op == "set":
            b[i:i + 4] = rnd.randbytes(rnd.randint(1, 4))
        elif op == "splice":
            j = rnd.randint(0, len(b))
            b[j:j] = b[i:i + rnd.randint(1, 64)]
        else:  # a length field claiming a huge size
            b[i:i + 4] = struct.pack("<i", rnd.choice([2**31 - 1, -2, 1 << 30, 0x7FFFFFF0]))
    return bytes(b)


_HDR = json.loads(TraceHeader("measured", [DeviceEntry("gpu0", "hbm", None)],
                              make_channels([("gpu0", "energy_j", "t"), ("gpu0", "power_w", "t")])).to_json())
_LABELS = [None, "", "phase_start:prefill", "phase_end:x", "gap_start:gpu0.power_w (x)", "gap_end:gpu0.power_w",
           "[" * 5000, '{"a": 1}', "[1, 2]", "null", ":", "request_end:1"]


def _stream(header: dict, cols: list[np.ndarray], labels: list) -> bytes:
    sink = pa.BufferOutputStream()
    meta = json.dumps(header, default=str).encode()
    with pa.ipc.new_stream(sink, SCHEMA.with_metadata({HEADER_KEY: meta})) as w:
        w.write_batch(pa.record_batch([pa.array(cols[0], pa.float64()), pa.array(cols[1], pa.int32()),
                                       pa.array(cols[2], pa.float64()), pa.array(labels, pa.string())], schema=SCHEMA))
    return sink.getvalue().to_pybytes()


@fuzz("trace", EXAMPLES["trace_content"])
def test_fuzz_trace_content(rnd):
    """Well-formed Arrow streams with hostile content: a mutated header, absurd rows and labels."""
    hdr = mutate(_HDR, rnd) if rnd.random() < 0.6 else _HDR
    n = rnd.randrange(9)
    odd = [float("nan"), float("inf"), -1e308, 1e12, -5.0]
    t = [rnd.choice(odd) if rnd.random() < 0.2 else rnd.uniform(0, 100) for _ in range(n)]
    c = [rnd.choice([0, 1, MARKER, END]) if rnd.random() < 0.85 else rnd.randint(-(2**31), 2**31 - 1) for _ in range(n)]
    v = [rnd.choice(odd) if rnd.random() < 0.2 else rnd.uniform(0, 1e6) for _ in range(n)]
    labels = [rnd.choice(_LABELS) for _ in range(n)]
    return _stream(hdr, [np.asarray(t, dtype=np.float64), np.asarray(c, dtype=np.int32),
                         np.asarray(v, dtype=np.float64)], labels)
